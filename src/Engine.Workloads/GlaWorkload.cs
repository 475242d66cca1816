using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;

namespace Engine.Workloads;

/// <summary>
/// A GLA call on random inputs of a given shape, with its model flop count: what `engine bench gla`, the
/// demo and the BenchmarkDotNet suite all run.
/// </summary>
public sealed class GlaWorkload : AttentionWorkload
{
    private readonly float[] _g;

    public GlaWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, GateKind gate, int seed = 0)
        : base(batch, tokens, heads, keyDim, valueDim, seed)
    {
        if (gate == GateKind.Constant) throw new ArgumentException("a constant gate is Lightning attention: use LightningWorkload", nameof(gate));
        Gate = gate;
        _g = gate switch
        {
            GateKind.PerKey => Data.LogGates(Rows * keyDim),
            GateKind.PerHead => Data.LogGates(Rows),
            _ => [],
        };
    }

    public GateKind Gate { get; }

    public double ModelFlops(AttentionMode mode, int chunkSize) => ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, mode, chunkSize);

    /// <summary>
    /// Model flops: per token and head 2·c·(K+V) + 4·K·V for the chunked form, c the length of the token's chunk (C, or
    /// T mod C for the last, shorter one: its scores are c × c), 4·K·V for the recurrent one.
    /// </summary>
    public static double ModelFlops(int batch, int tokens, int heads, int keyDim, int valueDim, AttentionMode mode, int chunkSize)
    {
        double perHead = 4.0 * keyDim * valueDim * tokens;
        if (mode == AttentionMode.Chunked)
        {
            double rest = tokens % chunkSize, full = tokens - rest;
            perHead += 2.0 * (keyDim + valueDim) * (full * chunkSize + rest * rest);
        }
        return perHead * batch * heads;
    }

    public void Run(EngineDevice device, GlaOptions options)
    {
        var g = Gate == GateKind.None ? default : new ReadOnlyTensorSpan<float>(_g, GateShape(Gate));
        Gla.Forward(device, Q, K, V, g, O, finalState: FinalState, options: options);
    }

    private protected override IEnumerable<(string Name, float[] Values, nint[] Shape)> OpInputs() =>
        Gate == GateKind.None ? [] : [("g", _g, GateShape(Gate))];
}

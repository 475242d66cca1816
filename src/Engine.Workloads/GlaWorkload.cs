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

    /// <summary>Model flops: per token and head 2·C·(K+V) + 4·K·V for the chunked form, 4·K·V for the recurrent one.</summary>
    public static double ModelFlops(int batch, int tokens, int heads, int keyDim, int valueDim, AttentionMode mode, int chunkSize)
    {
        double perTokenHead = mode == AttentionMode.Chunked
            ? 2.0 * chunkSize * (keyDim + valueDim) + 4.0 * keyDim * valueDim
            : 4.0 * keyDim * valueDim;
        return perTokenHead * batch * tokens * heads;
    }

    public void Run(EngineDevice device, GlaOptions options)
    {
        var g = Gate switch
        {
            GateKind.PerKey => new ReadOnlyTensorSpan<float>(_g, [Batch, Tokens, Heads, KeyDim]),
            GateKind.PerHead => new ReadOnlyTensorSpan<float>(_g, PerHead),
            _ => default,
        };
        Gla.Forward(device, Q, K, V, g, O, finalState: FinalState, options: options);
    }
}

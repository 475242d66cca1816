using System.Numerics.Tensors;
using Engine.Kernels.Gla;

namespace Engine.Workloads;

/// <summary>
/// A GLA call on random inputs of a given shape, with its model flop count: what `engine bench gla`, the
/// demo and the BenchmarkDotNet suite all run. Output and state buffers are made once and reused.
/// </summary>
public sealed class GlaWorkload
{
    private readonly float[] _q, _k, _v, _g, _o, _state;

    public GlaWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, GateKind gate, int seed = 0)
    {
        if (gate == GateKind.Constant) throw new ArgumentException("a constant gate is Lightning attention: use LightningWorkload", nameof(gate));
        Batch = batch; Tokens = tokens; Heads = heads; KeyDim = keyDim; ValueDim = valueDim; Gate = gate;
        var data = new WorkloadData(seed);
        long rows = (long)batch * tokens * heads;
        _q = data.Normal(rows * keyDim);
        _k = data.UnitRows(rows, keyDim);
        _v = data.Normal(rows * valueDim);
        _g = gate switch
        {
            GateKind.PerKey => data.LogGates(rows * keyDim),
            GateKind.PerHead => data.LogGates(rows),
            _ => [],
        };
        _o = new float[rows * valueDim];
        _state = new float[(long)batch * heads * keyDim * valueDim];
    }

    public int Batch { get; }
    public int Tokens { get; }
    public int Heads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }
    public GateKind Gate { get; }

    public ReadOnlySpan<float> Output => _o;

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
        nint[] qk = [Batch, Tokens, Heads, KeyDim], vo = [Batch, Tokens, Heads, ValueDim];
        var g = Gate switch
        {
            GateKind.PerKey => new ReadOnlyTensorSpan<float>(_g, qk),
            GateKind.PerHead => new ReadOnlyTensorSpan<float>(_g, [Batch, Tokens, Heads]),
            _ => default,
        };
        Gla.Forward(device, new ReadOnlyTensorSpan<float>(_q, qk), new ReadOnlyTensorSpan<float>(_k, qk),
            new ReadOnlyTensorSpan<float>(_v, vo), g, new TensorSpan<float>(_o, vo),
            finalState: new TensorSpan<float>(_state, [Batch, Heads, KeyDim, ValueDim]), options: options);
    }
}

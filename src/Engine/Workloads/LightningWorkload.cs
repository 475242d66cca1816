using System.Numerics.Tensors;

namespace Engine.Workloads;

/// <summary>Lightning attention on random inputs (ALiBi slopes for the head count), with its model flop count.</summary>
public sealed class LightningWorkload
{
    private readonly float[] _q, _k, _v, _o, _state;

    public LightningWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, int seed = 0)
    {
        Batch = batch; Tokens = tokens; Heads = heads; KeyDim = keyDim; ValueDim = valueDim;
        var data = new WorkloadData(seed);
        long rows = (long)batch * tokens * heads;
        _q = data.Normal(rows * keyDim, 1 / Math.Sqrt(keyDim));
        _k = data.Normal(rows * keyDim, 1 / Math.Sqrt(keyDim));
        _v = data.Normal(rows * valueDim);
        _o = new float[rows * valueDim];
        _state = new float[(long)batch * heads * keyDim * valueDim];
    }

    public int Batch { get; }
    public int Tokens { get; }
    public int Heads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }

    public ReadOnlySpan<float> Output => _o;

    /// <summary>Per token and head 2·B·(K+V) + 4·K·V for blocks of B tokens, 4·K·V recurrent: the GLA count.</summary>
    public double ModelFlops(AttentionMode mode, int blockSize) => GlaWorkload.ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, mode, blockSize);

    public void Run(EngineDevice device, LightningOptions options)
    {
        nint[] qk = [Batch, Tokens, Heads, KeyDim], vo = [Batch, Tokens, Heads, ValueDim];
        Lightning.Forward(device, new ReadOnlyTensorSpan<float>(_q, qk), new ReadOnlyTensorSpan<float>(_k, qk),
            new ReadOnlyTensorSpan<float>(_v, vo), new TensorSpan<float>(_o, vo),
            finalState: new TensorSpan<float>(_state, [Batch, Heads, KeyDim, ValueDim]), options: options);
    }
}

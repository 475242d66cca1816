using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;

namespace Engine.Workloads;

/// <summary>
/// A DeltaNet or Gated DeltaNet call on random inputs as models feed them (unit-norm keys, beta in
/// (0.05, 0.95), log-sigmoid gates), with its model flop count: what `engine bench delta|gated-delta` and
/// the BenchmarkDotNet suite run. Output and state buffers are made once and reused.
/// </summary>
public sealed class DeltaRuleWorkload
{
    private readonly float[] _q, _k, _v, _beta, _g, _o, _state;

    public DeltaRuleWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, bool gated, int seed = 0)
    {
        Batch = batch; Tokens = tokens; Heads = heads; KeyDim = keyDim; ValueDim = valueDim; Gated = gated;
        var data = new WorkloadData(seed);
        long rows = (long)batch * tokens * heads;
        _q = data.Normal(rows * keyDim);
        _k = data.UnitRows(rows, keyDim);
        _v = data.Normal(rows * valueDim);
        var random = new Random(seed + 1);
        _beta = new float[rows];
        for (long i = 0; i < rows; i++) _beta[i] = 0.05f + 0.9f * random.NextSingle();
        _g = gated ? data.LogGates(rows) : [];
        _o = new float[rows * valueDim];
        _state = new float[(long)batch * heads * keyDim * valueDim];
    }

    public int Batch { get; }
    public int Tokens { get; }
    public int Heads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }
    public bool Gated { get; }

    public ReadOnlySpan<float> Output => _o;

    /// <summary>The model flop count of <see cref="DeltaRuleConfig.ModelFlops"/> at this chunk size, whatever the mode.</summary>
    public double ModelFlops(int chunkSize) => ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, Gated, chunkSize);

    public static double ModelFlops(int batch, int tokens, int heads, int keyDim, int valueDim, bool gated, int chunkSize) =>
        new DeltaRuleConfig(new HeadLayout(heads, heads, keyDim, valueDim), gated, 1f, chunkSize, qkL2Norm: false)
            .ModelFlops(SequenceLayout.Dense(batch, tokens));

    public void Run(EngineDevice device, DeltaRuleOptions options)
    {
        nint[] qk = [Batch, Tokens, Heads, KeyDim], vo = [Batch, Tokens, Heads, ValueDim], perHead = [Batch, Tokens, Heads];
        DeltaRule.Forward(device, new ReadOnlyTensorSpan<float>(_q, qk), new ReadOnlyTensorSpan<float>(_k, qk),
            new ReadOnlyTensorSpan<float>(_v, vo), new ReadOnlyTensorSpan<float>(_beta, perHead),
            Gated ? new ReadOnlyTensorSpan<float>(_g, perHead) : default, new TensorSpan<float>(_o, vo),
            finalState: new TensorSpan<float>(_state, [Batch, Heads, KeyDim, ValueDim]), options: options);
    }
}

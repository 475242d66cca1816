using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;

namespace Engine.Workloads;

/// <summary>
/// A DeltaNet or Gated DeltaNet call on random inputs as models feed them (unit-norm keys, beta in
/// (0.05, 0.95), log-sigmoid gates), with its model flop count: what `engine bench delta|gated-delta` and
/// the BenchmarkDotNet suite run. Output and state buffers are made once and reused.
/// </summary>
public sealed class DeltaRuleWorkload : AttentionWorkload
{
    private readonly float[] _beta, _g;

    public DeltaRuleWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, bool gated, int seed = 0)
        : base(batch, tokens, heads, keyDim, valueDim, seed)
    {
        Gated = gated;
        var random = new Random(seed + 1);
        _beta = new float[Rows];
        for (long i = 0; i < Rows; i++) _beta[i] = 0.05f + 0.9f * random.NextSingle();
        _g = gated ? Data.LogGates(Rows) : [];
    }

    public bool Gated { get; }

    /// <summary>The model flop count of <see cref="DeltaRuleConfig.ModelFlops"/> at this chunk size, whatever the mode.</summary>
    public double ModelFlops(int chunkSize) => ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, Gated, chunkSize);

    public static double ModelFlops(int batch, int tokens, int heads, int keyDim, int valueDim, bool gated, int chunkSize) =>
        new DeltaRuleConfig(new HeadLayout(heads, heads, keyDim, valueDim), gated, 1f, chunkSize, qkL2Norm: false)
            .ModelFlops(SequenceLayout.Dense(batch, tokens));

    public void Run(EngineDevice device, DeltaRuleOptions options) =>
        DeltaRule.Forward(device, Q, K, V, new ReadOnlyTensorSpan<float>(_beta, PerHead),
            Gated ? new ReadOnlyTensorSpan<float>(_g, PerHead) : default, O, finalState: FinalState, options: options);
}

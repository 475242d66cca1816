using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;

namespace Engine.Workloads;

/// <summary>
/// A DeltaNet or Gated DeltaNet call (a gate per head or per key dim) on random inputs as models feed them
/// (unit-norm keys, beta in (0.05, 0.95), log-sigmoid gates), with its model flop count: what `engine bench delta|gated-delta` and
/// the BenchmarkDotNet suite run. Output and state buffers are made once and reused.
/// </summary>
public sealed class DeltaRuleWorkload : AttentionWorkload
{
    private readonly float[] _beta, _g;

    public DeltaRuleWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, GateKind gate, int seed = 0)
        : base(batch, tokens, heads, keyDim, valueDim, seed)
    {
        Gate = gate;
        var random = new Random(seed + 1);
        _beta = new float[Rows];
        for (long i = 0; i < Rows; i++) _beta[i] = 0.05f + 0.9f * random.NextSingle();
        _g = gate switch
        {
            GateKind.PerKey => Data.LogGates(Rows * keyDim),
            GateKind.PerHead => Data.LogGates(Rows),
            GateKind.None => [],
            _ => throw new ArgumentException($"the delta rule takes None, PerHead or PerKey, got {gate}", nameof(gate)),
        };
    }

    public GateKind Gate { get; }

    /// <summary>The model flop count of <see cref="DeltaRuleConfig.ModelFlops"/> at this chunk size, whatever the mode.</summary>
    public double ModelFlops(int chunkSize) => ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, Gate, chunkSize);

    public static double ModelFlops(int batch, int tokens, int heads, int keyDim, int valueDim, GateKind gate, int chunkSize) =>
        new DeltaRuleConfig(new HeadLayout(heads, heads, keyDim, valueDim), gate, 1f, chunkSize, qkL2Norm: false)
            .ModelFlops(SequenceLayout.Dense(batch, tokens));

    public void Run(EngineDevice device, DeltaRuleOptions options)
    {
        var g = Gate == GateKind.None ? default : new ReadOnlyTensorSpan<float>(_g, GateShape(Gate));
        DeltaRule.Forward(device, Q, K, V, new ReadOnlyTensorSpan<float>(_beta, PerHead), g, O, finalState: FinalState, options: options);
    }

    private protected override IEnumerable<(string Name, float[] Values, nint[] Shape)> OpInputs() =>
        Gate == GateKind.None ? [("beta", _beta, PerHead)] : [("beta", _beta, PerHead), ("g", _g, GateShape(Gate))];
}

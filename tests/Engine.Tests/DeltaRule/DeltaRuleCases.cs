using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Tests.Harness;

namespace Engine.Tests.DeltaRule;

/// <summary>How a case draws beta.</summary>
public enum BetaKind
{
    /// <summary>Uniform in (0, 1), as sigmoid outputs are.</summary>
    Open,
    /// <summary>Exactly 1 everywhere: each token's transition is a projection.</summary>
    One,
}

/// <summary>A delta-rule call: shape, gate form and strength, beta, chunk, mode, element type, state, packing, normalization.</summary>
public sealed class DeltaRuleCase : AttentionCase
{
    public GateKind Gate { get; init; } = GateKind.PerHead;
    public double GateScale { get; init; } = 1.0;
    public BetaKind Beta { get; init; } = BetaKind.Open;
    public int Chunk { get; init; } = 64;
    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;
    public bool WithInitialState { get; init; }
    public float? Scale { get; init; }
    public bool QkL2Norm { get; init; }
    /// <summary>q and k drawn this many times larger (with <see cref="QkL2Norm"/>: rows whose Σ x² overflows fp32 past 1e19).</summary>
    public float QkMagnitude { get; init; } = 1f;

    public override bool Small => SmallOverride ?? (long)(SeqLens?.Sum() ?? B * T) * Ho * Math.Max(K, V) <= 4_000;

    public override string Name =>
        $"{(Gate == GateKind.None ? "delta" : $"gated-delta {Gate} gate×{GateScale}")} {Batch} {HeadCounts} K{K} V{V} β{Beta} C{Chunk} {Mode}" +
        (Fp16 ? " fp16" : "") + (WithInitialState ? " h0" : "") + (Scale is null ? "" : $" scale{Scale}") + (QkL2Norm ? " l2norm" : "") + (QkMagnitude == 1f ? "" : $" |qk|×{QkMagnitude:E0}") + Extreme;

    public DeltaRuleConfig Config => new(Heads, Gate, Scale ?? 1f / MathF.Sqrt(K), Chunk, QkL2Norm);

    public DeltaRuleOptions Options => new() { ChunkSize = Chunk, Mode = Mode, Scale = Scale, QkL2Norm = QkL2Norm };

    /// <summary>Floats of g per token: 0, Hv or Hv·K.</summary>
    public int GatePerToken => Config.GatePerToken;

    /// <summary>g as the facade takes it: [B, T, Hv], [B, T, Hv, K] or absent.</summary>
    public ReadOnlyTensorSpan<TElement> GateIn<TElement>(float[] g) where TElement : unmanaged => Gate switch
    {
        GateKind.PerHead => In<TElement>(g, Hv),
        GateKind.PerKey => In<TElement>(g, Hv, K),
        _ => default,
    };

    /// <summary>q, k, v, beta, g (empty for DeltaNet) and the initial state (zeros without one). Keys are unit rows unless the kernel normalizes them.</summary>
    public (float[] q, float[] k, float[] v, float[] beta, float[] g, float[] h0) Inputs()
    {
        var data = Data();
        long bt = (long)BatchDim * TotalT;
        var q = data.Normal(bt * Hq * K).Select(x => x * QkMagnitude).ToArray();
        var k = (QkL2Norm ? data.Normal(bt * Hk * K, 3.0) : data.UnitRows(bt * Hk, K)).Select(x => x * QkMagnitude).ToArray();
        var v = data.Normal(bt * Hv * V);
        var beta = Beta == BetaKind.One ? Enumerable.Repeat(1f, (int)(bt * Hv)).ToArray() : data.Uniform(bt * Hv, 0.02, 0.98);
        var g = LogGates(data, bt * GatePerToken, GateScale);
        var h0 = WithInitialState ? data.Normal((long)Sequences * Hv * K * V, 0.5) : new float[(long)Sequences * Hv * K * V];
        return (Rounded(q), Rounded(k), Rounded(v), Rounded(beta), Rounded(g), h0);
    }

    public override IReadOnlyDictionary<string, double[]> Reference()
    {
        var (q, k, v, beta, g, h0) = Inputs();
        var o = new double[OutputLength];
        var s = TestData.ToDouble(h0);
        DeltaRuleReference.Forward(Config, Layout, q, k, v, beta, g, o, s);
        return new Dictionary<string, double[]> { ["output"] = o, ["final_state"] = s };
    }

    protected override IReadOnlyDictionary<string, float[]> Run<TElement>(EngineDevice device)
    {
        var (q, k, v, beta, g, h0) = Inputs();
        var output = NaNOutput<TElement>(OutputLength);
        var finalState = Numerics.NaNs((long)Sequences * Hv * K * V);
        Engine.DeltaRule.Forward(device, In<TElement>(q, Hq, K), In<TElement>(k, Hk, K), In<TElement>(v, Hv, V),
            In<TElement>(beta, Hv), GateIn<TElement>(g), Out(output),
            WithInitialState ? new ReadOnlyTensorSpan<float>(h0, StateShape) : default,
            new TensorSpan<float>(finalState, StateShape), CuSeqlens, Options);
        return new Dictionary<string, float[]> { ["output"] = ToFloat(output), ["final_state"] = finalState };
    }
}

public static class DeltaRuleCases
{
    /// <summary>DeltaNet, Gated DeltaNet, and the delta rule with a per-key gate.</summary>
    public static readonly GateKind[] Gates = [GateKind.None, GateKind.PerHead, GateKind.PerKey];

    public static IEnumerable<OpCase> All
    {
        get
        {
            // The issue's shapes, DeltaNet and Gated DeltaNet.
            foreach (var gate in Gates)
            {
                yield return new DeltaRuleCase { B = 1, T = 63, K = 64, V = 64, Gate = gate };
                yield return new DeltaRuleCase { B = 2, T = 100, Hq = 4, Hkv = 4, K = 60, V = 60, Gate = gate, WithInitialState = true };
                yield return new DeltaRuleCase { B = 2, T = 1000, Hq = 3, Hkv = 3, K = 128, V = 128, Gate = gate };
            }
            yield return new DeltaRuleCase { B = 2, T = 1024, Hq = 4, Hkv = 4, K = 128, V = 128, QkL2Norm = true, WithInitialState = true };
            yield return new DeltaRuleCase { B = 2, T = 1024, Hq = 4, Hkv = 4, K = 128, V = 128, QkL2Norm = true, Gate = GateKind.None };
            // beta in (0, 1) and beta = 1; gate strengths.
            foreach (var gate in Gates)
                foreach (var beta in new[] { BetaKind.Open, BetaKind.One })
                    yield return new DeltaRuleCase { B = 1, T = 150, Hq = 2, Hkv = 2, K = 32, V = 48, Gate = gate, Beta = beta, WithInitialState = true };
            foreach (var strength in new[] { 0.1, 1.0, 10.0 })
                foreach (var gate in new[] { GateKind.PerHead, GateKind.PerKey })
                {
                    yield return new DeltaRuleCase { B = 1, T = 150, Hq = 2, Hkv = 2, K = 48, V = 32, Gate = gate, GateScale = strength, WithInitialState = true };
                    yield return new DeltaRuleCase { B = 1, T = 150, Hq = 2, Hkv = 2, K = 32, V = 48, Gate = gate, GateScale = strength, Beta = BetaKind.One, Mode = AttentionMode.Recurrent };
                }
            // Chunk sizes, grouped heads, explicit scale, recurrent mode, edge lengths.
            foreach (var chunk in new[] { 16, 32, 64 })
                foreach (var gate in Gates)
                    yield return new DeltaRuleCase { B = 1, T = 100, Hq = 2, Hkv = 2, K = 32, V = 32, Chunk = chunk, Gate = gate, WithInitialState = true };
            yield return new DeltaRuleCase { B = 2, T = 77, Hq = 4, Hkv = 2, K = 32, V = 16, WithInitialState = true };
            yield return new DeltaRuleCase { B = 2, T = 77, Hq = 6, Hkv = 2, K = 40, V = 24, Gate = GateKind.None, Scale = 0.5f, QkL2Norm = true };
            foreach (var gate in Gates)
                yield return new DeltaRuleCase { B = 2, T = 100, Hq = 4, Hkv = 2, K = 60, V = 60, Gate = gate, Mode = AttentionMode.Recurrent, WithInitialState = true, QkL2Norm = true };
            foreach (var t in new[] { 0, 1, 15, 17 })
                foreach (var gate in Gates)
                    yield return new DeltaRuleCase { B = 2, T = t, Hq = 2, Hkv = 2, K = 16, V = 16, Gate = gate, WithInitialState = true };
            // Packed sequences with empty and one-token members.
            foreach (var gate in Gates)
                foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                    yield return new DeltaRuleCase { SeqLens = [0, 1, 17, 64, 100, 0], Hq = 2, Hkv = 2, K = 32, V = 32, Gate = gate, Mode = mode, WithInitialState = true };
            // fp16 in and out.
            yield return new DeltaRuleCase { B = 2, T = 100, Hq = 4, Hkv = 4, K = 60, V = 60, Fp16 = true, WithInitialState = true };
            yield return new DeltaRuleCase { B = 1, T = 100, Hq = 4, Hkv = 2, K = 64, V = 64, Gate = GateKind.None, Fp16 = true, QkL2Norm = true };
            // Small shapes the simulated GPU runs too.
            foreach (var gate in Gates)
            {
                yield return new DeltaRuleCase { B = 2, T = 40, Hq = 2, Hkv = 1, K = 16, V = 20, Gate = gate, Chunk = 16, WithInitialState = true };
                yield return new DeltaRuleCase { B = 1, T = 70, Hq = 1, Hkv = 1, K = 16, V = 16, Gate = gate, Chunk = 64, QkL2Norm = true, Beta = BetaKind.One };
                yield return new DeltaRuleCase { B = 1, T = 21, Hq = 2, Hkv = 2, K = 8, V = 12, Gate = gate, Chunk = 16, Mode = AttentionMode.Recurrent, WithInitialState = true };
                foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                    yield return new DeltaRuleCase { SeqLens = [0, 1, 5, 19], Hq = 1, Hkv = 1, K = 16, V = 16, Gate = gate, Chunk = 16, Mode = mode, WithInitialState = true };
            }
            foreach (var gate in new[] { GateKind.PerHead, GateKind.PerKey })
                yield return new DeltaRuleCase { B = 1, T = 40, Hq = 1, Hkv = 1, K = 16, V = 16, Chunk = 32, Gate = gate, GateScale = 10.0 };
            yield return new DeltaRuleCase { B = 1, T = 100, Hq = 4, Hkv = 2, K = 64, V = 64, Gate = GateKind.PerKey, Fp16 = true, WithInitialState = true };
            yield return new DeltaRuleCase { B = 1, T = 33, Hq = 2, Hkv = 2, K = 16, V = 16, Chunk = 16, Fp16 = true };
            // Grouped value heads (Qwen3-Next/3.5): m value heads per query/key head, every gate form, both modes, small enough
            // for the simulated GPU; then packed sequences, real head dims (with in-kernel L2 normalization) and fp16 on the CPU.
            foreach (int m in new[] { 2, 4 })
                foreach (var gate in Gates)
                {
                    yield return new DeltaRuleCase { B = 1, T = 37, Hq = 1, Hkv = 1, ValueGroup = m, K = 16, V = 12, Gate = gate, Chunk = 16, WithInitialState = true };
                    yield return new DeltaRuleCase { B = 1, T = 21, Hq = 1, Hkv = 1, ValueGroup = m, K = 8, V = 12, Gate = gate, Chunk = 16, Mode = AttentionMode.Recurrent, WithInitialState = true };
                }
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                yield return new DeltaRuleCase { SeqLens = [0, 1, 17, 64, 100, 0], Hq = 2, Hkv = 2, ValueGroup = 2, K = 32, V = 32, Mode = mode, WithInitialState = true };
            foreach (var gate in Gates)
                yield return new DeltaRuleCase { B = 2, T = 150, Hq = 2, Hkv = 2, ValueGroup = 2, K = 64, V = 64, Gate = gate, QkL2Norm = true, WithInitialState = true };
            yield return new DeltaRuleCase { B = 1, T = 100, Hq = 2, Hkv = 2, ValueGroup = 4, K = 64, V = 64, Fp16 = true, QkL2Norm = true, WithInitialState = true };
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
                    yield return new DeltaRuleCase { B = 1, T = 37, Hq = 2, Hkv = 2, K = 16, V = 12, Gate = gate, Chunk = 16, Mode = mode, QkL2Norm = true, QkMagnitude = 1e20f, WithInitialState = true };
            foreach (var extreme in AttentionCase.ExtremeGates)
                foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
                    yield return new DeltaRuleCase { B = 1, T = 45, Hq = 1, Hkv = 1, K = 16, V = 12, Gate = gate, Chunk = 64, WithInitialState = true, ExtremeGate = extreme.Gate, ExtremeEvery = extreme.Every };
        }
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;

namespace Engine.Tests.Gla;

/// <summary>A GLA call: shape, gate form and strength, chunk, mode, element type, state and packing.</summary>
public sealed class GlaCase : AttentionCase
{
    public GateKind Gate { get; init; } = GateKind.PerKey;
    public double GateScale { get; init; } = 1.0;
    public int Chunk { get; init; } = 64;
    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;
    public bool WithInitialState { get; init; }
    public float? Scale { get; init; }

    public override bool Small => SmallOverride ?? (long)B * T * Ho * Math.Max(K, V) <= 20_000;

    public override string Name =>
        $"gla {Gate} {Batch} {HeadCounts} K{K} V{V} gate×{GateScale} C{Chunk} {Mode}" +
        (Fp16 ? " fp16" : "") + (WithInitialState ? " h0" : "") + (Scale is null ? "" : $" scale{Scale}") + Extreme;

    private (float[] q, float[] k, float[] v, float[] g, float[] h0) Inputs()
    {
        var data = Data();
        long bt = (long)BatchDim * TotalT;
        var q = data.Normal(bt * Hq * K);
        var k = data.UnitRows(bt * Hk, K);
        var v = data.Normal(bt * Hv * V);
        var g = Gate switch
        {
            GateKind.PerKey => LogGates(data, bt * Hv * K, GateScale),
            GateKind.PerHead => LogGates(data, bt * Hv, GateScale),
            _ => [],
        };
        var h0 = WithInitialState ? data.Normal((long)Sequences * Hv * K * V, 0.5) : new float[(long)Sequences * Hv * K * V];
        return (Rounded(q), Rounded(k), Rounded(v), Rounded(g), h0);
    }

    public override IReadOnlyDictionary<string, double[]> Reference()
    {
        var (q, k, v, g, h0) = Inputs();
        var config = new GlaConfig(Heads, Gate, Scale ?? 1f / MathF.Sqrt(K), Chunk);
        var o = new double[OutputLength];
        var s = TestData.ToDouble(h0);
        GlaReference.Forward(config, Layout, q, k, v, g, o, s);
        return new Dictionary<string, double[]> { ["output"] = o, ["final_state"] = s };
    }

    protected override IReadOnlyDictionary<string, float[]> Run<TElement>(EngineDevice device)
    {
        var (q, k, v, g, h0) = Inputs();
        var output = NaNOutput<TElement>(OutputLength);
        var finalState = Numerics.NaNs((long)Sequences * Hv * K * V);
        Engine.Gla.Forward(device, In<TElement>(q, Hq, K), In<TElement>(k, Hk, K), In<TElement>(v, Hv, V),
            Gate switch { GateKind.PerKey => In<TElement>(g, Hv, K), GateKind.PerHead => In<TElement>(g, Hv), _ => default },
            Out(output), WithInitialState ? new ReadOnlyTensorSpan<float>(h0, StateShape) : default,
            new TensorSpan<float>(finalState, StateShape), CuSeqlens, new GlaOptions { ChunkSize = Chunk, Mode = Mode, Scale = Scale });
        return new Dictionary<string, float[]> { ["output"] = ToFloat(output), ["final_state"] = finalState };
    }
}

public static class GlaCases
{
    public static IEnumerable<OpCase> All
    {
        get
        {
            // The shapes, per-key gates, on the CPU path.
            yield return new GlaCase { B = 1, T = 63, K = 64, V = 64 };
            yield return new GlaCase { B = 2, T = 100, Hq = 4, Hkv = 4, K = 60, V = 60, WithInitialState = true };
            yield return new GlaCase { B = 2, T = 1000, Hq = 3, Hkv = 3, K = 128, V = 128 };
            // Gate forms and strengths (no gate has no strength).
            foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead, GateKind.None })
            {
                yield return new GlaCase { B = 2, T = 100, Hq = 4, Hkv = 4, K = 60, V = 60, Gate = gate, WithInitialState = true };
                foreach (var strength in gate == GateKind.None ? [1.0] : new[] { 0.1, 1.0, 10.0 })
                    yield return new GlaCase { B = 1, T = 150, Hq = 2, Hkv = 2, K = 32, V = 48, Gate = gate, GateScale = strength, WithInitialState = true };
            }
            // Chunk sizes, grouped heads, explicit scale, recurrent mode, edge lengths.
            foreach (var chunk in new[] { 16, 32, 64 })
                yield return new GlaCase { B = 1, T = 100, Hq = 2, Hkv = 2, K = 32, V = 32, Chunk = chunk };
            // The chunks past 64 (Lightning's blocks), which GLA takes too: whole chunks and a partial one, both gate forms.
            foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
                foreach (var chunk in new[] { 128, 256 })
                    yield return new GlaCase { B = 1, T = 300, Hq = 2, Hkv = 2, K = 16, V = 16, Gate = gate, Chunk = chunk, WithInitialState = true };
            yield return new GlaCase { B = 2, T = 77, Hq = 4, Hkv = 2, K = 32, V = 16, WithInitialState = true };
            yield return new GlaCase { B = 2, T = 77, Hq = 4, Hkv = 2, K = 32, V = 16, Gate = GateKind.PerHead, Scale = 0.5f };
            foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead, GateKind.None })
            {
                yield return new GlaCase { B = 2, T = 100, Hq = 4, Hkv = 2, K = 60, V = 60, Gate = gate, Mode = AttentionMode.Recurrent, WithInitialState = true };
                // Head dims that are whole vectors: decode updates the caller's state in place.
                yield return new GlaCase { B = 2, T = 50, Hq = 6, Hkv = 3, K = 32, V = 80, Gate = gate, Mode = AttentionMode.Recurrent, WithInitialState = true };
            }
            foreach (var t in new[] { 0, 1, 15, 17 })
                yield return new GlaCase { B = 2, T = t, Hq = 2, Hkv = 2, K = 16, V = 16, WithInitialState = true };
            // Packed sequences with empty and one-token members.
            foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
            {
                yield return new GlaCase { SeqLens = [0, 1, 17, 64, 100], Hq = 2, Hkv = 2, K = 32, V = 32, Gate = gate, WithInitialState = true };
                yield return new GlaCase { SeqLens = [0, 1, 17, 64, 100], Hq = 2, Hkv = 2, K = 32, V = 32, Gate = gate, WithInitialState = true, Mode = AttentionMode.Recurrent };
            }
            // fp16 in and out.
            yield return new GlaCase { B = 2, T = 100, Hq = 4, Hkv = 4, K = 60, V = 60, Fp16 = true, WithInitialState = true };
            yield return new GlaCase { B = 1, T = 100, Hq = 2, Hkv = 2, K = 64, V = 64, Gate = GateKind.PerHead, Fp16 = true };
            // Small shapes the simulated GPU runs too.
            foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead, GateKind.None })
            {
                yield return new GlaCase { B = 2, T = 40, Hq = 2, Hkv = 1, K = 16, V = 16, Gate = gate, Chunk = 16, WithInitialState = true };
                yield return new GlaCase { B = 1, T = 21, Hq = 2, Hkv = 2, K = 8, V = 12, Gate = gate, Chunk = 16, Mode = AttentionMode.Recurrent, WithInitialState = true };
                yield return new GlaCase { SeqLens = [0, 1, 5, 19], Hq = 1, Hkv = 1, K = 16, V = 16, Gate = gate, Chunk = 16, WithInitialState = true };
            }
            yield return new GlaCase { B = 1, T = 33, Hq = 2, Hkv = 2, K = 16, V = 16, Chunk = 16, Fp16 = true };
            // Head dims that are not multiples of 4 or of the GPU tiles, three query heads per kv head, many chunks per sequence.
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
            {
                yield return new GlaCase { B = 2, T = 37, Hq = 3, Hkv = 1, K = 6, V = 5, Chunk = 16, Mode = mode, WithInitialState = true };
                yield return new GlaCase { B = 1, T = 29, Hq = 6, Hkv = 2, K = 12, V = 7, Gate = GateKind.PerHead, Chunk = 16, Mode = mode, WithInitialState = true };
            }
            yield return new GlaCase { SeqLens = [130, 3, 0, 67], Hq = 2, Hkv = 1, K = 8, V = 8, Chunk = 16, GateScale = 10, WithInitialState = true };
            yield return new GlaCase { SeqLens = [130, 3, 0, 67], Hq = 2, Hkv = 1, K = 36, V = 40, Gate = GateKind.PerHead, Chunk = 32, WithInitialState = true };
            // Grouped value heads (Qwen3-Next/3.5): m value heads per query/key head, every gate form, both modes, small enough
            // for the simulated GPU; then packed sequences, real head dims and fp16 on the CPU.
            foreach (int m in new[] { 2, 4 })
                foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead, GateKind.None })
                {
                    yield return new GlaCase { B = 2, T = 37, Hq = 2, Hkv = 2, ValueGroup = m, K = 16, V = 12, Gate = gate, Chunk = 16, WithInitialState = true };
                    yield return new GlaCase { B = 1, T = 21, Hq = 1, Hkv = 1, ValueGroup = m, K = 8, V = 12, Gate = gate, Chunk = 16, Mode = AttentionMode.Recurrent, WithInitialState = true };
                }
            yield return new GlaCase { SeqLens = [0, 1, 17, 64, 100], Hq = 2, Hkv = 2, ValueGroup = 2, K = 32, V = 32, Gate = GateKind.PerHead, WithInitialState = true };
            yield return new GlaCase { B = 2, T = 150, Hq = 2, Hkv = 2, ValueGroup = 2, K = 64, V = 64, WithInitialState = true };
            yield return new GlaCase { B = 2, T = 100, Hq = 2, Hkv = 2, ValueGroup = 2, K = 64, V = 48, Mode = AttentionMode.Recurrent, WithInitialState = true };
            yield return new GlaCase { B = 1, T = 100, Hq = 2, Hkv = 2, ValueGroup = 2, K = 64, V = 64, Gate = GateKind.PerHead, Fp16 = true, WithInitialState = true };
            foreach (var extreme in AttentionCase.ExtremeGates)
                foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
                    yield return new GlaCase { B = 1, T = 45, Hq = 2, Hkv = 2, K = 16, V = 12, Gate = gate, Chunk = 64, WithInitialState = true, ExtremeGate = extreme.Gate, ExtremeEvery = extreme.Every };
        }
    }
}

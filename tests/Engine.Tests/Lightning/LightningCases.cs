using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;

namespace Engine.Tests.Lightning;

/// <summary>A Lightning attention call: shape, slopes (schedule or given), block size, mode, element type.</summary>
public sealed class LightningCase : AttentionCase
{
    public LightningCase() { Hq = Hkv = 8; }

    /// <summary>Heads (query and key/value alike; query and key with a value group).</summary>
    public int H { get => Hq; init => Hq = Hkv = value; }
    public int Block { get; init; } = 64;
    public float? ConstantSlope { get; init; }
    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;

    public override bool Small => SmallOverride ?? false;

    public override string Name =>
        $"lightning {Batch} {(ValueGroup == 1 ? $"H{H}" : HeadCounts)} K{K} V{V} block{Block} {Mode}" + (ConstantSlope is null ? "" : $" slope{ConstantSlope}") + (Fp16 ? " fp16" : "");

    public float[] Slopes => ConstantSlope is float s ? Enumerable.Repeat(s, Hv).ToArray() : Engine.Lightning.Slopes(Hv);

    private (float[] q, float[] k, float[] v, float[] h0) Inputs()
    {
        var data = Data();
        long rows = (long)BatchDim * TotalT * H;
        var q = data.Normal(rows * K, 1 / Math.Sqrt(K));
        var k = data.Normal(rows * K, 1 / Math.Sqrt(K));
        var v = data.Normal(rows * ValueGroup * V);
        var h0 = data.Normal((long)Sequences * Hv * K * V, 0.5);
        return (Rounded(q), Rounded(k), Rounded(v), h0);
    }

    public override IReadOnlyDictionary<string, double[]> Reference()
    {
        var (q, k, v, h0) = Inputs();
        var config = new GlaConfig(Heads, GateKind.Constant, 1f, Block, Slopes.Select(s => -s).ToArray());
        var o = new double[OutputLength];
        var s = TestData.ToDouble(h0);
        GlaReference.Forward(config, Layout, q, k, v, [], o, s);
        return new Dictionary<string, double[]> { ["output"] = o, ["final_state"] = s };
    }

    protected override IReadOnlyDictionary<string, float[]> Run<TElement>(EngineDevice device)
    {
        var (q, k, v, h0) = Inputs();
        var output = NaNOutput<TElement>(OutputLength);
        var finalState = Numerics.NaNs((long)Sequences * Hv * K * V);
        var options = new LightningOptions { BlockSize = Block, Mode = Mode, Slopes = ConstantSlope is null ? null : Slopes };
        Engine.Lightning.Forward(device, In<TElement>(q, H, K), In<TElement>(k, H, K), In<TElement>(v, Hv, V), Out(output),
            new ReadOnlyTensorSpan<float>(h0, StateShape), new TensorSpan<float>(finalState, StateShape), CuSeqlens, options);
        return new Dictionary<string, float[]> { ["output"] = ToFloat(output), ["final_state"] = finalState };
    }
}

public static class LightningCases
{
    public static IEnumerable<OpCase> All
    {
        get
        {
            foreach (var t in new[] { 1, 63, 256, 513, 1213 })
                yield return new LightningCase { T = t, H = 8, K = 64, V = 64 };
            foreach (var t in new[] { 63, 513 })
                yield return new LightningCase { T = t, H = 12, K = 16, V = 32, Block = 256 };
            yield return new LightningCase { B = 2, T = 300, H = 8, K = 128, V = 128, Block = 256 };
            yield return new LightningCase { B = 2, T = 300, H = 12, K = 128, V = 64 };
            yield return new LightningCase { T = 513, H = 8, K = 16, V = 16, Block = 64, ConstantSlope = 8f };
            yield return new LightningCase { T = 200, H = 8, K = 16, V = 16, Block = 64, Mode = AttentionMode.Recurrent };
            yield return new LightningCase { SeqLens = [0, 1, 63, 64, 130], H = 8, K = 16, V = 16, Block = 64 };
            yield return new LightningCase { SeqLens = [0, 1, 63, 64, 130], H = 8, K = 16, V = 16, Block = 256, Mode = AttentionMode.Recurrent };
            yield return new LightningCase { B = 2, T = 257, H = 8, K = 64, V = 64, Block = 256, Fp16 = true };
            // Small shapes the simulated GPU runs too.
            yield return new LightningCase { B = 2, T = 40, H = 2, K = 16, V = 16, Block = 16, SmallOverride = true };
            yield return new LightningCase { B = 1, T = 20, H = 2, K = 8, V = 8, Block = 16, Mode = AttentionMode.Recurrent, SmallOverride = true };
            yield return new LightningCase { SeqLens = [0, 1, 21], H = 2, K = 16, V = 16, Block = 16, SmallOverride = true };
            // Grouped value heads: m slopes per query/key head, both modes, small enough for the simulated GPU.
            foreach (int m in new[] { 2, 4 })
            {
                yield return new LightningCase { B = 2, T = 40, H = 1, ValueGroup = m, K = 16, V = 12, Block = 16, SmallOverride = true };
                yield return new LightningCase { B = 1, T = 20, H = 1, ValueGroup = m, K = 8, V = 8, Block = 16, Mode = AttentionMode.Recurrent, SmallOverride = true };
            }
            yield return new LightningCase { B = 2, T = 300, H = 4, ValueGroup = 2, K = 64, V = 64, Block = 64 };
        }
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Gla;
using Engine.Tests.Harness;

namespace Engine.Tests.Lightning;

/// <summary>A Lightning attention call: shape, slopes (schedule or given), block size, mode, element type.</summary>
public sealed class LightningCase : OpCase
{
    public int B { get; init; } = 1;
    public int T { get; init; }
    public int H { get; init; } = 8;
    public int K { get; init; }
    public int V { get; init; }
    public int Block { get; init; } = 64;
    public float? ConstantSlope { get; init; }
    public AttentionMode Mode { get; init; } = AttentionMode.Chunked;
    public bool Fp16 { get; init; }
    public int[]? SeqLens { get; init; }
    public bool? SmallOverride { get; init; }

    public override bool Half => Fp16;
    public override bool Small => SmallOverride ?? false;

    public override string Name =>
        $"lightning {(SeqLens is null ? $"B{B} T{T}" : $"varlen[{string.Join(",", SeqLens)}]")} H{H} K{K} V{V} block{Block} {Mode}" +
        (ConstantSlope is null ? "" : $" slope{ConstantSlope}") + (Fp16 ? " fp16" : "");

    private int Sequences => SeqLens?.Length ?? B;
    private int TotalT => SeqLens?.Sum() ?? T;
    private int BatchDim => SeqLens is null ? B : 1;
    private int[]? CuSeqlens => SeqLens is null ? null : [0, .. SeqLens.Select((_, i) => SeqLens.Take(i + 1).Sum())];
    public float[] Slopes => ConstantSlope is float s ? Enumerable.Repeat(s, H).ToArray() : Engine.Lightning.Slopes(H);

    private (float[] q, float[] k, float[] v, float[] h0) Inputs()
    {
        var data = new TestData(GlaCase.StableSeed(Name));
        long rows = (long)BatchDim * TotalT * H;
        var q = data.Normal(rows * K, 1 / Math.Sqrt(K));
        var k = data.Normal(rows * K, 1 / Math.Sqrt(K));
        var v = data.Normal(rows * V);
        var h0 = data.Normal((long)Sequences * H * K * V, 0.5);
        if (Fp16) { q = TestData.RoundToHalf(q); k = TestData.RoundToHalf(k); v = TestData.RoundToHalf(v); }
        return (q, k, v, h0);
    }

    public override IReadOnlyDictionary<string, double[]> Reference()
    {
        var (q, k, v, h0) = Inputs();
        var config = new GlaConfig(new HeadLayout(H, H, K, V), GateKind.Constant, 1f, Block, Slopes.Select(s => -s).ToArray());
        var layout = SeqLens is null ? SequenceLayout.Dense(B, T) : SequenceLayout.Packed(CuSeqlens, TotalT);
        var o = new double[(long)BatchDim * TotalT * H * V];
        var s = TestData.ToDouble(h0);
        GlaReference.Forward(config, layout, q, k, v, [], o, s);
        return new Dictionary<string, double[]> { ["output"] = o, ["final_state"] = s };
    }

    public override IReadOnlyDictionary<string, float[]> Run(EngineDevice device)
    {
        var (q, k, v, h0) = Inputs();
        int b = BatchDim, t = TotalT;
        var options = new LightningOptions { BlockSize = Block, Mode = Mode, Slopes = ConstantSlope is null ? null : Slopes };
        var finalState = Numerics.NaNs((long)Sequences * H * K * V);
        nint[] stateShape = [Sequences, H, K, V];
        float[] output;
        if (Fp16)
        {
            var o = Enumerable.Repeat(System.Half.NaN, b * t * H * V).ToArray();
            Engine.Lightning.Forward<System.Half>(device,
                new ReadOnlyTensorSpan<System.Half>(TestData.ToHalf(q), [b, t, H, K]), new ReadOnlyTensorSpan<System.Half>(TestData.ToHalf(k), [b, t, H, K]),
                new ReadOnlyTensorSpan<System.Half>(TestData.ToHalf(v), [b, t, H, V]), new TensorSpan<System.Half>(o, [b, t, H, V]),
                new ReadOnlyTensorSpan<float>(h0, stateShape), new TensorSpan<float>(finalState, stateShape), CuSeqlens, options);
            output = TestData.FromHalf(o);
        }
        else
        {
            output = Numerics.NaNs((long)b * t * H * V);
            Engine.Lightning.Forward<float>(device,
                new ReadOnlyTensorSpan<float>(q, [b, t, H, K]), new ReadOnlyTensorSpan<float>(k, [b, t, H, K]),
                new ReadOnlyTensorSpan<float>(v, [b, t, H, V]), new TensorSpan<float>(output, [b, t, H, V]),
                new ReadOnlyTensorSpan<float>(h0, stateShape), new TensorSpan<float>(finalState, stateShape), CuSeqlens, options);
        }
        return new Dictionary<string, float[]> { ["output"] = output, ["final_state"] = finalState };
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
        }
    }
}

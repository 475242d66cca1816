using System.Numerics.Tensors;
using Engine.Kernels.Common;

namespace Engine.Tests.Harness;

/// <summary>
/// What the attention ops' cases share: batch or packed sequences, heads and dims, element type, and the
/// tensors of a call built in the element type the case runs in (fp16 cases round their inputs first, so the
/// reference sees the same values). Heads: Hq query heads over Hkv key/value heads, or, with a value group m > 1,
/// Hq = Hkv query/key heads and m·Hkv value heads (grouped value heads).
/// </summary>
public abstract class AttentionCase : OpCase
{
    public int B { get; init; } = 1;
    public int T { get; init; }
    public int Hq { get; init; } = 1;
    public int Hkv { get; init; } = 1;
    /// <summary>Value heads per key head (grouped value heads).</summary>
    public int ValueGroup { get; init; } = 1;
    public int K { get; init; }
    public int V { get; init; }
    public bool Fp16 { get; init; }
    public int[]? SeqLens { get; init; }
    public bool? SmallOverride { get; init; }
    /// <summary>Every <see cref="ExtremeEvery"/>-th log gate set to this (fp32 cases): a reset (−1e30), sums past fp32's range (−1e37).</summary>
    public float? ExtremeGate { get; init; }
    public int ExtremeEvery { get; init; } = 1;

    /// <summary>
    /// Valid log gates a chunk's running sum cannot hold: a reset now and then among ordinary gates (the later gates must not be
    /// absorbed into the sum), and gates whose sum over a chunk passes fp32's range.
    /// </summary>
    public static readonly (float Gate, int Every)[] ExtremeGates = [(-1e30f, 7), (-1e37f, 1), (-float.MaxValue, 3)];

    /// <summary>" g=-1E+030/7" for names.</summary>
    protected string Extreme => ExtremeGate is float x ? $" g={x:E0}/{ExtremeEvery}" : "";

    public override bool Half => Fp16;

    public int Hk => Hkv;
    public int Hv => Hkv * ValueGroup;
    /// <summary>Output heads: max(Hq, Hv).</summary>
    public int Ho => Math.Max(Hq, Hv);
    public HeadLayout Heads => new(Hq, Hk, Hv, K, V);

    /// <summary>"B2 T100" or "varlen[0,1,17]" for names.</summary>
    protected string Batch => SeqLens is null ? $"B{B} T{T}" : $"varlen[{string.Join(",", SeqLens)}]";

    /// <summary>"H4/2" (query over key/value heads) or "H2/2/4" (query, key and value heads) for names.</summary>
    protected string HeadCounts => ValueGroup == 1 ? $"H{Hq}/{Hkv}" : $"H{Hq}/{Hk}/{Hv}";

    public int Sequences => SeqLens?.Length ?? B;
    public int TotalT => SeqLens?.Sum() ?? T;
    public int BatchDim => SeqLens is null ? B : 1;
    public int[]? CuSeqlens => SeqLens is null ? null : [0, .. SeqLens.Select((_, i) => SeqLens.Take(i + 1).Sum())];
    public SequenceLayout Layout => SeqLens is null ? SequenceLayout.Dense(B, T) : SequenceLayout.Packed(CuSeqlens, TotalT);

    public nint[] StateShape => [Sequences, Hv, K, V];
    public long OutputLength => (long)BatchDim * TotalT * Ho * V;

    /// <summary>The generator of this case's inputs: its seed follows its name, the same in every process.</summary>
    protected TestData Data() => new(StableSeed(Name));

    /// <summary>Log gates of the given strength, every <see cref="ExtremeEvery"/>-th one (flat index) <see cref="ExtremeGate"/> when given.</summary>
    protected float[] LogGates(TestData data, long length, double scale)
    {
        var g = data.LogGates(length, scale);
        if (ExtremeGate is float x)
            for (long i = 0; i < length; i += ExtremeEvery) g[i] = x;
        return g;
    }

    /// <summary>Rounds an input through fp16 when the case runs in fp16.</summary>
    protected float[] Rounded(float[] a) => Fp16 ? TestData.RoundToHalf(a) : a;

    /// <summary>An input tensor [B, T, ...dims] in the case's element type.</summary>
    protected ReadOnlyTensorSpan<TElement> In<TElement>(float[] values, params nint[] dims) where TElement : unmanaged =>
        new(Elements<TElement>(values), [BatchDim, TotalT, .. dims]);

    /// <summary>The output [B, T, max(Hq, Hv), V] in the case's element type, every element NaN until a kernel writes it.</summary>
    protected static TElement[] NaNOutput<TElement>(long length) where TElement : unmanaged =>
        Elements<TElement>(Numerics.NaNs(length));

    protected TensorSpan<TElement> Out<TElement>(TElement[] output) where TElement : unmanaged => new(output, [BatchDim, TotalT, Ho, V]);

    protected static float[] ToFloat<TElement>(TElement[] values) where TElement : unmanaged =>
        values is Half[] h ? TestData.FromHalf(h) : (float[])(object)values;

    /// <summary>Runs the case's call in its element type (the op's own Run&lt;T&gt;).</summary>
    public sealed override IReadOnlyDictionary<string, float[]> Run(EngineDevice device) => Fp16 ? Run<Half>(device) : Run<float>(device);

    protected abstract IReadOnlyDictionary<string, float[]> Run<TElement>(EngineDevice device) where TElement : unmanaged;

    private static TElement[] Elements<TElement>(float[] values) where TElement : unmanaged =>
        typeof(TElement) == typeof(Half) ? (TElement[])(object)TestData.ToHalf(values) : (TElement[])(object)values;

    /// <summary>A seed that is the same in every process (string.GetHashCode is not).</summary>
    public static int StableSeed(string text)
    {
        unchecked
        {
            int h = (int)2166136261;
            foreach (char c in text) h = (h ^ c) * 16777619;
            return h & int.MaxValue;
        }
    }
}

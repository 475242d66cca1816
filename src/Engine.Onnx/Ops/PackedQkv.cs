using System.Numerics.Tensors;

namespace Engine.Onnx.Ops;

/// <summary>
/// The q, k and v parts of one packed projection output, each token's row [q (Hq·dk) | k (Hk·dk) | v (Hv·dv)], as strided
/// [B, T, H, d] views of it: the engine's CPU kernels read such rows where they lie.
/// </summary>
internal readonly ref struct PackedQkv<T> where T : unmanaged
{
    public ReadOnlyTensorSpan<T> Q { get; }
    public ReadOnlyTensorSpan<T> K { get; }
    public ReadOnlyTensorSpan<T> V { get; }

    public PackedQkv(ReadOnlySpan<T> rows, nint b, nint t, nint hq, nint hk, nint hv, nint dk, nint dv)
    {
        nint width = (nint)PackedQkv.Width(hq, hk, hv, dk, dv);
        if (rows.IsEmpty)
        {
            Q = StridedView.Dense(rows, [b, t, hq, dk]);
            K = StridedView.Dense(rows, [b, t, hk, dk]);
            V = StridedView.Dense(rows, [b, t, hv, dv]);
            return;
        }
        Q = View(rows, b, t, hq, dk, width);
        K = View(rows[(int)(hq * dk)..], b, t, hk, dk, width);
        V = View(rows[(int)((hq + hk) * dk)..], b, t, hv, dv, width);
    }

    private static ReadOnlyTensorSpan<T> View(ReadOnlySpan<T> rows, nint b, nint t, nint heads, nint d, nint width) =>
        new(rows, [b, t, heads, d], StridedView.Strides([b, t, heads, d], [t * width, width, d, 1]));
}

internal static class PackedQkv
{
    /// <summary>Floats in one packed row: Hq·dk + Hk·dk + Hv·dv.</summary>
    public static long Width(long hq, long hk, long hv, long dk, long dv) => (hq + hk) * dk + hv * dv;
}

/// <summary>Views into ORT's memory.</summary>
internal static class StridedView
{
    /// <summary>
    /// A dense view of <paramref name="lengths"/> over <paramref name="span"/>. An empty one (T = 0 or B = 0) points at one
    /// element it never reads: System.Numerics.Tensors refuses zero-length memory under a 0 axis.
    /// </summary>
    public static TensorSpan<T> Dense<T>(Span<T> span, nint[] lengths) =>
        span.IsEmpty ? new(Nothing<T>.Element, lengths, new nint[lengths.Length]) : new(span, lengths, []);

    /// <inheritdoc cref="Dense{T}(Span{T}, nint[])"/>
    public static ReadOnlyTensorSpan<T> Dense<T>(ReadOnlySpan<T> span, nint[] lengths) =>
        span.IsEmpty ? new(Nothing<T>.Element, lengths, new nint[lengths.Length]) : new(span, lengths, []);

    private static class Nothing<T>
    {
        public static readonly T[] Element = new T[1];
    }

    /// <summary>The strides with those of dims of length 1 set to 0: System.Numerics.Tensors bounds such a dim by its stride.</summary>
    public static nint[] Strides(nint[] lengths, nint[] strides)
    {
        for (int i = 0; i < lengths.Length; i++)
            if (lengths[i] == 1) strides[i] = 0;
        return strides;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// A vector of fp32 lanes of one width. Register-blocked loops (several accumulators live across a long loop)
/// are written once over it and run at the machine's width (<see cref="SimdWidths.Machine"/>): emulated
/// Vector512 halves double their register count and spill without AVX-512. Plain streaming loops stay on
/// Vector512, which runs as fast emulated as at 256 bits.
/// </summary>
public unsafe interface ILanes<TSelf> where TSelf : unmanaged, ILanes<TSelf>
{
    static abstract int Count { get; }
    static abstract TSelf Zero { get; }
    static abstract TSelf Load(float* p);
    static abstract TSelf Broadcast(float x);
    /// <summary>a · b + c, fused where the machine has FMA; without it a product and a sum, as a software FMA per lane is some 10× slower.</summary>
    static abstract TSelf Fma(TSelf a, TSelf b, TSelf c);
    static abstract TSelf operator *(TSelf a, TSelf b);
    static abstract TSelf operator +(TSelf a, TSelf b);
    static abstract TSelf operator -(TSelf a, TSelf b);
    static abstract float Sum(TSelf x);
    /// <summary>
    /// Column j of Count rows of n floats that lie one after the other from p: lane i is p[i·n + j]. Rows shorter than a
    /// vector are moved into place by shuffles of the rows' vectors (no gather), longer ones read lane by lane; reads
    /// nothing past the last row.
    /// </summary>
    static abstract TSelf Column(float* p, int n, int j);
    void Store(float* p);
}

public readonly unsafe struct Lanes256(Vector256<float> v) : ILanes<Lanes256>
{
    private readonly Vector256<float> _v = v;

    public static int Count => Vector256<float>.Count;
    public static Lanes256 Zero => default;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 Load(float* p) => new(Vector256.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 Broadcast(float x) => new(Vector256.Create(x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 Fma(Lanes256 a, Lanes256 b, Lanes256 c) => new(Vector256.MultiplyAddEstimate(a._v, b._v, c._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 operator *(Lanes256 a, Lanes256 b) => new(a._v * b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 operator +(Lanes256 a, Lanes256 b) => new(a._v + b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes256 operator -(Lanes256 a, Lanes256 b) => new(a._v - b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Lanes256 x) => Vector256.Sum(x._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes256 Column(float* p, int n, int j)
    {
        // Rows a vector or longer put each lane in its own vector: the shuffles below would visit every vector in between.
        if (n >= Count)
            return new(Vector256.Create(p[j], p[n + j], p[2L * n + j], p[3L * n + j], p[4L * n + j], p[5L * n + j], p[6L * n + j], p[7L * n + j]));
        // Lane i's value lies in vector (i·n + j) / Count; a shuffle index outside 0..Count − 1 gives zero.
        var index = Vector256<int>.Indices * n + Vector256.Create(j);
        var column = Vector256<float>.Zero;
        for (int m = j / Count, last = ((Count - 1) * n + j) / Count; m <= last; m++)
            column |= Vector256.Shuffle(Vector256.Load(p + m * Count), index - Vector256.Create(m * Count));
        return new(column);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Store(float* p) => _v.Store(p);
}

public readonly unsafe struct Lanes512(Vector512<float> v) : ILanes<Lanes512>
{
    private readonly Vector512<float> _v = v;

    public static int Count => Vector512<float>.Count;
    public static Lanes512 Zero => default;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 Load(float* p) => new(Vector512.Load(p));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 Broadcast(float x) => new(Vector512.Create(x));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 Fma(Lanes512 a, Lanes512 b, Lanes512 c) => new(Vector512.MultiplyAddEstimate(a._v, b._v, c._v));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 operator *(Lanes512 a, Lanes512 b) => new(a._v * b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 operator +(Lanes512 a, Lanes512 b) => new(a._v + b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Lanes512 operator -(Lanes512 a, Lanes512 b) => new(a._v - b._v);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static float Sum(Lanes512 x) => Vector512.Sum(x._v);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Lanes512 Column(float* p, int n, int j)
    {
        // Rows a vector or longer put each lane in its own vector: the shuffles below would visit every vector in between.
        if (n >= Count)
            return new(Vector512.Create(
                p[j], p[n + j], p[2L * n + j], p[3L * n + j], p[4L * n + j], p[5L * n + j], p[6L * n + j], p[7L * n + j],
                p[8L * n + j], p[9L * n + j], p[10L * n + j], p[11L * n + j], p[12L * n + j], p[13L * n + j], p[14L * n + j], p[15L * n + j]));
        // Lane i's value lies in vector (i·n + j) / Count; a shuffle index outside 0..Count − 1 gives zero.
        var index = Vector512<int>.Indices * n + Vector512.Create(j);
        var column = Vector512<float>.Zero;
        for (int m = j / Count, last = ((Count - 1) * n + j) / Count; m <= last; m++)
            column |= Vector512.Shuffle(Vector512.Load(p + m * Count), index - Vector512.Create(m * Count));
        return new(column);
    }
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public void Store(float* p) => _v.Store(p);
}

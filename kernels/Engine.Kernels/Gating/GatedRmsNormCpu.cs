using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gating;

/// <summary>
/// The gated RMS norm on the CPU in one pass over memory: a row's sum of squares and its gated, scaled output are both
/// computed while the row is in L1, 16 elements to a Vector512 register; blocks of rows are the work items.
/// </summary>
public static unsafe class GatedRmsNormCpu
{
    private const int Lanes = 16;
    /// <summary>Elements per work item (about 64 KB of x and z).</summary>
    private const int ItemElements = 8192;
    /// <summary>Gate elements activated at a time (four vectors).</summary>
    private const int GateBlock = 64;

    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> gate, ReadOnlySpan<float> scale, float epsilon, GateActivation activation,
        Span<float> output, IWorkScheduler scheduler)
    {
        int c = scale.Length;
        if (c < 1 || x.Length % c != 0 || gate.Length != x.Length || output.Length != x.Length)
            throw new ArgumentException("gated RMS norm: x, gate and output hold rows of scale's length");
        int rows = x.Length / c, rowsPerItem = Math.Max(1, ItemElements / c);
        fixed (float* xp = x, zp = gate, sp = scale, yp = output)
        {
            float* xs = xp, zs = zp, ss = sp, ys = yp;
            bool silu = activation == GateActivation.Silu;
            scheduler.Run((rows + rowsPerItem - 1) / rowsPerItem, (item, _) =>
            {
                int end = Math.Min(rows, (item + 1) * rowsPerItem);
                for (int row = item * rowsPerItem; row < end; row++) Row(xs + (long)row * c, zs + (long)row * c, ss, ys + (long)row * c, c, epsilon, silu);
            });
        }
    }

    /// <summary>y = x / sqrt(mean(x²) + epsilon) · scale · act(z) for one row of c; y may be x.</summary>
    [SkipLocalsInit] // the activation block is written before it is read; one call per row
    internal static void Row(float* x, float* z, float* scale, float* y, int c, float epsilon, bool silu)
    {
        float inverse = InverseRms(x, c, epsilon);
        if (!float.IsFinite(inverse))
        {
            // Only with epsilon 0 (or subnormal): a row whose mean square underflows is normalized as x/L over the RMS of
            // x/L, L its largest magnitude, written into y first; a zero row gives 0, the limit as epsilon goes to 0.
            float largest = MathF.Abs(TensorPrimitives.MaxMagnitude(new ReadOnlySpan<float>(x, c)));
            if (largest == 0f) inverse = 0f;
            else
            {
                TensorPrimitives.Divide(new ReadOnlySpan<float>(x, c), largest, new Span<float>(y, c));
                x = y;
                inverse = InverseRms(x, c, epsilon / largest / largest);
            }
        }
        var inv = Vector512.Create(inverse);
        int i;
        // The gate's activation a block at a time through the row form, which overlaps four sigmoids' latencies.
        float* act = stackalloc float[GateBlock];
        for (int b = 0; b < c; b += GateBlock)
        {
            int n = Math.Min(GateBlock, c - b);
            SimdMath.Sigmoid(z + b, act, n, silu);
            for (i = 0; i + Lanes <= n; i += Lanes)
                (Vector512.Load(x + b + i) * inv * Vector512.Load(scale + b + i) * Vector512.Load(act + i)).Store(y + b + i);
            for (; i < n; i++) y[b + i] = x[b + i] * inverse * scale[b + i] * act[i];
        }
    }

    /// <summary>
    /// 1 / sqrt(mean(x²) + epsilon). Where the sum of squares overflows fp32 (an element past about 1.8e19 / √c) the row's
    /// squares are summed divided by its largest magnitude, so a large finite row is normalized rather than zeroed.
    /// </summary>
    private static float InverseRms(float* x, int c, float epsilon)
    {
        var squares = Vector512<float>.Zero;
        int i = 0;
        for (; i + Lanes <= c; i += Lanes)
        {
            var v = Vector512.Load(x + i);
            squares = Vector512.MultiplyAddEstimate(v, v, squares);
        }
        float sum = Vector512.Sum(squares);
        for (; i < c; i++) sum = float.MultiplyAddEstimate(x[i], x[i], sum);
        if (float.IsFinite(sum)) return 1f / MathF.Sqrt(sum / c + epsilon);
        var row = new ReadOnlySpan<float>(x, c);
        float largest = MathF.Abs(TensorPrimitives.MaxMagnitude(row));
        float scaled = 0f;
        foreach (float value in row) scaled = float.MultiplyAddEstimate(value / largest, value / largest, scaled);
        return 1f / (largest * MathF.Sqrt(scaled / c + epsilon / largest / largest));
    }
}

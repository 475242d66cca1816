using System.Runtime.CompilerServices;
using Engine.Kernels.Common;

namespace Engine.Kernels.Conv;

/// <summary>
/// A row of a short causal convolution whose taps reach into the carried state (at decode, every row), before the
/// activation: y[c] = bias[c] + Σ_j w[c·K + j] · x_j[c], summed in tap order as the rows past the reach are, with the
/// weights channels first [channels, K] and each tap's inputs where they lie: a row of the activations, or a column of a
/// channels-first state. A vector of channels at a time, their weights and state columns moved into lanes by shuffles.
/// </summary>
public static unsafe class ReachRows
{
    /// <summary>Where tap j's inputs lie: channel c at At[c · Stride + Column]; a null At adds nothing (no state: zeros).</summary>
    public readonly struct Tap(float* at, int stride, int column)
    {
        public readonly float* At = at;
        public readonly int Stride = stride, Column = column;

        /// <summary>Channel c at row[c].</summary>
        public static Tap Row(float* row) => new(row, 1, 0);
    }

    /// <summary>
    /// y[0..width) from <paramref name="taps"/>[0..k); weights and bias (null: none) start at the row's first channel.
    /// <paramref name="vectors"/>: the machine's width by default (both run anywhere, for the tests).
    /// </summary>
    public static void Compute(float* y, int width, float* bias, float* weights, int k, Tap* taps, SimdWidth vectors = SimdWidth.Native)
    {
        if (vectors.Resolve() == SimdWidth.W512) Compute<Lanes512>(y, width, bias, weights, k, taps);
        else Compute<Lanes256>(y, width, bias, weights, k, taps);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Compute<TV>(float* y, int width, float* bias, float* weights, int k, Tap* taps) where TV : unmanaged, ILanes<TV>
    {
        int n = TV.Count, vectorEnd = width / n * n;
        // Tap by tap over the row, so each tap's shuffle indices are made once.
        for (int c = 0; c < vectorEnd; c += n) (bias == null ? TV.Zero : TV.Load(bias + c)).Store(y + c);
        for (int j = 0; j < k; j++)
        {
            var tap = taps[j];
            if (tap.At == null) continue;
            for (int c = 0; c < vectorEnd; c += n)
            {
                var x = tap.Stride == 1 ? TV.Load(tap.At + c) : TV.Column(tap.At + (long)c * tap.Stride, tap.Stride, tap.Column);
                TV.Fma(TV.Column(weights + (long)c * k, k, j), x, TV.Load(y + c)).Store(y + c);
            }
        }
        for (int c = vectorEnd; c < width; c++)
        {
            float sum = bias == null ? 0f : bias[c];
            for (int j = 0; j < k; j++)
                if (taps[j].At != null) sum = float.MultiplyAddEstimate(weights[(long)c * k + j], taps[j].At[(long)c * taps[j].Stride + taps[j].Column], sum);
            y[c] = sum;
        }
    }
}

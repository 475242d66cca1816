using System.Runtime.CompilerServices;

namespace Engine.Kernels.Lssl;

/// <summary>
/// The float64 oracle: the recurrence over the float64 discretized system, one step at a time.
///   x_k = Ā x_(k−1) + B̄ u_k,   y_k = C x_k + D u_k
/// u, y [B, L, H]; state [B, H, N]: the initial state on entry, the final state on return.
/// </summary>
public static class LsslReference
{
    // Fully optimized from the first call: tests run it on long sequences once.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Forward(LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<double> y, Span<double> state)
    {
        var config = system.Config;
        int h = config.Channels, n = config.StateSize;
        bool diagonal = config.IsDiagonal;
        double[] amI = system.AbarMinusI64.ToArray(), bbar = system.Bbar64.ToArray(), c = system.C64.ToArray(), d = system.D64.ToArray();
        var x = new double[n];
        var next = new double[n];
        for (int b = 0; b < batch; b++)
        {
            for (int ch = 0; ch < h; ch++)
            {
                state.Slice((b * h + ch) * n, n).CopyTo(x);
                for (int t = 0; t < length; t++)
                {
                    double ut = u[(b * length + t) * h + ch];
                    for (int i = 0; i < n; i++)
                    {
                        // Ā x = x + (Ā − I) x
                        double sum = x[i] + bbar[ch * n + i] * ut;
                        if (diagonal)
                        {
                            sum += amI[ch * n + i] * x[i];
                        }
                        else
                        {
                            int row = (ch * n + i) * n;
                            for (int k = 0; k < n; k++) sum += amI[row + k] * x[k];
                        }
                        next[i] = sum;
                    }
                    (x, next) = (next, x);
                    double yt = d[ch] * ut;
                    for (int i = 0; i < n; i++) yt += c[ch * n + i] * x[i];
                    y[(b * length + t) * h + ch] = yt;
                }
                x.CopyTo(state.Slice((b * h + ch) * n, n));
            }
        }
    }
}

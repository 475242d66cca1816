using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

/// <summary>
/// The convolution kernel K̄_l = C Āˡ B̄ of a system for l &lt; <see cref="Stride"/>, float64, channel h at
/// [h·Stride, (h + 1)·Stride). Immutable once built: a system hands the same instance to concurrent calls.
/// </summary>
public sealed class LsslConvKernel : ILengthBound
{
    private LsslConvKernel(double[] values, int stride)
    {
        Values = values;
        Stride = stride;
    }

    /// <summary>[H, Stride]</summary>
    public double[] Values { get; }

    /// <summary>Taps per channel: at least the length it was built for, a whole number of chunks.</summary>
    public int Stride { get; }

    public bool Serves(int length) => Stride >= length;

    public void Deconstruct(out double[] values, out int stride) => (values, stride) = (Values, Stride);

    /// <summary>
    /// Built by meeting in the middle: rows C Āⁱ (i &lt; Q) and the Krylov block Ā^(jQ) B̄ (j &lt; ⌈L/Q⌉, by doubling
    /// with the powers Ā^Q, Ā^2Q, Ā^4Q, …) give K̄_(jQ+i) as one [⌈L/Q⌉ × N]·[N × Q] product:
    /// O(N² (Q + L/Q) + N³ log(L/Q) + N L) per channel instead of the O(N² L) of stepping B̄ through every
    /// power. One work item per channel.
    /// </summary>
    public static LsslConvKernel Build(LsslSystem system, int length, IWorkScheduler scheduler)
    {
        var config = system.Config;
        int h = config.Channels, n = config.StateSize, q = config.ChunkLength;
        int blocks = Math.Max(1, (length + q - 1) / q);
        int stride = blocks * q;
        var values = new double[(long)h * stride];
        scheduler.Run(h, (ch, _) =>
        {
            double[] rows, giant;
            var bbar = system.Bbar64.Slice(ch * n, n);
            var c = system.C64.Slice(ch * n, n);
            if (config.IsDiagonal)
            {
                var amI = system.AbarMinusI64.Slice(ch * n, n);
                rows = new double[q * n];
                giant = new double[blocks * n];
                for (int k = 0; k < n; k++)
                {
                    double abar = 1.0 + amI[k], abarQ = Math.Pow(abar, q);
                    double r = c[k], g = bbar[k];
                    for (int i = 0; i < q; i++) { rows[i * n + k] = r; r *= abar; }
                    for (int j = 0; j < blocks; j++) { giant[j * n + k] = g; g *= abarQ; }
                }
            }
            else
            {
                var abar = system.Abar64(ch);
                var abarQ = Float64Matrix.Power(abar, n, q);
                rows = Krylov.Sequential(abar, n, c, q);
                giant = Krylov.Doubling(Float64Matrix.Transpose(abarQ, n, n), n, bbar, blocks);
            }
            Float64Matrix.Multiply(giant, Float64Matrix.Transpose(rows, q, n), values.AsSpan((int)((long)ch * stride), stride), blocks, n, q);
        });
        return new LsslConvKernel(values, stride);
    }
}

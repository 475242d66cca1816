using System.Numerics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

/// <summary>
/// The half spectra (FFT size <see cref="Size"/>) of every channel's convolution kernel for one sequence length,
/// and the FFT of that size: what the CPU's FFT convolution multiplies by. Immutable once built.
/// </summary>
public sealed class LsslConvSpectra : ILengthBound
{
    private LsslConvSpectra(int length, Radix2Fft fft, Complex[] half)
    {
        Length = length;
        Fft = fft;
        Half = half;
    }

    public int Length { get; }

    /// <summary>The transform of size <see cref="LsslCpu.FftSize"/>(<see cref="Length"/>).</summary>
    public Radix2Fft Fft { get; }

    public int Size => Fft.Size;

    /// <summary>[H, Size / 2 + 1]</summary>
    public Complex[] Half { get; }

    public bool Serves(int length) => Length == length;

    /// <summary>
    /// The first <paramref name="length"/> taps of the system's kernel (<see cref="LsslSystem.ConvKernel(int, IWorkScheduler)"/>),
    /// two channels per complex transform. One work item per channel pair, each transforming in its worker's buffer.
    /// </summary>
    public static LsslConvSpectra Build(LsslSystem system, int length, IWorkScheduler scheduler)
    {
        var kernel = system.ConvKernel(length, scheduler);
        var fft = new Radix2Fft(LsslCpu.FftSize(length));
        int h = system.Config.Channels, size = fft.Size, half = size / 2 + 1, stride = kernel.Stride;
        var taps = kernel.Values;
        var spectra = new Complex[(long)h * half];
        var buffers = new Complex[Math.Min(scheduler.Workers, (h + 1) / 2)][];
        scheduler.Run((h + 1) / 2, (pair, worker) =>
        {
            int h1 = 2 * pair, h2 = h1 + 1 < h ? h1 + 1 : -1;
            var z = buffers[worker] ??= new Complex[size];
            for (int t = 0; t < length; t++)
                z[t] = new Complex(taps[(long)h1 * stride + t], h2 < 0 ? 0.0 : taps[(long)h2 * stride + t]);
            Array.Clear(z, length, size - length);
            fft.Forward(z);
            // Two real sequences in one complex FFT: K1[k] = (Z[k] + conj Z[−k]) / 2, K2[k] = (Z[k] − conj Z[−k]) / 2i.
            for (int k = 0; k < half; k++)
            {
                Complex zk = z[k], zm = Complex.Conjugate(z[(size - k) & (size - 1)]);
                spectra[(long)h1 * half + k] = (zk + zm) * 0.5;
                if (h2 >= 0) spectra[(long)h2 * half + k] = (zk - zm) * new Complex(0, -0.5);
            }
        });
        return new LsslConvSpectra(length, fft, spectra);
    }
}

using System.Numerics;

namespace Engine.Kernels.Lssl;

/// <summary>
/// The in-place radix-2 complex FFT of one power-of-two size, unscaled, run entirely on the calling thread (a
/// work item's): the bit-reversal permutation and the twiddles are tabulated once per size. MathNet's managed
/// FFT would spread every transform of 1024 points or more over the .NET thread pool, outside the scheduler.
///   Forward: Z_k = Σ z_t e^(−2πi kt/n);  Inverse: z_t = Σ Z_k e^(+2πi kt/n) (n times the inverse transform).
/// </summary>
public sealed class Radix2Fft
{
    private readonly int[] _reversed;
    private readonly Complex[] _forward, _inverse;   // e^(∓2πi k/n), k < n/2

    public Radix2Fft(int size)
    {
        if (size < 1 || (size & (size - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(size), size, "the FFT size must be a power of two");
        Size = size;
        _reversed = new int[size];
        int bits = BitOperations.Log2((uint)size);
        for (int i = 1; i < size; i++) _reversed[i] = (_reversed[i >> 1] >> 1) | ((i & 1) << (bits - 1));
        _forward = new Complex[size / 2];
        _inverse = new Complex[size / 2];
        for (int k = 0; k < size / 2; k++)
        {
            double angle = -2.0 * Math.PI * k / size;
            _forward[k] = new Complex(Math.Cos(angle), Math.Sin(angle));
            _inverse[k] = Complex.Conjugate(_forward[k]);
        }
    }

    public int Size { get; }

    public void Forward(Span<Complex> z) => Transform(z, _forward);

    public void Inverse(Span<Complex> z) => Transform(z, _inverse);

    private void Transform(Span<Complex> z, Complex[] twiddles)
    {
        int n = Size;
        if (z.Length != n) throw new ArgumentException($"expected {n} values, got {z.Length}", nameof(z));
        for (int i = 0; i < n; i++)
        {
            int j = _reversed[i];
            if (i < j) (z[i], z[j]) = (z[j], z[i]);
        }
        for (int half = 1, stride = n / 2; half < n; half *= 2, stride /= 2)
        {
            for (int start = 0; start < n; start += 2 * half)
            {
                var lo = z.Slice(start, half);
                var hi = z.Slice(start + half, half);
                for (int k = 0; k < half; k++)
                {
                    var t = twiddles[k * stride] * hi[k];
                    hi[k] = lo[k] - t;
                    lo[k] += t;
                }
            }
        }
    }
}

using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>
/// What <see cref="LsslMode.Auto"/> becomes, and the cost model behind it (docs/lssl.md has the measurements):
/// - the Reference backend always runs the recurrence (it is the float64 oracle; any mode asked of it runs so);
/// - a sequence shorter than one chunk (L &lt; Q) runs the recurrence: the scan would be all remainder;
/// - on the GPU, the scan (its conv mode is a direct O(L²) convolution, never the faster choice);
/// - on the CPU, the mode with the least estimated time: each mode's flops at the rate that mode reached on the
///   development machine (AVX-512, per core). With MathNet's managed FFT the convolution wins only for state
///   sizes in the high hundreds; for N &lt;= 256 Auto picks the scan.
/// An explicit mode is kept as asked; the CPU's conv mode takes at most <see cref="LsslCpu.MaxConvLength"/> steps (Auto never picks it past them).
/// </summary>
public static class LsslModeRule
{
    /// <summary>Flop rates per core the estimates use: the scan's products, the dense recurrence's mat-vec, the
    /// diagonal recurrence (latency-bound), and the float64 FFT of MathNet.Numerics.</summary>
    public const double ScanRate = 40e9, DenseRecurrentRate = 45e9, DiagonalRecurrentRate = 15e9, FftRate = 1e9;

    public static LsslMode Resolve(LsslMode mode, Backend backend, LsslConfig config, int batch, int length, bool stateIn, bool stateOut)
    {
        if (!Enum.IsDefined(mode)) throw new ArgumentException($"mode must be one of {string.Join(", ", Enum.GetNames<LsslMode>())}, got {(int)mode}", nameof(mode));
        RequireShape(batch, length);
        if (backend == Backend.Reference) return LsslMode.Recurrent;
        if (mode == LsslMode.Conv && backend == Backend.Cpu && length > LsslCpu.MaxConvLength)
            throw new ArgumentException($"mode: the CPU's conv mode takes at most {LsslCpu.MaxConvLength} steps (its FFT's size, 2^30, is the largest one array holds), " +
                $"got {length}: use the scan or the recurrence, or split the sequence (the state carried between the calls)", nameof(mode));
        if (mode != LsslMode.Auto) return mode;
        if (length < config.ChunkLength) return LsslMode.Recurrent;
        if (backend == Backend.Gpu) return LsslMode.Scan;
        var best = LsslMode.Scan;
        foreach (var candidate in new[] { LsslMode.Recurrent, LsslMode.Conv })
            if (EstimateCpuSeconds(candidate, config, batch, length, stateIn, stateOut) < EstimateCpuSeconds(best, config, batch, length, stateIn, stateOut))
                best = candidate;
        return best;
    }

    /// <summary>The cost model's time for a mode on one CPU core (the rule compares these; the absolute value is indicative).</summary>
    public static double EstimateCpuSeconds(LsslMode mode, LsslConfig config, int batch, int length, bool stateIn, bool stateOut)
    {
        RequireShape(batch, length);
        double channels = (double)batch * config.Channels, n = config.StateSize, q = config.ChunkLength, steps = length;
        bool dense = !config.IsDiagonal;
        double recurrentPerStep = dense ? (2 * n * n + 2 * n) / DenseRecurrentRate : 6 * n / DiagonalRecurrentRate;
        double carryPerStep = 2 * (dense ? n * n : n) / q;
        double remainder = length % config.ChunkLength;
        switch (mode)
        {
            case LsslMode.Recurrent:
                return channels * steps * recurrentPerStep;
            case LsslMode.Scan:
                return channels * ((steps - remainder) * (2 * ((q + 1) / 2 + 2 * n) + carryPerStep) / ScanRate + remainder * recurrentPerStep);
            case LsslMode.Conv:
            {
                // Longer than the FFT takes: never the choice.
                if (length > LsslCpu.MaxConvLength) return double.PositiveInfinity;
                double size = LsslCpu.FftSize(length);
                double fft = channels * (5 * size * Math.Log2(size) + 8 * size) / FftRate;
                // The state terms run on the scan's tables: B̄ columns and carries for the final state, C rows for x₀'s response.
                double state = (stateOut ? steps * (2 * n + carryPerStep) : 0) + (stateIn ? steps * (2 * n + carryPerStep) : 0);
                return fft + channels * state / ScanRate + (stateOut ? channels * remainder * recurrentPerStep : 0);
            }
            default:
                throw new ArgumentException($"no estimate for mode {mode}", nameof(mode));
        }
    }

    /// <summary>Refuses a negative batch or length, which no call has: it was resolved to a mode, or estimated a negative time.</summary>
    private static void RequireShape(int batch, int length)
    {
        if (batch < 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be >= 0");
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "length must be >= 0");
    }
}

using System.Numerics;
using System.Runtime.ExceptionServices;
using Engine.Kernels.Common;
using MathNet.Numerics.LinearAlgebra;

namespace Engine.Kernels.Lssl;

/// <summary>
/// An LSSL layer discretized once: Ā, B̄ per channel in float64 (the reference's system), and the fp32
/// tables every kernel reads, all computed in float64 and rounded once. State vectors are padded to
/// Np = <see cref="LsslConfig.StatePadded"/> with zeros; Q = chunk length.
///
///   StepT             dense [H, Np, Np]: (Ā − K)ᵀ, so one row of it scales one state element; diagonal [H, Np]: ā − k.
///   StepKeep          [H, Np]: K's diagonal, 1 where Ā_ii >= ½, else 0: a step is x ← K x + (Ā − K) x + B̄ u, Ā − I where Ā
///                     is near I, Ā itself where one step decays the state away (as for the chunk carry below).
///   Bbar, C           [H, Np]
///   D                 [H]
///   Taps              [H, Q]:      K̄_i = C Āⁱ B̄, the first Q kernel taps
///   OutputWeights     [H, Np + Q, Q]: rows k &lt; Np: (C Ā^(i+1))_k, the carried state's weight on output i of a
///                     chunk; rows Np + j: the Toeplitz block T[j, i] = K̄_(i−j) (i >= j, else 0) + D on the diagonal.
///                     One chunk's outputs are [x_prev | u] · OutputWeights, a single product.
///   StateColsT        [H, Q, Np]:  [j, k] = (Ā^(Q−1−j) B̄)_k, input j's weight on the state at the chunk's end
///   ChunkCarryT       dense [H, Np, Np]: (Ā^Q − K)ᵀ; diagonal [H, Np]: ā^Q − k. The carry is x ← K x + (Ā^Q − K) x.
///   ChunkCarryKeep    [H, Np]: K's diagonal, 1 where (Ā^Q)_ii >= ½, else 0. Near I the table holds the small Ā^Q − I (fp32
///                     relative precision, as for Ā − I); where the chunk decays the state away it holds Ā^Q itself,
///                     whose small entries −1 + (Ā^Q)_ii would round away in fp32 and x + (Ā^Q − I) x would cancel.
///
/// What depends on a sequence length is made on a call's first need and kept for the next: the convolution
/// kernel K̄ (<see cref="LsslConvKernel"/>, kept while it is long enough) and its spectra
/// (<see cref="LsslConvSpectra"/>, kept for one length). Both are immutable, so concurrent calls share them.
/// All parallel work (the constructor's, the builds) runs on the scheduler the call passes.
/// </summary>
public sealed class LsslSystem : IDisposable
{
    // A backend without a CPU scheduler (the GPU) builds K̄ on its calling thread: one worker runs inline.

    private readonly object _lock = new();
    private readonly Dictionary<GpuRuntime, IDisposable> _deviceCopies = new();
    private readonly LengthCache<LsslConvKernel> _convKernel = new();
    private readonly LengthCache<LsslConvSpectra> _convSpectra = new();
    private readonly double[] _abarMinusI64, _bbar64, _c64, _d64;
    private bool _disposed;

    /// <param name="a">DenseShared: [N·N]; DensePerChannel: [H·N·N]; Diagonal: [H·N]. Row-major.</param>
    /// <param name="b">[N] shared by the channels, or [H·N].</param>
    /// <param name="c">[H·N]</param>
    /// <param name="d">[H]</param>
    /// <param name="dt">[H], every value finite and > 0.</param>
    /// <param name="scheduler">Runs the build, one work item per channel.</param>
    public LsslSystem(LsslConfig config, LsslDiscretization method,
        ReadOnlySpan<double> a, ReadOnlySpan<double> b, ReadOnlySpan<double> c, ReadOnlySpan<double> d, ReadOnlySpan<double> dt,
        IWorkScheduler scheduler)
    {
        Config = config;
        Method = method;
        int h = config.Channels, n = config.StateSize, np = config.StatePadded, q = config.ChunkLength;
        int aLength = config.Form switch
        {
            LsslStateMatrix.DenseShared => n * n,
            LsslStateMatrix.DensePerChannel => h * n * n,
            _ => h * n,
        };
        RequireLength(a, aLength, "A");
        if (b.Length != n && b.Length != h * n)
            throw new ArgumentException($"B: expected {n} (shared) or {h * n} (per channel) values, got {b.Length}", "B");
        RequireLength(c, h * n, "C");
        RequireLength(d, h, "D");
        RequireLength(dt, h, "dt");
        for (int i = 0; i < dt.Length; i++)
            if (!(dt[i] > 0.0) || !double.IsFinite(dt[i]))
                throw new ArgumentException($"dt: every step must be finite and > 0, got {dt[i]} for channel {i}", "dt");

        bool dense = !config.IsDiagonal;
        // Every table is one array: [H, Np, Np] (dense), [H, Np + Q, Q], and a channel's Krylov rows [Q + 1, N].
        long largest = Math.Max((long)h * Math.Max(dense ? (long)np * np : np, (long)(np + q) * q), (long)(q + 1) * n);
        if (largest > Array.MaxLength)
            throw new ArgumentException($"C: {h} channels of state size {n} (padded {np}, chunk length {q}) need a table of {largest} elements, " +
                $"more than one array holds ({Array.MaxLength})", "C");
        _abarMinusI64 = new double[dense ? h * n * n : h * n];
        _bbar64 = new double[h * n];
        _c64 = c.ToArray();
        _d64 = d.ToArray();
        StepT = new float[dense ? h * np * np : h * np];
        StepKeep = new float[h * np];
        Bbar = new float[h * np];
        C = new float[h * np];
        D = new float[h];
        Taps = new float[h * q];
        OutputWeights = new float[(long)h * (np + q) * q];
        StateColsT = new float[h * q * np];
        ChunkCarryT = new float[dense ? h * np * np : h * np];
        ChunkCarryKeep = new float[h * np];
        for (int ch = 0; ch < h; ch++)
        {
            D[ch] = (float)d[ch];
            for (int i = 0; i < n; i++) C[ch * np + i] = (float)c[ch * n + i];
        }

        // Channels are independent: one work item each (once per parameter set); the first channel's failure is reported.
        var aCopy = a.ToArray();
        var bCopy = b.ToArray();
        var dtCopy = dt.ToArray();
        bool bShared = b.Length == n && h > 1;
        // The stability check maps A's eigenvalues through each channel's discretization: a shared A is decomposed once.
        var sharedSpectrum = config.Form == LsslStateMatrix.DenseShared ? Spectrum.Of(aCopy, n) : null;
        var errors = new Exception?[h];
        scheduler.Run(h, (ch, _) =>
        {
            try
            {
                var aCh = config.Form switch
                {
                    LsslStateMatrix.DenseShared => aCopy.AsSpan(),
                    LsslStateMatrix.DensePerChannel => aCopy.AsSpan(ch * n * n, n * n),
                    _ => aCopy.AsSpan(ch * n, n),
                };
                var bCh = bShared ? bCopy.AsSpan() : bCopy.AsSpan(ch * n, n);
                if (dense) BuildDense(ch, aCh, bCh, dtCopy[ch], sharedSpectrum ?? Spectrum.Of(aCh, n));
                else BuildDiagonal(ch, aCh, bCh, dtCopy[ch]);
            }
            catch (Exception e)
            {
                errors[ch] = e;
            }
        });
        foreach (var e in errors)
            if (e is not null) ExceptionDispatchInfo.Throw(e);
    }

    public LsslConfig Config { get; }
    public LsslDiscretization Method { get; }

    /// <summary>Ā − I in float64: dense [H, N, N], diagonal [H, N].</summary>
    public ReadOnlySpan<double> AbarMinusI64 => _abarMinusI64;
    /// <summary>B̄ in float64 [H, N].</summary>
    public ReadOnlySpan<double> Bbar64 => _bbar64;
    public ReadOnlySpan<double> C64 => _c64;
    public ReadOnlySpan<double> D64 => _d64;

    public float[] StepT { get; }
    public float[] StepKeep { get; }
    public float[] Bbar { get; }
    public float[] C { get; }
    public float[] D { get; }
    public float[] Taps { get; }
    public float[] OutputWeights { get; }
    public float[] StateColsT { get; }
    public float[] ChunkCarryT { get; }
    public float[] ChunkCarryKeep { get; }

    /// <summary>Ā of channel h in float64 [N, N] (dense forms).</summary>
    public double[] Abar64(int channel)
    {
        int n = Config.StateSize;
        var abar = _abarMinusI64.AsSpan(channel * n * n, n * n).ToArray();
        for (int i = 0; i < n; i++) abar[i * n + i] += 1.0;
        return abar;
    }

    private void BuildDense(int ch, ReadOnlySpan<double> a, ReadOnlySpan<double> b, double dt, Spectrum spectrum)
    {
        int n = Config.StateSize, np = Config.StatePadded, q = Config.ChunkLength;
        var (amI, bbar) = LsslDiscretizer.Dense(a, b, n, dt, Method, ch);
        foreach (var lambda in spectrum.Eigenvalues) RequireStable(lambda, spectrum.Norm, ch, dt);
        amI.CopyTo(_abarMinusI64, ch * n * n);
        bbar.CopyTo(_bbar64, ch * n);
        var abar = Abar64(ch);
        var abarT = Float64Matrix.Transpose(abar, n, n);

        // rows r_i = C Āⁱ (i = 0..Q) and columns w_j = Āʲ B̄ (j = 0..Q−1): Q mat-vecs each, cheaper than doubling for Q rows.
        var rows = Krylov.Sequential(abar, n, _c64.AsSpan(ch * n, n), q + 1);
        var cols = Krylov.Sequential(abarT, n, bbar, q);
        var abarQ = Float64Matrix.Power(abar, n, q);
        // Ā^Q − I only where a carry row reads it: a chunk that decays every state element away (a large Δ) takes Ā^Q alone.
        bool anyKept = false;
        for (int i = 0; i < n; i++) anyKept |= KeepsState(abarQ[i * n + i]);
        var abarQMinusI = anyKept ? Float64Matrix.PowerMinusIdentity(amI, n, q) : null;
        for (int i = 0; i < n; i++)
        {
            bool keepStep = KeepsState(abar[i * n + i]), keep = KeepsState(abarQ[i * n + i]);
            StepKeep[ch * np + i] = keepStep ? 1f : 0f;
            ChunkCarryKeep[ch * np + i] = keep ? 1f : 0f;
            var step = keepStep ? amI : abar;
            var carry = keep ? abarQMinusI! : abarQ;
            for (int k = 0; k < n; k++)
            {
                StepT[((long)ch * np + k) * np + i] = (float)step[i * n + k];
                ChunkCarryT[((long)ch * np + k) * np + i] = (float)carry[i * n + k];
            }
        }
        FillTables(ch, rows, cols, bbar);
    }

    private void BuildDiagonal(int ch, ReadOnlySpan<double> a, ReadOnlySpan<double> b, double dt)
    {
        int n = Config.StateSize, np = Config.StatePadded, q = Config.ChunkLength;
        var amI = _abarMinusI64.AsSpan(ch * n, n);
        var bbar = _bbar64.AsSpan(ch * n, n);
        LsslDiscretizer.Diagonal(a, b, dt, Method, amI, bbar, ch);
        foreach (double lambda in a) RequireStable(lambda, Math.Abs(lambda), ch, dt);
        var rows = new double[(q + 1) * n];
        var cols = new double[q * n];
        for (int k = 0; k < n; k++)
        {
            double abar = 1.0 + amI[k];
            double r = _c64[ch * n + k], w = bbar[k];
            for (int i = 0; i <= q; i++) { rows[i * n + k] = r; r *= abar; }
            for (int j = 0; j < q; j++) { cols[j * n + k] = w; w *= abar; }
            bool keepStep = KeepsState(abar);
            StepKeep[ch * np + k] = keepStep ? 1f : 0f;
            StepT[ch * np + k] = (float)(keepStep ? amI[k] : abar);
            double abarQ = Math.Pow(abar, q);
            bool keep = KeepsState(abarQ);
            ChunkCarryKeep[ch * np + k] = keep ? 1f : 0f;
            ChunkCarryT[ch * np + k] = (float)(keep ? Float64Matrix.PowerMinusIdentity(amI[k], q) : abarQ);
        }
        FillTables(ch, rows, cols, bbar);
    }

    /// <summary>
    /// Refuses a channel whose Ā has an eigenvalue outside the unit circle: its state would grow without bound until it
    /// overflowed. Ā is a function of ΔA, so its eigenvalues are that function of z = Δλ for A's eigenvalues λ (spectral
    /// mapping): GBT(α) μ = (1 + (1 − α)z) / (1 − αz), where |μ|² − 1 = (2 Re z + (1 − 2α)|z|²) / |1 − αz|²; ZOH μ = e^z,
    /// where |μ| > 1 is Re z > 0 (the same numerator with 1 − 2α read as 0). It keeps its precision for a small z. The
    /// allowance 1e-9 s (1 + |1 − 2α| s), s = Δ·scale (‖A‖ for a solver's λ, |λ| for a diagonal entry), covers the solver's
    /// rounding, so a marginal Ā (A singular: μ = 1; a rotation under the bilinear transform: |μ| = 1) is kept.
    /// </summary>
    private void RequireStable(Complex lambda, double scale, int ch, double dt)
    {
        var z = dt * lambda;
        bool zoh = Method.Method == LsslMethod.Zoh;
        double alpha = Method.Alpha, curvature = zoh ? 0.0 : 1 - 2 * alpha, size = dt * scale;
        double growth = 2 * z.Real + curvature * (z.Real * z.Real + z.Imaginary * z.Imaginary);
        if (growth <= 1e-9 * size * (1 + Math.Abs(curvature) * size)) return;
        double modulus = zoh ? Math.Exp(z.Real) : Complex.Abs(1 + (1 - alpha) * z) / Complex.Abs(1 - alpha * z);
        throw new ArgumentException(
            $"A: the {Method} discretization of channel {ch} (dt = {dt}) is unstable: Ā has an eigenvalue of modulus " +
            $"{modulus} > 1, so the state would grow without bound; expected A's eigenvalues to have real part <= 0 " +
            "(and, for alpha < 0.5, dt small enough that Ā's stay within the unit circle)", "A");
    }

    /// <summary>The eigenvalues of a dense A [n × n], and its 1-norm: the scale of the solver's rounding.</summary>
    private sealed record Spectrum(Complex[] Eigenvalues, double Norm)
    {
        public static Spectrum Of(ReadOnlySpan<double> a, int n)
        {
            var eigenvalues = Matrix<double>.Build.DenseOfRowMajor(n, n, a.ToArray()).Evd(Symmetricity.Asymmetric).EigenValues;
            return new Spectrum(eigenvalues.ToArray(), Float64Matrix.NormOne(a, n));
        }
    }

    /// <summary>
    /// Whether a step (the carry) keeps x_i and adds (Ā − I) x (a diagonal entry of Ā, Ā^Q, from ½ up), or takes Ā x alone:
    /// whichever of Ā_ii − 1 and Ā_ii is smaller in size, so fp32 rounds the smaller number.
    /// </summary>
    private static bool KeepsState(double diagonal) => diagonal >= 0.5;

    /// <summary>Rounds the float64 rows C Āⁱ (i = 0..Q) and columns Āʲ B̄ (j &lt; Q) into the fp32 tables.</summary>
    private void FillTables(int ch, double[] rows, double[] cols, ReadOnlySpan<double> bbar)
    {
        int n = Config.StateSize, np = Config.StatePadded, q = Config.ChunkLength;
        for (int k = 0; k < n; k++) Bbar[ch * np + k] = (float)bbar[k];
        long weights = (long)ch * (np + q) * q;
        for (int i = 0; i < q; i++)
        {
            double tap = 0;
            for (int k = 0; k < n; k++) tap += rows[i * n + k] * bbar[k];
            Taps[ch * q + i] = (float)tap;
            for (int k = 0; k < n; k++)
            {
                OutputWeights[weights + (long)k * q + i] = (float)rows[(i + 1) * n + k];
                StateColsT[((long)ch * q + i) * np + k] = (float)cols[(q - 1 - i) * n + k];
            }
        }
        for (int j = 0; j < q; j++)
        {
            long row = weights + (long)(np + j) * q;
            for (int i = j; i < q; i++) OutputWeights[row + i] = Taps[ch * q + i - j];
            OutputWeights[row + j] += D[ch];
        }
    }

    /// <summary>K̄ for at least <paramref name="length"/> steps: the kept one when it is long enough, else built on <paramref name="scheduler"/>.</summary>
    public LsslConvKernel ConvKernel(int length, IWorkScheduler scheduler) =>
        _convKernel.Get(length, (System: this, Scheduler: scheduler), static (l, s) => LsslConvKernel.Build(s.System, l, s.Scheduler));

    /// <summary>K̄ for a backend without a CPU scheduler: built, where it must be, on the calling thread.</summary>
    public LsslConvKernel ConvKernel(int length) => ConvKernel(length, ThreadPoolScheduler.CallingThread);

    /// <summary>The spectra of K̄ for exactly <paramref name="length"/> steps: the kept ones, else built on <paramref name="scheduler"/>.</summary>
    public LsslConvSpectra ConvSpectra(int length, IWorkScheduler scheduler) =>
        _convSpectra.Get(length, (System: this, Scheduler: scheduler), static (l, s) => LsslConvSpectra.Build(s.System, l, s.Scheduler));

    /// <summary>
    /// A GPU backend's copy of this system on <paramref name="runtime"/> (device tables, K̄), made on first use, one per
    /// runtime, disposed with the system or, once that runtime is disposed, when the next copy is made.
    /// </summary>
    public T DeviceCopy<T>(GpuRuntime runtime, Func<T> create) where T : class, IDisposable
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_deviceCopies.TryGetValue(runtime, out var existing)) return (T)existing;
            // A layer that outlives its devices would otherwise hold each one's runtime and copy until it is disposed.
            foreach (var gone in _deviceCopies.Keys.Where(r => r.IsDisposed).ToArray())
            {
                _deviceCopies.Remove(gone, out var copy);
                copy!.Dispose();
            }
            var made = create();
            _deviceCopies[runtime] = made;
            return made;
        }
    }

    public void Dispose()
    {
        KeyValuePair<GpuRuntime, IDisposable>[] copies;
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            copies = [.. _deviceCopies];
            _deviceCopies.Clear();
        }
        // Each under its runtime's lock (taken outside this system's, which calls take inside theirs): a call using the copy
        // on another thread finishes first, and later ones find the system disposed. A disposed runtime runs no call.
        foreach (var (runtime, copy) in copies)
        {
            try
            {
                using (runtime.Enter()) copy.Dispose();
            }
            catch (ObjectDisposedException)
            {
                copy.Dispose();
            }
        }
    }

    private static void RequireLength(ReadOnlySpan<double> values, int expected, string name)
    {
        if (values.Length != expected) throw new ArgumentException($"{name}: expected {expected} values, got {values.Length}", name);
        foreach (var x in values)
            if (!double.IsFinite(x)) throw new ArgumentException($"{name}: values must be finite, got {x}", name);
    }
}

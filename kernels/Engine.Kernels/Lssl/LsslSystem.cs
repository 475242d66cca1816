using System.Runtime.ExceptionServices;

namespace Engine.Kernels.Lssl;

/// <summary>
/// An LSSL layer discretized once: Ā, B̄ per channel in float64 (the reference's system), and the fp32
/// tables every kernel reads, all computed in float64 and rounded once. State vectors are padded to
/// Np = <see cref="LsslConfig.StatePadded"/> with zeros; Q = chunk length.
///
///   AbarMinusIT       dense [H, Np, Np]: (Ā − I)ᵀ, so one row of it scales one state element; diagonal [H, Np]: ā − 1
///   Bbar, C           [H, Np]
///   D                 [H]
///   Taps              [H, Q]:      K̄_i = C Āⁱ B̄, the first Q kernel taps
///   OutputWeights     [H, Np + Q, Q]: rows k &lt; Np: (C Ā^(i+1))_k, the carried state's weight on output i of a
///                     chunk; rows Np + j: the Toeplitz block T[j, i] = K̄_(i−j) (i >= j, else 0) + D on the diagonal.
///                     One chunk's outputs are [x_prev | u] · OutputWeights, a single product.
///   StateColsT        [H, Q, Np]:  [j, k] = (Ā^(Q−1−j) B̄)_k, input j's weight on the state at the chunk's end
///   ChunkPowMinusIT   dense [H, Np, Np]: (Ā^Q − I)ᵀ; diagonal [H, Np]: ā^Q − 1
///
/// The convolution kernel K̄ of a length is built on demand (<see cref="ConvKernel"/>) and cached, as are
/// backend attachments (FFT spectra, GPU copies of the tables).
/// </summary>
public sealed class LsslSystem : IDisposable
{
    private readonly object _lock = new();
    private readonly Dictionary<object, object> _attachments = new();
    private readonly double[] _abarMinusI64, _bbar64, _c64, _d64;
    private double[]? _kernel;
    private int _kernelLength;
    private bool _disposed;

    /// <param name="a">DenseShared: [N·N]; DensePerChannel: [H·N·N]; Diagonal: [H·N]. Row-major.</param>
    /// <param name="b">[N] shared by the channels, or [H·N].</param>
    /// <param name="c">[H·N]</param>
    /// <param name="d">[H]</param>
    /// <param name="dt">[H], every value finite and > 0.</param>
    public LsslSystem(LsslConfig config, LsslDiscretization method,
        ReadOnlySpan<double> a, ReadOnlySpan<double> b, ReadOnlySpan<double> c, ReadOnlySpan<double> d, ReadOnlySpan<double> dt)
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
        _abarMinusI64 = new double[dense ? h * n * n : h * n];
        _bbar64 = new double[h * n];
        _c64 = c.ToArray();
        _d64 = d.ToArray();
        AbarMinusIT = new float[dense ? h * np * np : h * np];
        Bbar = new float[h * np];
        C = new float[h * np];
        D = new float[h];
        Taps = new float[h * q];
        OutputWeights = new float[(long)h * (np + q) * q];
        StateColsT = new float[h * q * np];
        ChunkPowMinusIT = new float[dense ? h * np * np : h * np];
        for (int ch = 0; ch < h; ch++)
        {
            D[ch] = (float)d[ch];
            for (int i = 0; i < n; i++) C[ch * np + i] = (float)c[ch * n + i];
        }

        // Channels are independent: build them in parallel (once per parameter set), report the first failure.
        var aCopy = a.ToArray();
        var bCopy = b.ToArray();
        var dtCopy = dt.ToArray();
        bool bShared = b.Length == n && h > 1;
        var errors = new Exception?[h];
        Parallel.For(0, h, ch =>
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
                if (dense) BuildDense(ch, aCh, bCh, dtCopy[ch]);
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

    public float[] AbarMinusIT { get; }
    public float[] Bbar { get; }
    public float[] C { get; }
    public float[] D { get; }
    public float[] Taps { get; }
    public float[] OutputWeights { get; }
    public float[] StateColsT { get; }
    public float[] ChunkPowMinusIT { get; }

    /// <summary>Ā of channel h in float64 [N, N] (dense forms).</summary>
    public double[] Abar64(int channel)
    {
        int n = Config.StateSize;
        var abar = _abarMinusI64.AsSpan(channel * n * n, n * n).ToArray();
        for (int i = 0; i < n; i++) abar[i * n + i] += 1.0;
        return abar;
    }

    private void BuildDense(int ch, ReadOnlySpan<double> a, ReadOnlySpan<double> b, double dt)
    {
        int n = Config.StateSize, np = Config.StatePadded, q = Config.ChunkLength;
        var (amI, bbar) = LsslDiscretizer.Dense(a, b, n, dt, Method, ch);
        amI.CopyTo(_abarMinusI64, ch * n * n);
        bbar.CopyTo(_bbar64, ch * n);
        var abar = Abar64(ch);
        var abarT = Transpose(abar, n);

        // rows r_i = C Āⁱ (i = 0..Q) and columns w_j = Āʲ B̄ (j = 0..Q−1): Q mat-vecs each, cheaper than doubling for Q rows.
        var rows = Krylov.Sequential(abar, n, _c64.AsSpan(ch * n, n), q + 1);
        var cols = Krylov.Sequential(abarT, n, bbar, q);
        var abarQ = Float64Matrix.Power(abar, n, q);
        for (int k = 0; k < n; k++)
        {
            for (int i = 0; i < n; i++)
            {
                AbarMinusIT[((long)ch * np + k) * np + i] = (float)amI[i * n + k];
                ChunkPowMinusIT[((long)ch * np + k) * np + i] = (float)(abarQ[i * n + k] - (i == k ? 1.0 : 0.0));
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
        var rows = new double[(q + 1) * n];
        var cols = new double[q * n];
        for (int k = 0; k < n; k++)
        {
            double abar = 1.0 + amI[k];
            double r = _c64[ch * n + k], w = bbar[k];
            for (int i = 0; i <= q; i++) { rows[i * n + k] = r; r *= abar; }
            for (int j = 0; j < q; j++) { cols[j * n + k] = w; w *= abar; }
            AbarMinusIT[ch * np + k] = (float)amI[k];
            ChunkPowMinusIT[ch * np + k] = (float)(Math.Pow(abar, q) - 1.0);
        }
        FillTables(ch, rows, cols, bbar);
    }

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

    /// <summary>
    /// The convolution kernel K̄_l = C Āˡ B̄ for l &lt; length, float64, channel h at [h·stride, h·stride + length).
    /// Built by meeting in the middle: rows C Āⁱ (i &lt; Q) and the Krylov block Ā^(jQ) B̄ (j &lt; ⌈L/Q⌉, by doubling
    /// with the powers Ā^Q, Ā^2Q, Ā^4Q, …) give K̄_(jQ+i) as one [⌈L/Q⌉ × N]·[N × Q] product:
    /// O(N² (Q + L/Q) + N³ log(L/Q) + N L) per channel instead of the O(N² L) of stepping B̄ through every
    /// power. Cached; a longer length rebuilds it.
    /// </summary>
    public (double[] Kernel, int Stride) ConvKernel(int length)
    {
        lock (_lock)
        {
            if (_kernel is not null && _kernelLength >= length) return (_kernel, _kernelLength);
            int h = Config.Channels, n = Config.StateSize, q = Config.ChunkLength;
            int blocks = Math.Max(1, (length + q - 1) / q);
            int stride = blocks * q;
            var kernel = new double[(long)h * stride];
            Parallel.For(0, h, ch =>
            {
                double[] rows, giant;
                var bbar = _bbar64.AsSpan(ch * n, n);
                if (Config.IsDiagonal)
                {
                    rows = new double[q * n];
                    giant = new double[blocks * n];
                    for (int k = 0; k < n; k++)
                    {
                        double abar = 1.0 + _abarMinusI64[ch * n + k], abarQ = Math.Pow(abar, q);
                        double r = _c64[ch * n + k], g = bbar[k];
                        for (int i = 0; i < q; i++) { rows[i * n + k] = r; r *= abar; }
                        for (int j = 0; j < blocks; j++) { giant[j * n + k] = g; g *= abarQ; }
                    }
                }
                else
                {
                    var abar = Abar64(ch);
                    var abarQ = Float64Matrix.Power(abar, n, q);
                    rows = Krylov.Sequential(abar, n, _c64.AsSpan(ch * n, n), q);
                    giant = Krylov.Doubling(Transpose(abarQ, n), n, bbar, blocks);
                }
                Float64Matrix.Multiply(giant, Transpose(rows, q, n), kernel.AsSpan((int)((long)ch * stride), stride), blocks, n, q);
            });
            _kernel = kernel;
            _kernelLength = stride;
            return (kernel, stride);
        }
    }

    /// <summary>
    /// A backend's data attached to this system (GPU copies of the tables, FFT spectra), made on first use
    /// and replaced when <paramref name="reuse"/> says the cached one no longer fits. Disposed with the system.
    /// </summary>
    public T Attachment<T>(object key, Func<T, bool> reuse, Func<T> create) where T : class
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_attachments.TryGetValue(key, out var existing))
            {
                if (existing is T t && reuse(t)) return t;
                (existing as IDisposable)?.Dispose();
                _attachments.Remove(key);
            }
            var made = create();
            _attachments[key] = made;
            return made;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (var value in _attachments.Values) (value as IDisposable)?.Dispose();
            _attachments.Clear();
            _kernel = null;
        }
    }

    private static double[] Transpose(ReadOnlySpan<double> a, int n) => Transpose(a, n, n);

    /// <summary>[rows × cols] to [cols × rows].</summary>
    private static double[] Transpose(ReadOnlySpan<double> a, int rows, int cols)
    {
        var t = new double[rows * cols];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j];
        return t;
    }

    private static void RequireLength(ReadOnlySpan<double> values, int expected, string name)
    {
        if (values.Length != expected) throw new ArgumentException($"{name}: expected {expected} values, got {values.Length}", name);
        foreach (var x in values)
            if (!double.IsFinite(x)) throw new ArgumentException($"{name}: values must be finite, got {x}", name);
    }
}

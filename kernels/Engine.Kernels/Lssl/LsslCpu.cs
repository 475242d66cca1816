using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

/// <summary>
/// LSSL on the CPU: the recurrence (decode), the chunked scan as small Vector512 matrix products, and the
/// FFT convolution (<see cref="Radix2Fft"/>). Work items are (sequence, block of up to 16 channels): one cache
/// line of u per step is gathered into per-channel rows, a segment of 8192 steps at a time, so scratch is
/// bounded whatever L is. Each worker owns its scratch (sized here from the config).
///
/// Scan, per channel: row c of a block A [(S + 1) × (Np + Q)] (S chunks a segment) is [x_c | u_c], the state
/// before chunk c and the chunk's Q inputs; W [Q × Np] = Ā^(Q−1−j) B̄ (input j's weight on the chunk's end
/// state); OutputWeights [Np + Q × Q] = [C Ā^(i+1) ; Toeplitz of K̄ with D] (see <see cref="LsslSystem"/>).
///   Z        = U W                               all chunks' end-state contributions, one product
///   x_(c+1)  = K x_c + (Ā^Q − K) x_c + Z_c       the carry, one Np × Np mat-vec per chunk, into row c+1 (K diagonal,
///                                                1 where Ā^Q keeps a state element, 0 where it decays it away)
///   Y        = A · OutputWeights                 state part and chunk-local convolution in one product,
///                                                in column blocks of 32 whose rows are a prefix of A's
///                                                columns (the Toeplitz block is upper triangular)
/// A partial last chunk (L mod Q steps) runs the recurrence. Every table is precomputed in float64.
/// The recurrence keeps Ā − I, not Ā, where Ā is near I: x ← x + (Ā − I)x + B̄u holds the small part to fp32 precision; where
/// one step decays a state element away it keeps Ā (<see cref="LsslSystem.StepKeep"/>), whose small entry −1 + ā would round.
/// </summary>
public sealed unsafe class LsslCpu : IDisposable
{
    private const int MaxBlock = 16;

    /// <summary>Steps gathered per work item at a time: long enough that each channel's tables (read once per
    /// segment) are reused over many chunks, short enough that scratch stays near 1.5 MB per worker.</summary>
    private const int SegmentSteps = 8192;

    private readonly LsslConfig _config;
    private readonly WorkerScratch _scratch;
    /// <summary>Per worker: the FFT buffer of the convolution (grown with the schedulers a call brings).</summary>
    private Complex[]?[] _fft = [];
    private readonly int _n, _np, _q, _lda, _segmentChunks, _segment;

    public LsslCpu(LsslConfig config)
    {
        _config = config;
        _n = config.StateSize;
        _np = config.StatePadded;
        _q = config.ChunkLength;
        _lda = _np + _q;
        _segmentChunks = Math.Max(1, SegmentSteps / _q);
        _segment = _segmentChunks * _q;
        Carve(null, out long floats);
        _scratch = new WorkerScratch(floats);
    }

    public LsslConfig Config => _config;

    public void Dispose()
    {
        _scratch.Dispose();
    }

    /// <summary>
    /// u, y [B, L, H]; state [B, H, N]: the initial state on entry, the final state on return. In
    /// <see cref="LsslMode.Conv"/>, <paramref name="initialStateIsZero"/> skips the zero-input response and
    /// <paramref name="needFinalState"/> = false skips the state pass (the state is then left as given).
    /// </summary>
    public void Run(IWorkScheduler scheduler, LsslMode mode, LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, Span<float> state,
        bool initialStateIsZero = false, bool needFinalState = true)
    {
        if (system.Config != _config) throw new ArgumentException("the system was built for another configuration", nameof(system));
        if (batch == 0 || length == 0) return;
        // Every pass has at most one item per sequence and channel, so no more workers than that ever run.
        int workers = (int)Math.Min(scheduler.Workers, (long)batch * _config.Channels);
        _scratch.Reserve(workers);
        if (_fft.Length < workers) Array.Resize(ref _fft, workers);
        fixed (float* pu = u, py = y, ps = state,
               stepT = system.StepT, stepKeep = system.StepKeep, bbar = system.Bbar, c = system.C, d = system.D,
               weights = system.OutputWeights, colsT = system.StateColsT,
               carryT = system.ChunkCarryT, keep = system.ChunkCarryKeep)
        {
            var io = new Io(pu, py, ps, batch, length);
            var tables = new Tables(stepT, stepKeep, bbar, c, d, weights, colsT, carryT, keep);
            switch (mode)
            {
                case LsslMode.Recurrent:
                    RunBlocks(scheduler, io, tables, Pass.Recurrent);
                    break;
                case LsslMode.Scan:
                    RunBlocks(scheduler, io, tables, Pass.Scan);
                    break;
                case LsslMode.Conv:
                    RunConv(scheduler, system, io, tables);
                    if (!initialStateIsZero || needFinalState)
                        RunBlocks(scheduler, io, tables, new Pass(PassKind.ConvState, !initialStateIsZero, needFinalState));
                    break;
                default:
                    throw new ArgumentException($"mode {mode} must be resolved before it reaches a kernel", nameof(mode));
            }
        }
    }

    private enum PassKind { Recurrent, Scan, ConvState }

    private readonly record struct Pass(PassKind Kind, bool ZeroInputResponse, bool FinalState)
    {
        public static Pass Recurrent => new(PassKind.Recurrent, false, true);
        public static Pass Scan => new(PassKind.Scan, false, true);
        public bool ReadsOutput => Kind == PassKind.ConvState && ZeroInputResponse;
        public bool WritesOutput => Kind != PassKind.ConvState || ZeroInputResponse;
    }

    private readonly struct Io(float* u, float* y, float* state, int batch, int length)
    {
        public readonly float* U = u, Y = y, State = state;
        public readonly int Batch = batch, Length = length;
    }

    private readonly struct Tables(float* stepT, float* stepKeep, float* bbar, float* c, float* d, float* weights, float* colsT, float* carryT, float* keep)
    {
        public readonly float* StepT = stepT, StepKeep = stepKeep, Bbar = bbar, C = c, D = d, OutputWeights = weights, StateColsT = colsT,
            ChunkCarryT = carryT, ChunkCarryKeep = keep;
    }

    /// <summary>Per-worker scratch regions. Built with a null base to size the block.</summary>
    private readonly struct Work
    {
        public float* A { get; init; }       // [16 × (S + 1) × (Np + Q)], S chunks a segment: rows [x_c | u_c]
        public float* Yb { get; init; }      // [16 × segment] outputs, channel-major
        public float* X { get; init; }       // [16 × Np] carried state per channel
        public float* S { get; init; }       // [16 × Np] zero-input state per channel (conv mode)
        public float* Z { get; init; }       // [S × Np] chunk end-state contributions
        public float* Tmp { get; init; }     // [Np]
    }

    private long ChannelRows => (long)(_segmentChunks + 1) * _lda;

    private Work Carve(float* baseAddress, out long floats)
    {
        var c = new ScratchCarver(baseAddress);
        long np = _np;
        var work = new Work
        {
            A = c.Take(MaxBlock * ChannelRows),
            Yb = c.Take(MaxBlock * (long)_segment),
            X = c.Take(MaxBlock * np),
            S = c.Take(MaxBlock * np),
            Z = c.Take(_segmentChunks * np),
            Tmp = c.Take(np),
        };
        floats = c.Used;
        return work;
    }

    /// <summary>Channels per work item: 16 (a cache line of u per step), fewer when that leaves workers idle.</summary>
    private int BlockWidth(int batch, int workers)
    {
        int h = _config.Channels, width = MaxBlock;
        while (width > 1 && (long)batch * ((h + width - 1) / width) < workers) width /= 2;
        return width;
    }

    private void RunBlocks(IWorkScheduler scheduler, Io io, Tables t, Pass pass)
    {
        int h = _config.Channels, np = _np;
        int width = BlockWidth(io.Batch, scheduler.Workers);
        int blocks = (h + width - 1) / width;
        scheduler.Run(io.Batch * blocks, (item, worker) =>
        {
            int b = item / blocks, h0 = item % blocks * width, count = Math.Min(width, h - h0);
            var w = Carve(_scratch[worker], out _);
            for (int c = 0; c < count; c++)
            {
                float* x = w.X + (long)c * np;
                SimdOps.CopyPadded(x, io.State + ((long)b * h + h0 + c) * _n, _n, np);
                Buffer.MemoryCopy(x, w.S + (long)c * np, np * sizeof(float), np * sizeof(float));
            }
            for (int s0 = 0; s0 < io.Length; s0 += _segment)
            {
                int len = Math.Min(_segment, io.Length - s0);
                GatherInputs(io, b, s0, len, h0, count, w.A);
                if (pass.ReadsOutput) GatherOutputs(io, b, s0, len, h0, count, w.Yb);
                for (int c = 0; c < count; c++)
                {
                    int ch = h0 + c;
                    float* a = w.A + c * ChannelRows, yc = w.Yb + (long)c * _segment, x = w.X + (long)c * np;
                    switch (pass.Kind)
                    {
                        case PassKind.Recurrent: RecurrentSegment(t, ch, a, yc, len, x, w); break;
                        case PassKind.Scan: ScanSegment(t, ch, a, yc, len, x, w); break;
                        default: ConvStateSegment(t, ch, a, yc, len, x, w.S + (long)c * np, pass, w); break;
                    }
                }
                if (pass.WritesOutput) Scatter(w.Yb, io, b, s0, len, h0, count);
            }
            if (pass.FinalState)
            {
                for (int c = 0; c < count; c++)
                    Buffer.MemoryCopy(w.X + (long)c * np, io.State + ((long)b * h + h0 + c) * _n, _n * sizeof(float), _n * sizeof(float));
            }
        });
    }

    /// <summary>
    /// Token rows are H floats apart, a stride the hardware prefetcher gives up on: the gather and scatter
    /// prefetch the rows of the next 16-step tile themselves.
    /// </summary>
    private static void PrefetchRows(float* row, long stride)
    {
        for (int j = 0; j < 16; j++) Sse.Prefetch0(row + j * stride);
    }

    /// <summary>
    /// u[b, s0 + t, h0 + c] into the input part of channel c's rows: row t / Q, column Np + t mod Q. One cache
    /// line of the token row feeds up to 16 channels; a full block moves 16 × 16 tiles (Q is a multiple of 16).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void GatherInputs(in Io io, int b, int s0, int len, int h0, int count, float* a)
    {
        int h = _config.Channels;
        float* row = io.U + ((long)b * io.Length + s0) * h + h0;
        for (int r = 0; r * _q < len; r++)
        {
            int steps = Math.Min(_q, len - r * _q), i = 0;
            float* dst = a + (long)r * _lda + _np;
            if (count == MaxBlock)
            {
                for (; i + 16 <= steps; i += 16, row += 16 * h)
                {
                    PrefetchRows(row + 32 * h, h);
                    SimdOps.Transpose(row, h, dst + i, (int)ChannelRows, 16, 16);
                }
            }
            for (; i < steps; i++, row += h)
                for (int c = 0; c < count; c++) dst[c * ChannelRows + i] = row[c];
        }
    }

    private void GatherOutputs(in Io io, int b, int s0, int len, int h0, int count, float* yb)
    {
        int h = _config.Channels, t = 0;
        float* row = io.Y + ((long)b * io.Length + s0) * h + h0;
        if (count == MaxBlock)
            for (; t + 16 <= len; t += 16, row += 16 * h) SimdOps.Transpose(row, h, yb + t, _segment, 16, 16);
        for (; t < len; t++, row += h)
            for (int c = 0; c < count; c++) yb[(long)c * _segment + t] = row[c];
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Scatter(float* src, in Io io, int b, int s0, int len, int h0, int count)
    {
        int h = _config.Channels, t = 0;
        float* row = io.Y + ((long)b * io.Length + s0) * h + h0;
        if (count == MaxBlock)
        {
            for (; t + 16 <= len; t += 16, row += 16 * h)
            {
                PrefetchRows(row + 32 * h, h);
                SimdOps.Transpose(src + t, _segment, row, h, 16, 16);
            }
        }
        for (; t < len; t++, row += h)
            for (int c = 0; c < count; c++) row[c] = src[(long)c * _segment + t];
    }

    private void RecurrentSegment(in Tables t, int ch, float* a, float* yc, int len, float* x, in Work w)
    {
        for (int r = 0; r * _q < len; r++)
            Steps(t, ch, a + (long)r * _lda + _np, yc + (long)r * _q, Math.Min(_q, len - r * _q), x, w);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ScanSegment(in Tables t, int ch, float* a, float* yc, int len, float* x, in Work w)
    {
        int q = _q, np = _np, lda = _lda;
        int full = len / q;
        if (full > 0)
        {
            Buffer.MemoryCopy(x, a, np * sizeof(float), np * sizeof(float));
            SimdGemm.Multiply(a + np, lda, t.StateColsT + (long)ch * q * np, np, w.Z, np, full, q, np, accumulate: false);
            Carry(t, ch, full, w.Z, a);
            float* weights = t.OutputWeights + (long)ch * lda * q;
            for (int cb = 0; cb < q; cb += 32)
            {
                int width = Math.Min(32, q - cb);
                SimdGemm.Multiply(a, lda, weights + cb, q, yc + cb, q, full, np + cb + width, width, accumulate: false);
            }
            Buffer.MemoryCopy(a + (long)full * lda, x, np * sizeof(float), np * sizeof(float));
        }
        Steps(t, ch, a + (long)full * lda + np, yc + (long)full * q, len - full * q, x, w);
    }

    /// <summary>
    /// Conv mode's state terms for one segment: the zero-input response C Ā^(t+1) x₀ added to y (carried in
    /// <paramref name="s"/>), and the state pass for the final state (carried in <paramref name="x"/>).
    /// </summary>
    private void ConvStateSegment(in Tables t, int ch, float* a, float* yc, int len, float* x, float* s, Pass pass, in Work w)
    {
        int q = _q, np = _np, lda = _lda;
        int full = len / q, rest = len - full * q;
        if (pass.ZeroInputResponse)
        {
            Buffer.MemoryCopy(s, a, np * sizeof(float), np * sizeof(float));
            Carry(t, ch, full, null, a);
            Buffer.MemoryCopy(a + (long)full * lda, s, np * sizeof(float), np * sizeof(float));
            // A partial chunk's outputs i < rest use the first columns of the state rows (the rest of its row is scratch).
            int rows = full + (rest > 0 ? 1 : 0);
            SimdGemm.Multiply(a, lda, t.OutputWeights + (long)ch * lda * q, q, yc, q, rows, np, q, accumulate: true);
        }
        if (pass.FinalState)
        {
            if (full > 0)
            {
                Buffer.MemoryCopy(x, a, np * sizeof(float), np * sizeof(float));
                SimdGemm.Multiply(a + np, lda, t.StateColsT + (long)ch * q * np, np, w.Z, np, full, q, np, accumulate: false);
                Carry(t, ch, full, w.Z, a);
                Buffer.MemoryCopy(a + (long)full * lda, x, np * sizeof(float), np * sizeof(float));
            }
            Steps(t, ch, a + (long)full * lda + np, null, rest, x, w);
        }
    }

    /// <summary>The state part of rows c + 1 from row c: x ← K x + (Ā^Q − K) x + Z[c] (Z null: zero input), for c &lt; chunks.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Carry(in Tables t, int ch, int chunks, float* z, float* a)
    {
        int np = _np, lda = _lda;
        for (int c = 0; c < chunks; c++)
        {
            float* x = a + (long)c * lda, next = x + lda;
            float* add = z == null ? null : z + (long)c * np;
            if (_config.IsDiagonal)
            {
                float* p = t.ChunkCarryT + (long)ch * np, keep = t.ChunkCarryKeep + (long)ch * np;
                for (int i = 0; i < np; i += 16)
                {
                    var xv = Vector512.Load(x + i);
                    // Ā^Q x first, then the chunk's input: x + Z rounded first would lose a small Z against a large x
                    // that (Ā^Q − I) x then cancels (a decayed Ā^Q).
                    var r = Vector512.MultiplyAddEstimate(Vector512.Load(p + i), xv, Vector512.Load(keep + i) * xv);
                    if (add != null) r += Vector512.Load(add + i);
                    r.Store(next + i);
                }
            }
            else
            {
                ResidualMatVec(t.ChunkCarryT + (long)ch * np * np, x, t.ChunkCarryKeep + (long)ch * np, add, 1f, next);
            }
        }
    }

    /// <summary>The recurrence over <paramref name="count"/> steps; y null: state only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Steps(in Tables t, int ch, float* uc, float* yc, int count, float* x, in Work w)
    {
        int np = _np;
        float* bbar = t.Bbar + (long)ch * np, c = t.C + (long)ch * np;
        float d = t.D[ch];
        if (_config.IsDiagonal)
        {
            float* step = t.StepT + (long)ch * np, keep = t.StepKeep + (long)ch * np;
            for (int s = 0; s < count; s++)
            {
                float us = uc[s];
                var uv = Vector512.Create(us);
                var acc = Vector512<float>.Zero;
                for (int i = 0; i < np; i += 16)
                {
                    var xv = Vector512.Load(x + i);
                    // Ā x first, then B̄ u (see Carry).
                    var r = Vector512.MultiplyAddEstimate(Vector512.Load(bbar + i), uv, Vector512.MultiplyAddEstimate(Vector512.Load(step + i), xv, Vector512.Load(keep + i) * xv));
                    r.Store(x + i);
                    acc = Vector512.MultiplyAddEstimate(Vector512.Load(c + i), r, acc);
                }
                if (yc != null) yc[s] = Vector512.Sum(acc) + d * us;
            }
            return;
        }
        float* stepT = t.StepT + (long)ch * np * np, stepKeep = t.StepKeep + (long)ch * np;
        long bytes = np * sizeof(float);
        for (int s = 0; s < count; s++)
        {
            float us = uc[s];
            ResidualMatVec(stepT, x, stepKeep, bbar, us, w.Tmp);
            Buffer.MemoryCopy(w.Tmp, x, bytes, bytes);
            if (yc != null) yc[s] = SimdOps.Dot(c, x, np) + d * us;
        }
    }

    /// <summary>
    /// dst = (keep ⊙ x + Mᵀᵀ x) + scale·add (the added term last) for a transposed [Np × Np] table mT (row k scales with x[k]);
    /// add may be null.
    /// Output in blocks of four vectors with two accumulator sets for even and odd k, so the FMA chains
    /// are short enough to keep both FMA ports busy.
    /// </summary>
    private void ResidualMatVec(float* mT, float* x, float* keep, float* add, float scale, float* dst)
    {
        if (SimdWidths.Wide) ResidualMatVec<Lanes512>(mT, x, keep, add, scale, dst, _n, _np);
        else ResidualMatVec<Lanes256>(mT, x, keep, add, scale, dst, _n, _np);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void ResidualMatVec<TV>(float* mT, float* x, float* keep, float* add, float scale, float* dst, int n, int np) where TV : unmanaged, ILanes<TV>
    {
        int w = TV.Count;
        var sv = TV.Broadcast(scale);
        int i0 = 0;
        for (; i0 + 4 * w <= np; i0 += 4 * w)
        {
            var e0 = TV.Load(x + i0); var e1 = TV.Load(x + i0 + w);
            var e2 = TV.Load(x + i0 + 2 * w); var e3 = TV.Load(x + i0 + 3 * w);
            e0 *= TV.Load(keep + i0); e1 *= TV.Load(keep + i0 + w);
            e2 *= TV.Load(keep + i0 + 2 * w); e3 *= TV.Load(keep + i0 + 3 * w);
            TV o0 = TV.Zero, o1 = TV.Zero, o2 = TV.Zero, o3 = TV.Zero;
            float* row = mT + i0;
            int k = 0;
            for (; k + 2 <= n; k += 2, row += 2 * np)
            {
                var xa = TV.Broadcast(x[k]);
                e0 = TV.Fma(xa, TV.Load(row), e0);
                e1 = TV.Fma(xa, TV.Load(row + w), e1);
                e2 = TV.Fma(xa, TV.Load(row + 2 * w), e2);
                e3 = TV.Fma(xa, TV.Load(row + 3 * w), e3);
                var xb = TV.Broadcast(x[k + 1]);
                float* rb = row + np;
                o0 = TV.Fma(xb, TV.Load(rb), o0);
                o1 = TV.Fma(xb, TV.Load(rb + w), o1);
                o2 = TV.Fma(xb, TV.Load(rb + 2 * w), o2);
                o3 = TV.Fma(xb, TV.Load(rb + 3 * w), o3);
            }
            if (k < n)
            {
                var xa = TV.Broadcast(x[k]);
                e0 = TV.Fma(xa, TV.Load(row), e0);
                e1 = TV.Fma(xa, TV.Load(row + w), e1);
                e2 = TV.Fma(xa, TV.Load(row + 2 * w), e2);
                e3 = TV.Fma(xa, TV.Load(row + 3 * w), e3);
            }
            e0 += o0; e1 += o1; e2 += o2; e3 += o3;
            // The added term last: x + add rounded first would lose a small add against a large x that M x then cancels.
            if (add != null)
            {
                e0 = TV.Fma(sv, TV.Load(add + i0), e0);
                e1 = TV.Fma(sv, TV.Load(add + i0 + w), e1);
                e2 = TV.Fma(sv, TV.Load(add + i0 + 2 * w), e2);
                e3 = TV.Fma(sv, TV.Load(add + i0 + 3 * w), e3);
            }
            e0.Store(dst + i0); e1.Store(dst + i0 + w);
            e2.Store(dst + i0 + 2 * w); e3.Store(dst + i0 + 3 * w);
        }
        for (; i0 < np; i0 += w)
        {
            var e = TV.Load(x + i0) * TV.Load(keep + i0);
            var o = TV.Zero;
            float* row = mT + i0;
            int k = 0;
            for (; k + 2 <= n; k += 2, row += 2 * np)
            {
                e = TV.Fma(TV.Broadcast(x[k]), TV.Load(row), e);
                o = TV.Fma(TV.Broadcast(x[k + 1]), TV.Load(row + np), o);
            }
            if (k < n) e = TV.Fma(TV.Broadcast(x[k]), TV.Load(row), e);
            e += o;
            if (add != null) e = TV.Fma(sv, TV.Load(add + i0), e);
            e.Store(dst + i0);
        }
    }

    /// <summary>
    /// The longest sequence the FFT convolution takes: its transform (<see cref="FftSize"/>) of 2^30 complex values is the
    /// largest power of two one array holds.
    /// </summary>
    public const int MaxConvLength = 1 << 29;

    /// <summary>Smallest power of two >= 2L − 1: a linear (not circular) convolution of two length-L sequences.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="length"/> is above <see cref="MaxConvLength"/>.</exception>
    public static int FftSize(int length)
    {
        // Past it the doubling wrapped: a size of 1 for a length above 2^30, and no end for one above 2^29.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, MaxConvLength);
        int n = 1;
        while (n < 2 * length - 1) n *= 2;
        return n;
    }

    /// <summary>
    /// y = K̄ * u + D u by FFT, two channels per complex transform (u₁ + i u₂; the spectrum splits by conjugate
    /// symmetry), float64 throughout. Work items are (sequence, channel pair); the zero initial state is implied.
    /// </summary>
    private void RunConv(IWorkScheduler scheduler, LsslSystem system, Io io, Tables t)
    {
        var spectra = system.ConvSpectra(io.Length, scheduler);
        int h = _config.Channels, pairs = (h + 1) / 2, size = spectra.Size, half = size / 2 + 1, length = io.Length;
        var halves = spectra.Half;
        scheduler.Run(io.Batch * pairs, (item, worker) =>
        {
            int b = item / pairs, h1 = item % pairs * 2, h2 = h1 + 1 < h ? h1 + 1 : -1;
            var z = _fft[worker];
            if (z is null || z.Length != size) _fft[worker] = z = new Complex[size];
            float* ub = io.U + (long)b * length * h;
            for (int s = 0; s < length; s++)
                z[s] = new Complex(ub[(long)s * h + h1], h2 < 0 ? 0.0 : ub[(long)s * h + h2]);
            Array.Clear(z, length, size - length);
            spectra.Fft.Forward(z);
            var k1 = halves.AsSpan((int)((long)h1 * half), half);
            var k2 = h2 < 0 ? default : halves.AsSpan((int)((long)h2 * half), half);
            var i = Complex.ImaginaryOne;
            for (int k = 0; k < half; k++)
            {
                int m = (size - k) & (size - 1);
                Complex zk = z[k], zm = Complex.Conjugate(z[m]);
                Complex u1 = (zk + zm) * 0.5, u2 = (zk - zm) * new Complex(0, -0.5);
                Complex a = k1[k], c2 = h2 < 0 ? Complex.Zero : k2[k];
                // W = K1 U1 + i K2 U2 at k; at −k every spectrum is the conjugate.
                z[k] = a * u1 + i * (c2 * u2);
                z[m] = Complex.Conjugate(a * u1) + i * Complex.Conjugate(c2 * u2);
            }
            spectra.Fft.Inverse(z);
            double scale = 1.0 / size;
            float d1 = t.D[h1], d2 = h2 < 0 ? 0f : t.D[h2];
            float* yb = io.Y + (long)b * length * h;
            for (int s = 0; s < length; s++)
            {
                long row = (long)s * h;
                yb[row + h1] = (float)(z[s].Real * scale + (double)d1 * ub[row + h1]);
                if (h2 >= 0) yb[row + h2] = (float)(z[s].Imaginary * scale + (double)d2 * ub[row + h2]);
            }
        });
    }
}

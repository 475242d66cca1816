using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// GLA on the CPU: the chunked form as small Vector512 matrix products, and the recurrent form for
/// decode. Work items are (sequence, block of key/value heads) run by HeadBlockSweep; each worker owns a
/// scratch block sized here from the config, so calls allocate nothing.
///
/// Chunk of C tokens, b = in-chunk cumulative log gate (fp32), r_s = first row of sub-chunk s (16 rows):
///   inter   O   = (scale·q ⊙ exp(b)) S
///   intra   O  += A V,  A_ij = scale Σ_c q_ic k_jc exp(b_ic − b_jc), j <= i
///           off-diagonal sub-block (s, t < s): exp(b_i − b_j) = exp(b_i − b_{r_s}) · exp(b_{r_s} − b_{r_{t+1}})
///           · exp(b_{r_{t+1}} − b_j), so it is (q ⊙ exp(b − b_{r_s}) ⊙ d_st) (k ⊙ exp(b_{r_{t+1}} − b))ᵀ, a plain
///           product, the key factor made once per chunk;
///           diagonal sub-blocks: k_j ⊙ exp(b_i − b_j) built row by row as k_j ⊙ Π exp(g).
///   state   S   = diag(exp(b_last)) S + (k ⊙ exp(b_last − b))ᵀ V
/// Every exponent is <= 0. Scalar gates (per head, constant, none) skip the sub-chunks: A = (Q Kᵀ) ⊙ D.
/// </summary>
/// <remarks>
/// Hot methods are compiled fully optimized on first use (a first call on a long sequence must not run unoptimized code).
/// </remarks>
public sealed unsafe class GlaCpu : IDisposable
{
    private const int Sub = 16;

    private readonly GlaConfig _config;
    private readonly IWorkScheduler _scheduler;
    private readonly WorkerScratch _scratch;
    private readonly int _kp, _vp, _c;
    /// <summary>Row stride of QA: the output of a sub-chunk is one product [Q_inter | A] · [S; V].</summary>
    private readonly int _lqa;
    /// <summary>Constant gate only: per kv head exp(logDecay · m), m = 0..C, made once (Lightning's decays).</summary>
    private readonly float[][]? _constantPowers;

    public GlaCpu(GlaConfig config, IWorkScheduler scheduler)
    {
        _config = config;
        _scheduler = scheduler;
        _kp = config.Heads.KeyDimPadded;
        _vp = config.Heads.ValueDimPadded;
        _c = config.ChunkSize;
        _lqa = _kp + _c;
        if (config.ConstantLogDecay is { } logDecay)
            _constantPowers = logDecay.Select(l => Enumerable.Range(0, _c + 1).Select(m => (float)Math.Exp((double)l * m)).ToArray()).ToArray();
        Carve(null, out long floats);
        _scratch = new WorkerScratch(scheduler.Workers, floats);
    }

    public GlaConfig Config => _config;

    public void Dispose()
    {
        _scratch.Dispose();
    }

    /// <summary>
    /// Chunked prefill. state: [N, Hkv, K, V], initial on entry, final on return; or, with initialState (same
    /// shape) given, final only: the initial state is read from there and never copied.
    /// </summary>
    public void Chunked(SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(sequences, q, k, v, g, output, state, initialState, chunked: true);

    /// <summary>Token-by-token recurrence (decode). Same contract as <see cref="Chunked"/>.</summary>
    public void Recurrent(SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(sequences, q, k, v, g, output, state, initialState, chunked: false);

    private void Run(SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState, bool chunked)
    {
        initialState = HeadBlockSweep.InitialState(initialState, state);
        fixed (float* pq = q, pk = k, pv = v, pg = g, po = output, ps = state, pi = initialState)
            HeadBlockSweep.Run<Steps, Work>(_scheduler, _scratch, _config.Heads, sequences, pi, ps, chunked ? _c : 0,
                new Steps(this, new Io(pq, pk, pv, pg, po)));
    }

    private readonly struct Steps(GlaCpu kernel, Io io) : IHeadBlockSteps<Work>
    {
        public Work Carve(float* scratch) => kernel.Carve(scratch, out _);

        /// <summary>Each head's state is directly followed by its chunk values: [S; V] is the right operand of the output product.</summary>
        public float* StateSlot(in Work work, int j) => work.S + (long)j * (kernel._kp + kernel._c) * kernel._vp;

        public void Chunk(in Work work, ChunkUnit unit, float* state)
        {
            var w = work with { S = state, Vc = state + (long)kernel._kp * kernel._vp };
            if (kernel._config.Gate == GateKind.PerKey) kernel.ChunkPerKey(io, unit, w);
            else kernel.ChunkScalar(io, unit, w);
        }

        public void Token(in Work work, int head, int token, float* source, float* state) =>
            kernel.RecurrentStep(io, head, token, source, work with { S = state });
    }

    private readonly struct Io(float* q, float* k, float* v, float* g, float* o)
    {
        public readonly float* Q = q, K = k, V = v, G = g, O = o;
    }

    /// <summary>Per-worker scratch regions. Built with a null base to size the block.</summary>
    private readonly struct Work
    {
        public float* S { get; init; }        // [KP × VP] state, directly followed by
        public float* Vc { get; init; }       // [C × VP] chunk values: [S; V] is the right operand of the output product;
                                              // one such pair per head of a work item (HeadBlocks.MaxPerItem)
        public float* Oc { get; init; }       // [C × VP] chunk output (recurrent: the token's value row)
        public float* QA { get; init; }       // [C × (KP + C)] inter queries | intra scores A: the left operand
        public float* Kc { get; init; }       // [C × KP] chunk keys (rows up to the next multiple of 16 zeroed)
        public float* Kh { get; init; }       // [C × KP] off-diagonal keys k_j ⊙ exp(b_{r_{t+1}} − b_j)
        public float* KT { get; init; }       // [KP × C] Kh (per-key gate) or Kc (scalar gates) transposed
        public float* Ks { get; init; }       // [C × KP] keys decayed to the chunk end, for the state update
        public float* Qr { get; init; }       // [C × KP] scale · q, then the inter queries
        public float* Qt { get; init; }       // [C × KP] gated queries scale · q ⊙ exp(b − b_r)
        public float* Qst { get; init; }      // [16 × KP] gated queries scaled by d_st
        public float* Bcum { get; init; }     // scalar gates: [C] cumulative log gate
        public float* F { get; init; }        // [C × KP] exp(b_i − b_{r_s}) within each sub-chunk
        public float* R { get; init; }        // [C × KP] exp(b_{r_{s+1}} − b_j) within each sub-chunk
        public float* Step { get; init; }     // [nsub × KP] exp(b_{r_{s+1}} − b_{r_s})
        public float* Prefix { get; init; }   // [nsub × KP] exp(b_{r_s})
        public float* Tail { get; init; }     // [nsub × KP] exp(b_last − b_{r_{t+1}})
        public float* Gexp { get; init; }     // [C × KP] exp(g) per row (scalar gates: [C × C] decay mask D)
        public float* Kdiag { get; init; }    // [16 × KP] diagonal-block keys
        public float* Decay { get; init; }    // [KP] exp(b_last); the recurrent decay
        public float* RowExp { get; init; }   // [max(KP, C)] exp(b_r) per sub-chunk (scalar gates: exp(b_i)); d_st
        public float* ColExp { get; init; }   // [C] scalar gates: exp(b_last − b_j)
        public float* Acc { get; init; }      // [G × VP] recurrent output accumulators
    }

    private Work Carve(float* baseAddress, out long floats)
    {
        var c = new ScratchCarver(baseAddress);
        long kp = _kp, vp = _vp, cc = _c;
        var work = new Work
        {
            S = c.Take(HeadBlocks.MaxPerItem * (kp + cc) * vp),
            Oc = c.Take(cc * vp),
            QA = c.Take(cc * (kp + cc)),
            Kc = c.Take(cc * kp),
            Kh = c.Take(cc * kp),
            KT = c.Take(kp * cc),
            Ks = c.Take(cc * kp),
            Qr = c.Take(cc * kp),
            Qt = c.Take(cc * kp),
            Qst = c.Take(Sub * kp),
            Bcum = c.Take(cc),
            F = c.Take(cc * kp),
            R = c.Take(cc * kp),
            Step = c.Take(cc / Sub * kp),
            Prefix = c.Take(cc / Sub * kp),
            Tail = c.Take(cc / Sub * kp),
            Gexp = c.Take(cc * Math.Max(kp, cc)),
            Kdiag = c.Take(Sub * kp),
            Decay = c.Take(kp),
            RowExp = c.Take(Math.Max(kp, cc)),
            ColExp = c.Take(cc),
            Acc = c.Take((long)_config.Heads.Group * vp),
        };
        floats = c.Used;
        return work with { Vc = work.S + kp * vp };
    }

    /// <summary>
    /// Asks for the rows of the chunk processed next ahead of time, into L2 (the chunk's work set fills L1 many times
    /// over before they are read); sub-chunk s asks for its share, so the requests are spread over the chunk's work.
    /// </summary>
    private void PrefetchNext(in Io io, ChunkUnit chunk, int s, int nsub) =>
        RowPrefetch.NextUnit(_config.Heads, chunk, s, nsub, io.Q, io.K, io.V, _config.Gate == GateKind.PerKey ? io.G : null);

    /// <summary>Loads the chunk's keys and values (padded rows) shared by every query head of the group;
    /// key rows up to the next multiple of 16 are zero so whole 16-row blocks can be transposed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LoadKeysValues(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        for (int i = 0; i < len; i++)
        {
            long row = (long)(cs + i) * heads.KvHeads + h;
            SimdOps.CopyPadded(w.Kc + (long)i * _kp, io.K + row * heads.KeyDim, heads.KeyDim, _kp);
            SimdOps.CopyPadded(w.Vc + (long)i * _vp, io.V + row * heads.ValueDim, heads.ValueDim, _vp);
        }
        new Span<float>(w.Kc + (long)len * _kp, (HeadLayout.RoundUp16(len) - len) * _kp).Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LoadScaledQueries(in Io io, int qh, int cs, int len, in Work w)
    {
        var heads = _config.Heads;
        for (int i = 0; i < len; i++)
            SimdOps.CopyScaledPadded(w.Qr + (long)i * _kp, io.Q + ((long)(cs + i) * heads.QHeads + qh) * heads.KeyDim,
                _config.Scale, heads.KeyDim, _kp);
    }

    /// <summary>
    /// The chunk's output for query head qh: [Q_inter | A] · [S; V], all rows at once so [S; V] is read from L2
    /// once per column tile; each 8-row tile stops at its own last token (A is zero beyond it).
    /// When V needs no padding the rows are written straight into the output.
    /// </summary>
    private void Output(in Io io, int qh, int cs, int len, in Work w)
    {
        var heads = _config.Heads;
        int vd = heads.ValueDim;
        bool direct = vd == _vp;
        float* o = direct ? io.O + ((long)cs * heads.QHeads + qh) * vd : w.Oc;
        int ldo = direct ? heads.QHeads * vd : _vp;
        SimdGemm.MultiplyCausal(w.QA, _lqa, w.S, _vp, o, ldo, len, _kp, _vp);
        if (direct) return;
        long bytes = (long)vd * sizeof(float);
        for (int i = 0; i < len; i++)
            Buffer.MemoryCopy(w.Oc + (long)i * _vp, io.O + ((long)(cs + i) * heads.QHeads + qh) * vd, bytes, bytes);
    }

    /// <summary>S ← diag(decay) S + Ksᵀ V: rows of S decayed to the chunk end, then the chunk's decayed keys and values added.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void UpdateState(int len, in Work w, float* rowDecay, float scalarDecay)
    {
        for (int c = 0; c < _kp; c++)
            SimdOps.ScaleInPlace(w.S + (long)c * _vp, rowDecay != null ? rowDecay[c] : scalarDecay, _vp);
        SimdGemm.MultiplyTransposedA(w.Ks, _kp, w.Vc, _vp, w.S, _vp, _kp, len, _vp, accumulate: true);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkPerKey(in Io io, ChunkUnit chunk, in Work w)
    {
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        var heads = _config.Heads;
        int kd = heads.KeyDim, kp = _kp, vp = _vp, cc = _c, lqa = _lqa;
        int nsub = (len + Sub - 1) / Sub, lastSub = nsub - 1, offDiagonalKeys = lastSub * Sub;
        LoadKeysValues(io, chunk, w);

        // exp(g) per row: the only exponentials of the chunk; every other decay factor is a product of them.
        for (int i = 0; i < len; i++)
        {
            float* gexp = w.Gexp + (long)i * kp, g = io.G + ((long)(cs + i) * heads.KvHeads + h) * kd;
            if (kd != kp)
            {
                SimdOps.CopyPadded(gexp, g, kd, kp);
                g = gexp;
            }
            for (int c = 0; c < kp; c += 16) SimdMath.ExpNonPositive(Vector512.Load(g + c)).Store(gexp + c);
        }
        // Within sub-chunk s: F_i = exp(b_i − b_{r_s}) forwards; R_j = exp(b_{r_{s+1}} − b_j) backwards (to the chunk's
        // last row in the last sub-chunk). Per sub-chunk: the step E_s = exp(b_{r_{s+1}} − b_{r_s}) and the prefix
        // P_s = exp(b_{r_s}) (b counted from the chunk start, inclusive).
        for (int s = 0; s < nsub; s++)
        {
            int rs = s * Sub, re = Math.Min(rs + Sub, len);
            SimdOps.Fill(Row(w.F, rs), 1f, kp);
            for (int i = rs + 1; i < re; i++) MultiplyRows(Row(w.F, i), Row(w.F, i - 1), Row(w.Gexp, i), kp);
            if (s < lastSub)
            {
                CopyRow(Row(w.R, re - 1), Row(w.Gexp, re), kp);
                MultiplyRows(Row(w.Step, s), Row(w.F, re - 1), Row(w.Gexp, re), kp);
            }
            else
            {
                SimdOps.Fill(Row(w.R, re - 1), 1f, kp);
            }
            for (int j = re - 2; j >= rs; j--) MultiplyRows(Row(w.R, j), Row(w.R, j + 1), Row(w.Gexp, j + 1), kp);
            if (s == 0) CopyRow(Row(w.Prefix, 0), Row(w.Gexp, 0), kp);
            else MultiplyRows(Row(w.Prefix, s), Row(w.Prefix, s - 1), Row(w.Step, s - 1), kp);
        }
        // Off-diagonal keys k_j ⊙ R_j, transposed once for all query sub-chunks. State-update keys k_j ⊙ exp(b_last − b_j)
        // = k_j ⊙ R_j ⊙ Tail_t with Tail_t = exp(b_last − b_{r_{t+1}}) = F_last ⊙ E_{L−1} ⊙ … ⊙ E_{t+1}. Decay exp(b_last) = P_L ⊙ F_last.
        float* fLast = Row(w.F, len - 1);
        for (int j = 0; j < len; j++) MultiplyRows(Row(w.Kh, j), Row(w.Kc, j), Row(w.R, j), kp);
        SimdOps.Transpose(w.Kh, kp, w.KT, cc, offDiagonalKeys, kp);
        for (int t = lastSub; t >= 0; t--)
        {
            float* tail = Row(w.Tail, t);
            if (t == lastSub) SimdOps.Fill(tail, 1f, kp);
            else if (t == lastSub - 1) CopyRow(tail, fLast, kp);
            else MultiplyRows(tail, Row(w.Tail, t + 1), Row(w.Step, t + 1), kp);
            for (int j = t * Sub; j < Math.Min(t * Sub + Sub, len); j++) MultiplyRows(Row(w.Ks, j), Row(w.Kh, j), tail, kp);
        }
        MultiplyRows(w.Decay, Row(w.Prefix, lastSub), fLast, kp);

        for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
        {
            LoadScaledQueries(io, qh, cs, len, w);
            for (int s = 0; s < nsub; s++)
            {
                int rs = s * Sub, re = Math.Min(rs + Sub, len);
                if (qh == h * heads.Group) PrefetchNext(io, chunk, s, nsub);
                // Gated queries Qt_i = scale q_i ⊙ F_i; inter queries Qt_i ⊙ P_s = scale q_i ⊙ exp(b_i).
                for (int i = rs; i < re; i++)
                {
                    MultiplyRows(Row(w.Qt, i), Row(w.Qr, i), Row(w.F, i), kp);
                    MultiplyRows(w.QA + (long)i * lqa, Row(w.Qt, i), Row(w.Prefix, s), kp);
                }
                DiagonalBlock(rs, re, w);
                // Off-diagonal blocks: the query side takes d_st = exp(b_{r_s} − b_{r_{t+1}}) = E_{s−1} ⊙ … ⊙ E_{t+1} (1 for t = s − 1).
                SimdOps.Fill(w.RowExp, 1f, kp);
                for (int t = s - 1; t >= 0; t--)
                {
                    float* qs = Row(w.Qt, rs);
                    if (t < s - 1)
                    {
                        MultiplyRows(w.RowExp, w.RowExp, Row(w.Step, t + 1), kp);
                        for (int i = 0; i < re - rs; i++) MultiplyRows(Row(w.Qst, i), Row(qs, i), w.RowExp, kp);
                        qs = w.Qst;
                    }
                    SimdGemm.Multiply(qs, kp, w.KT + t * Sub, cc, w.QA + (long)rs * lqa + kp + t * Sub, lqa, re - rs, kp, Sub, accumulate: false);
                }
                ZeroAbove(w, rs, re, len);
            }
            Output(io, qh, cs, len, w);
        }
        UpdateState(len, w, w.Decay, 0f);
    }

    /// <summary>Row i of a [rows × KP] scratch region.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float* Row(float* region, int i) => region + (long)i * _kp;

    /// <summary>Scores of rows rs..re against the later sub-chunks (columns re..len) are zero: causality.</summary>
    private void ZeroAbove(in Work w, int rs, int re, int len)
    {
        for (int i = rs; i < re; i++) new Span<float>(w.QA + (long)i * _lqa + _kp + re, len - re).Clear();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyRow(float* dst, float* src, int padded) =>
        Buffer.MemoryCopy(src, dst, (long)padded * sizeof(float), (long)padded * sizeof(float));

    /// <summary>dst = src ⊙ factor over a padded row.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void MultiplyRows(float* dst, float* src, float* factor, int padded)
    {
        for (int c = 0; c < padded; c += 16) (Vector512.Load(src + c) * Vector512.Load(factor + c)).Store(dst + c);
    }

    /// <summary>
    /// Diagonal sub-block rows rs..re: A_ij = Σ_c Qr_ic · k_jc exp(b_ic − b_jc) for rs <= j <= i, zero above
    /// the diagonal up to re. Row j of Kdiag holds k_j ⊙ exp(b_{i−1} − b_j) when row i starts; it is carried to
    /// row i by multiplying with exp(g_i) (<= 1) as it is read. Four rows at a time keep four independent sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DiagonalBlock(int rs, int re, in Work w)
    {
        int kp = _kp;
        for (int i = rs; i < re; i++)
        {
            float* e = w.Gexp + (long)i * kp, qr = w.Qr + (long)i * kp, arow = w.QA + (long)i * _lqa + kp;
            int j = rs;
            for (; j + 4 <= i; j += 4) DecayDot4(w.Kdiag + (long)(j - rs) * kp, e, qr, arow + j);
            for (; j < i; j++)
            {
                float* kd = w.Kdiag + (long)(j - rs) * kp;
                SimdOps.MultiplyInPlace(kd, e, kp);
                arow[j] = SimdOps.Dot(qr, kd, kp);
            }
            float* ki = w.Kdiag + (long)(i - rs) * kp;
            Buffer.MemoryCopy(w.Kc + (long)i * kp, ki, (long)kp * sizeof(float), (long)kp * sizeof(float));
            arow[i] = SimdOps.Dot(qr, ki, kp);
            for (j = i + 1; j < re; j++) arow[j] = 0f;
        }
    }

    /// <summary>Four consecutive rows kd (KP apart): kd ⊙= e in place, a[r] = q · kd_r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void DecayDot4(float* kd, float* e, float* q, float* a)
    {
        int kp = _kp;
        Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
        for (int c = 0; c < kp; c += 16)
        {
            var ev = Vector512.Load(e + c);
            var qv = Vector512.Load(q + c);
            var x0 = Vector512.Load(kd + c) * ev;
            var x1 = Vector512.Load(kd + kp + c) * ev;
            var x2 = Vector512.Load(kd + 2 * kp + c) * ev;
            var x3 = Vector512.Load(kd + 3 * kp + c) * ev;
            x0.Store(kd + c);
            x1.Store(kd + kp + c);
            x2.Store(kd + 2 * kp + c);
            x3.Store(kd + 3 * kp + c);
            s0 = Vector512.FusedMultiplyAdd(qv, x0, s0);
            s1 = Vector512.FusedMultiplyAdd(qv, x1, s1);
            s2 = Vector512.FusedMultiplyAdd(qv, x2, s2);
            s3 = Vector512.FusedMultiplyAdd(qv, x3, s3);
        }
        a[0] = Vector512.Sum(s0);
        a[1] = Vector512.Sum(s1);
        a[2] = Vector512.Sum(s2);
        a[3] = Vector512.Sum(s3);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkScalar(in Io io, ChunkUnit chunk, in Work w)
    {
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        var heads = _config.Heads;
        int kp = _kp, vp = _vp, cc = _c, lqa = _lqa;
        int lenPadded = HeadLayout.RoundUp16(len);
        LoadKeysValues(io, chunk, w);

        float chunkDecay = _constantPowers is null ? ScalarDecays(io, h, cs, len, w) : ConstantDecays(h, len, w);

        // Keys transposed (raw, for Q Kᵀ) and decayed to the chunk end (for the state update).
        SimdOps.Transpose(w.Kc, kp, w.KT, cc, lenPadded, kp);
        for (int j = 0; j < len; j++)
        {
            float* src = w.Kc + (long)j * kp, dst = w.Ks + (long)j * kp;
            var f = Vector512.Create(w.ColExp[j]);
            for (int c = 0; c < kp; c += 16) (Vector512.Load(src + c) * f).Store(dst + c);
        }
        for (int j = len; j < lenPadded; j++)
            for (int c = 0; c < kp; c++) w.KT[(long)c * cc + j] = 0f;

        for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
        {
            LoadScaledQueries(io, qh, cs, len, w);
            for (int i = 0; i < len; i++)
            {
                float* src = w.Qr + (long)i * kp, dst = w.QA + (long)i * lqa;
                var f = Vector512.Create(w.RowExp[i]);
                for (int c = 0; c < kp; c += 16) (Vector512.Load(src + c) * f).Store(dst + c);
            }
            for (int rs = 0; rs < len; rs += Sub)
            {
                int re = Math.Min(rs + Sub, len), cols = Math.Min(rs + Sub, lenPadded);
                if (qh == h * heads.Group) PrefetchNext(io, chunk, rs / Sub, lenPadded / Sub);
                float* a = w.QA + (long)rs * lqa + kp;
                SimdGemm.Multiply(w.Qr + (long)rs * kp, kp, w.KT, cc, a, lqa, re - rs, kp, cols, accumulate: false);
                for (int i = 0; i < re - rs; i++) SimdOps.MultiplyInPlace(a + (long)i * lqa, w.Gexp + (long)(rs + i) * cc, cols);
                ZeroAbove(w, rs, Math.Min(cols, len), len);
            }
            Output(io, qh, cs, len, w);
        }
        UpdateState(len, w, null, chunkDecay);
    }

    /// <summary>
    /// Decay factors of a chunk from its per-head (or absent) log gates, b = in-chunk cumulative sum:
    /// D_ij = exp(b_i − b_j) for j <= i (zero above) in Gexp, exp(b_i) in RowExp, exp(b_last − b_j) in ColExp.
    /// Returns the chunk decay exp(b_last).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float ScalarDecays(in Io io, int h, int cs, int len, in Work w)
    {
        int lenPadded = HeadLayout.RoundUp16(len), cc = _c, hkv = _config.Heads.KvHeads;
        float* b = w.Bcum;
        float acc = 0f;
        for (int i = 0; i < len; i++)
        {
            if (_config.Gate == GateKind.PerHead) acc += io.G[(long)(cs + i) * hkv + h];
            b[i] = acc;
        }
        for (int i = len; i < lenPadded; i++) b[i] = b[len - 1];
        float bLast = b[len - 1];
        var zero = Vector512<float>.Zero;
        for (int i = 0; i < len; i++)
        {
            float* d = w.Gexp + (long)i * cc;
            var bi = Vector512.Create(b[i]);
            for (int j = 0; j < lenPadded; j += 16)
            {
                // Entries above the diagonal are masked to zero; their exponent is never evaluated positive.
                var e = SimdMath.ExpNonPositive(Vector512.Min(bi - Vector512.Load(b + j), zero));
                var below = Vector512.LessThanOrEqual(Vector512.Create(j) + Vector512<int>.Indices, Vector512.Create(i));
                Vector512.ConditionalSelect(below.AsSingle(), e, zero).Store(d + j);
            }
        }
        var last = Vector512.Create(bLast);
        for (int i = 0; i < lenPadded; i += 16)
        {
            var bv = Vector512.Load(b + i);
            SimdMath.ExpNonPositive(bv).Store(w.RowExp + i);
            SimdMath.ExpNonPositive(Vector512.Min(last - bv, zero)).Store(w.ColExp + i);
        }
        return MathF.Exp(bLast);
    }

    /// <summary>The same factors for a constant per-head decay, read from the table made once per head.</summary>
    private float ConstantDecays(int h, int len, in Work w)
    {
        int lenPadded = HeadLayout.RoundUp16(len), cc = _c;
        float[] pow = _constantPowers![h];
        for (int i = 0; i < len; i++)
        {
            float* d = w.Gexp + (long)i * cc;
            for (int j = 0; j <= i; j++) d[j] = pow[i - j];
            for (int j = i + 1; j < lenPadded; j++) d[j] = 0f;
            w.RowExp[i] = pow[i + 1];
            w.ColExp[i] = pow[len - 1 - i];
        }
        return pow[len];
    }

    /// <summary>One token: S = diag(exp(g)) S + k vᵀ, then o = Sᵀ (scale q) for each query head of the group.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RecurrentStep(in Io io, int h, int t, float* source, in Work w)
    {
        var heads = _config.Heads;
        int kd = heads.KeyDim, vd = heads.ValueDim, vp = _vp, group = heads.Group;
        long kvRow = (long)t * heads.KvHeads + h;
        float* kt = io.K + kvRow * kd;
        float* vrow = w.Oc;
        SimdOps.CopyPadded(vrow, io.V + kvRow * vd, vd, vp);
        float* decay = w.Decay;
        switch (_config.Gate)
        {
            case GateKind.PerKey:
                SimdOps.CopyPadded(decay, io.G + kvRow * kd, kd, _kp);
                for (int c = 0; c < _kp; c += 16) SimdMath.ExpNonPositive(Vector512.Load(decay + c)).Store(decay + c);
                break;
            case GateKind.PerHead:
                SimdOps.Fill(decay, MathF.Exp(io.G[kvRow]), kd);
                break;
            case GateKind.Constant:
                SimdOps.Fill(decay, MathF.Exp(_config.ConstantLogDecay![h]), kd);
                break;
            default:
                SimdOps.Fill(decay, 1f, kd);
                break;
        }
        float* q0 = io.Q + ((long)t * heads.QHeads + h * group) * kd;
        // The first query head of the group reads S as it is updated; the other heads of a group read it afterwards.
        RecurrentRows.UpdateAndRead(source, w.S, vp, kd, vrow, decay, 1, kt, q0, w.Acc);
        for (int gi = 1; gi < group; gi++) RecurrentRows.Read(w.S, vp, kd, q0 + (long)gi * kd, w.Acc + (long)gi * vp);
        long bytes = (long)vd * sizeof(float);
        for (int gi = 0; gi < group; gi++)
        {
            float* acc = w.Acc + (long)gi * vp;
            SimdOps.ScaleInPlace(acc, _config.Scale, vp);
            Buffer.MemoryCopy(acc, io.O + ((long)t * heads.QHeads + h * group + gi) * vd, bytes, bytes);
        }
    }
}

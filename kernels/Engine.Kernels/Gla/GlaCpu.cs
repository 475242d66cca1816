using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// GLA on the CPU: the chunked form as small Vector512 matrix products, and the recurrent form for
/// decode. Work items are (sequence, block of key/value heads) run by HeadBlockSweep; each worker owns a
/// scratch block sized here from the config, so calls allocate nothing.
///
/// Chunk of C tokens, b = in-chunk cumulative log gate (fp32):
///   inter   O   = (scale·q ⊙ exp(b)) S
///   intra   O  += A V,  A_ij = scale Σ_c q_ic k_jc exp(b_ic − b_jc), j <= i
///   state   S   = diag(exp(b_last)) S + (k ⊙ exp(b_last − b))ᵀ V
/// A per-key gate is factored by sub-chunks (<see cref="PerKeyChunkDecay"/>) so every exponent is <= 0.
/// Scalar gates (per head, constant, none) need no sub-chunks: A = (Q Kᵀ) ⊙ D.
/// </summary>
/// <remarks>
/// Hot methods are compiled fully optimized on first use (a first call on a long sequence must not run unoptimized code).
/// </remarks>
public sealed unsafe class GlaCpu : IDisposable
{
    private const int Sub = PerKeyChunkDecay.Sub;

    private readonly GlaConfig _config;
    private readonly WorkerScratch _scratch;
    private readonly int _kp, _vp, _c;
    /// <summary>Row stride of QA: the output of a sub-chunk is one product [Q_inter | A] · [S; V].</summary>
    private readonly int _lqa;
    /// <summary>Each head's state slot holds [S; V]: the chunk values follow the state.</summary>
    private readonly StackedStateSlots _slots;
    /// <summary>Constant gate only: per kv head exp(logDecay · m), m = 0..C, made once (Lightning's decays).</summary>
    private readonly float[][]? _constantPowers;

    public GlaCpu(GlaConfig config)
    {
        _config = config;
        _kp = config.Heads.KeyDimPadded;
        _vp = config.Heads.ValueDimPadded;
        _c = config.ChunkSize;
        _lqa = _kp + _c;
        _slots = new StackedStateSlots(_kp, _vp, _c);
        if (config.ConstantLogDecay is { } logDecay)
            _constantPowers = logDecay.Select(l => Enumerable.Range(0, _c + 1).Select(m => (float)Math.Exp((double)l * m)).ToArray()).ToArray();
        Carve(null, out long floats);
        _scratch = new WorkerScratch(floats);
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
    public void Chunked(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(scheduler, sequences, q, k, v, g, output, state, initialState, chunked: true);

    /// <summary>Token-by-token recurrence (decode). Same contract as <see cref="Chunked"/>.</summary>
    public void Recurrent(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(scheduler, sequences, q, k, v, g, output, state, initialState, chunked: false);

    private void Run(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState, bool chunked)
    {
        initialState = HeadBlockSweep.InitialState(initialState, state);
        int gateFaults = 0;
        fixed (float* pq = q, pk = k, pv = v, pg = g, po = output, ps = state, pi = initialState)
            HeadBlockSweep.Run<Steps, Work>(scheduler, _scratch, _config.Heads, sequences, pi, ps, chunked ? _c : 0,
                new Steps(this, new Io(pq, pk, pv, pg, po, &gateFaults)));
        if (gateFaults != 0) LogGates.Refuse(g, "g");
    }

    private readonly struct Steps(GlaCpu kernel, Io io) : IHeadBlockSteps<Work>
    {
        public Work Carve(float* scratch) => kernel.Carve(scratch, out _);

        /// <summary>Each head's state is directly followed by its chunk values: [S; V] is the right operand of the output product.</summary>
        public float* StateSlot(in Work work, int j) => kernel._slots.Slot(work.S, j);

        public void Chunk(in Work work, ChunkUnit unit, float* state)
        {
            var w = work with { S = state, Vc = kernel._slots.RowsOf(state) };
            if (kernel._config.Gate == GateKind.PerKey) kernel.ChunkPerKey(io, unit, w);
            else kernel.ChunkScalar(io, unit, w);
        }

        public void Token(in Work work, int head, int token, float* source, float* state) =>
            kernel.RecurrentStep(io, head, token, source, work with { S = state });
    }

    /// <summary>The call's tensors, and a flag any worker sets when it loads a gate that is not a valid log gate.</summary>
    private readonly struct Io(float* q, float* k, float* v, float* g, float* o, int* gateFaults)
    {
        public readonly float* Q = q, K = k, V = v, G = g, O = o;
        public readonly int* GateFaults = gateFaults;
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
        public float* KT { get; init; }       // scalar gates: [KP × C] Kc transposed
        public float* Ks { get; init; }       // scalar gates: [C × KP] keys decayed to the chunk end
        public float* Qr { get; init; }       // [C × KP] scale · q
        public float* Bcum { get; init; }     // scalar gates: [C] cumulative log gate
        public float* Gexp { get; init; }     // scalar gates: [C × C] decay mask D
        public float* RowExp { get; init; }   // scalar gates: [C] exp(b_i)
        public float* ColExp { get; init; }   // scalar gates: [C] exp(b_last − b_j)
        public float* Decay { get; init; }    // [KP] the recurrent decay
        public PerKeyChunkDecay KeyDecay { get; init; }  // per-key gate: the chunk's decay factors
        public float* Acc { get; init; }      // [G × VP] recurrent output accumulators
    }

    private Work Carve(float* baseAddress, out long floats)
    {
        var c = new ScratchCarver(baseAddress);
        long kp = _kp, vp = _vp, cc = _c;
        var work = new Work
        {
            S = c.Take(HeadBlocks.MaxPerItem * _slots.Floats),
            Oc = c.Take(cc * vp),
            QA = c.Take(cc * (kp + cc)),
            Kc = c.Take(cc * kp),
            KT = c.Take(kp * cc),
            Ks = c.Take(cc * kp),
            Qr = c.Take(cc * kp),
            Bcum = c.Take(cc),
            Gexp = c.Take(cc * cc),
            RowExp = c.Take(cc),
            ColExp = c.Take(cc),
            Decay = c.Take(kp),
            KeyDecay = _config.Gate == GateKind.PerKey ? new PerKeyChunkDecay(ref c, _kp, _c) : default,
            Acc = c.Take((long)_config.Heads.Group * vp),
        };
        floats = c.Used;
        return work with { Vc = _slots.RowsOf(work.S) };
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkPerKey(in Io io, ChunkUnit chunk, in Work w)
    {
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        var heads = _config.Heads;
        int nsub = (len + Sub - 1) / Sub;
        LoadKeysValues(io, chunk, w);
        var decay = w.KeyDecay;
        if (!decay.Prepare(io.G + ((long)cs * heads.KvHeads + h) * heads.KeyDim, (long)heads.KvHeads * heads.KeyDim, heads.KeyDim, w.Kc, len))
            *io.GateFaults = 1;
        for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
        {
            LoadScaledQueries(io, qh, cs, len, w);
            for (int s = 0; s < nsub; s++)
            {
                if (qh == h * heads.Group) PrefetchNext(io, chunk, s, nsub);
                decay.Scores(w.Qr, w.Kc, s, len, w.QA, _lqa);
            }
            Output(io, qh, cs, len, w);
        }
        decay.UpdateState(w.S, w.Vc, _vp, len);
    }

    /// <summary>Scores of rows rs..re against the later sub-chunks (columns re..len) are zero: causality.</summary>
    private void ZeroAbove(in Work w, int rs, int re, int len)
    {
        for (int i = rs; i < re; i++) new Span<float>(w.QA + (long)i * _lqa + _kp + re, len - re).Clear();
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
        for (int c = 0; c < _kp; c++) SimdOps.ScaleInPlace(w.S + (long)c * _vp, chunkDecay, _vp);
        SimdGemm.MultiplyTransposedA(w.Ks, _kp, w.Vc, _vp, w.S, _vp, _kp, len, _vp, accumulate: true);
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
            if (_config.Gate == GateKind.PerHead)
            {
                float gate = io.G[(long)(cs + i) * hkv + h];
                if (!LogGates.IsValid(gate)) *io.GateFaults = 1;
                acc += gate;
            }
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
                if (!LogGates.ExpRow(decay, io.G + kvRow * kd, kd, _kp)) *io.GateFaults = 1;
                break;
            case GateKind.PerHead:
                if (!LogGates.IsValid(io.G[kvRow])) *io.GateFaults = 1;
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

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Kernels.Gating;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// DeltaNet / Gated DeltaNet on the CPU: the chunked WY/UT form as small Vector512 matrix products, and
/// the recurrent form for decode. Work items are (sequence, block of value heads) run by HeadBlockSweep; the output heads of a
/// value head share its state update. Value head h reads key head h / ValueGroup and its output heads read their query heads
/// (<see cref="HeadLayout"/>) where they lie in q and k. Each worker owns a scratch block sized here from the config.
///
/// Chunk of c tokens, local rows i, j; G = in-chunk cumulative log gate (fp32; 0 for DeltaNet),
/// D_ij = exp(G_i − G_j) for j &lt;= i (else 0), k̂, q̂ the (optionally L2-normalized) rows:
///   A      = strict_lower(diag(β) K Kᵀ ⊙ D)
///   T      = (I + A)⁻¹                      forward substitution, row i = e_i − Σ_{m&lt;i} A_im T_m
///   V_new  = U − W S = T diag(β) (V − diag(e^G) K S)   (W = T diag(β e^G) K, U = T diag(β) V, never formed:
///            K S costs what W S does, and T then multiplies V-wide rows only)
///   O      = scale (diag(e^G) Q S + ((Q Kᵀ) ⊙ D) V_new)
///   S      ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ V_new
/// Every exponent is &lt;= 0: G_i − G_j for j &lt;= i, G_i, G_last − G_j (G never increases along the chunk).
/// A per-key gate (b = in-chunk cumulative log gate per key dim) turns every decay into a per-key factor inside the
/// products: A_ij = β_i Σ_c k̂_ic k̂_jc e^{b_ic − b_jc}, V_new = T diag(β) (V − (K ⊙ e^b) S), O = scale ((Q ⊙ e^b) S +
/// P V_new) with P the same scores of q̂, S ← diag(e^{b_last}) S + (K ⊙ e^{b_last − b})ᵀ V_new; the scores of both
/// row sets, the inter rows and the state update are GLA's (<see cref="PerKeyChunkDecay"/>), as are the per-head
/// gate's (<see cref="ScalarChunkDecay"/>). T R and the intra-chunk part of O are causal products
/// (<see cref="SimdGemm.MultiplyCausal"/>): no row of V_new or O reads a later token's row.
/// </summary>
public sealed unsafe class DeltaRuleCpu : IDisposable
{
    private readonly DeltaRuleConfig _config;
    private readonly WorkerScratch _scratch;
    private readonly int _kp, _vp, _c;
    /// <summary>Row stride of XA: [inter rows | scores], the left operand of [S; V_new] (per-key gate).</summary>
    private readonly int _lxa;
    /// <summary>Each head's state slot holds [S; V_new]: V_new follows the state.</summary>
    private readonly StackedStateSlots _slots;

    public DeltaRuleCpu(DeltaRuleConfig config)
    {
        _config = config;
        _kp = config.Heads.KeyDimPadded;
        _vp = config.Heads.ValueDimPadded;
        _c = config.ChunkSize;
        _lxa = _kp + _c;
        _slots = new StackedStateSlots(_kp, _vp, _c);
        Carve(null, out long floats);
        _scratch = new WorkerScratch(floats);
    }

    public DeltaRuleConfig Config => _config;

    public void Dispose()
    {
        _scratch.Dispose();
    }

    /// <summary>
    /// Chunked prefill. q [TotalTokens, Hq, K], k [TotalTokens, Hk, K], v [TotalTokens, Hv, V], their token rows
    /// <paramref name="rows"/> apart (default dense); beta [TotalTokens, Hv], g [TotalTokens, Hv] or [TotalTokens, Hv, K] (empty for
    /// DeltaNet); state [N, Hv, K, V], initial on entry, final on return; or, with initialState (same shape) given, final only: the
    /// initial state is read from there. With <paramref name="conv"/> active, q, k and v are the rows before the short convolution,
    /// which the kernel applies as it loads them (channels [q | k | v]); with <paramref name="norm"/> active, each output head's rows
    /// are normalized and gated before they are stored.
    /// </summary>
    public void Chunked(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default, TokenRows? rows = null,
        ShortConvRows conv = default, GatedNormRows norm = default)
        => Run(scheduler, sequences, q, k, v, beta, g, output, state, initialState, rows, conv, norm, chunked: true);

    /// <summary>Token-by-token recurrence (decode). Same contract as <see cref="Chunked"/>.</summary>
    public void Recurrent(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default, TokenRows? rows = null,
        ShortConvRows conv = default, GatedNormRows norm = default)
        => Run(scheduler, sequences, q, k, v, beta, g, output, state, initialState, rows, conv, norm, chunked: false);

    private void Run(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState, TokenRows? rows,
        ShortConvRows conv, GatedNormRows norm, bool chunked)
    {
        initialState = HeadBlockSweep.InitialState(initialState, state);
        int gateFaults = 0;
        fixed (float* pq = q, pk = k, pv = v, pb = beta, pg = g, po = output, ps = state, pi = initialState)
            HeadBlockSweep.Run<Steps, Work>(scheduler, _scratch, _config.Heads, _config.StateLayout, sequences, pi, ps, chunked ? _c : 0,
                new Steps(this, new Io(pq, pk, pv, pb, pg, po, rows ?? TokenRows.Dense(_config.Heads), conv, norm, &gateFaults)));
        if (gateFaults != 0) LogGates.Refuse(g, "g");
    }

    private readonly struct Steps(DeltaRuleCpu kernel, Io io) : IHeadBlockSteps<Work>
    {
        public Work Carve(float* scratch) => kernel.Carve(scratch, out _);

        /// <summary>Each head's state is directly followed by its V_new: [S; V_new] is the right operand of the per-key output product.</summary>
        public float* StateSlot(in Work work, int j) => kernel._slots.Slot(work.S, j);

        public void Chunk(in Work work, ChunkUnit unit, float* state)
        {
            var w = work with { S = state, Vnew = kernel._slots.RowsOf(state) };
            if (kernel._config.Gate == GateKind.PerKey) kernel.ChunkPerKey(io, unit, w);
            else kernel.Chunk(io, unit, w);
        }

        public void Token(in Work work, int head, int token, float* source, float* state, StateLayout layout) =>
            kernel.RecurrentStep(io, head, token, source, work with { S = state }, layout);
    }

    /// <summary>
    /// The call's tensors, its short convolution and output norm (if any), and a flag any worker sets when it loads a gate
    /// that is not a valid log gate.
    /// </summary>
    private readonly struct Io(float* q, float* k, float* v, float* beta, float* g, float* o, TokenRows rows, ShortConvRows conv, GatedNormRows norm, int* gateFaults)
    {
        public readonly float* Q = q, K = k, V = v, Beta = beta, G = g, O = o;
        public readonly TokenRows Rows = rows;
        public readonly ShortConvRows Conv = conv;
        public readonly GatedNormRows Norm = norm;
        public readonly int* GateFaults = gateFaults;
    }

    /// <summary>Per-worker scratch regions. Built with a null base to size the block.</summary>
    private readonly struct Work
    {
        public float* S { get; init; }      // [KP × VP] state, directly followed by
        public float* Vnew { get; init; }   // [C × VP] V_new = T R; one such pair per head of a work item
        public float* Kc { get; init; }     // [C × KP] chunk keys k̂ (rows up to the next multiple of 16 zeroed)
        public float* Vc { get; init; }     // [C × VP] chunk values (when V needs padding)
        public float* R { get; init; }      // [C × VP] K S, then β (v − e^G K S)
        public float* Beta { get; init; }   // [C] β
        public float* A { get; init; }      // [C × C] A, then Q Kᵀ ⊙ D per query head
        public float* KeyProducts { get; init; }    // scalar gates: [C × C] K Kᵀ of the keys Kc holds, before the decay
        public float* QueryProducts { get; init; }  // scalar gates: [C × C] Q Kᵀ of the rows Qr and Kc hold, before the decay
        public float* Tinv { get; init; }   // [C × C] (I + A)⁻¹
        public float* Qr { get; init; }     // [C × KP] scale q̂ (recurrent: [G × KP] query rows, then k̂ ⊙ e^g)
        public float* Oc { get; init; }     // [C × VP] chunk output (recurrent: [G × VP] accumulators)
        public float* Row { get; init; }    // [KP] recurrent key row
        public float* Pred { get; init; }   // [VP] recurrent Sᵀk, then u
        public float* DecayNear { get; init; }  // [KP] per-key gate: the recurrent decay's near part (SimdMath.DecayParts), then
        public float* DecayFar { get; init; }   // [KP] its far part
        public float* XA { get; init; }     // per-key gate: [C × (KP + C)] inter rows | scores of k̂, then of scale q̂
        public RowsTag* KeyRows { get; init; }     // whose chunk rows Kc holds
        public RowsTag* QueryRows { get; init; }   // whose chunk rows Qr holds
        public RowsTag* QueryProductRows { get; init; }  // whose query rows QueryProducts holds against Kc's keys
        public PerKeyChunkDecay KeyDecay { get; init; }   // per-key gate: the chunk's decay factors
        public ScalarChunkDecay HeadDecay { get; init; }  // other gates: the chunk's decay factors
    }

    private Work Carve(float* baseAddress, out long floats)
    {
        var c = new ScratchCarver(baseAddress);
        long kp = _kp, vp = _vp, cc = _c, rows = Math.Max(cc, _config.Heads.Group);
        bool perKey = _config.Gate == GateKind.PerKey;
        var work = new Work
        {
            S = c.Take(HeadBlocks.MaxPerItem * _slots.Floats),
            Kc = c.Take(cc * kp),
            Vc = c.Take(cc * vp),
            R = c.Take(cc * vp),
            Beta = c.Take(cc),
            A = c.Take(cc * cc),
            KeyProducts = c.Take(perKey ? 0 : cc * cc),
            QueryProducts = c.Take(perKey ? 0 : cc * cc),
            Tinv = c.Take(cc * cc),
            Qr = c.Take((rows + 1) * kp),
            Oc = c.Take(rows * vp),
            Row = c.Take(kp),
            Pred = c.Take(vp),
            DecayNear = c.Take(kp),
            DecayFar = c.Take(kp),
            XA = c.Take(perKey ? cc * _lxa : 0),
            KeyRows = (RowsTag*)c.Take(sizeof(RowsTag) / sizeof(float)),
            QueryRows = (RowsTag*)c.Take(sizeof(RowsTag) / sizeof(float)),
            QueryProductRows = (RowsTag*)c.Take(sizeof(RowsTag) / sizeof(float)),
            KeyDecay = perKey ? new PerKeyChunkDecay(ref c, _kp, _c) : default,
            HeadDecay = perKey ? default : new ScalarChunkDecay(ref c, _kp, _c, gated: _config.Gate == GateKind.PerHead),
        };
        floats = c.Used;
        if (baseAddress != null) *work.KeyRows = *work.QueryRows = *work.QueryProductRows = RowsTag.None;
        return work;
    }

    /// <summary>
    /// The head whose chunk rows (from packed token Start, Length rows) a scratch block holds: with grouped value heads,
    /// adjacent value heads of a work item read the same key and query heads, whose rows are then loaded, convolved and
    /// normalized once, and under a scalar gate multiplied into their scores once. Reset for each work item; only the
    /// chunked form keeps rows across units.
    /// </summary>
    private struct RowsTag
    {
        public int Head, Start, Length;

        public static RowsTag None => new() { Head = -1 };

        public readonly bool Holds(int head, ChunkUnit chunk) => Head == head && Start == chunk.Start && Length == chunk.Length;

        public static RowsTag Of(int head, ChunkUnit chunk) => new() { Head = head, Start = chunk.Start, Length = chunk.Length };
    }

    /// <summary>dst = factor · src / ‖src‖ (with qkL2Norm) or factor · src, padded with zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LoadRow(float* dst, float* src, float factor)
    {
        if (_config.QkL2Norm) SimdOps.CopyNormalizedPadded(dst, src, factor, _config.L2NormEpsilon, _config.Heads.KeyDim, _kp);
        else SimdOps.CopyScaledPadded(dst, src, factor, _config.Heads.KeyDim, _kp);
    }

    /// <summary>
    /// Rows 0..len of q or k (from packed token <paramref name="start"/>, the head's first convolution channel
    /// <paramref name="channel"/>) as <see cref="LoadRow"/> loads one, convolved first when the call has a short convolution,
    /// zero up to the next multiple of 16.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LoadRows(in Io io, float* dst, HeadRows rows, int channel, int start, int len, float factor)
    {
        if (!io.Conv.Active)
        {
            if (_config.QkL2Norm) rows.CopyNormalizedTo(dst, _kp, len, factor, _config.L2NormEpsilon);
            else rows.CopyScaledTo(dst, _kp, len, factor);
            return;
        }
        io.Conv.Load(dst, _kp, _kp, rows, channel, start, len);
        for (int i = 0; i < len; i++) LoadRow(dst + (long)i * _kp, dst + (long)i * _kp, factor);
        HeadRows.ZeroToBlockEnd(dst, _kp, len);
    }

    /// <summary>The chunk's rows of query head <paramref name="queryHead"/>, scaled, into Qr unless it holds them.</summary>
    private void LoadQueries(in Io io, ChunkUnit chunk, int queryHead, in Work w)
    {
        if (w.QueryRows->Holds(queryHead, chunk)) return;
        LoadRows(io, w.Qr, new HeadRows(io.Q, io.Rows.Q, _config.Heads.KeyDim, queryHead, chunk.Start), QueryChannel(queryHead), chunk.Start, chunk.Length, _config.Scale);
        *w.QueryRows = RowsTag.Of(queryHead, chunk);
    }

    /// <summary>One token's row of q or k as <see cref="LoadRows"/> loads it.</summary>
    private void LoadToken(in Io io, float* dst, float* tensor, int rowStride, int head, int channel, int token, float factor)
    {
        if (io.Conv.Active)
        {
            io.Conv.Load(dst, _kp, _kp, new HeadRows(tensor, rowStride, _config.Heads.KeyDim, head, token), channel, token, 1);
            LoadRow(dst, dst, factor);
        }
        else LoadRow(dst, tensor + (long)token * rowStride + (long)head * _config.Heads.KeyDim, factor);
    }

    /// <summary>The first convolution channel of query head <paramref name="head"/>, key head, value head: channels are [q | k | v].</summary>
    private int QueryChannel(int head) => head * _config.Heads.KeyDim;

    private int KeyChannel(int head) => (_config.Heads.QHeads + head) * _config.Heads.KeyDim;

    private int ValueChannel(int head) => (_config.Heads.QHeads + _config.Heads.KeyHeads) * _config.Heads.KeyDim + head * _config.Heads.ValueDim;

    /// <summary>
    /// Loads the chunk's β, keys k̂ (unless Kc holds them: <paramref name="newKeys"/> false) and values; returns the value
    /// rows where they lie when they need no padding, else their padded copy, and their row stride.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private float* LoadKeysValues(in Io io, ChunkUnit chunk, in Work w, out int ldv, out bool newKeys)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        for (int i = 0; i < len; i++) w.Beta[i] = io.Beta[(long)(cs + i) * heads.ValueHeads + h];
        int keyHead = heads.KeyHeadOf(h);
        newKeys = !w.KeyRows->Holds(keyHead, chunk);
        if (newKeys)
        {
            LoadRows(io, w.Kc, new HeadRows(io.K, io.Rows.K, heads.KeyDim, keyHead, cs), KeyChannel(keyHead), cs, len, 1f);
            *w.KeyRows = RowsTag.Of(keyHead, chunk);
        }
        var values = new HeadRows(io.V, io.Rows.V, heads.ValueDim, h, cs);
        if (io.Conv.Active)
        {
            io.Conv.Load(w.Vc, _vp, _vp, values, ValueChannel(h), cs, len);
            HeadRows.ZeroToBlockEnd(w.Vc, _vp, len);
        }
        else if (heads.ValueDim == _vp)
        {
            ldv = values.Stride;
            return values.Row(0);
        }
        else values.CopyTo(w.Vc, _vp, len);
        ldv = _vp;
        return w.Vc;
    }

    /// <summary>
    /// V_new = T R, R = β (V − e^G K_inter S) with K_inter the keys' inter rows (row stride ldk) and e^G the per-row
    /// decay (null: none): row i of V_new reads rows 0..i of R.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void NewValues(float* interKeys, int ldk, float* values, int ldv, float* rowDecay, int len, in Work w)
    {
        int vp = _vp;
        SimdGemm.Multiply(interKeys, ldk, w.S, vp, w.R, vp, len, _kp, vp, accumulate: false);
        for (int i = 0; i < len; i++)
        {
            float* r = w.R + (long)i * vp, v = values + (long)i * ldv;
            var b = Vector512.Create(w.Beta[i]);
            var e = Vector512.Create(rowDecay == null ? 1f : rowDecay[i]);
            for (int c = 0; c < vp; c += 16) (b * (Vector512.Load(v + c) - e * Vector512.Load(r + c))).Store(r + c);
        }
        SimdGemm.MultiplyCausal(w.Tinv, _c, w.R, vp, w.Vnew, vp, len, 0, vp, accumulate: false);
    }

    /// <summary>A = β_i times the scores of k̂ below the diagonal (row stride lda), then T = (I + A)⁻¹.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void InvertScores(float* scores, int lda, int len, in Work w)
    {
        for (int i = 1; i < len; i++) SimdOps.ScaleInPlace(scores + (long)i * lda, w.Beta[i], HeadLayout.RoundUp16(i));
        UnitLowerInverse.Invert(scores, lda, w.Tinv, _c, len);
    }

    /// <summary>The output norm's gate rows of the chunk's output heads, asked for while the chunk computes.</summary>
    private void PrefetchNormGates(in Io io, ChunkUnit chunk)
    {
        if (!io.Norm.Active) return;
        for (int oh = chunk.Head * _config.Heads.Group; oh < (chunk.Head + 1) * _config.Heads.Group; oh++) io.Norm.Prefetch(oh, chunk.Start, chunk.Length);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Chunk(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        int kp = _kp, vp = _vp, cc = _c, nblocks = HeadLayout.RoundUp16(len) / ScalarChunkDecay.Block;
        var decay = w.HeadDecay;
        float* values = LoadKeysValues(io, chunk, w, out int ldv, out bool newKeys);
        PrefetchNormGates(io, chunk);
        if (newKeys)
        {
            decay.TransposeKeys(w.Kc, len);
            for (int s = 0; s < nblocks; s++) decay.Products(w.Kc, s, len, w.KeyProducts, cc);
            *w.QueryProductRows = RowsTag.None;
        }
        if (!decay.Prepare(decay.Gated ? io.G + (long)cs * heads.ValueHeads + h : null, heads.ValueHeads, w.Kc, len)) *io.GateFaults = 1;

        // A = strict_lower(diag(β) K Kᵀ ⊙ D), T = (I + A)⁻¹, V_new = T β (V − e^G K S).
        for (int s = 0; s < nblocks; s++) decay.Decay(w.KeyProducts, cc, s, len, w.A, cc);
        InvertScores(w.A, cc, len, w);
        NewValues(w.Kc, kp, values, ldv, decay.Gated ? decay.RowDecay : null, len, w);

        // Outputs of every output head of the value head: e^G (Q S) + (Q Kᵀ ⊙ D) V_new, one 16-row block of scores at a time.
        for (int oh = h * heads.Group; oh < (h + 1) * heads.Group; oh++)
        {
            int queryHead = heads.QueryHeadOf(oh);
            LoadQueries(io, chunk, queryHead, w);
            if (!w.QueryProductRows->Holds(queryHead, chunk))
            {
                for (int s = 0; s < nblocks; s++) decay.Products(w.Qr, s, len, w.QueryProducts, cc);
                *w.QueryProductRows = RowsTag.Of(queryHead, chunk);
            }
            var o = new ChunkOutput(new HeadRows(io.O, heads.OutputHeads * heads.ValueDim, heads.ValueDim, oh, cs), w.Oc, vp);
            SimdGemm.Multiply(w.Qr, kp, w.S, vp, o.Rows, o.Stride, len, kp, vp, accumulate: false);
            if (decay.Gated)
                for (int i = 0; i < len; i++) SimdOps.ScaleInPlace(o.Rows + (long)i * o.Stride, decay.RowDecay[i], vp);
            for (int s = 0; s < nblocks; s++)
            {
                int rs = s * ScalarChunkDecay.Block;
                // The next unit's rows, a share per output block, so the requests are spread over the chunk's work.
                if (oh == h * heads.Group) RowPrefetch.NextUnit(heads, chunk, s, nblocks, io.Rows, io.Q, io.K, io.V, null);
                decay.Decay(w.QueryProducts, cc, s, len, w.A, cc);
                SimdGemm.MultiplyCausal(w.A + (long)rs * cc, cc, w.Vnew, vp, o.Rows + (long)rs * o.Stride, o.Stride,
                    Math.Min(ScalarChunkDecay.Block, len - rs), rs, vp, accumulate: true);
            }
            if (io.Norm.Active) io.Norm.Apply(o.Rows, o.Stride, oh, cs, len);
            o.CopyBack(len);
        }

        // S ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ V_new.
        decay.UpdateState(w.S, w.Kc, w.Vnew, vp, len);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkPerKey(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        int kp = _kp, vp = _vp, lxa = _lxa, kd = heads.KeyDim;
        int nsub = HeadLayout.RoundUp16(len) / PerKeyChunkDecay.Sub;
        var decay = w.KeyDecay;
        float* values = LoadKeysValues(io, chunk, w, out int ldv, out _);
        PrefetchNormGates(io, chunk);
        if (!decay.Prepare(io.G + ((long)cs * heads.ValueHeads + h) * kd, (long)heads.ValueHeads * kd, kd, w.Kc, len)) *io.GateFaults = 1;

        // [K ⊙ e^b | K Kᵀ ⊙ decay], then A = β_i times its part below the diagonal, T = (I + A)⁻¹, V_new = T β (V − (K ⊙ e^b) S).
        for (int s = 0; s < nsub; s++) decay.Scores(w.Kc, w.Kc, s, len, w.XA, lxa);
        InvertScores(w.XA + kp, lxa, len, w);
        NewValues(w.XA, lxa, values, ldv, null, len, w);

        // Outputs: [scale q̂ ⊙ e^b | P] · [S; V_new] per output head.
        for (int oh = h * heads.Group; oh < (h + 1) * heads.Group; oh++)
        {
            LoadQueries(io, chunk, heads.QueryHeadOf(oh), w);
            for (int s = 0; s < nsub; s++)
            {
                if (oh == h * heads.Group) RowPrefetch.NextUnit(heads, chunk, s, nsub, io.Rows, io.Q, io.K, io.V, io.G);
                decay.Scores(w.Qr, w.Kc, s, len, w.XA, lxa);
            }
            var o = new ChunkOutput(new HeadRows(io.O, heads.OutputHeads * heads.ValueDim, heads.ValueDim, oh, cs), w.Oc, vp);
            SimdGemm.MultiplyCausal(w.XA, lxa, w.S, vp, o.Rows, o.Stride, len, kp, vp, accumulate: false);
            if (io.Norm.Active) io.Norm.Apply(o.Rows, o.Stride, oh, cs, len);
            o.CopyBack(len);
        }
        decay.UpdateState(w.S, w.Vnew, vp, len);
    }

    /// <summary>
    /// One token, decay first: S = diag(e^g) S, as S + (e^g − 1) S (RecurrentRows); u = β (v − Sᵀ k̂); S += k̂ uᵀ;
    /// o = Sᵀ (scale q̂) per output head.
    /// Key-major: two passes over S, Sᵀ k̂ from the old state, then the update fused with the outputs. Value-major (the
    /// caller's [V, K] state, unpadded): one pass, each row of Sᵀ updated and read while it is in L1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RecurrentStep(in Io io, int h, int t, float* source, in Work w, StateLayout layout)
    {
        var heads = _config.Heads;
        int kd = heads.KeyDim, vp = _vp, group = heads.Group;
        long valueRow = (long)t * heads.ValueHeads + h;
        float* key = w.Row, pred = w.Pred;
        LoadToken(io, key, io.K, io.Rows.K, heads.KeyHeadOf(h), KeyChannel(heads.KeyHeadOf(h)), t, 1f);
        // The decay's two parts, e^g = 1 + near + far (SimdMath.DecayParts). A per-key decay is one value per row of S: the
        // prediction reads k̂ ⊙ e^g (kept in Qr's spare row) with a decay of 1.
        float near = 0f, far = 0f;
        if (_config.Gate == GateKind.PerHead)
        {
            if (!LogGates.IsValid(io.G[valueRow])) *io.GateFaults = 1;
            near = SimdMath.DecayNear(io.G[valueRow]);
            far = SimdMath.DecayFar(io.G[valueRow]);
        }
        float* nearRows = &near, farRows = &far, predictKey = key;
        int decayStride = 0;
        if (_config.Gate == GateKind.PerKey)
        {
            nearRows = w.DecayNear;
            farRows = w.DecayFar;
            decayStride = 1;
            predictKey = w.Qr + (long)group * _kp;
            if (!LogGates.DecayRow(nearRows, farRows, io.G + valueRow * kd, kd, _kp)) *io.GateFaults = 1;
            for (int c = 0; c < _kp; c += 16)
            {
                var k = Vector512.Load(key + c);
                Vector512.MultiplyAddEstimate(Vector512.Load(farRows + c), k, Vector512.MultiplyAddEstimate(Vector512.Load(nearRows + c), k, k)).Store(predictKey + c);
            }
        }
        // The output heads of value head h read adjacent query heads, from the first one's.
        int firstQuery = heads.QueryHeadOf(h * group);
        for (int gi = 0; gi < group; gi++)
            LoadToken(io, w.Qr + (long)gi * _kp, io.Q, io.Rows.Q, firstQuery + gi, QueryChannel(firstQuery + gi), t, _config.Scale);

        if (io.Conv.Active) io.Conv.Load(w.Oc, vp, vp, new HeadRows(io.V, io.Rows.V, heads.ValueDim, h, t), ValueChannel(h), t, 1);
        else SimdOps.CopyPadded(w.Oc, io.V + (long)t * io.Rows.V + (long)h * heads.ValueDim, heads.ValueDim, vp);
        // Four vectors of columns of S at a time (32 KB at K = 128 with AVX-512, in L1): u = β (v − e^g Sᵀk̂) for them,
        // then S = e^g S + k̂ uᵀ and the first query head's readout in one more pass over the same columns. pred holds u,
        // then the readout.
        float beta = io.Beta[valueRow];
        var predictDecay = decayStride == 0 ? (near, far) : (0f, 0f);
        if (layout == StateLayout.ValueMajor)
            RecurrentRows.UpdateValueRows(source, w.S, kd, heads.ValueDim, near, far, decayStride == 0 ? null : nearRows, decayStride == 0 ? null : farRows,
                key, predictKey, beta, w.Qr, group, w.Oc, vp);
        else
        {
            if (SimdWidths.Wide) StepColumns<Lanes512>(source, w.S, vp, kd, predictKey, w.Oc, beta, predictDecay, nearRows, farRows, decayStride, key, w.Qr, pred);
            else StepColumns<Lanes256>(source, w.S, vp, kd, predictKey, w.Oc, beta, predictDecay, nearRows, farRows, decayStride, key, w.Qr, pred);
            Buffer.MemoryCopy(pred, w.Oc, (long)vp * sizeof(float), (long)vp * sizeof(float));
            for (int gi = 1; gi < group; gi++) RecurrentRows.Read(w.S, vp, kd, w.Qr + (long)gi * _kp, w.Oc + (long)gi * vp);
        }
        for (int gi = 0; gi < group && io.Norm.Active; gi++) io.Norm.Apply(w.Oc + (long)gi * vp, vp, h * group + gi, t, 1);
        SimdOps.CopyFromPadded(io.O + ((long)t * heads.OutputHeads + h * group) * heads.ValueDim, heads.ValueDim, w.Oc, vp, group, heads.ValueDim);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StepColumns<TV>(float* source, float* state, int vp, int kd, float* predictKey, float* v, float beta, (float Near, float Far) predictDecay,
        float* nearRows, float* farRows, int decayStride, float* key, float* q, float* pred) where TV : unmanaged, ILanes<TV>
    {
        int d0 = 0, n = TV.Count;
        for (; d0 + 4 * n <= vp; d0 += 4 * n)
        {
            Predict4<TV>(source + d0, vp, kd, predictKey, v + d0, beta, predictDecay, pred + d0);
            RecurrentRows.UpdateAndRead4<TV>(source + d0, state + d0, vp, kd, pred + d0, nearRows, farRows, decayStride, key, q, pred + d0);
        }
        for (; d0 < vp; d0 += n)
        {
            Predict1<TV>(source + d0, vp, kd, predictKey, v + d0, beta, predictDecay, pred + d0);
            RecurrentRows.UpdateAndRead1<TV>(source + d0, state + d0, vp, kd, pred + d0, nearRows, farRows, decayStride, key, q, pred + d0);
        }
    }

    /// <summary>u = β (v − e^g Sᵀk̂) for a slice of four vectors of columns of S, e^g Sᵀk̂ as Sᵀk̂ + near Sᵀk̂ + far Sᵀk̂.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Predict4<TV>(float* s, int ld, int kd, float* k, float* v, float beta, (float Near, float Far) decay, float* u) where TV : unmanaged, ILanes<TV>
    {
        int n = TV.Count;
        TV p0 = TV.Zero, p1 = TV.Zero, p2 = TV.Zero, p3 = TV.Zero;
        for (int c = 0; c < kd; c++, s += ld)
        {
            var kc = TV.Broadcast(k[c]);
            p0 = TV.Fma(kc, TV.Load(s), p0);
            p1 = TV.Fma(kc, TV.Load(s + n), p1);
            p2 = TV.Fma(kc, TV.Load(s + 2 * n), p2);
            p3 = TV.Fma(kc, TV.Load(s + 3 * n), p3);
        }
        var b = TV.Broadcast(beta);
        TV m = TV.Broadcast(decay.Near), f = TV.Broadcast(decay.Far);
        (b * (TV.Load(v) - TV.Fma(f, p0, TV.Fma(m, p0, p0)))).Store(u);
        (b * (TV.Load(v + n) - TV.Fma(f, p1, TV.Fma(m, p1, p1)))).Store(u + n);
        (b * (TV.Load(v + 2 * n) - TV.Fma(f, p2, TV.Fma(m, p2, p2)))).Store(u + 2 * n);
        (b * (TV.Load(v + 3 * n) - TV.Fma(f, p3, TV.Fma(m, p3, p3)))).Store(u + 3 * n);
    }

    /// <summary>u = β (v − e^g Sᵀk̂) for a slice of one vector of columns of S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Predict1<TV>(float* s, int ld, int kd, float* k, float* v, float beta, (float Near, float Far) decay, float* u) where TV : unmanaged, ILanes<TV>
    {
        var p = TV.Zero;
        for (int c = 0; c < kd; c++, s += ld) p = TV.Fma(TV.Broadcast(k[c]), TV.Load(s), p);
        (TV.Broadcast(beta) * (TV.Load(v) - TV.Fma(TV.Broadcast(decay.Far), p, TV.Fma(TV.Broadcast(decay.Near), p, p)))).Store(u);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// DeltaNet / Gated DeltaNet on the CPU: the chunked WY/UT form as small Vector512 matrix products, and
/// the recurrent form for decode. Work items are (sequence, block of key/value heads) run by HeadBlockSweep; the query heads of a
/// group share the item's state update. Each worker owns a scratch block sized here from the config.
///
/// Chunk of c tokens, local rows i, j; G = in-chunk cumulative log gate (fp32; 0 for DeltaNet),
/// D_ij = exp(G_i − G_j) for j <= i (else 0), k̂, q̂ the (optionally L2-normalized) rows:
///   A      = strict_lower(diag(β) K Kᵀ ⊙ D)
///   T      = (I + A)⁻¹                      forward substitution, row i = e_i − Σ_{m<i} A_im T_m
///   V_new  = U − W S = T diag(β) (V − diag(e^G) K S)   (W = T diag(β e^G) K, U = T diag(β) V, never formed:
///            K S costs what W S does, and T then multiplies V-wide rows only)
///   O      = scale (diag(e^G) Q S + ((Q Kᵀ) ⊙ D) V_new)
///   S      ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ V_new
/// Every exponent is <= 0: G_i − G_j for j <= i, G_i, G_last − G_j (G never increases along the chunk).
/// A per-key gate (b = in-chunk cumulative log gate per key dim) turns every decay into a per-key factor inside the
/// products: A_ij = β_i Σ_c k̂_ic k̂_jc e^{b_ic − b_jc}, V_new = T diag(β) (V − (K ⊙ e^b) S), O = scale ((Q ⊙ e^b) S +
/// P V_new) with P the same scores of q̂, S ← diag(e^{b_last}) S + (K ⊙ e^{b_last − b})ᵀ V_new; the scores of both
/// row sets, the inter rows and the state update are GLA's (<see cref="PerKeyChunkDecay"/>).
/// </summary>
public sealed unsafe class DeltaRuleCpu : IDisposable
{
    private const int Block = 16;

    private readonly DeltaRuleConfig _config;
    private readonly WorkerScratch _scratch;
    private readonly int _kp, _vp, _c;
    /// <summary>Row stride of XA: [inter rows | scores], the left operand of [S; V_new] (per-key gate).</summary>
    private readonly int _lxa;
    /// <summary>Each head's state slot holds [S; V_new]: V_new follows the state.</summary>
    private readonly StackedStateSlots _slots;
    private readonly bool _headGated;

    public DeltaRuleCpu(DeltaRuleConfig config)
    {
        _config = config;
        _kp = config.Heads.KeyDimPadded;
        _vp = config.Heads.ValueDimPadded;
        _c = config.ChunkSize;
        _lxa = _kp + _c;
        _slots = new StackedStateSlots(_kp, _vp, _c);
        _headGated = config.Gate == GateKind.PerHead;
        Carve(null, out long floats);
        _scratch = new WorkerScratch(floats);
    }

    public DeltaRuleConfig Config => _config;

    public void Dispose()
    {
        _scratch.Dispose();
    }

    /// <summary>
    /// Chunked prefill. beta [TotalTokens, Hkv], g [TotalTokens, Hkv] or [TotalTokens, Hkv, K] (empty for DeltaNet); state [N, Hkv, K, V], initial on entry,
    /// final on return; or, with initialState (same shape) given, final only: the initial state is read from there.
    /// </summary>
    public void Chunked(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(scheduler, sequences, q, k, v, beta, g, output, state, initialState, chunked: true);

    /// <summary>Token-by-token recurrence (decode). Same contract as <see cref="Chunked"/>.</summary>
    public void Recurrent(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default)
        => Run(scheduler, sequences, q, k, v, beta, g, output, state, initialState, chunked: false);

    private void Run(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState, bool chunked)
    {
        initialState = HeadBlockSweep.InitialState(initialState, state);
        int gateFaults = 0;
        fixed (float* pq = q, pk = k, pv = v, pb = beta, pg = g, po = output, ps = state, pi = initialState)
            HeadBlockSweep.Run<Steps, Work>(scheduler, _scratch, _config.Heads, sequences, pi, ps, chunked ? _c : 0,
                new Steps(this, new Io(pq, pk, pv, pb, pg, po, &gateFaults)));
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

        public void Token(in Work work, int head, int token, float* source, float* state) =>
            kernel.RecurrentStep(io, head, token, source, work with { S = state });
    }

    /// <summary>The call's tensors, and a flag any worker sets when it loads a gate that is not a valid log gate.</summary>
    private readonly struct Io(float* q, float* k, float* v, float* beta, float* g, float* o, int* gateFaults)
    {
        public readonly float* Q = q, K = k, V = v, Beta = beta, G = g, O = o;
        public readonly int* GateFaults = gateFaults;
    }

    /// <summary>Per-worker scratch regions. Built with a null base to size the block.</summary>
    private readonly struct Work
    {
        public float* S { get; init; }      // [KP × VP] state, directly followed by
        public float* Vnew { get; init; }   // [C × VP] V_new = T R; one such pair per head of a work item
        public float* Kc { get; init; }     // [C × KP] chunk keys k̂
        public float* KT { get; init; }     // [KP × C] k̂ transposed, zero right of the chunk
        public float* Kd { get; init; }     // [C × KP] k̂_j e^{G_last − G_j} (per-head gate)
        public float* Vc { get; init; }     // [C × VP] chunk values (when V needs padding)
        public float* R { get; init; }      // [C × VP] K S, then β (v − e^G K S)
        public float* Beta { get; init; }   // [C] β
        public float* A { get; init; }      // [C × C] A, then Q Kᵀ ⊙ D per query head
        public float* Tinv { get; init; }   // [C × C] (I + A)⁻¹
        public float* D { get; init; }      // [C × C] decay mask
        public float* Gcum { get; init; }   // [C] G
        public float* ExpG { get; init; }   // [C] e^G
        public float* Qr { get; init; }     // [C × KP] scale q̂ (recurrent: [G × KP] query rows, then k̂ ⊙ e^g)
        public float* Oc { get; init; }     // [C × VP] chunk output (recurrent: [G × VP] accumulators)
        public float* Row { get; init; }    // [KP] recurrent key row
        public float* Pred { get; init; }   // [VP] recurrent Sᵀk, then u
        public float* Decay { get; init; }  // [KP] per-key gate: the recurrent decay
        public float* XA { get; init; }     // per-key gate: [C × (KP + C)] inter rows | scores of k̂, then of scale q̂
        public PerKeyChunkDecay KeyDecay { get; init; }  // per-key gate: the chunk's decay factors
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
            KT = c.Take(kp * cc),
            Kd = c.Take(_headGated ? cc * kp : 0),
            Vc = c.Take(cc * vp),
            R = c.Take(cc * vp),
            Beta = c.Take(cc),
            A = c.Take(cc * cc),
            Tinv = c.Take(cc * cc),
            D = c.Take(cc * cc),
            Gcum = c.Take(cc),
            ExpG = c.Take(cc),
            Qr = c.Take((rows + 1) * kp),
            Oc = c.Take(rows * vp),
            Row = c.Take(kp),
            Pred = c.Take(vp),
            Decay = c.Take(kp),
            XA = c.Take(perKey ? cc * _lxa : 0),
            KeyDecay = perKey ? new PerKeyChunkDecay(ref c, _kp, _c) : default,
        };
        floats = c.Used;
        return work;
    }

    /// <summary>dst = factor · src / ‖src‖ (with qkL2Norm) or factor · src, padded with zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void LoadRow(float* dst, float* src, float factor)
    {
        int kd = _config.Heads.KeyDim;
        if (_config.QkL2Norm)
        {
            SimdOps.CopyPadded(dst, src, kd, _kp);
            factor /= MathF.Sqrt(SimdOps.Dot(dst, dst, _kp) + DeltaRuleConfig.L2NormEpsilon);
        }
        SimdOps.CopyScaledPadded(dst, src, factor, kd, _kp);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Chunk(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        int kp = _kp, vp = _vp, cc = _c;
        int lenPadded = HeadLayout.RoundUp16(len);
        float* vnew = w.Vnew;
        // Value rows that need no padding are read, and output rows written, where they lie in the caller's tensors.
        bool direct = heads.ValueDim == vp;

        // Keys, values, gates and β.
        float acc = 0f;
        for (int i = 0; i < len; i++)
        {
            long row = (long)(cs + i) * heads.KvHeads + h;
            if (_headGated)
            {
                if (!LogGates.IsValid(io.G[row])) *io.GateFaults = 1;
                acc += io.G[row];
            }
            w.Gcum[i] = acc;
            w.ExpG[i] = MathF.Exp(acc);
            w.Beta[i] = io.Beta[row];
            LoadRow(w.Kc + (long)i * kp, io.K + row * heads.KeyDim, 1f);
            if (!direct) SimdOps.CopyPadded(w.Vc + (long)i * vp, io.V + row * heads.ValueDim, heads.ValueDim, vp);
        }
        for (int i = len; i < lenPadded; i++)
        {
            w.Gcum[i] = acc;
            SimdOps.Fill(w.Kc + (long)i * kp, 0f, kp);
        }
        SimdOps.Transpose(w.Kc, kp, w.KT, cc, lenPadded, kp);
        DecayMask(len, lenPadded, w);

        // A = strict_lower(diag(β) K Kᵀ ⊙ D), one 16-row block at a time up to its diagonal.
        for (int rs = 0; rs < len; rs += Block)
        {
            int re = Math.Min(rs + Block, len);
            SimdGemm.Multiply(w.Kc + (long)rs * kp, kp, w.KT, cc, w.A + (long)rs * cc, cc, re - rs, kp, rs + Block, accumulate: false);
        }
        for (int i = 0; i < len; i++)
        {
            float* a = w.A + (long)i * cc, d = w.D + (long)i * cc;
            float b = w.Beta[i];
            for (int j = 0; j < i; j++) a[j] *= b * d[j];
        }
        InvertUnitLower(w.A, _c, len, lenPadded, w);

        // R = β (V − e^G K S), then V_new = T R (rows of T are zero right of the diagonal).
        SimdGemm.Multiply(w.Kc, kp, w.S, vp, w.R, vp, len, kp, vp, accumulate: false);
        for (int i = 0; i < len; i++)
        {
            float* r = w.R + (long)i * vp;
            float* v = direct ? io.V + ((long)(cs + i) * heads.KvHeads + h) * vp : w.Vc + (long)i * vp;
            var b = Vector512.Create(w.Beta[i]);
            var e = Vector512.Create(w.ExpG[i]);
            for (int c = 0; c < vp; c += 16) (b * (Vector512.Load(v + c) - e * Vector512.Load(r + c))).Store(r + c);
        }
        for (int rs = 0; rs < len; rs += Block)
        {
            int re = Math.Min(rs + Block, len);
            SimdGemm.Multiply(w.Tinv + (long)rs * cc, cc, w.R, vp, vnew + (long)rs * vp, vp, re - rs, re, vp, accumulate: false);
        }

        // Outputs of every query head of the group.
        for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
        {
            for (int i = 0; i < len; i++)
                LoadRow(w.Qr + (long)i * kp, io.Q + ((long)(cs + i) * heads.QHeads + qh) * heads.KeyDim, _config.Scale);
            float* o = direct ? io.O + ((long)cs * heads.QHeads + qh) * vp : w.Oc;
            int ldo = direct ? heads.QHeads * vp : vp;
            SimdGemm.Multiply(w.Qr, kp, w.S, vp, o, ldo, len, kp, vp, accumulate: false);
            if (_headGated)
                for (int i = 0; i < len; i++) SimdOps.ScaleInPlace(o + (long)i * ldo, w.ExpG[i], vp);
            for (int rs = 0; rs < len; rs += Block)
            {
                int re = Math.Min(rs + Block, len);
                // The next unit's rows, a share per output block, so the requests are spread over the chunk's work.
                if (qh == h * heads.Group) RowPrefetch.NextUnit(heads, chunk, rs / Block, lenPadded / Block, io.Q, io.K, io.V, null);
                SimdGemm.Multiply(w.Qr + (long)rs * kp, kp, w.KT, cc, w.A + (long)rs * cc, cc, re - rs, kp, rs + Block, accumulate: false);
                for (int i = rs; i < re; i++) SimdOps.MultiplyInPlace(w.A + (long)i * cc, w.D + (long)i * cc, rs + Block);
                SimdGemm.Multiply(w.A + (long)rs * cc, cc, vnew, vp, o + (long)rs * ldo, ldo, re - rs, re, vp, accumulate: true);
            }
            if (direct) continue;
            long bytes = (long)heads.ValueDim * sizeof(float);
            for (int i = 0; i < len; i++)
                Buffer.MemoryCopy(w.Oc + (long)i * vp, io.O + ((long)(cs + i) * heads.QHeads + qh) * heads.ValueDim, bytes, bytes);
        }

        // S ← e^{G_last} S + (K ⊙ e^{G_last − G})ᵀ V_new.
        float* keys = w.Kc;
        if (_headGated)
        {
            float last = w.Gcum[len - 1];
            for (int j = 0; j < len; j++)
            {
                var f = Vector512.Create(MathF.Exp(last - w.Gcum[j]));
                float* kj = w.Kc + (long)j * kp, dj = w.Kd + (long)j * kp;
                for (int c = 0; c < kp; c += 16) (Vector512.Load(kj + c) * f).Store(dj + c);
            }
            for (int c = 0; c < kp; c++) SimdOps.ScaleInPlace(w.S + (long)c * vp, w.ExpG[len - 1], vp);
            keys = w.Kd;
        }
        SimdGemm.MultiplyTransposedA(keys, kp, vnew, vp, w.S, vp, kp, len, vp, accumulate: true);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkPerKey(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        int kp = _kp, vp = _vp, cc = _c, lxa = _lxa, kd = heads.KeyDim;
        int lenPadded = HeadLayout.RoundUp16(len), nsub = lenPadded / PerKeyChunkDecay.Sub;
        bool direct = heads.ValueDim == vp;
        var decay = w.KeyDecay;

        for (int i = 0; i < len; i++)
        {
            long row = (long)(cs + i) * heads.KvHeads + h;
            w.Beta[i] = io.Beta[row];
            LoadRow(w.Kc + (long)i * kp, io.K + row * kd, 1f);
            if (!direct) SimdOps.CopyPadded(w.Vc + (long)i * vp, io.V + row * heads.ValueDim, heads.ValueDim, vp);
        }
        new Span<float>(w.Kc + (long)len * kp, (lenPadded - len) * kp).Clear();
        if (!decay.Prepare(io.G + ((long)cs * heads.KvHeads + h) * kd, (long)heads.KvHeads * kd, kd, w.Kc, len)) *io.GateFaults = 1;

        // [K ⊙ e^b | K Kᵀ ⊙ decay], then A = β_i times its part below the diagonal and T = (I + A)⁻¹.
        for (int s = 0; s < nsub; s++) decay.Scores(w.Kc, w.Kc, s, len, w.XA, lxa);
        for (int i = 0; i < len; i++)
        {
            float* a = w.XA + (long)i * lxa + kp;
            float b = w.Beta[i];
            for (int j = 0; j < i; j++) a[j] *= b;
        }
        InvertUnitLower(w.XA + kp, lxa, len, lenPadded, w);

        // R = β (V − (K ⊙ e^b) S), then V_new = T R.
        SimdGemm.Multiply(w.XA, lxa, w.S, vp, w.R, vp, len, kp, vp, accumulate: false);
        for (int i = 0; i < len; i++)
        {
            float* r = w.R + (long)i * vp;
            float* v = direct ? io.V + ((long)(cs + i) * heads.KvHeads + h) * vp : w.Vc + (long)i * vp;
            var b = Vector512.Create(w.Beta[i]);
            for (int c = 0; c < vp; c += 16) (b * (Vector512.Load(v + c) - Vector512.Load(r + c))).Store(r + c);
        }
        for (int rs = 0; rs < len; rs += Block)
        {
            int re = Math.Min(rs + Block, len);
            SimdGemm.Multiply(w.Tinv + (long)rs * cc, cc, w.R, vp, w.Vnew + (long)rs * vp, vp, re - rs, re, vp, accumulate: false);
        }

        // Outputs: [scale q̂ ⊙ e^b | P] · [S; V_new] per query head.
        for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
        {
            for (int i = 0; i < len; i++)
                LoadRow(w.Qr + (long)i * kp, io.Q + ((long)(cs + i) * heads.QHeads + qh) * kd, _config.Scale);
            for (int s = 0; s < nsub; s++)
            {
                if (qh == h * heads.Group) RowPrefetch.NextUnit(heads, chunk, s, nsub, io.Q, io.K, io.V, io.G);
                decay.Scores(w.Qr, w.Kc, s, len, w.XA, lxa);
            }
            float* o = direct ? io.O + ((long)cs * heads.QHeads + qh) * vp : w.Oc;
            int ldo = direct ? heads.QHeads * vp : vp;
            SimdGemm.MultiplyCausal(w.XA, lxa, w.S, vp, o, ldo, len, kp, vp);
            if (direct) continue;
            long bytes = (long)heads.ValueDim * sizeof(float);
            for (int i = 0; i < len; i++)
                Buffer.MemoryCopy(w.Oc + (long)i * vp, io.O + ((long)(cs + i) * heads.QHeads + qh) * heads.ValueDim, bytes, bytes);
        }
        decay.UpdateState(w.S, w.Vnew, vp, len);
    }

    /// <summary>D_ij = exp(G_i − G_j) for j <= i, 0 above the diagonal, over lenPadded columns.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DecayMask(int len, int lenPadded, in Work w)
    {
        float* b = w.Gcum;
        for (int i = 0; i < len; i++)
        {
            float* d = w.D + (long)i * _c;
            var bi = Vector512.Create(b[i]);
            var row = Vector512.Create(i);
            for (int j = 0; j < lenPadded; j += 16)
            {
                var e = _headGated ? SimdMath.ExpNonPositive(Vector512.Min(bi - Vector512.Load(b + j), Vector512<float>.Zero)) : Vector512<float>.One;
                var mask = Vector512.LessThanOrEqual(Vector512.Create(j) + Vector512<int>.Indices, row);
                Vector512.ConditionalSelect(mask.AsSingle(), e, Vector512<float>.Zero).Store(d + j);
            }
        }
    }

    /// <summary>
    /// T = (I + A)⁻¹ for strictly lower A (row stride lda; its diagonal and above are not read) by forward
    /// substitution: T_i = e_i − Σ_{m<i} A_im T_m.
    /// Row m of T is zero right of column m; a row's sums stay in registers (chunks are at most 64 = 4 vectors wide),
    /// two sets of them so consecutive m do not wait on each other.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void InvertUnitLower(float* lower, int lda, int len, int lenPadded, in Work w)
    {
        int cc = _c;
        for (int i = 0; i < len; i++)
        {
            float* t = w.Tinv + (long)i * cc, a = lower + (long)i * lda;
            Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default;
            Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default;
            int m = 0;
            for (; m + 2 <= i; m += 2)
            {
                float* tm = w.Tinv + (long)m * cc;
                var fe = Vector512.Create(a[m]);
                var fo = Vector512.Create(a[m + 1]);
                e0 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm), e0);
                o0 = Vector512.FusedMultiplyAdd(fo, Vector512.Load(tm + cc), o0);
                if (m + 1 < 16) continue;
                e1 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 16), e1);
                o1 = Vector512.FusedMultiplyAdd(fo, Vector512.Load(tm + cc + 16), o1);
                if (m + 1 < 32) continue;
                e2 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 32), e2);
                o2 = Vector512.FusedMultiplyAdd(fo, Vector512.Load(tm + cc + 32), o2);
                if (m + 1 < 48) continue;
                e3 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 48), e3);
                o3 = Vector512.FusedMultiplyAdd(fo, Vector512.Load(tm + cc + 48), o3);
            }
            if (m < i)
            {
                float* tm = w.Tinv + (long)m * cc;
                var fe = Vector512.Create(a[m]);
                e0 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm), e0);
                if (m >= 16) e1 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 16), e1);
                if (m >= 32) e2 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 32), e2);
                if (m >= 48) e3 = Vector512.FusedMultiplyAdd(fe, Vector512.Load(tm + 48), e3);
            }
            (-(e0 + o0)).Store(t);
            if (lenPadded > 16) (-(e1 + o1)).Store(t + 16);
            if (lenPadded > 32) (-(e2 + o2)).Store(t + 32);
            if (lenPadded > 48) (-(e3 + o3)).Store(t + 48);
            t[i] = 1f;
        }
    }

    /// <summary>
    /// One token, decay first: S = diag(e^g) S; u = β (v − Sᵀ k̂); S += k̂ uᵀ; o = Sᵀ (scale q̂) per query head.
    /// Two passes over S: Sᵀ k̂ from the old state, then the update fused with the outputs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RecurrentStep(in Io io, int h, int t, float* source, in Work w)
    {
        var heads = _config.Heads;
        int kd = heads.KeyDim, vp = _vp, group = heads.Group;
        long kvRow = (long)t * heads.KvHeads + h;
        float* key = w.Row, pred = w.Pred;
        LoadRow(key, io.K + kvRow * kd, 1f);
        // A per-key decay is one value per row of S: the prediction reads k̂ ⊙ e^g (kept in Qr's spare row) with a decay of 1.
        float decay = 1f;
        if (_headGated)
        {
            if (!LogGates.IsValid(io.G[kvRow])) *io.GateFaults = 1;
            decay = MathF.Exp(io.G[kvRow]);
        }
        float* decayRows = &decay, predictKey = key;
        int decayStride = 0;
        if (_config.Gate == GateKind.PerKey)
        {
            decayRows = w.Decay;
            decayStride = 1;
            predictKey = w.Qr + (long)group * _kp;
            if (!LogGates.ExpRow(decayRows, io.G + kvRow * kd, kd, _kp)) *io.GateFaults = 1;
            for (int c = 0; c < _kp; c += 16) (Vector512.Load(decayRows + c) * Vector512.Load(key + c)).Store(predictKey + c);
        }
        for (int gi = 0; gi < group; gi++)
            LoadRow(w.Qr + (long)gi * _kp, io.Q + ((long)t * heads.QHeads + h * group + gi) * kd, _config.Scale);

        SimdOps.CopyPadded(w.Oc, io.V + kvRow * heads.ValueDim, heads.ValueDim, vp);
        // Four vectors of columns of S at a time (32 KB at K = 128 with AVX-512, in L1): u = β (v − e^g Sᵀk̂) for them,
        // then S = e^g S + k̂ uᵀ and the first query head's readout in one more pass over the same columns. pred holds u,
        // then the readout.
        float beta = io.Beta[kvRow], predictDecay = decayStride == 0 ? decay : 1f;
        if (SimdWidths.Wide) StepColumns<Lanes512>(source, w.S, vp, kd, predictKey, w.Oc, beta, predictDecay, decayRows, decayStride, key, w.Qr, pred);
        else StepColumns<Lanes256>(source, w.S, vp, kd, predictKey, w.Oc, beta, predictDecay, decayRows, decayStride, key, w.Qr, pred);
        Buffer.MemoryCopy(pred, w.Oc, (long)vp * sizeof(float), (long)vp * sizeof(float));
        for (int gi = 1; gi < group; gi++) RecurrentRows.Read(w.S, vp, kd, w.Qr + (long)gi * _kp, w.Oc + (long)gi * vp);
        long bytes = (long)heads.ValueDim * sizeof(float);
        for (int gi = 0; gi < group; gi++)
            Buffer.MemoryCopy(w.Oc + (long)gi * vp, io.O + ((long)t * heads.QHeads + h * group + gi) * heads.ValueDim, bytes, bytes);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void StepColumns<TV>(float* source, float* state, int vp, int kd, float* predictKey, float* v, float beta, float predictDecay,
        float* decayRows, int decayStride, float* key, float* q, float* pred) where TV : unmanaged, ILanes<TV>
    {
        int d0 = 0, n = TV.Count;
        for (; d0 + 4 * n <= vp; d0 += 4 * n)
        {
            Predict4<TV>(source + d0, vp, kd, predictKey, v + d0, beta, predictDecay, pred + d0);
            RecurrentRows.UpdateAndRead4<TV>(source + d0, state + d0, vp, kd, pred + d0, decayRows, decayStride, key, q, pred + d0);
        }
        for (; d0 < vp; d0 += n)
        {
            Predict1<TV>(source + d0, vp, kd, predictKey, v + d0, beta, predictDecay, pred + d0);
            RecurrentRows.UpdateAndRead1<TV>(source + d0, state + d0, vp, kd, pred + d0, decayRows, decayStride, key, q, pred + d0);
        }
    }

    /// <summary>u = β (v − e^g Sᵀk̂) for a slice of four vectors of columns of S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Predict4<TV>(float* s, int ld, int kd, float* k, float* v, float beta, float decay, float* u) where TV : unmanaged, ILanes<TV>
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
        var e = TV.Broadcast(decay);
        (b * (TV.Load(v) - e * p0)).Store(u);
        (b * (TV.Load(v + n) - e * p1)).Store(u + n);
        (b * (TV.Load(v + 2 * n) - e * p2)).Store(u + 2 * n);
        (b * (TV.Load(v + 3 * n) - e * p3)).Store(u + 3 * n);
    }

    /// <summary>u = β (v − e^g Sᵀk̂) for a slice of one vector of columns of S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Predict1<TV>(float* s, int ld, int kd, float* k, float* v, float beta, float decay, float* u) where TV : unmanaged, ILanes<TV>
    {
        var p = TV.Zero;
        for (int c = 0; c < kd; c++, s += ld) p = TV.Fma(TV.Broadcast(k[c]), TV.Load(s), p);
        (TV.Broadcast(beta) * (TV.Load(v) - TV.Broadcast(decay) * p)).Store(u);
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// A per-key-dim decay over one chunk, for every rule that carries S_t = diag(exp(g_t)) S_{t−1} + … (GLA, the
/// delta rule with a per-key gate). b = in-chunk cumulative log gate, r_s = first row of 16-row sub-chunk s:
///   scores   A_ij = Σ_c x_ic k_jc exp(b_ic − b_jc), j &lt;= i, for any rows x (queries, or the keys themselves)
///            off-diagonal sub-block (s, t &lt; s): exp(b_i − b_j) = exp(b_i − b_{r_s}) · exp(b_{r_s} − b_{r_{t+1}})
///            · exp(b_{r_{t+1}} − b_j), so it is (x ⊙ exp(b − b_{r_s}) ⊙ d_st) (k ⊙ exp(b_{r_{t+1}} − b))ᵀ, a plain
///            product, the key factor made once per chunk;
///            diagonal sub-blocks: k_j ⊙ exp(b_i − b_j) built row by row as k_j ⊙ Π exp(g).
///   inter    x ⊙ exp(b), the rows that read the chunk's initial state
///   state    S ← diag(exp(b_last)) S + (k ⊙ exp(b_last − b))ᵀ V, the decay as S + diag(e^{b_last} − 1) S (<see cref="ChunkState"/>)
/// Every exponent is &lt;= 0; exp(g) per row is the only exponential within the chunk, every other factor a product of
/// them. The state's decay is e^{b_last} − 1 of the summed gates instead: a product of C rounded factors, applied once per
/// chunk, would drift a state carried over thousands of tokens where the decays are near 1.
/// The regions are one worker's scratch, carved once.
/// </summary>
public readonly unsafe struct PerKeyChunkDecay
{
    public const int Sub = 16;

    private readonly int _kp, _c;
    private readonly float* _gexp;    // [C × KP] exp(g) per row
    private readonly float* _f;       // [C × KP] exp(b_i − b_{r_s}) within each sub-chunk
    private readonly float* _r;       // [C × KP] exp(b_{r_{s+1}} − b_j) within each sub-chunk
    private readonly float* _step;    // [nsub × KP] exp(b_{r_{s+1}} − b_{r_s})
    private readonly float* _prefix;  // [nsub × KP] exp(b_{r_s})
    private readonly float* _tail;    // [nsub × KP] exp(b_last − b_{r_{t+1}})
    private readonly float* _kh;      // [C × KP] off-diagonal keys k_j ⊙ R_j
    private readonly float* _kt;      // [KP × C] the off-diagonal keys transposed
    private readonly float* _ks;      // [C × KP] keys decayed to the chunk end
    private readonly float* _xt;      // [C × KP] gated rows x_i ⊙ F_i
    private readonly float* _xst;     // [16 × KP] gated rows scaled by d_st
    private readonly float* _dst;     // [KP] d_st
    private readonly float* _kdiag;   // [16 × KP] diagonal-block keys
    private readonly float* _decay;   // [KP] b_last (the summed gates), then the near part of e^{b_last} (SimdMath.DecayParts)
    private readonly float* _decayFar;   // [KP] its far part

    public PerKeyChunkDecay(ref ScratchCarver c, int keyDimPadded, int chunkSize)
    {
        long kp = keyDimPadded, cc = chunkSize, nsub = chunkSize / Sub;
        _kp = keyDimPadded;
        _c = chunkSize;
        _gexp = c.Take(cc * kp);
        _f = c.Take(cc * kp);
        _r = c.Take(cc * kp);
        _step = c.Take(nsub * kp);
        _prefix = c.Take(nsub * kp);
        _tail = c.Take(nsub * kp);
        _kh = c.Take(cc * kp);
        _kt = c.Take(kp * cc);
        _ks = c.Take(cc * kp);
        _xt = c.Take(cc * kp);
        _xst = c.Take(Sub * kp);
        _dst = c.Take(kp);
        _kdiag = c.Take(Sub * kp);
        _decay = c.Take(kp);
        _decayFar = c.Take(kp);
    }

    /// <summary>
    /// The chunk's factors from its log gates (row i at g + i · gStride, kd floats) and keys [C × KP] (rows up to
    /// the next multiple of 16 zero). Returns false when a gate is not a valid log gate (<see cref="LogGates"/>):
    /// the factors are then meaningless and the caller refuses the call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool Prepare(float* g, long gStride, int kd, float* keys, int len)
    {
        int kp = _kp;
        int nsub = (len + Sub - 1) / Sub, lastSub = nsub - 1;
        var valid = Vector512<float>.AllBitsSet;
        var floor = Vector512.Create(LogGates.SumFloor);
        SimdOps.Fill(_decay, 0f, kp);
        for (int i = 0; i < len; i++)
        {
            float* gexp = Row(_gexp, i), gi = g + i * gStride;
            if (kd != kp)
            {
                SimdOps.CopyPadded(gexp, gi, kd, kp);
                gi = gexp;
            }
            for (int c = 0; c < kp; c += 16)
            {
                var x = Vector512.Load(gi + c);
                valid &= LogGates.ValidLanes(x);
                (Vector512.Load(_decay + c) + Vector512.Max(x, floor)).Store(_decay + c);
                SimdMath.ExpNonPositive(x).Store(gexp + c);
            }
        }
        // Within sub-chunk s: F forwards, R backwards (to the chunk's last row in the last sub-chunk); per sub-chunk
        // the step E_s and the prefix P_s (b counted from the chunk start, inclusive).
        for (int s = 0; s < nsub; s++)
        {
            int rs = s * Sub, re = Math.Min(rs + Sub, len);
            SimdOps.Fill(Row(_f, rs), 1f, kp);
            for (int i = rs + 1; i < re; i++) MultiplyRows(Row(_f, i), Row(_f, i - 1), Row(_gexp, i), kp);
            if (s < lastSub)
            {
                CopyRow(Row(_r, re - 1), Row(_gexp, re), kp);
                MultiplyRows(Row(_step, s), Row(_f, re - 1), Row(_gexp, re), kp);
            }
            else
            {
                SimdOps.Fill(Row(_r, re - 1), 1f, kp);
            }
            for (int j = re - 2; j >= rs; j--) MultiplyRows(Row(_r, j), Row(_r, j + 1), Row(_gexp, j + 1), kp);
            if (s == 0) CopyRow(Row(_prefix, 0), Row(_gexp, 0), kp);
            else MultiplyRows(Row(_prefix, s), Row(_prefix, s - 1), Row(_step, s - 1), kp);
        }
        // Off-diagonal keys k_j ⊙ R_j, transposed once for every row set scored. Keys decayed to the chunk end
        // k_j ⊙ exp(b_last − b_j) = k_j ⊙ R_j ⊙ Tail_t, Tail_t = F_last ⊙ E_{L−1} ⊙ … ⊙ E_{t+1}.
        float* fLast = Row(_f, len - 1);
        for (int j = 0; j < len; j++) MultiplyRows(Row(_kh, j), Row(keys, j), Row(_r, j), kp);
        SimdOps.Transpose(_kh, kp, _kt, _c, lastSub * Sub, kp);
        for (int t = lastSub; t >= 0; t--)
        {
            float* tail = Row(_tail, t);
            if (t == lastSub) SimdOps.Fill(tail, 1f, kp);
            else if (t == lastSub - 1) CopyRow(tail, fLast, kp);
            else MultiplyRows(tail, Row(_tail, t + 1), Row(_step, t + 1), kp);
            for (int j = t * Sub; j < Math.Min(t * Sub + Sub, len); j++) MultiplyRows(Row(_ks, j), Row(_kh, j), tail, kp);
        }
        for (int c = 0; c < kp; c += 16)
        {
            SimdMath.DecayParts(Vector512.Load(_decay + c), out var far).Store(_decay + c);
            far.Store(_decayFar + c);
        }
        return LogGates.All(valid);
    }

    /// <summary>
    /// Rows of sub-chunk s of x [C × KP] against the chunk's keys: row i of xa (stride lxa) gets the inter row
    /// x_i ⊙ exp(b_i) in its first KP floats, then the scores A_ij for j &lt;= i and zeros up to the sub-chunk's end; no
    /// later key is read. Columns beyond are not written: the products that read the scores are causal
    /// (<see cref="SimdGemm.MultiplyCausal"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Scores(float* x, float* keys, int s, int len, float* xa, int lxa)
    {
        int kp = _kp, rs = s * Sub, re = Math.Min(rs + Sub, len);
        for (int i = rs; i < re; i++)
        {
            MultiplyRows(Row(_xt, i), Row(x, i), Row(_f, i), kp);
            MultiplyRows(xa + (long)i * lxa, Row(_xt, i), Row(_prefix, s), kp);
        }
        DiagonalBlock(x, keys, rs, re, xa, lxa);
        // Off-diagonal blocks: the row side takes d_st = exp(b_{r_s} − b_{r_{t+1}}) = E_{s−1} ⊙ … ⊙ E_{t+1} (1 for t = s − 1).
        SimdOps.Fill(_dst, 1f, kp);
        for (int t = s - 1; t >= 0; t--)
        {
            float* xs = Row(_xt, rs);
            if (t < s - 1)
            {
                MultiplyRows(_dst, _dst, Row(_step, t + 1), kp);
                for (int i = 0; i < re - rs; i++) MultiplyRows(Row(_xst, i), Row(xs, i), _dst, kp);
                xs = _xst;
            }
            SimdGemm.Multiply(xs, kp, _kt + t * Sub, _c, xa + (long)rs * lxa + kp + t * Sub, lxa, re - rs, kp, Sub, accumulate: false);
        }
    }

    /// <summary>S ← diag(exp(b_last)) S + (k ⊙ exp(b_last − b))ᵀ V, S [KP × VP] and V [len × VP] with row stride vp.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void UpdateState(float* state, float* values, int vp, int len) =>
        ChunkState.Update(state, _kp, vp, _decay, _decayFar, 1, _ks, values, len);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float* Row(float* region, int i) => region + (long)i * _kp;

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
    /// Diagonal sub-block rows rs..re: A_ij = Σ_c x_ic · k_jc exp(b_ic − b_jc) for rs &lt;= j &lt;= i, zero above the
    /// diagonal up to re. Row j of the diagonal keys holds k_j ⊙ exp(b_{i−1} − b_j) when row i starts; it is carried
    /// to row i by multiplying with exp(g_i) (&lt;= 1) as it is read. Four rows at a time keep four independent sums.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DiagonalBlock(float* x, float* keys, int rs, int re, float* xa, int lxa)
    {
        int kp = _kp;
        for (int i = rs; i < re; i++)
        {
            float* e = Row(_gexp, i), xi = Row(x, i), arow = xa + (long)i * lxa + kp;
            int j = rs;
            for (; j + 4 <= i; j += 4) DecayDot4(Row(_kdiag, j - rs), e, xi, arow + j);
            for (; j < i; j++)
            {
                float* kd = Row(_kdiag, j - rs);
                SimdOps.Multiply(kd, kd, e, kp);
                arow[j] = SimdOps.Dot(xi, kd, kp);
            }
            float* ki = Row(_kdiag, i - rs);
            CopyRow(ki, Row(keys, i), kp);
            arow[i] = SimdOps.Dot(xi, ki, kp);
            for (j = i + 1; j < re; j++) arow[j] = 0f;
        }
    }

    /// <summary>Four consecutive rows kd (KP apart): kd ⊙= e in place, a[r] = x · kd_r.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void DecayDot4(float* kd, float* e, float* x, float* a)
    {
        if (SimdWidths.Wide) DecayDot4<Lanes512>(kd, e, x, a, _kp);
        else DecayDot4<Lanes256>(kd, e, x, a, _kp);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void DecayDot4<TV>(float* kd, float* e, float* x, float* a, int kp) where TV : unmanaged, ILanes<TV>
    {
        TV s0 = TV.Zero, s1 = TV.Zero, s2 = TV.Zero, s3 = TV.Zero;
        for (int c = 0; c < kp; c += TV.Count)
        {
            var ev = TV.Load(e + c);
            var xv = TV.Load(x + c);
            var x0 = TV.Load(kd + c) * ev;
            var x1 = TV.Load(kd + kp + c) * ev;
            var x2 = TV.Load(kd + 2 * kp + c) * ev;
            var x3 = TV.Load(kd + 3 * kp + c) * ev;
            x0.Store(kd + c);
            x1.Store(kd + kp + c);
            x2.Store(kd + 2 * kp + c);
            x3.Store(kd + 3 * kp + c);
            s0 = TV.Fma(xv, x0, s0);
            s1 = TV.Fma(xv, x1, s1);
            s2 = TV.Fma(xv, x2, s2);
            s3 = TV.Fma(xv, x3, s3);
        }
        a[0] = TV.Sum(s0);
        a[1] = TV.Sum(s1);
        a[2] = TV.Sum(s2);
        a[3] = TV.Sum(s3);
    }
}

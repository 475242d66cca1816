using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// A decay of one value per token and head over one chunk (a per-head gate, a constant decay, or none), for every
/// rule that carries S_t = exp(g_t) S_{t−1} + … (GLA, Lightning, the delta rule). b = in-chunk cumulative log gate:
///   scores   A_ij = (x_i · k_j) D_ij, D_ij = exp(b_i − b_j), j &lt;= i, for any rows x (queries, or the keys themselves)
///   inter    exp(b_i), the factor of the rows that read the chunk's initial state
///   state    S ← exp(b_last) S + (k ⊙ exp(b_last − b))ᵀ V, the decay as S + (e^{b_last} − 1) S (<see cref="ChunkState"/>)
/// Every exponent is &lt;= 0 (b never increases along the chunk). The scalar counterpart of <see cref="PerKeyChunkDecay"/>;
/// the regions are one worker's scratch, carved once.
/// </summary>
public readonly unsafe struct ScalarChunkDecay
{
    /// <summary>Rows of a block of scores.</summary>
    public const int Block = 16;

    private readonly int _kp, _c;
    private readonly bool _gated;
    private readonly double* _b;        // [C] b, in double: after strong gates (|b| in the hundreds) a later weak gate
                                        // would vanish into an fp32 sum, and D between later tokens with it
    private readonly float* _d;         // [C × C] D, zero above the diagonal
    private readonly float* _rowDecay;  // [C] exp(b_i)
    private readonly float* _colDecay;  // [C] exp(b_last − b_j)
    private readonly float* _kt;        // [KP × C] the chunk's keys transposed, zero right of the chunk to the next 16
    private readonly float* _ks;        // [C × KP] keys decayed to the chunk end (gated)
    private readonly float* _stateDecay;  // [2] the state's decay e^{b_last} in its near and far parts (SimdMath.DecayParts)

    /// <param name="gated">false for a rule without decay: every factor is 1, and the state update applies none.</param>
    public ScalarChunkDecay(ref ScratchCarver c, int keyDimPadded, int chunkSize, bool gated)
    {
        long kp = keyDimPadded, cc = chunkSize;
        _kp = keyDimPadded;
        _c = chunkSize;
        _gated = gated;
        _b = (double*)c.Take(2 * cc);
        _d = c.Take(cc * cc);
        _rowDecay = c.Take(cc);
        _colDecay = c.Take(cc);
        _kt = c.Take(kp * cc);
        _ks = c.Take(gated ? cc * kp : 0);
        _stateDecay = c.Take(2);
    }

    /// <summary>Whether the chunk decays (false: every factor is 1).</summary>
    public bool Gated => _gated;

    /// <summary>exp(b_i) for rows 0..len: the factor of the rows that read the chunk's initial state.</summary>
    public float* RowDecay => _rowDecay;

    /// <summary>
    /// The chunk's factors from its per-head log gates (row i at gates[i · gateStride]; null for a rule without decay)
    /// and keys [C × KP] (rows up to the next multiple of 16 zero), whose transpose <see cref="TransposeKeys"/> made.
    /// Returns false when a gate is not a valid log gate (<see cref="LogGates"/>): the factors are then meaningless
    /// and the caller refuses the call.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public bool Prepare(float* gates, long gateStride, float* keys, int len)
    {
        int lenPadded = HeadLayout.RoundUp16(len), cc = _c;
        double* b = _b;
        bool valid = true;
        double acc = 0;
        for (int i = 0; i < len; i++)
        {
            if (gates != null)
            {
                float gate = gates[i * gateStride];
                valid &= LogGates.IsValid(gate);
                acc += LogGates.Summand(gate);
            }
            b[i] = acc;
        }
        for (int i = len; i < lenPadded; i++) b[i] = b[len - 1];
        var zero = Vector512<float>.Zero;
        for (int i = 0; i < len; i++)
        {
            float* d = _d + (long)i * cc;
            var bi = Vector512.Create(b[i]);
            for (int j = 0; j < lenPadded; j += 16)
            {
                // Entries above the diagonal are masked to zero; their exponent is never evaluated positive.
                var e = SimdMath.ExpNonPositive(Vector512.Min(Differences(bi, b + j), zero));
                var below = Vector512.LessThanOrEqual(Vector512.Create(j) + Vector512<int>.Indices, Vector512.Create(i));
                Vector512.ConditionalSelect(below.AsSingle(), e, zero).Store(d + j);
            }
        }
        var last = Vector512.Create(b[len - 1]);
        for (int i = 0; i < lenPadded; i += 16)
        {
            SimdMath.ExpNonPositive(Vector512.Narrow(Vector512.Load(b + i), Vector512.Load(b + i + 8))).Store(_rowDecay + i);
            SimdMath.ExpNonPositive(Vector512.Min(Differences(last, b + i), zero)).Store(_colDecay + i);
        }
        SetStateDecay((float)b[len - 1]);
        DecayKeys(keys, len);
        return valid;
    }

    /// <summary>x − b[0..16], in double, rounded to fp32 only then: the difference keeps fp32's relative precision.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Differences(Vector512<double> x, double* b) =>
        Vector512.Narrow(x - Vector512.Load(b), x - Vector512.Load(b + 8));

    /// <summary>The same factors for a constant decay, from powers[m] = exp(m · logDecay), m = 0..C; keys as there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Prepare(ReadOnlySpan<float> powers, float logDecay, float* keys, int len)
    {
        int lenPadded = HeadLayout.RoundUp16(len), cc = _c;
        for (int i = 0; i < len; i++)
        {
            float* d = _d + (long)i * cc;
            for (int j = 0; j <= i; j++) d[j] = powers[i - j];
            for (int j = i + 1; j < lenPadded; j++) d[j] = 0f;
            _rowDecay[i] = powers[i + 1];
            _colDecay[i] = powers[len - 1 - i];
        }
        SetStateDecay(len * logDecay);
        DecayKeys(keys, len);
    }

    private void SetStateDecay(float logDecay)
    {
        _stateDecay[0] = SimdMath.DecayNear(logDecay);
        _stateDecay[1] = SimdMath.DecayFar(logDecay);
    }

    /// <summary>
    /// The chunk's keys [C × KP] transposed, what the scores read: once per set of keys, before <see cref="Prepare(float*, long, float*, int)"/>;
    /// value heads that read the same key head in turn keep it.
    /// </summary>
    public void TransposeKeys(float* keys, int len) => SimdOps.Transpose(keys, _kp, _kt, _c, HeadLayout.RoundUp16(len), _kp);

    /// <summary>Gated, the keys decayed to the chunk end (for the state update).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void DecayKeys(float* keys, int len)
    {
        if (!_gated) return;
        for (int j = 0; j < len; j++) SimdOps.CopyScaledPadded(_ks + (long)j * _kp, keys + (long)j * _kp, _colDecay[j], _kp, _kp);
    }

    /// <summary>
    /// Rows of block s (rows rs = 16 s .. min(rs + 16, len)) of the scores of x [C × KP] against the chunk's keys: row i
    /// of a (stride lda) gets A_ij in its columns 0..rs + 16, zero for j > i. The products of later keys in the diagonal
    /// block are masked out, never multiplied by zero, so a later key that is not finite does not reach the row.
    /// Columns from rs + 16 on are not written: the products that read the scores are causal
    /// (<see cref="SimdGemm.MultiplyCausal"/>).
    /// </summary>
    public void Scores(float* x, int s, int len, float* a, int lda)
    {
        Products(x, s, len, a, lda);
        Decay(a, lda, s, len, a, lda);
    }

    /// <summary>
    /// Block s of x [C × KP] times the chunk's keys, before the decay: row i of p (stride ldp) gets x_i · k_j in its
    /// columns 0..rs + 16. Value heads that read the same rows x and keys share these and each applies its own
    /// <see cref="Decay"/>.
    /// </summary>
    public void Products(float* x, int s, int len, float* p, int ldp)
    {
        int rs = s * Block, re = Math.Min(rs + Block, len);
        SimdGemm.Multiply(x + (long)rs * _kp, _kp, _kt, _c, p + (long)rs * ldp, ldp, re - rs, _kp, rs + Block, accumulate: false);
    }

    /// <summary>Block s of the scores A = P ⊙ D from the products p (stride ldp) as <see cref="Scores"/> leaves them in a; a may be p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Decay(float* p, int ldp, int s, int len, float* a, int lda)
    {
        int rs = s * Block, re = Math.Min(rs + Block, len), cc = _c;
        var columns = Vector512.Create(rs) + Vector512<int>.Indices;
        for (int i = rs; i < re; i++)
        {
            float* row = a + (long)i * lda, products = p + (long)i * ldp, d = _d + (long)i * cc;
            SimdOps.Multiply(row, products, d, rs);
            var below = Vector512.LessThanOrEqual(columns, Vector512.Create(i)).AsSingle();
            Vector512.ConditionalSelect(below, Vector512.Load(products + rs) * Vector512.Load(d + rs), Vector512<float>.Zero).Store(row + rs);
        }
    }

    /// <summary>S ← exp(b_last) S + (k ⊙ exp(b_last − b))ᵀ V, S [KP × VP] and V [len × VP] with row stride vp.</summary>
    public void UpdateState(float* state, float* keys, float* values, int vp, int len)
    {
        if (_gated) ChunkState.Update(state, _kp, vp, _stateDecay, _stateDecay + 1, 0, _ks, values, len);
        else ChunkState.Update(state, _kp, vp, null, null, 0, keys, values, len);
    }
}

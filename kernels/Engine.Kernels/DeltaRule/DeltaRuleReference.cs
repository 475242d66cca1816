using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// The float64 oracle: the recurrent form, one token at a time, decay first.
///   S = diag(exp(g_t)) S          (gated: g_t one value per head, or one per key dim)
///   u = β_t (v_t − Sᵀ k_t)
///   S = S + k_t uᵀ
///   o_t = Sᵀ (scale · q_t)        for each query head reading this key/value head
/// With qkL2Norm, q and k rows are first divided by sqrt(Σ x² + eps).
/// beta [TotalTokens, Hkv], g [TotalTokens, Hkv] or [TotalTokens, Hkv, K] (empty for DeltaNet); state [N, Hkv, K, V], initial
/// on entry, final on return.
/// </summary>
public static class DeltaRuleReference
{
    public static void Forward(DeltaRuleConfig config, SequenceLayout sequences,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> beta, ReadOnlySpan<float> g,
        Span<double> output, Span<double> state)
    {
        var heads = config.Heads;
        int hq = heads.QHeads, hkv = heads.KvHeads, kd = heads.KeyDim, vd = heads.ValueDim;
        var key = new double[kd];
        var query = new double[kd];
        var u = new double[vd];
        for (int n = 0; n < sequences.Count; n++)
        {
            for (int h = 0; h < hkv; h++)
            {
                var s = state.Slice((int)((n * (long)hkv + h) * kd * vd), kd * vd);
                for (int t = sequences.Start(n); t < sequences.Start(n) + sequences.Length(n); t++)
                {
                    Row(k.Slice((t * hkv + h) * kd, kd), key, config.QkL2Norm);
                    for (int c = 0; c < kd && config.Gate != GateKind.None; c++)
                    {
                        double decay = Math.Exp(config.Gate == GateKind.PerKey ? g[(t * hkv + h) * kd + c] : g[t * hkv + h]);
                        for (int d = 0; d < vd; d++) s[c * vd + d] *= decay;
                    }
                    double b = beta[t * hkv + h];
                    for (int d = 0; d < vd; d++)
                    {
                        double predicted = 0;
                        for (int c = 0; c < kd; c++) predicted += s[c * vd + d] * key[c];
                        u[d] = b * (v[(t * hkv + h) * vd + d] - predicted);
                    }
                    for (int c = 0; c < kd; c++)
                        for (int d = 0; d < vd; d++)
                            s[c * vd + d] += key[c] * u[d];
                    for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
                    {
                        Row(q.Slice((t * hq + qh) * kd, kd), query, config.QkL2Norm);
                        for (int d = 0; d < vd; d++)
                        {
                            double sum = 0;
                            for (int c = 0; c < kd; c++) sum += config.Scale * query[c] * s[c * vd + d];
                            output[(t * hq + qh) * vd + d] = sum;
                        }
                    }
                }
            }
        }
    }

    private static void Row(ReadOnlySpan<float> source, double[] row, bool l2Norm)
    {
        double sumSquares = 0;
        for (int c = 0; c < row.Length; c++)
        {
            row[c] = source[c];
            sumSquares += row[c] * row[c];
        }
        if (!l2Norm) return;
        double inverse = 1 / Math.Sqrt(sumSquares + DeltaRuleConfig.L2NormEpsilon);
        for (int c = 0; c < row.Length; c++) row[c] *= inverse;
    }
}

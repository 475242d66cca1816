using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// The float64 oracle: the recurrent form, one token at a time, decay first.
///   S = diag(exp(g_t)) S          (gated: g_t one value per head, or one per key dim)
///   u = β_t (v_t − Sᵀ k_t)
///   S = S + k_t uᵀ
///   o_t = Sᵀ (scale · q_t)        for each output head of this value head
/// With qkL2Norm, q and k rows are first divided by sqrt(Σ x² + eps).
/// Per value head h: k is key head h / ValueGroup, v, beta, g and the state are h's own, and the output heads of h read their
/// query heads (<see cref="HeadLayout"/>). beta [TotalTokens, Hv], g [TotalTokens, Hv] or [TotalTokens, Hv, K] (empty for
/// DeltaNet); state [N, Hv, K, V] (or [N, Hv, V, K] with <see cref="StateLayout.ValueMajor"/>), initial on entry, final on return.
/// </summary>
public static class DeltaRuleReference
{
    public static void Forward(DeltaRuleConfig config, SequenceLayout sequences,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> beta, ReadOnlySpan<float> g,
        Span<double> output, Span<double> state)
    {
        var heads = config.Heads;
        int hq = heads.QHeads, hk = heads.KeyHeads, hv = heads.ValueHeads, ho = heads.OutputHeads, kd = heads.KeyDim, vd = heads.ValueDim;
        var key = new double[kd];
        var query = new double[kd];
        var u = new double[vd];
        // Element (c, d) of a head's state: key dim c, value dim d, where the layout puts it.
        bool valueMajor = config.StateLayout == StateLayout.ValueMajor;
        int At(int c, int d) => valueMajor ? d * kd + c : c * vd + d;
        for (int n = 0; n < sequences.Count; n++)
        {
            for (int h = 0; h < hv; h++)
            {
                int kh = heads.KeyHeadOf(h);
                var s = state.Slice((int)((n * (long)hv + h) * kd * vd), kd * vd);
                for (int t = sequences.Start(n); t < sequences.Start(n) + sequences.Length(n); t++)
                {
                    Row(k.Slice((t * hk + kh) * kd, kd), key, config);
                    for (int c = 0; c < kd && config.Gate != GateKind.None; c++)
                    {
                        double decay = Math.Exp(config.Gate == GateKind.PerKey ? g[(t * hv + h) * kd + c] : g[t * hv + h]);
                        for (int d = 0; d < vd; d++) s[At(c, d)] *= decay;
                    }
                    double b = beta[t * hv + h];
                    for (int d = 0; d < vd; d++)
                    {
                        double predicted = 0;
                        for (int c = 0; c < kd; c++) predicted += s[At(c, d)] * key[c];
                        u[d] = b * (v[(t * hv + h) * vd + d] - predicted);
                    }
                    for (int c = 0; c < kd; c++)
                        for (int d = 0; d < vd; d++)
                            s[At(c, d)] += key[c] * u[d];
                    for (int o = h * heads.Group; o < (h + 1) * heads.Group; o++)
                    {
                        Row(q.Slice((t * hq + heads.QueryHeadOf(o)) * kd, kd), query, config);
                        for (int d = 0; d < vd; d++)
                        {
                            double sum = 0;
                            for (int c = 0; c < kd; c++) sum += config.Scale * query[c] * s[At(c, d)];
                            output[(t * ho + o) * vd + d] = sum;
                        }
                    }
                }
            }
        }
    }

    private static void Row(ReadOnlySpan<float> source, double[] row, DeltaRuleConfig config)
    {
        double sumSquares = 0;
        for (int c = 0; c < row.Length; c++)
        {
            row[c] = source[c];
            sumSquares += row[c] * row[c];
        }
        if (!config.QkL2Norm) return;
        double inverse = 1 / Math.Sqrt(sumSquares + config.L2NormEpsilon);
        for (int c = 0; c < row.Length; c++) row[c] *= inverse;
    }
}

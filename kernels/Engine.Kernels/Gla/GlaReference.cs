using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// The float64 oracle: the recurrent form, one token at a time.
///   S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ (scale · q_t)
/// Per value head h: k is key head h / ValueGroup, g and the state are h's own, and the output heads of h read their query heads
/// (<see cref="HeadLayout"/>). state holds the initial state on entry and the final state on return, [N, Hv, K, V] (or
/// [N, Hv, V, K] value-major, as the config says).
/// </summary>
public static class GlaReference
{
    public static void Forward(GlaConfig config, SequenceLayout sequences,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> g,
        Span<double> output, Span<double> state)
    {
        var heads = config.Heads;
        int hq = heads.QHeads, hk = heads.KeyHeads, hv = heads.ValueHeads, ho = heads.OutputHeads, kd = heads.KeyDim, vd = heads.ValueDim;
        var decay = new double[kd];
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
                    for (int c = 0; c < kd; c++)
                    {
                        double logGate = config.Gate switch
                        {
                            GateKind.PerKey => g[(t * hv + h) * kd + c],
                            GateKind.PerHead => g[t * hv + h],
                            GateKind.Constant => config.ConstantLogDecay![h],
                            _ => 0.0,
                        };
                        decay[c] = Math.Exp(logGate);
                    }
                    for (int c = 0; c < kd; c++)
                    {
                        double kc = k[(t * hk + kh) * kd + c];
                        for (int d = 0; d < vd; d++)
                            s[At(c, d)] = decay[c] * s[At(c, d)] + kc * v[(t * hv + h) * vd + d];
                    }
                    for (int o = h * heads.Group; o < (h + 1) * heads.Group; o++)
                    {
                        int qh = heads.QueryHeadOf(o);
                        for (int d = 0; d < vd; d++)
                        {
                            double sum = 0;
                            for (int c = 0; c < kd; c++) sum += (double)config.Scale * q[(t * hq + qh) * kd + c] * s[At(c, d)];
                            output[(t * ho + o) * vd + d] = sum;
                        }
                    }
                }
            }
        }
    }
}

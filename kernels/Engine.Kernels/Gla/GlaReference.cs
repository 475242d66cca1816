using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// The float64 oracle: the recurrent form, one token at a time.
///   S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ (scale · q_t)
/// state holds the initial state on entry and the final state on return, [N, Hkv, K, V].
/// </summary>
public static class GlaReference
{
    public static void Forward(GlaConfig config, SequenceLayout sequences,
        ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> g,
        Span<double> output, Span<double> state)
    {
        var heads = config.Heads;
        int hq = heads.QHeads, hkv = heads.KvHeads, kd = heads.KeyDim, vd = heads.ValueDim;
        var decay = new double[kd];
        for (int n = 0; n < sequences.Count; n++)
        {
            for (int h = 0; h < hkv; h++)
            {
                var s = state.Slice((int)((n * (long)hkv + h) * kd * vd), kd * vd);
                for (int t = sequences.Start(n); t < sequences.Start(n) + sequences.Length(n); t++)
                {
                    for (int c = 0; c < kd; c++)
                    {
                        double logGate = config.Gate switch
                        {
                            GateKind.PerKey => g[(t * hkv + h) * kd + c],
                            GateKind.PerHead => g[t * hkv + h],
                            GateKind.Constant => config.ConstantLogDecay![h],
                            _ => 0.0,
                        };
                        decay[c] = Math.Exp(logGate);
                    }
                    for (int c = 0; c < kd; c++)
                    {
                        double kc = k[(t * hkv + h) * kd + c];
                        for (int d = 0; d < vd; d++)
                            s[c * vd + d] = decay[c] * s[c * vd + d] + kc * v[(t * hkv + h) * vd + d];
                    }
                    for (int qh = h * heads.Group; qh < (h + 1) * heads.Group; qh++)
                    {
                        for (int d = 0; d < vd; d++)
                        {
                            double sum = 0;
                            for (int c = 0; c < kd; c++) sum += (double)config.Scale * q[(t * hq + qh) * kd + c] * s[c * vd + d];
                            output[(t * hq + qh) * vd + d] = sum;
                        }
                    }
                }
            }
        }
    }
}

using Engine.Onnx.Ops;

namespace Engine.Tests.Onnx;

/// <summary>
/// ONNX LinearAttention in float64, written from the operator's specification, token by token:
///   linear       S_t = S_{t-1} + k_t v_tᵀ
///   gated        S_t = exp(g_t) S_{t-1} + k_t v_tᵀ
///   delta        S_t = S_{t-1} + β_t k_t (v_t − S_{t-1}ᵀ k_t)ᵀ
///   gated_delta  S_t = exp(g_t) S_{t-1} + β_t k_t (v_t − (exp(g_t) S_{t-1})ᵀ k_t)ᵀ
///   o_t = scale · S_tᵀ q_t
/// Heads (com.microsoft, ONNX Runtime 1.32): when Hq >= Hkv, k has Hkv heads and query head h reads state h / (Hq / Hkv);
/// when Hq < Hkv (grouped value heads), k has Hq heads, state h reads key head h / (Hkv / Hq) and its output head h reads
/// query head h / (Hkv / Hq). Packed layouts: q (B,T,Hq·dk), k (B,T,min(Hq,Hkv)·dk), v (B,T,Hkv·dv), decay (B,T,Hkv·dk)
/// or (B,T,Hkv), beta (B,T,Hkv) or (B,T,1), state (B,Hkv,dk,dv), output (B,T,max(Hq,Hkv)·dv).
/// </summary>
public static class LinearAttentionReference
{
    public sealed record Result(double[] Output, double[] State);

    public static Result Run(UpdateRule rule, int b, int t, int hq, int hkv, int dk, int dv, double scale,
        double[] q, double[] k, double[] v, double[]? pastState, double[]? decay, bool decayPerKey, double[]? beta, bool betaPerHead)
    {
        int hk = Math.Min(hq, hkv), ho = Math.Max(hq, hkv);
        var output = new double[(long)b * t * ho * dv];
        var state = new double[(long)b * hkv * dk * dv];
        pastState?.CopyTo(state, 0);
        bool gated = rule is UpdateRule.Gated or UpdateRule.GatedDelta, delta = rule is UpdateRule.Delta or UpdateRule.GatedDelta;
        var u = new double[dv];
        for (int n = 0; n < b; n++)
        {
            for (int h = 0; h < hkv; h++)
            {
                long s0 = ((long)n * hkv + h) * dk * dv;
                // (query head, output head) pairs reading state h.
                var readers = hq >= hkv
                    ? Enumerable.Range(h * (hq / hkv), hq / hkv).Select(qh => (Query: qh, Output: qh)).ToArray()
                    : [(Query: h / (hkv / hq), Output: h)];
                for (int step = 0; step < t; step++)
                {
                    long token = (long)n * t + step;
                    long kRow = (token * hk + h / (hkv / hk)) * dk, vRow = (token * hkv + h) * dv;
                    if (gated)
                    {
                        for (int i = 0; i < dk; i++)
                        {
                            double g = decayPerKey ? decay![(token * hkv + h) * dk + i] : decay![token * hkv + h];
                            double factor = Math.Exp(g);
                            for (int j = 0; j < dv; j++) state[s0 + i * dv + j] *= factor;
                        }
                    }
                    if (delta)
                    {
                        double bt = betaPerHead ? beta![token * hkv + h] : beta![token];
                        for (int j = 0; j < dv; j++)
                        {
                            double retrieved = 0;
                            for (int i = 0; i < dk; i++) retrieved += state[s0 + i * dv + j] * k[kRow + i];
                            u[j] = bt * (v[vRow + j] - retrieved);
                        }
                    }
                    else
                    {
                        for (int j = 0; j < dv; j++) u[j] = v[vRow + j];
                    }
                    for (int i = 0; i < dk; i++)
                        for (int j = 0; j < dv; j++) state[s0 + i * dv + j] += k[kRow + i] * u[j];
                    foreach (var (qh, oh) in readers)
                    {
                        long qRow = (token * hq + qh) * dk, oRow = (token * ho + oh) * dv;
                        for (int j = 0; j < dv; j++)
                        {
                            double sum = 0;
                            for (int i = 0; i < dk; i++) sum += q[qRow + i] * state[s0 + i * dv + j];
                            output[oRow + j] = scale * sum;
                        }
                    }
                }
            }
        }
        return new Result(output, state);
    }
}

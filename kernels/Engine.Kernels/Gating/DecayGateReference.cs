namespace Engine.Kernels.Gating;

/// <summary>
/// The gates of a gated delta rule from their projections, per head h of H (the last axis):
///   decay = decay_scale[h] · softplus(a + dt_bias[h])      (decay_scale = −exp(A_log): log-space decay &lt;= 0)
///   beta  = sigmoid(b)
/// </summary>
public static class DecayGateReference
{
    public static void Forward(ReadOnlySpan<float> a, ReadOnlySpan<float> dtBias, ReadOnlySpan<float> decayScale, ReadOnlySpan<float> b,
        Span<double> decay, Span<double> beta)
    {
        int h = dtBias.Length;
        for (int i = 0; i < a.Length; i++)
        {
            double y = (double)a[i] + dtBias[i % h];
            double e = Math.Exp(-Math.Abs(y)), u = 1 + e;
            // ln(1 + e) with e's digits kept: ln(u) · e / (u − 1) cancels the rounding of u = 1 + e.
            decay[i] = decayScale[i % h] * (Math.Max(y, 0) + (u == 1 ? e : Math.Log(u) * (e / (u - 1))));
        }
        for (int i = 0; i < b.Length; i++) beta[i] = Conv.CausalConvReference.Sigmoid(b[i]);
    }
}

using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// The first transitions of each sequence from its initial state, what a speculative decoder keeps to replay an accepted
/// prefix onto that state without running the layer again. Token t of a sequence, value head h:
///   decay_t = exp(g_t)              one factor per head, or per key dim (1 without a gate)
///   k̂_t                             the key as the recurrence uses it (L2-normalized with QkL2Norm), per key head
///   δ_t     = β_t (v_t − Sᵀ (decay_t ⊙ k̂_t))  with S the state before the token, i.e. the delta rule's update u_t
/// so that S_t = diag(decay_t) S_{t−1} + k̂_t δ_tᵀ. Only a few tokens per sequence (a capacity of at most 8 in ONNX
/// Runtime), so one plain fp32 pass per head: the state is copied once into a key-major work buffer.
/// </summary>
public static class DeltaRuleTransitions
{
    /// <param name="counts">transitions to capture per sequence (clamped to [0, min(capacity, length)]).</param>
    /// <param name="initialState">[N, Hv, K, V] (or [N, Hv, V, K] value-major, as the config says).</param>
    /// <param name="decay">[N, capacity, Hv] or [N, capacity, Hv, K] (a per-key gate): the factors.</param>
    /// <param name="keys">[N, capacity, Hk, K]: the keys.</param>
    /// <param name="deltas">[N, capacity, Hv, V]: the deltas. Entries past a sequence's count are zero.</param>
    public static void Capture(DeltaRuleConfig config, SequenceLayout sequences, int capacity, ReadOnlySpan<int> counts,
        ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> beta, ReadOnlySpan<float> g, ReadOnlySpan<float> initialState,
        Span<float> decay, Span<float> keys, Span<float> deltas)
    {
        var heads = config.Heads;
        int hk = heads.KeyHeads, hv = heads.ValueHeads, kd = heads.KeyDim, vd = heads.ValueDim;
        bool perKey = config.Gate == GateKind.PerKey, valueMajor = config.StateLayout == StateLayout.ValueMajor;
        int decayWidth = perKey ? hv * kd : hv;
        decay.Clear();
        keys.Clear();
        deltas.Clear();
        var state = new float[kd * vd];
        var key = new float[kd];
        var factors = new float[kd];
        for (int n = 0; n < sequences.Count; n++)
        {
            int m = Math.Clamp(counts[n], 0, Math.Min(capacity, sequences.Length(n)));
            for (int h = 0; h < hv; h++)
            {
                var initial = initialState.Slice((n * hv + h) * kd * vd, kd * vd);
                for (int c = 0; c < kd; c++)
                    for (int d = 0; d < vd; d++) state[c * vd + d] = valueMajor ? initial[d * kd + c] : initial[c * vd + d];
                int kh = heads.KeyHeadOf(h);
                for (int j = 0; j < m; j++)
                {
                    int t = sequences.Start(n) + j;
                    long slot = (long)n * capacity + j;
                    k.Slice((t * hk + kh) * kd, kd).CopyTo(key);
                    // As the kernels normalize: a row whose sum of squares overflows fp32 is normalized, not zeroed.
                    if (config.QkL2Norm) SimdOps.Normalize(key, 1f, config.L2NormEpsilon);
                    if (h == heads.KeyHeadOf(h) * heads.ValueGroup) key.CopyTo(keys.Slice((int)((slot * hk + kh) * kd), kd));
                    for (int c = 0; c < kd; c++)
                    {
                        float logGate = config.Gate switch
                        {
                            GateKind.PerKey => g[(t * hv + h) * kd + c],
                            GateKind.PerHead => g[t * hv + h],
                            _ => 0f,
                        };
                        if (!LogGates.IsValid(logGate) && config.Gate != GateKind.None) LogGates.Refuse(g, "g");
                        factors[c] = MathF.Exp(logGate);
                    }
                    if (perKey) factors.CopyTo(decay.Slice((int)(slot * decayWidth + h * kd), kd));
                    else decay[(int)(slot * decayWidth + h)] = factors[0];
                    var delta = deltas.Slice((int)((slot * hv + h) * vd), vd);
                    float b = beta[t * hv + h];
                    for (int d = 0; d < vd; d++)
                    {
                        float predicted = 0f;
                        for (int c = 0; c < kd; c++) predicted += state[c * vd + d] * factors[c] * key[c];
                        delta[d] = b * (v[(t * hv + h) * vd + d] - predicted);
                    }
                    for (int c = 0; c < kd; c++)
                        for (int d = 0; d < vd; d++) state[c * vd + d] = factors[c] * state[c * vd + d] + key[c] * delta[d];
                }
            }
        }
    }
}

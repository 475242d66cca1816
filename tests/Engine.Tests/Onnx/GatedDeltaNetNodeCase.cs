using System.Numerics.Tensors;
using Engine.Onnx;
using Engine.Tests.Harness;
using Engine.Workloads;

namespace Engine.Tests.Onnx;

/// <summary>
/// A model holding one com.microsoft GatedDeltaNet node whose inputs are graph inputs, the inputs fixed by a stable
/// seed, and the float64 reference of the same call: the gates and beta activations computed here in double from
/// their formulas, then the delta rule's float64 oracle on a value-major state with ORT's L2 epsilon (1e-12; 1e-6 with the
/// sigmoid gate), or for the
/// rules without a delta (linear, gated) GLA's, on q and k normalized here.
/// </summary>
public sealed record GatedDeltaNetNodeCase
{
    public GatedDeltaNetNodeSpec Spec { get; init; } = new();
    /// <summary>Requests and their lengths: uniform (every length the same) unless the spec is ragged.</summary>
    public int[] Lengths { get; init; } = [19, 19];
    /// <summary>capture_count per request (with a state_update capacity).</summary>
    public int[]? CaptureCount { get; init; }
    public bool CaptureActive { get; init; } = true;
    /// <summary>Rows of q and k drawn this small (the L2 epsilon then matters).</summary>
    public double QkStd { get; init; } = 1.0;
    public string Label { get; init; } = "";

    public const double L2Epsilon = 1e-12;

    /// <summary>ORT's qk_l2_norm epsilon for this node: 1e-6 with the sigmoid (kda) gate, else <see cref="L2Epsilon"/>.</summary>
    public double L2NormEpsilon => Spec.DecayGateActivation is "sigmoid" or "kda" ? 1e-6 : L2Epsilon;

    public int B => Lengths.Length;
    public int N => Lengths.Sum();
    public double Tolerance => Spec.ElementType switch
    {
        TensorElementType.Float16 => Numerics.Fp16Tolerance,
        TensorElementType.BFloat16 => Numerics.Bf16Tolerance,
        _ => Numerics.Fp32Tolerance,
    };

    public string Name
    {
        get
        {
            var s = Spec;
            return $"{s.UpdateRule} {(s.PackedQkv ? "packed-qkv " : "")}{s.Layout}{(s.Ragged ? " ragged" : "")} [{string.Join(",", Lengths)}] H{s.QHeads}/{s.ValueHeads} dk{s.KeyDim} dv{s.ValueDim}" +
                (s.DecayPerKey ? " decay-per-key" : "") + (s.FusedGate ? $" {s.DecayGateActivation}" + (s.DtBiasPerKeyRank is int r ? $" dt_bias-rank{r}" : "") : "") +
                (s.BetaSigmoid ? " beta-sigmoid" : "") + (s.QkL2Norm ? " l2norm" : "") + (s.Scale != 0 ? $" scale{s.Scale}" : "") +
                (s.StateUpdateCapacity > 0 ? $" capture{s.StateUpdateCapacity}" : "") + (s.ElementType == TensorElementType.Float ? "" : $" {s.ElementType}") + (Label.Length > 0 ? " " + Label : "");
        }
    }

    public override string ToString() => Name;

    public OnnxModel Model() => SampleModels.GatedDeltaNetNode(Spec);

    private long[] Tokens(params long[] tail)
    {
        if (Spec.Layout == GatedDeltaNetLayout.Tokens) return [N, .. tail];
        return [B, Lengths[0], .. tail];
    }

    public Dictionary<string, TensorData> Inputs()
    {
        var s = Spec;
        var data = new TestData(AttentionCase.StableSeed(Name));
        int hq = s.QHeads, hv = s.ValueHeads, dk = s.KeyDim, dv = s.ValueDim;
        var q = data.Normal((long)N * hq * dk, QkStd);
        var k = s.QkL2Norm ? data.Normal((long)N * hq * dk, QkStd) : data.UnitRows((long)N * hq, dk);
        var v = data.Normal((long)N * hv * dv);
        var inputs = new Dictionary<string, TensorData>();
        if (s.PackedQkv)
        {
            int width = s.PackedWidth;
            var packed = new float[(long)N * width];
            for (int t = 0; t < N; t++)
            {
                q.AsSpan(t * hq * dk, hq * dk).CopyTo(packed.AsSpan(t * width));
                k.AsSpan(t * hq * dk, hq * dk).CopyTo(packed.AsSpan(t * width + hq * dk));
                v.AsSpan(t * hv * dv, hv * dv).CopyTo(packed.AsSpan(t * width + 2 * hq * dk));
            }
            inputs["query"] = Tensor(packed, Tokens(width));
        }
        else
        {
            inputs["query"] = Tensor(q, Tokens(hq, dk));
            inputs["key"] = Tensor(k, Tokens(hq, dk));
            inputs["value"] = Tensor(v, Tokens(hv, dv));
        }
        if (s.Ragged)
        {
            var cu = new int[B + 1];
            for (int b = 0; b < B; b++) cu[b + 1] = cu[b] + Lengths[b];
            inputs["cu_seqlens"] = TensorData.Create(cu, B + 1);
        }
        if (s.UsesDecay)
        {
            long count = (long)N * s.DecayWidth;
            var decay = s.FusedGate ? data.Normal(count) : data.LogGates(count, 1.0);
            inputs["decay"] = Gate(decay, s.DecayPerKey ? Tokens(hv, dk) : Tokens(hv));
        }
        if (s.UsesBeta) inputs["beta"] = Gate(s.BetaSigmoid ? data.Normal((long)N * hv, 2.0) : data.Uniform((long)N * hv, 0.05, 1.0), Tokens(hv));
        inputs["initial_state"] = TensorData.Create(data.Normal((long)B * hv * dv * dk, 0.5), B, hv, dv, dk);
        if (s.FusedGate && s.GateParameters is null)
        {
            inputs["a_log"] = TensorData.Create(data.Uniform(hv, -1.0, 1.0), hv);
            long[] dtShape = s.DtBiasPerKeyRank switch { 2 => [hv, dk], 1 => [(long)hv * dk], _ => [hv] };
            inputs["dt_bias"] = TensorData.Create(data.Normal(dtShape.Aggregate(1L, (a, d) => a * d), 0.5), dtShape);
        }
        if (s.StateUpdateCapacity > 0)
        {
            inputs["capture_count"] = TensorData.Create(CaptureCount ?? Lengths.Select(_ => s.StateUpdateCapacity).ToArray(), B);
            inputs["state_update_active"] = TensorData.Create(new[] { CaptureActive ? 1 : 0 }, 1);
        }
        return inputs;
    }

    private TensorData Tensor(float[] values, long[] shape) => Typed(Spec.ElementType, values, shape);

    private TensorData Gate(float[] values, long[] shape) => Typed(Spec.GateElementType, values, shape);

    private static TensorData Typed(TensorElementType type, float[] values, long[] shape) => type switch
    {
        TensorElementType.Float16 => TensorData.Create(TestData.ToHalf(values), shape),
        TensorElementType.BFloat16 => TensorData.Create(TestData.ToBFloat16(values), shape),
        _ => TensorData.Create(values, shape),
    };

    private static float[] Floats(IReadOnlyDictionary<string, TensorData> inputs, string name) => OnnxAssert.Floats(inputs[name]);

    /// <summary>The float64 reference: output [N, Hv, dv], final state [B, Hv, dv, dk], and the captured transitions.</summary>
    public sealed record Result(double[] Output, double[] FinalState, double[]? StateUpdate);

    public Result Reference(IReadOnlyDictionary<string, TensorData> inputs)
    {
        var s = Spec;
        int hq = s.QHeads, hv = s.ValueHeads, dk = s.KeyDim, dv = s.ValueDim;
        float[] q, k, v;
        if (s.PackedQkv)
        {
            var packed = Floats(inputs, "query");
            int width = s.PackedWidth;
            q = new float[(long)N * hq * dk]; k = new float[q.Length]; v = new float[(long)N * hv * dv];
            for (int t = 0; t < N; t++)
            {
                packed.AsSpan(t * width, hq * dk).CopyTo(q.AsSpan(t * hq * dk));
                packed.AsSpan(t * width + hq * dk, hq * dk).CopyTo(k.AsSpan(t * hq * dk));
                packed.AsSpan(t * width + 2 * hq * dk, hv * dv).CopyTo(v.AsSpan(t * hv * dv));
            }
        }
        else
        {
            q = Floats(inputs, "query"); k = Floats(inputs, "key"); v = Floats(inputs, "value");
        }
        var g = s.UsesDecay ? Gates(s, Floats(inputs, "decay"), inputs) : null;
        var beta = s.UsesBeta ? Floats(inputs, "beta").Select(x => s.BetaSigmoid ? (float)(1 / (1 + Math.Exp(-x))) : x).ToArray() : Enumerable.Repeat(1f, N * hv).ToArray();
        var initial = Floats(inputs, "initial_state");

        // The oracle: one packed batch (B = 1, cu_seqlens from the lengths), state value-major.
        var cu = new int[B + 1];
        for (int b = 0; b < B; b++) cu[b + 1] = cu[b] + Lengths[b];
        var output = Numerics.NaNs((long)N * hv * dv);
        var final = Numerics.NaNs(initial.Length);
        if (!s.UsesBeta)
        {
            // linear and gated: GLA's oracle, q and k normalized here.
            float[] qn = s.QkL2Norm ? L2Rows(q, dk, L2NormEpsilon) : q, kn = s.QkL2Norm ? L2Rows(k, dk, L2NormEpsilon) : k;
            Engine.Gla.Forward<float>(TestDevices.Reference,
                new ReadOnlyTensorSpan<float>(qn, [1, N, hq, dk]), new ReadOnlyTensorSpan<float>(kn, [1, N, hq, dk]), new ReadOnlyTensorSpan<float>(v, [1, N, hv, dv]),
                g is null ? default : s.DecayPerKey ? new ReadOnlyTensorSpan<float>(g, [1, N, hv, dk]) : new ReadOnlyTensorSpan<float>(g, [1, N, hv]),
                new TensorSpan<float>(output, [1, N, hv, dv]),
                new ReadOnlyTensorSpan<float>(initial, [B, hv, dv, dk]), new TensorSpan<float>(final, [B, hv, dv, dk]), cu,
                new GlaOptions { Mode = AttentionMode.Recurrent, Scale = s.Scale != 0 ? s.Scale : null, StateLayout = StateLayout.ValueMajor });
        }
        else Engine.DeltaRule.Forward<float>(TestDevices.Reference,
            new ReadOnlyTensorSpan<float>(q, [1, N, hq, dk]), new ReadOnlyTensorSpan<float>(k, [1, N, hq, dk]),
            new ReadOnlyTensorSpan<float>(v, [1, N, hv, dv]), new ReadOnlyTensorSpan<float>(beta, [1, N, hv]),
            g is null ? default : s.DecayPerKey ? new ReadOnlyTensorSpan<float>(g, [1, N, hv, dk]) : new ReadOnlyTensorSpan<float>(g, [1, N, hv]),
            new TensorSpan<float>(output, [1, N, hv, dv]),
            new ReadOnlyTensorSpan<float>(initial, [B, hv, dv, dk]), new TensorSpan<float>(final, [B, hv, dv, dk]), cu,
            new DeltaRuleOptions
            {
                Mode = AttentionMode.Recurrent, Scale = s.Scale != 0 ? s.Scale : null, QkL2Norm = s.QkL2Norm,
                L2NormEpsilon = (float)L2NormEpsilon, StateLayout = StateLayout.ValueMajor,
            });
        double[]? update = s.StateUpdateCapacity > 0 ? Transitions(k, v, beta, g, initial, inputs) : null;
        return new Result(TestData.ToDouble(output), TestData.ToDouble(final), update);
    }

    /// <summary>Each row of <paramref name="dim"/> values divided by sqrt(Σ x² + ORT's epsilon), in double.</summary>
    private static float[] L2Rows(float[] x, int dim, double epsilon)
    {
        var result = new float[x.Length];
        for (int at = 0; at < x.Length; at += dim)
        {
            double sum = 0;
            for (int c = 0; c < dim; c++) sum += (double)x[at + c] * x[at + c];
            for (int c = 0; c < dim; c++) result[at + c] = (float)(x[at + c] / Math.Sqrt(sum + epsilon));
        }
        return result;
    }

    /// <summary>g in log space from decay: as given, −exp(a_log)·softplus(decay + dt_bias), or lower_bound·sigmoid(exp(a_log)·(decay + dt_bias)).</summary>
    private static float[] Gates(GatedDeltaNetNodeSpec s, float[] decay, IReadOnlyDictionary<string, TensorData> inputs)
    {
        if (!s.FusedGate) return decay;
        var aLog = s.GateParameters?.ALog ?? Floats(inputs, "a_log");
        var dtBias = s.GateParameters?.DtBias ?? Floats(inputs, "dt_bias");
        int hv = s.ValueHeads, dk = s.KeyDim, width = s.DecayWidth;
        var g = new float[decay.Length];
        for (int i = 0; i < decay.Length; i++)
        {
            int column = i % width, h = s.DecayPerKey ? column / dk : column;
            double bias = s.DtBiasPerKeyRank is null ? dtBias[h] : dtBias[column];
            double x = decay[i] + bias, a = Math.Exp(aLog[h]);
            g[i] = s.DecayGateActivation is "softplus" or "qwen"
                ? (float)(-a * Softplus(x))
                : (float)((s.GateLowerBound ?? -5.0) / (1 + Math.Exp(-a * x)));
        }
        return g;
    }

    /// <summary>ln(1 + e^x) = max(x, 0) + ln(1 + e^−|x|), the second term with e^−|x|'s digits kept where 1 + e^−|x| rounds.</summary>
    private static double Softplus(double x)
    {
        double e = Math.Exp(-Math.Abs(x)), u = 1 + e;
        return Math.Max(x, 0) + (u == 1 ? e : Math.Log(u) * (e / (u - 1)));
    }

    /// <summary>
    /// The captured transitions per request, one row [C·(decay width + Hq·dk + Hv·dv)]: decay factors exp(g) [C, width],
    /// keys as the recurrence uses them (normalized with qk_l2_norm) [C, Hq, dk], deltas β (v − exp(g)·Sᵀk) [C, Hv, dv] (v itself for linear and gated);
    /// zeros past the captured count.
    /// </summary>
    private double[] Transitions(float[] k, float[] v, float[] beta, float[]? g, float[] initial, IReadOnlyDictionary<string, TensorData> inputs)
    {
        var s = Spec;
        int hq = s.QHeads, hv = s.ValueHeads, dk = s.KeyDim, dv = s.ValueDim, cap = s.StateUpdateCapacity;
        int width = s.UsesDecay ? s.DecayWidth : hv, group = hv / hq;
        int row = cap * (width + hq * dk + hv * dv);
        var result = new double[(long)B * row];
        var counts = inputs["capture_count"].As<int>();
        int start = 0;
        for (int b = 0; b < B; b++)
        {
            int m = CaptureActive ? Math.Clamp(counts[b], 0, Math.Min(cap, Lengths[b])) : 0;
            var state = new double[hv * dv * dk];
            for (int i = 0; i < state.Length; i++) state[i] = initial[(long)b * state.Length + i];
            for (int j = 0; j < m; j++)
            {
                int t = start + j;
                long decayAt = (long)b * row + (long)j * width, keyAt = (long)b * row + (long)cap * width + (long)j * hq * dk;
                long deltaAt = (long)b * row + (long)cap * (width + hq * dk) + (long)j * hv * dv;
                var keys = new double[hq * dk];
                for (int h = 0; h < hq; h++)
                {
                    double norm = 0;
                    for (int c = 0; c < dk; c++) norm += (double)k[(t * hq + h) * dk + c] * k[(t * hq + h) * dk + c];
                    double inverse = s.QkL2Norm ? 1 / Math.Sqrt(norm + L2NormEpsilon) : 1;
                    for (int c = 0; c < dk; c++) keys[h * dk + c] = result[keyAt + h * dk + c] = k[(t * hq + h) * dk + c] * inverse;
                }
                for (int h = 0; h < hv; h++)
                {
                    for (int c = 0; c < (s.DecayPerKey ? dk : 1); c++)
                    {
                        int gi = s.DecayPerKey ? h * dk + c : h;
                        double factor = g is null ? 1 : Math.Exp(g[(long)t * width + gi]);
                        result[decayAt + gi] = factor;
                        for (int d = 0; d < dv; d++)
                            for (int cc = s.DecayPerKey ? c : 0; cc < (s.DecayPerKey ? c + 1 : dk); cc++) state[(h * dv + d) * dk + cc] *= factor;
                    }
                    for (int d = 0; d < dv; d++)
                    {
                        double predicted = 0;
                        for (int c = 0; c < dk; c++) predicted += state[(h * dv + d) * dk + c] * keys[(h / group) * dk + c];
                        // The rules without a delta add the value itself.
                        double delta = s.UsesBeta ? beta[t * hv + h] * (v[(t * hv + h) * dv + d] - predicted) : v[(t * hv + h) * dv + d];
                        result[deltaAt + h * dv + d] = delta;
                        for (int c = 0; c < dk; c++) state[(h * dv + d) * dk + c] += keys[(h / group) * dk + c] * delta;
                    }
                }
            }
            start += Lengths[b];
        }
        return result;
    }
}

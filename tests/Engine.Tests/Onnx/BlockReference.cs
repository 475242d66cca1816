using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

namespace Engine.Tests.Onnx;

/// <summary>
/// The linear-attention block model (<see cref="SampleModels.LinearAttentionBlock"/>) in float64, from its
/// weights: projections, log-sigmoid decay, sigmoid beta, per-head key normalization for the delta rules,
/// the LinearAttention recurrence and the output projection, layer after layer.
/// </summary>
public static class BlockReference
{
    public sealed record Result(double[] Y, IReadOnlyDictionary<string, double[]> States);

    public static Result Run(LinearAttentionBlockSpec spec, OnnxModel model, float[] x, int batch, int length,
        IReadOnlyDictionary<string, float[]>? pastStates = null)
    {
        int d = spec.Hidden, hq = spec.QHeads, hk = spec.KeyHeads, hkv = spec.KvHeads, ho = spec.OutputHeads, dk = spec.KeyDim, dv = spec.ValueDim;
        int rows = batch * length;
        double[] h = x.Select(a => (double)a).ToArray();
        var states = new Dictionary<string, double[]>();
        for (int layer = 0; layer < spec.Layers; layer++)
        {
            string suffix = spec.Layers == 1 ? "" : $"_{layer}";
            double[] W(string name) => model.ReadTensor(model.Graph.Initializer.Single(t => t.Name == name + suffix)).As<float>().Select(a => (double)a).ToArray();
            var q = MatMul(h, W("w_query"), rows, d, hq * dk);
            var k = MatMul(h, W("w_key"), rows, d, hk * dk);
            var v = MatMul(h, W("w_value"), rows, d, hkv * dv);
            double[]? decay = null, beta = null;
            bool perKey = spec.Decay == DecayForm.PerKey;
            if (LinearAttentionSignature.UsesDecay(spec.Rule))
            {
                decay = MatMul(h, W("w_decay"), rows, d, perKey ? hkv * dk : hkv);
                double strength = SampleModels.DecayStrength(spec.Decay);
                for (int i = 0; i < decay.Length; i++) decay[i] = strength * LogSigmoid(decay[i] + SampleModels.DecayBias);
            }
            if (LinearAttentionSignature.UsesBeta(spec.Rule))
            {
                for (int r = 0; r < rows * hk; r++)
                {
                    double norm = 0;
                    for (int c = 0; c < dk; c++) norm += k[r * dk + c] * k[r * dk + c];
                    norm = Math.Sqrt(norm);
                    for (int c = 0; c < dk; c++) k[r * dk + c] = norm == 0 ? 0 : k[r * dk + c] / norm;
                }
                beta = MatMul(h, W("w_beta"), rows, d, spec.BetaPerHead ? hkv : 1).Select(z => 1 / (1 + Math.Exp(-z))).ToArray();
            }
            double[]? past = pastStates?.GetValueOrDefault(SampleModels.PastStateName(suffix))?.Select(a => (double)a).ToArray();
            var attention = LinearAttentionReference.Run(spec.Rule, batch, length, hq, hkv, dk, dv, spec.Scale != 0 ? spec.Scale : 1 / Math.Sqrt(dk),
                q, k, v, past, decay, perKey, beta, spec.BetaPerHead);
            states[SampleModels.PresentStateName(suffix)] = attention.State;
            h = MatMul(attention.Output, W("w_out"), rows, ho * dv, d);
        }
        return new Result(h, states);
    }

    private static double LogSigmoid(double z) => z >= 0 ? -Math.Log(1 + Math.Exp(-z)) : z - Math.Log(1 + Math.Exp(z));

    private static double[] MatMul(double[] a, double[] b, int rows, int inner, int columns)
    {
        var c = new double[(long)rows * columns];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < inner; i++)
            {
                double x = a[(long)r * inner + i];
                if (x == 0) continue;
                for (int j = 0; j < columns; j++) c[(long)r * columns + j] += x * b[(long)i * columns + j];
            }
        return c;
    }
}

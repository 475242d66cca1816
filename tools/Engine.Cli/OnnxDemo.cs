using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

namespace Engine.Cli;

/// <summary>
/// The demo's ONNX part: LinearAttention block models made by the builder, run by ONNX Runtime with the
/// LinearAttention node on the engine and without; their agreement and speed, and an ai.onnx opset-27 model, which
/// ONNX Runtime alone runs only as the op's Scan function body.
/// </summary>
public static class OnnxDemo
{
    public static bool Run(TextWriter w, bool quick)
    {
        int t = quick ? 512 : 2048;
        w.WriteLine();
        w.WriteLine($"ONNX models (ONNX Runtime {OrtInfo.Version}): a LinearAttention block, B1 T{t} H8 dk128 dv128, hidden 256,");
        w.WriteLine("LinearAttention on the engine's CPU kernels vs on ONNX Runtime's own kernel; every other node in ONNX Runtime.");
        w.WriteLine($"{"model",-34} {"engine ms",10} {"ORT ms",10} {"rel. difference",16}");
        using var host = new KernelHost();
        bool ok = true;
        var rules = new (string Name, UpdateRule Rule, DecayForm Decay)[]
        {
            ("linear", UpdateRule.Linear, DecayForm.PerHead),
            ("gated, per-key decay (GLA)", UpdateRule.Gated, DecayForm.PerKey),
            ("gated, per-head decay (RetNet)", UpdateRule.Gated, DecayForm.PerHead),
            ("delta (DeltaNet)", UpdateRule.Delta, DecayForm.PerHead),
            ("gated_delta (Gated DeltaNet)", UpdateRule.GatedDelta, DecayForm.PerHead),
            ("gated_delta, per-key decay", UpdateRule.GatedDelta, DecayForm.PerKey),
        };
        foreach (var (name, rule, decay) in rules)
        {
            var spec = new LinearAttentionBlockSpec { Hidden = 256, QHeads = 8, KvHeads = 8, KeyDim = 128, ValueDim = 128, Rule = rule, Decay = decay };
            var model = SampleModels.LinearAttentionBlock(spec);
            var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = t });
            using var engine = ModelSession.Open(model, new ModelSessionOptions { Host = host, Backend = HandoverBackend.Cpu, AllowSpinning = false });
            using var ort = ModelSession.Open(model, new ModelSessionOptions { Host = host, Backend = HandoverBackend.None, AllowSpinning = false });
            IReadOnlyDictionary<string, TensorData>? byEngine = null, byOrt = null;
            double engineSeconds = BenchTimer.Median(() => byEngine = engine.Run(inputs), repeats: 3, warmupSeconds: 0.2);
            double ortSeconds = BenchTimer.Median(() => byOrt = ort.Run(inputs), repeats: 3, warmupSeconds: 0.2);
            double difference = Demo.RelativeRms(byEngine!["y"].As<float>(), byOrt!["y"].As<float>());
            ok &= difference <= 1e-5;
            w.WriteLine($"{name,-34} {engineSeconds * 1e3,10:F1} {ortSeconds * 1e3,10:F1} {difference,16:E1}");
        }

        // ONNX Runtime 1.32 runs ai.onnx LinearAttention-27 by itself only as its Scan function body, token by token.
        var opset27 = SampleModels.LinearAttentionBlock(new LinearAttentionBlockSpec { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, Domain = "" });
        var opset27Inputs = ModelInputs.Random(opset27, new Dictionary<string, long> { ["B"] = 1, ["T"] = 256 });
        using var handed = ModelSession.Open(opset27, new ModelSessionOptions { Host = host });
        using var alone = ModelSession.Open(opset27, new ModelSessionOptions { Backend = HandoverBackend.None, Host = host });
        IReadOnlyDictionary<string, TensorData>? byHanded = null, byAlone = null;
        double handedSeconds = BenchTimer.Median(() => byHanded = handed.Run(opset27Inputs), repeats: 3, warmupSeconds: 0.2);
        double aloneSeconds = BenchTimer.Median(() => byAlone = alone.Run(opset27Inputs), repeats: 3, warmupSeconds: 0.2);
        double opset27Difference = Demo.RelativeRms(byHanded!["y"].As<float>(), byAlone!["y"].As<float>());
        ok &= opset27Difference <= 1e-5;
        w.WriteLine($"{"gated_delta block, ai.onnx opset 27",-34} {handedSeconds * 1e3,10:F1} {aloneSeconds * 1e3,10:F1} {opset27Difference,16:E1}");
        w.WriteLine($"  (ONNX Runtime alone runs LinearAttention-27 as its Scan function body; the engine takes the node: {string.Join("; ", handed.Handover.Notes)})");
        w.WriteLine("rel. difference: relative RMS difference of y between the two paths.");
        return ok;
    }
}

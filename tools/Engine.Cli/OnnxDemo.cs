using Engine.Cli.Commands;
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
    /// <summary>One model timed both ways: median ms of each path and the relative RMS difference of y between them.</summary>
    public sealed record Row(string Model, double EngineMs, double OrtMs, double Difference);

    /// <summary>The rows (the opset-27 model last), the hand-over's notes on the opset-27 model, and the sequence length.</summary>
    public sealed record Result(int Tokens, IReadOnlyList<Row> Rows, IReadOnlyList<string> Opset27Notes)
    {
        public bool Ok => Rows.All(r => r.Difference <= 1e-5);

        public void Print(TextWriter w)
        {
            w.WriteLine();
            w.WriteLine($"ONNX models (ONNX Runtime {OrtInfo.Version}): a LinearAttention block, B1 T{Tokens} H8 dk128 dv128, hidden 256,");
            w.WriteLine("LinearAttention on the engine's CPU kernels vs on ONNX Runtime's own kernel; every other node in ONNX Runtime.");
            w.WriteLine($"{"model",-40} {"engine ms",10} {"ORT ms",10} {"rel. difference",16}");
            foreach (var r in Rows) w.WriteLine($"{r.Model,-40} {r.EngineMs,10:F1} {r.OrtMs,10:F1} {r.Difference,16:E1}");
            w.WriteLine($"  (ONNX Runtime alone runs LinearAttention-27 as its Scan function body; the engine takes the node: {string.Join("; ", Opset27Notes)})");
            w.WriteLine("rel. difference: relative RMS difference of y between the two paths.");
        }

        public Dictionary<string, object> Json() => new()
        {
            ["ort_version"] = OrtInfo.Version, ["t"] = Tokens, ["opset27_notes"] = Opset27Notes,
            ["models"] = Rows.Select(r => new Dictionary<string, object?>
            {
                ["model"] = r.Model, ["engine_ms"] = r.EngineMs, ["ort_ms"] = r.OrtMs, ["relative_difference"] = Demo.Finite(r.Difference),
            }).ToArray(),
        };
    }

    public static Result Measure(bool quick, CliProgress.Steps progress)
    {
        int t = quick ? 512 : 2048;
        using var host = new KernelHost();
        var blocks = BenchModelCommand.Blocks;
        var step = progress.Add("demo: ONNX models, engine and ONNX Runtime", blocks.Length + 1);
        var rows = new List<Row>();
        foreach (var (_, name, rule, decay) in blocks)
        {
            step.Describe($"demo: ONNX {name}");
            var model = SampleModels.LinearAttentionBlock(BenchModelCommand.BlockSpec(rule, decay));
            var inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = t });
            using var engine = ModelSession.Open(model, new ModelSessionOptions { Host = host, Backend = HandoverBackend.Cpu, AllowSpinning = false });
            using var ort = ModelSession.Open(model, new ModelSessionOptions { Host = host, Backend = HandoverBackend.None, AllowSpinning = false });
            rows.Add(TimeBoth(name, engine, ort, inputs));
            step.Advance();
        }

        // ONNX Runtime 1.32 runs ai.onnx LinearAttention-27 by itself only as its Scan function body, token by token: at
        // the other rows' shape that takes minutes, so this row runs a smaller block and its name says which.
        step.Describe("demo: ONNX opset 27");
        const int opset27Tokens = 256;
        var opset27Spec = new LinearAttentionBlockSpec { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, Domain = "" };
        var opset27 = SampleModels.LinearAttentionBlock(opset27Spec);
        var opset27Inputs = ModelInputs.Random(opset27, new Dictionary<string, long> { ["B"] = 1, ["T"] = opset27Tokens });
        using var handed = ModelSession.Open(opset27, new ModelSessionOptions { Host = host });
        using var alone = ModelSession.Open(opset27, new ModelSessionOptions { Backend = HandoverBackend.None, Host = host });
        rows.Add(TimeBoth($"gated_delta opset 27: T{opset27Tokens} H{opset27Spec.QHeads} dk{opset27Spec.KeyDim} dv{opset27Spec.ValueDim}",
            handed, alone, opset27Inputs));
        step.Advance();
        return new Result(t, rows, handed.Handover.Notes);
    }

    /// <summary>The two sessions taking turns run by run, so that load on the machine falls on both alike.</summary>
    private static Row TimeBoth(string name, ModelSession engine, ModelSession ort, IReadOnlyDictionary<string, TensorData> inputs)
    {
        IReadOnlyDictionary<string, TensorData>? byEngine = null, byOrt = null;
        var (engineSeconds, ortSeconds) = BenchTimer.MedianInterleaved(() => byEngine = engine.Run(inputs), () => byOrt = ort.Run(inputs),
            repeats: 5, block: 1, warmupSeconds: 0.3);
        return new Row(name, engineSeconds * 1e3, ortSeconds * 1e3, Demo.RelativeRms(byEngine!["y"].As<float>(), byOrt!["y"].As<float>()));
    }
}

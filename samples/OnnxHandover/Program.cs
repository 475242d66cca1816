// An ONNX model with the hand-over: a GLA block (projections, decay, com.microsoft.LinearAttention) written to a
// temporary folder, run with its LinearAttention node on the engine's kernels and by ONNX Runtime alone.
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

const int T = 1024;
var spec = new LinearAttentionBlockSpec
{
    Hidden = 256, QHeads = 4, KvHeads = 4, KeyDim = 64, ValueDim = 64, Rule = UpdateRule.Gated, Decay = DecayForm.PerKey,
};
string folder = Directory.CreateTempSubdirectory("engine-sample-").FullName;
try
{
    string path = Path.Combine(folder, "gla_block.onnx");
    SampleModels.LinearAttentionBlock(spec).Save(path);
    var inputs = ModelInputs.Random(OnnxModel.Load(path), new Dictionary<string, long> { ["B"] = 1, ["T"] = T });

    using var engine = ModelSession.Open(path);                                                       // the node on the engine
    using var ort = ModelSession.Open(path, new ModelSessionOptions { Backend = HandoverBackend.None });  // ONNX Runtime alone
    Console.WriteLine($"{Path.GetFileName(path)}: the engine takes over {engine.Handover.EngineNodes.Count()} node(s); ONNX Runtime {OrtInfo.Version}");

    var (byEngine, engineMs) = Timed(engine);
    var (byOrt, ortMs) = Timed(ort);
    double maxDifference = 0;
    foreach (var name in engine.OutputNames)
    {
        float[] a = byEngine[name].As<float>(), b = byOrt[name].As<float>();
        for (int i = 0; i < a.Length; i++) maxDifference = Math.Max(maxDifference, Math.Abs(a[i] - b[i]));
    }
    Console.WriteLine($"T = {T}: engine {engineMs:F1} ms, ONNX Runtime alone {ortMs:F1} ms per run (best of 3)");
    Console.WriteLine($"max |difference| between the two, over every output: {maxDifference:E2}");
    return maxDifference <= 1e-3 ? 0 : 1;

    // Best of three runs after a first one (which loads and compiles).
    (IReadOnlyDictionary<string, TensorData> Outputs, double Milliseconds) Timed(ModelSession session)
    {
        var outputs = session.Run(inputs);
        double best = double.MaxValue;
        for (int i = 0; i < 3; i++)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            outputs = session.Run(inputs);
            best = Math.Min(best, clock.Elapsed.TotalMilliseconds);
        }
        return (outputs, best);
    }
}
finally
{
    Directory.Delete(folder, recursive: true);
}

// An ONNX model with the hand-over: a GLA block (projections, decay, com.microsoft.LinearAttention) written to a
// temporary folder, run with its LinearAttention node on the engine's kernels and by ONNX Runtime alone.
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

const int T = 1024;
var spec = new LinearAttentionBlockSpec
{
    Hidden = 256, QHeads = 8, KvHeads = 8, KeyDim = 128, ValueDim = 128, Rule = UpdateRule.Gated, Decay = DecayForm.PerKey,
};
string folder = Directory.CreateTempSubdirectory("engine-sample-").FullName;
try
{
    string path = Path.Combine(folder, "gla_block.onnx");
    SampleModels.LinearAttentionBlock(spec).Save(path);
    var inputs = ModelInputs.Random(OnnxModel.Load(path), new Dictionary<string, long> { ["B"] = 1, ["T"] = T });

    // Two sessions taking turns: their intra-op threads must not spin, or one's idle threads take the cores from the other.
    using var engine = ModelSession.Open(path, new ModelSessionOptions { AllowSpinning = false });                      // the node on the engine
    using var ort = ModelSession.Open(path, new ModelSessionOptions { Backend = HandoverBackend.None, AllowSpinning = false });  // ORT alone
    int taken = engine.Handover.EngineNodes.Count();
    Console.WriteLine($"{Path.GetFileName(path)}: the engine takes over {taken} node(s); ONNX Runtime {OrtInfo.Version}");
    // Without the hand-over both sessions are ORT alone: their outputs would agree and prove nothing.
    if (taken == 0)
    {
        Console.Error.WriteLine("the engine took over no node: nothing to compare");
        return 1;
    }

    // A first run of each loads and compiles; then the two take turns, so the host's load falls on both alike.
    var byEngine = engine.Run(inputs);
    var byOrt = ort.Run(inputs);
    double engineMs = double.MaxValue, ortMs = double.MaxValue;
    for (int i = 0; i < 5; i++)
    {
        engineMs = Math.Min(engineMs, Milliseconds(() => byEngine = engine.Run(inputs)));
        ortMs = Math.Min(ortMs, Milliseconds(() => byOrt = ort.Run(inputs)));
    }
    double maxDifference = 0;
    foreach (var name in engine.OutputNames)
    {
        float[] a = byEngine[name].As<float>(), b = byOrt[name].As<float>();
        for (int i = 0; i < a.Length; i++) maxDifference = Math.Max(maxDifference, Math.Abs(a[i] - b[i]));
    }
    Console.WriteLine($"T = {T}: engine {engineMs:F1} ms, ONNX Runtime alone {ortMs:F1} ms per run (best of 5, taking turns)");
    Console.WriteLine($"max |difference| between the two, over every output: {maxDifference:E2}");
    return maxDifference <= 1e-3 ? 0 : 1;

    static double Milliseconds(Action run)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        run();
        return clock.Elapsed.TotalMilliseconds;
    }
}
finally
{
    Directory.Delete(folder, recursive: true);
}

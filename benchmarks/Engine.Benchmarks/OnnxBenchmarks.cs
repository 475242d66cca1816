using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>Short runs of whole ONNX models (milliseconds to seconds each).</summary>
public sealed class ModelBenchConfig : ManualConfig
{
    public ModelBenchConfig() =>
        AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(3).WithIterationCount(7).WithInvocationCount(1).WithUnrollFactor(1));
}

/// <summary>
/// The LinearAttention block model (B=1, Hq=Hkv=8, dk=dv=128, hidden 256) and the LinearAttention node alone,
/// for each update rule, with the node on the engine's CPU kernels (Engine) or on ONNX Runtime's own kernel
/// (Ort): the prefill lengths of the benchmark table and one decode token with past_state.
/// </summary>
[Config(typeof(ModelBenchConfig))]
public class OnnxBenchmarks
{
    public enum Rule { Linear, GatedPerKey, GatedPerHead, Delta, GatedDelta }

    [Params(Rule.Linear, Rule.GatedPerKey, Rule.GatedPerHead, Rule.Delta, Rule.GatedDelta)] public Rule UpdateRule;
    [Params(1, 1024, 4096)] public int T;
    [Params(false, true)] public bool NodeOnly;
    [Params(HandoverBackend.Cpu, HandoverBackend.None)] public HandoverBackend Backend;

    private KernelHost _host = null!;
    private ModelSession _session = null!;
    private Dictionary<string, TensorData> _inputs = null!;

    [GlobalSetup]
    public void Setup()
    {
        var (rule, decay) = UpdateRule switch
        {
            Rule.Linear => (Onnx.Ops.UpdateRule.Linear, DecayForm.PerHead),
            Rule.GatedPerKey => (Onnx.Ops.UpdateRule.Gated, DecayForm.PerKey),
            Rule.GatedPerHead => (Onnx.Ops.UpdateRule.Gated, DecayForm.PerHead),
            Rule.Delta => (Onnx.Ops.UpdateRule.Delta, DecayForm.PerHead),
            _ => (Onnx.Ops.UpdateRule.GatedDelta, DecayForm.PerHead),
        };
        var spec = new LinearAttentionBlockSpec { Hidden = 256, QHeads = 8, KvHeads = 8, KeyDim = 128, ValueDim = 128, Rule = rule, Decay = decay };
        var model = NodeOnly ? SampleModels.LinearAttentionNode(spec) : SampleModels.LinearAttentionBlock(spec);
        _host = new KernelHost();
        _session = ModelSession.Open(model, new ModelSessionOptions { Backend = Backend, Host = _host });
        _inputs = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = T });
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _session.Dispose();
        _host.Dispose();
    }

    [Benchmark]
    public IReadOnlyDictionary<string, TensorData> Run() => _session.Run(_inputs);
}

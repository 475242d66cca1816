using BenchmarkDotNet.Attributes;
using Engine.Kernels.Common;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>
/// DeltaNet and Gated DeltaNet (per-head and per-key gate) chunked (WY/UT, chunk 32) vs recurrent on the CPU, B=1, H=8, K=V=128.
/// Both modes are rated with the same model flop count (DeltaRuleConfig.ModelFlops), so their GFLOP/s
/// compare like their speeds.
/// </summary>
[Config(typeof(KernelBenchConfig))]
public class DeltaRuleBenchmarks : IModelFlops
{
    private const int Chunk = DeltaRuleOptions.DefaultChunkSize;

    [Params(512, 2048, 8192)] public int T;
    [Params(GateKind.None, GateKind.PerHead, GateKind.PerKey)] public GateKind Gate;
    [Params(AttentionMode.Chunked, AttentionMode.Recurrent)] public AttentionMode Mode;

    private EngineDevice _device = null!;
    private DeltaRuleWorkload _work = null!;

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        _work = new DeltaRuleWorkload(1, T, 8, 128, 128, Gate);
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();

    [Benchmark]
    public void DeltaRule() => _work.Run(_device, new DeltaRuleOptions { Mode = Mode, ChunkSize = Chunk });

    public static double ModelFlops(IReadOnlyDictionary<string, object> p) =>
        DeltaRuleWorkload.ModelFlops(1, (int)p["T"], 8, 128, 128, (GateKind)p["Gate"], Chunk);
}

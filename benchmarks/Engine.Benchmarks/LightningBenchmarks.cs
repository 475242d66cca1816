using BenchmarkDotNet.Attributes;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>Lightning attention in blocks of 64 on the CPU, B=1, H=8, K=V=128: time must grow linearly in T.</summary>
[Config(typeof(KernelBenchConfig))]
public class LightningBenchmarks : IModelFlops
{
    [Params(2048, 8192, 32768)] public int T;

    private EngineDevice _device = null!;
    private LightningWorkload _work = null!;

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        _work = new LightningWorkload(1, T, 8, 128, 128);
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();

    [Benchmark]
    public void Lightning() => _work.Run(_device, new LightningOptions());

    public static double ModelFlops(IReadOnlyDictionary<string, object> p) =>
        GlaWorkload.ModelFlops(1, (int)p["T"], 8, 128, 128, AttentionMode.Chunked, 64);
}

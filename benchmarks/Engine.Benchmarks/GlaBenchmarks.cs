using BenchmarkDotNet.Attributes;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>GLA (per-key gate) chunked vs recurrent on the CPU, B=1, H=8, K=V=128.</summary>
[Config(typeof(KernelBenchConfig))]
public class GlaBenchmarks : IModelFlops
{
    [Params(512, 2048, 8192)] public int T;
    [Params(AttentionMode.Chunked, AttentionMode.Recurrent)] public AttentionMode Mode;

    private EngineDevice _device = null!;
    private GlaWorkload _work = null!;

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        _work = new GlaWorkload(1, T, 8, 128, 128, GateKind.PerKey);
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();

    [Benchmark]
    public void Gla() => _work.Run(_device, new GlaOptions { Mode = Mode });

    public static double ModelFlops(IReadOnlyDictionary<string, object> p) =>
        GlaWorkload.ModelFlops(1, (int)p["T"], 8, 128, 128, (AttentionMode)p["Mode"], 64);
}

using BenchmarkDotNet.Attributes;
using Engine.Kernels.Lssl;
using Engine.Workloads;

namespace Engine.Benchmarks;

/// <summary>
/// LSSL on the CPU, the three modes side by side: L ∈ {1024, 4096, 16384}, H = 256 channels, state size N = 64,
/// B = 1, HiPPO-LegS shared by the channels, bilinear, Q = 64. The layer is discretized (tables, conv kernel and
/// spectra cached) before timing: one forward call is timed, with the final state written.
/// Model flops (<see cref="LsslWorkload.ModelFlops(int, int, int, int, bool, int, LsslMode)"/>), per channel:
///   recurrent 2L(N² + 2N); scan 2L((Q + 1)/2 + 2N + N²/Q) (L a multiple of Q here); conv 5n log₂ n + 8n, n = FFT size,
///   and 2L(N + N²/Q) for the final state (the scan's state pass).
/// Run: dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*Lssl*'
/// </summary>
[Config(typeof(KernelBenchConfig))]
public class LsslBenchmarks : IModelFlops
{
    private const int Channels = 256, StateSize = 64;

    [Params(1024, 4096, 16384)] public int L;
    [Params(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)] public LsslMode Mode;

    private EngineDevice _device = null!;
    private LsslWorkload _work = null!;

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        _work = new LsslWorkload(1, L, Channels, StateSize);
        _work.Run(_device, Mode);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _work.Dispose();
        _device.Dispose();
    }

    [Benchmark]
    public LsslMode Lssl() => _work.Run(_device, Mode);

    public static double ModelFlops(IReadOnlyDictionary<string, object> p) =>
        LsslWorkload.ModelFlops(1, (int)p["L"], Channels, StateSize, diagonal: false, chunk: 64, (LsslMode)p["Mode"]);
}

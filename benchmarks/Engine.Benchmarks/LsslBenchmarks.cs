using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Engine;
using Engine.Kernels.Lssl;

namespace Engine.Benchmarks;

/// <summary>
/// LSSL on the CPU backend, the three modes side by side: L ∈ {1024, 4096, 16384}, H = 256 channels, state
/// size N = 64, B = 1, HiPPO-LegS shared by the channels, bilinear discretization, log-uniform Δ, Q = 64.
/// The layer is built (discretized, tables, conv kernel and spectra cached) before timing: what is timed is
/// one forward call, as a model runs it.
///
/// Model flops per call (the "Model GFLOP/s" column), per channel:
///   recurrent  2 L (N² + N)                              one N × N mat-vec and the C·x dot per step
///   scan       2 L ((Q + 1)/2 + 2N + N²/Q)               triangular Q × Q Toeplitz block, the B̄ columns and
///                                                        C rows (N per step each), one carry mat-vec per chunk
///   conv       2 · 5 n log₂ n / 2 + 8 n,  n = 2^⌈log₂(2L − 1)⌉   a forward and an inverse complex FFT of size n
///                                                        shared by two channels (5 n log₂ n each, the usual
///                                                        count), and the spectral product
/// Run: dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*Lssl*'
/// </summary>
[Config(typeof(LsslBenchmarkConfig))]
public class LsslBenchmarks
{
    public const int Channels = 256, StateSize = 64;

    private EngineDevice _device = null!;
    private LsslLayer _layer = null!;
    private float[] _u = null!, _y = null!;

    [Params(1024, 4096, 16384)]
    public int L { get; set; }

    [Params(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)]
    public LsslMode Mode { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        var (a, b) = Lssl.HippoLegS(StateSize);
        var random = new Random(1);
        var c = Tensor.Create(Enumerable.Range(0, Channels * StateSize).Select(_ => (float)(random.NextDouble() - 0.5) / 8).ToArray(), [Channels, StateSize]);
        var d = Tensor.Create(Enumerable.Range(0, Channels).Select(_ => (float)random.NextDouble()).ToArray(), [Channels]);
        _layer = new LsslLayer(a, b, c, d, Lssl.LogUniformDt(Channels, seed: 0));
        _u = Enumerable.Range(0, L * Channels).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        _y = new float[_u.Length];
        Forward();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _layer.Dispose();
        _device.Dispose();
    }

    [Benchmark]
    public LsslMode Forward() =>
        _layer.Forward<float>(_device, new ReadOnlyTensorSpan<float>(_u, [1, L, Channels]), new TensorSpan<float>(_y, [1, L, Channels]), mode: Mode);

    /// <summary>Model flops of one call (see the class summary).</summary>
    public static double ModelFlops(LsslMode mode, int length, int chunk = 64)
    {
        double n = StateSize, perChannel = mode switch
        {
            LsslMode.Recurrent => 2.0 * length * (n * n + n),
            LsslMode.Scan => 2.0 * length * ((chunk + 1) / 2.0 + 2 * n + n * n / chunk),
            _ => FftModel(LsslCpu.FftSize(length)),
        };
        return perChannel * Channels;
    }

    private static double FftModel(int size) => 5.0 * size * Math.Log2(size) + 8.0 * size;
}

/// <summary>Adds the model GFLOP/s column to the default configuration.</summary>
public sealed class LsslBenchmarkConfig : ManualConfig
{
    public LsslBenchmarkConfig()
    {
        AddColumn(new ModelGflopsColumn());
    }

    private sealed class ModelGflopsColumn : IColumn
    {
        public string Id => nameof(ModelGflopsColumn);
        public string ColumnName => "Model GFLOP/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "model flops of the mode (LsslBenchmarks summary) / mean time";

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            if (stats is null) return "-";
            int length = (int)benchmarkCase.Parameters["L"];
            var mode = (LsslMode)benchmarkCase.Parameters["Mode"];
            return (LsslBenchmarks.ModelFlops(mode, length) / stats.Mean).ToString("F1");
        }

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public bool IsAvailable(Summary summary) => true;
    }
}

using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;

namespace Engine.Benchmarks;

/// <summary>
/// DeltaNet and Gated DeltaNet on the CPU backend (all cores), chunked (WY/UT) against recurrent, at
/// B = 1, H = 8, K = V = 128, chunk 64, fp32. Both modes are rated with the same model flop count
/// (<see cref="DeltaRuleConfig.ModelFlops"/>), so their GFLOP/s compare like their speeds.
/// dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*DeltaRule*'
/// </summary>
[Config(typeof(DeltaRuleBenchmarks.Columns))]
[SimpleJob(warmupCount: 3, iterationCount: 10)]
public class DeltaRuleBenchmarks
{
    private const int Heads = 8, HeadDim = 128, Chunk = 64;

    private EngineDevice _device = null!;
    private float[] _q = [], _k = [], _v = [], _beta = [], _g = [], _output = [], _state = [];

    [Params(512, 2048, 8192)]
    public int T { get; set; }

    [Params(false, true)]
    public bool Gated { get; set; }

    [Params(AttentionMode.Chunked, AttentionMode.Recurrent)]
    public AttentionMode Mode { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _device = EngineDevice.Create(Backend.Cpu);
        var random = new Random(12);
        float[] Uniform(long n, float lo, float hi)
        {
            var a = new float[n];
            for (long i = 0; i < n; i++) a[i] = lo + (hi - lo) * random.NextSingle();
            return a;
        }
        long rows = (long)T * Heads;
        _q = Uniform(rows * HeadDim, -1, 1);
        _k = Uniform(rows * HeadDim, -1, 1);
        for (long r = 0; r < rows; r++)
        {
            var row = _k.AsSpan((int)(r * HeadDim), HeadDim);
            TensorPrimitives.Divide(row, TensorPrimitives.Norm<float>(row), row);
        }
        _v = Uniform(rows * HeadDim, -1, 1);
        _beta = Uniform(rows, 0.05f, 0.95f);
        _g = Uniform(rows, -0.1f, 0f);
        _output = new float[rows * HeadDim];
        _state = new float[Heads * HeadDim * HeadDim];
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();

    [Benchmark]
    public void Forward()
    {
        Engine.DeltaRule.Forward<float>(_device,
            new ReadOnlyTensorSpan<float>(_q, [1, T, Heads, HeadDim]),
            new ReadOnlyTensorSpan<float>(_k, [1, T, Heads, HeadDim]),
            new ReadOnlyTensorSpan<float>(_v, [1, T, Heads, HeadDim]),
            new ReadOnlyTensorSpan<float>(_beta, [1, T, Heads]),
            Gated ? new ReadOnlyTensorSpan<float>(_g, [1, T, Heads]) : default,
            new TensorSpan<float>(_output, [1, T, Heads, HeadDim]),
            finalState: new TensorSpan<float>(_state, [1, Heads, HeadDim, HeadDim]),
            options: new DeltaRuleOptions { Mode = Mode, ChunkSize = Chunk });
    }

    /// <summary>The model flop count of one benchmark case.</summary>
    public static double ModelFlops(BenchmarkCase benchmarkCase)
    {
        int t = (int)benchmarkCase.Parameters["T"];
        var config = new DeltaRuleConfig(new HeadLayout(Heads, Heads, HeadDim, HeadDim), (bool)benchmarkCase.Parameters["Gated"],
            1f / MathF.Sqrt(HeadDim), Chunk, qkL2Norm: false);
        return config.ModelFlops(SequenceLayout.Dense(1, t));
    }

    private sealed class Columns : ManualConfig
    {
        public Columns()
        {
            AddColumn(new ModelFlopsColumn(ModelFlops, fractionOfPeak: false), new ModelFlopsColumn(ModelFlops, fractionOfPeak: true));
        }
    }
}

using System.Numerics.Tensors;
using BenchmarkDotNet.Attributes;
using Engine.Kernels.Common;
using Engine.Kernels.Conv;

namespace Engine.Benchmarks;

/// <summary>
/// One decode step (T = 1) of Qwen3.5's Gated DeltaNet mixer on the CPU, as the ONNX hand-over runs it: 16 query/key heads
/// and 32 value heads of 128, q|k|v as strided rows of one projection row, L2-normalized q and k, past and present states
/// in separate buffers. Without and with the short convolution (K = 4, its carried state in and out) and the gated RMS
/// norm folded in; and the standalone causal convolution of the same 8,192 channels (one thread, channels-last rows,
/// channels-first state, as ORT's CausalConvWithState keeps it).
/// </summary>
[SimpleJob(launchCount: 1, warmupCount: 5, iterationCount: 15)]
public class DecodeStepBenchmarks
{
    private const int QkHeads = 16, ValueHeads = 32, Dim = 128, Width = 4;
    private const int Channels = 2 * QkHeads * Dim + ValueHeads * Dim;

    private EngineDevice _device = null!;
    private float[] _row = null!, _beta = null!, _gate = null!, _output = null!, _past = null!, _present = null!;
    private float[] _weight = null!, _bias = null!, _pastConv = null!, _presentConv = null!, _normScale = null!, _normGate = null!, _convolved = null!;
    private DeltaRuleOptions _plain = null!, _folded = null!;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(1);
        float[] Uniform(int n, float low, float high) => Enumerable.Range(0, n).Select(_ => low + (high - low) * random.NextSingle()).ToArray();
        _device = EngineDevice.Create(Backend.Cpu);
        _row = Uniform(Channels, -1f, 1f);
        _beta = Uniform(ValueHeads, 0.1f, 0.9f);
        _gate = Uniform(ValueHeads, -1f, -0.01f);
        _output = new float[ValueHeads * Dim];
        _past = Uniform(ValueHeads * Dim * Dim, -0.1f, 0.1f);
        _present = new float[_past.Length];
        _weight = Uniform(Channels * Width, -0.5f, 0.5f);
        _bias = Uniform(Channels, -0.1f, 0.1f);
        _pastConv = Uniform(Channels * (Width - 1), -1f, 1f);
        _presentConv = new float[_pastConv.Length];
        _normScale = Uniform(Dim, 0.5f, 1.5f);
        _normGate = Uniform(ValueHeads * Dim, -1f, 1f);
        _convolved = new float[Channels];
        _plain = new DeltaRuleOptions { Mode = AttentionMode.Recurrent, QkL2Norm = true, Scale = 1f };
        _folded = _plain with
        {
            Convolution = new ShortConvolution { Weight = _weight, Width = Width, Bias = _bias, InitialState = _pastConv, FinalState = _presentConv },
            OutputNorm = new GatedOutputNorm { Scale = _normScale, Gate = _normGate },
        };
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();

    [Benchmark(Baseline = true)]
    public void Step() => Run(_plain);

    [Benchmark]
    public void StepWithConvolutionAndNorm() => Run(_folded);

    [Benchmark]
    public void CausalConvolution() =>
        CausalConvCpu.Forward(new CausalConvConfig(Channels, Width, 1, ConvActivation.Silu, ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst),
            SequenceLayout.Dense(1, 1), _row, _weight, _bias, _pastConv, _convolved, _presentConv, ThreadPoolScheduler.CallingThread);

    private void Run(DeltaRuleOptions options)
    {
        // One token's packed row [q | k | v]: each part a strided [1, 1, heads, 128] view (a dim of length 1 takes stride 0).
        ReadOnlyTensorSpan<float> Part(int offset, int heads) => new(_row.AsSpan(offset), [1, 1, heads, Dim], [0, 0, Dim, 1]);
        Engine.DeltaRule.Forward(_device, Part(0, QkHeads), Part(QkHeads * Dim, QkHeads), Part(2 * QkHeads * Dim, ValueHeads),
            new ReadOnlyTensorSpan<float>(_beta, [1, 1, ValueHeads], []), new ReadOnlyTensorSpan<float>(_gate, [1, 1, ValueHeads], []),
            new TensorSpan<float>(_output, [1, 1, ValueHeads, Dim], []), new ReadOnlyTensorSpan<float>(_past, [1, ValueHeads, Dim, Dim], []),
            new TensorSpan<float>(_present, [1, ValueHeads, Dim, Dim], []), options: options);
    }
}

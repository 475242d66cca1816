using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// The delta rule with its short convolution (<see cref="DeltaRuleOptions.Convolution"/>): q, k and v given as the packed rows
/// before the convolution. Expected: the float64 reference run on q, k and v convolved by the formula written out here, and
/// the carried convolution state as the last W − 1 positions of [initial state | rows]. Packed sequences as short as 0, 1 and
/// 2 tokens (their first taps read the initial state), T not a multiple of the chunk, grouped value heads, every gate form,
/// head dims that are not multiples of 16, both modes, the CPU kernels (which convolve as they load) and the reference backend.
/// </summary>
[TestFixture]
public sealed class ShortConvolutionTests
{
    private const int Hk = 2, Hv = 4, ConvWidth = 4, Spare = 3;
    /// <summary>Sequences of 0 to 37 tokens: rows within the initial state's reach and past it.</summary>
    private static readonly int[] Prefill = [0, 0, 1, 3, 40, 45];

    /// <summary>Decode: every sequence within the initial state's reach (1 or 2 tokens), every row convolved channel by channel.</summary>
    private static readonly int[] Decode = [0, 1, 2, 4, 5];

    private sealed record Case(int[] Offsets, int K, int V, float[] Rows, float[] Weight, float[] Bias, float[] InitialState)
    {
        public int Tokens => Offsets[^1];
        public int Sequences => Offsets.Length - 1;
        public int Channels => 2 * Hk * K + Hv * V;
        public int Width => Channels + Spare;

        public ReadOnlyTensorSpan<float> View(int offset, int heads, int dim) =>
            new(Rows.AsSpan(offset), [1, Tokens, heads, dim], [0, Width, dim, 1]);

        /// <summary>Channel c of every token convolved in float64 over [initial state | rows], per sequence; then SiLU when asked.</summary>
        public float[] Convolved(bool silu)
        {
            var y = new float[Tokens * Channels];
            for (int n = 0; n < Sequences; n++)
                for (int t = Offsets[n]; t < Offsets[n + 1]; t++)
                    for (int c = 0; c < Channels; c++)
                    {
                        double sum = Bias.Length == 0 ? 0 : Bias[c];
                        for (int j = 0; j < ConvWidth; j++)
                        {
                            int p = t - Offsets[n] - (ConvWidth - 1) + j;
                            double x = p >= 0 ? Rows[(Offsets[n] + p) * Width + c] : InitialState[(n * Channels + c) * (ConvWidth - 1) + ConvWidth - 1 + p];
                            sum += Weight[c * ConvWidth + j] * x;
                        }
                        y[t * Channels + c] = (float)(silu ? sum / (1 + Math.Exp(-sum)) : sum);
                    }
            return y;
        }

        /// <summary>The last W − 1 positions of [initial state | rows] per sequence, channels first.</summary>
        public float[] CarriedState()
        {
            var state = new float[Sequences * Channels * (ConvWidth - 1)];
            for (int n = 0; n < Sequences; n++)
                for (int c = 0; c < Channels; c++)
                    for (int j = 0; j < ConvWidth - 1; j++)
                    {
                        int p = Offsets[n + 1] - Offsets[n] - (ConvWidth - 1) + j;
                        state[(n * Channels + c) * (ConvWidth - 1) + j] = p >= 0 ? Rows[(Offsets[n] + p) * Width + c] : InitialState[(n * Channels + c) * (ConvWidth - 1) + ConvWidth - 1 + p];
                    }
            return state;
        }
    }

    private static Case MakeCase(int k, int v, bool bias, int seed, int[]? offsets = null)
    {
        offsets ??= Prefill;
        var data = new TestData(seed);
        int channels = 2 * Hk * k + Hv * v;
        return new Case(offsets, k, v, data.Normal(offsets[^1] * (channels + Spare), 0.5), data.Normal(channels * ConvWidth, 0.5),
            bias ? data.Normal(channels, 0.2) : [], data.Normal((offsets.Length - 1) * channels * (ConvWidth - 1), 0.5));
    }

    private static ReadOnlyTensorSpan<float> Part(float[] convolved, int tokens, int channels, int offset, int heads, int dim) =>
        new(convolved.AsSpan(offset), [1, tokens, heads, dim], [0, channels, dim, 1]);

    [Test]
    public void ConvolvedRowsMatchTheReferenceOnConvolvedInputs([Values] AttentionMode mode, [Values("none", "head", "key")] string gate,
        [Values(16, 20)] int k, [Values] bool onReference, [Values] bool decode)
        => ConvolvedRowsMatch(mode, gate, k, onReference ? TestDevices.Reference : TestDevices.Get(TestBackend.Cpu), decode ? Decode : Prefill);

    /// <summary>The GPU backend convolves on the host with the CPU kernels' row loads, then runs its own kernels.</summary>
    [Test]
    public void TheGpuBackendRunsOnConvolvedCopies([Values(TestBackend.GpuOnCpuAccelerator, TestBackend.GpuOnCuda)] TestBackend backend)
        => ConvolvedRowsMatch(AttentionMode.Chunked, "head", 16, TestDevices.Get(backend), Prefill);

    private static void ConvolvedRowsMatch(AttentionMode mode, string gate, int k, EngineDevice device, int[] offsets)
    {
        int v = k == 16 ? 16 : 24;
        var c = MakeCase(k, v, bias: gate != "none", seed: k + gate.Length, offsets);
        int tokens = c.Tokens, sequences = c.Sequences;
        var data = new TestData(7);
        var beta = new ReadOnlyTensorSpan<float>(data.Uniform(tokens * Hv, 0.1, 0.9), [1, tokens, Hv], []);
        nint[] gateShape = gate == "key" ? [1, tokens, Hv, k] : [1, tokens, Hv];
        var g = gate == "none" ? default : new ReadOnlyTensorSpan<float>(data.LogGates(gateShape.Aggregate(1L, (a, d) => a * d), 0.3), gateShape, []);
        bool silu = gate != "head";
        var options = new DeltaRuleOptions { Mode = mode, QkL2Norm = true, Scale = 0.3f, ChunkSize = 16 };
        int stateLength = sequences * Hv * k * v;

        var convolved = c.Convolved(silu);
        int channels = c.Channels;
        var expected = Numerics.NaNs(tokens * Hv * v);
        var expectedState = Numerics.NaNs(stateLength);
        Engine.DeltaRule.Forward(TestDevices.Reference, Part(convolved, tokens, channels, 0, Hk, k), Part(convolved, tokens, channels, Hk * k, Hk, k),
            Part(convolved, tokens, channels, 2 * Hk * k, Hv, v), beta, g, new TensorSpan<float>(expected, [1, tokens, Hv, v], []),
            finalState: new TensorSpan<float>(expectedState, [sequences, Hv, k, v], []), cuSeqlens: c.Offsets, options: options);

        var actual = Numerics.NaNs(tokens * Hv * v);
        var actualState = Numerics.NaNs(stateLength);
        var convState = Numerics.NaNs(c.InitialState.Length);
        var conv = new ShortConvolution { Weight = c.Weight, Width = ConvWidth, Bias = c.Bias, Silu = silu, InitialState = c.InitialState, FinalState = convState };
        Engine.DeltaRule.Forward(device, c.View(0, Hk, k), c.View(Hk * k, Hk, k), c.View(2 * Hk * k, Hv, v), beta, g,
            new TensorSpan<float>(actual, [1, tokens, Hv, v], []), finalState: new TensorSpan<float>(actualState, [sequences, Hv, k, v], []),
            cuSeqlens: c.Offsets, options: options with { Convolution = conv });

        Assert.That(Numerics.RelativeRms(actual, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
        Assert.That(Numerics.RelativeRms(actualState, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
        Assert.That(convState, Is.EqualTo(c.CarriedState()), "carried convolution state");
    }

    [Test]
    public void TheCarriedStateMayBeTheInitialStatesMemory([Values] bool decode)
    {
        var c = MakeCase(16, 16, bias: true, seed: 3, decode ? Decode : Prefill);
        var expectedState = c.CarriedState();
        var beta = new float[c.Tokens * Hv];
        Array.Fill(beta, 0.5f);
        var state = (float[])c.InitialState.Clone();
        var output = Numerics.NaNs(c.Tokens * Hv * 16);
        var conv = new ShortConvolution { Weight = c.Weight, Width = ConvWidth, Bias = c.Bias, InitialState = state, FinalState = state };
        Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), c.View(0, Hk, 16), c.View(Hk * 16, Hk, 16), c.View(2 * Hk * 16, Hv, 16),
            new ReadOnlyTensorSpan<float>(beta, [1, c.Tokens, Hv], []), default, new TensorSpan<float>(output, [1, c.Tokens, Hv, 16], []),
            cuSeqlens: c.Offsets, options: new DeltaRuleOptions { Convolution = conv });
        Assert.That(state, Is.EqualTo(expectedState));
        Assert.That(output.All(float.IsFinite), Is.True);
    }

    /// <summary>
    /// The output may be v's very tensor without a convolution, but not with one: each row of v is read again, as it was,
    /// by the tokens after it (the CPU kernel, which convolves rows as it loads them, gave relative errors of 0.3–0.9).
    /// </summary>
    [Test]
    public void TheOutputMayNotBeAConvolvedInputsTensor([Values] AttentionMode mode)
    {
        var c = MakeCase(16, 16, bias: true, seed: 7);
        // Dense q, k and v of their own: the output laid over v's tensor overlaps no other.
        float[] Dense(int offset, int heads) => Enumerable.Range(0, c.Tokens * heads * 16).Select(i => c.Rows[i / (heads * 16) * c.Width + offset + i % (heads * 16)]).ToArray();
        float[] q = Dense(0, Hk), k = Dense(Hk * 16, Hk), v = Dense(2 * Hk * 16, Hv);
        var beta = new float[c.Tokens * Hv];
        Array.Fill(beta, 0.5f);
        var conv = new ShortConvolution { Weight = c.Weight, Width = ConvWidth, Bias = c.Bias, InitialState = c.InitialState };
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), new ReadOnlyTensorSpan<float>(q, [1, c.Tokens, Hk, 16], []),
            new ReadOnlyTensorSpan<float>(k, [1, c.Tokens, Hk, 16], []), new ReadOnlyTensorSpan<float>(v, [1, c.Tokens, Hv, 16], []),
            new ReadOnlyTensorSpan<float>(beta, [1, c.Tokens, Hv], []), default, new TensorSpan<float>(v, [1, c.Tokens, Hv, 16], []),
            cuSeqlens: c.Offsets, options: new DeltaRuleOptions { Mode = mode, Convolution = conv }))!;
        Assert.That(e.Message, Does.StartWith("output: shares memory with v (the short convolution reads each row of v as it was for the tokens after it)"));
    }

    /// <summary>
    /// An output or final state sharing memory with the convolution's weight, bias or states: the CPU kernels convolved rows
    /// from a weight, bias or initial state they had already written over (relative errors near 0.2), and on every backend the
    /// carried convolution state was stored over the output or the final state once the call ran (the output then held
    /// state values: errors near 8). Refused on every backend, naming both, before anything is written; apart, the call
    /// matches the reference.
    /// </summary>
    [Test]
    public void AnOutputOrStateSharingMemoryWithTheConvolutionIsRefused([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend,
        [Values("output", "final_state")] string written, [Values("weight", "bias", "initial state", "final state")] string read)
    {
        var c = MakeCase(16, 16, bias: true, seed: 9);
        int tokens = c.Tokens, sequences = c.Sequences;
        var beta = Tensor.Create(new TestData(7).Uniform(tokens * Hv, 0.1, 0.9), [1, tokens, Hv]);
        var options = new DeltaRuleOptions { QkL2Norm = true, ChunkSize = 16 };
        var conv = new ShortConvolution { Weight = c.Weight, Width = ConvWidth, Bias = c.Bias, InitialState = c.InitialState, FinalState = new float[c.InitialState.Length] };
        var device = TestDevices.Of(backend);
        void Run(EngineDevice on, float[] output, float[] state, ShortConvolution convolution) =>
            Engine.DeltaRule.Forward(on, c.View(0, Hk, 16), c.View(Hk * 16, Hk, 16), c.View(2 * Hk * 16, Hv, 16), beta.AsReadOnlyTensorSpan(), default,
                new TensorSpan<float>(output, [1, tokens, Hv, 16], []), finalState: new TensorSpan<float>(state, [sequences, Hv, 16, 16], []),
                cuSeqlens: c.Offsets, options: options with { Convolution = convolution });

        // The shared memory holds the convolution array's values: only the overlap differs from a call with it apart.
        var output = Numerics.NaNs(tokens * Hv * 16);
        var state = Numerics.NaNs(sequences * Hv * 16 * 16);
        var memory = written == "output" ? output : state;
        var values = read switch { "weight" => c.Weight, "bias" => c.Bias, "initial state" => c.InitialState, _ => [] };
        values.CopyTo(memory, 0);
        var shared = read switch
        {
            "weight" => conv with { Weight = memory.AsMemory(0, values.Length) },
            "bias" => conv with { Bias = memory.AsMemory(0, values.Length) },
            "initial state" => conv with { InitialState = memory.AsMemory(0, values.Length) },
            _ => conv with { FinalState = memory.AsMemory(0, c.InitialState.Length) },
        };
        var before = (float[])memory.Clone();
        var e = Assert.Throws<ArgumentException>(() => Run(device, output, state, shared))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo(written), e.Message);
            Assert.That(e.Message, Does.StartWith($"{written}: shares memory with convolution {read}"));
            Assert.That(memory, Is.EqualTo(before).Using<float>((a, b) => a.Equals(b)), "the refused call wrote nothing");
        });

        var expected = Numerics.NaNs(output.Length);
        Run(TestDevices.Reference, expected, new float[state.Length], conv with { FinalState = new float[c.InitialState.Length] });
        var apart = Numerics.NaNs(output.Length);
        Run(device, apart, new float[state.Length], conv);
        Assert.That(Numerics.RelativeRms(apart, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "apart");
    }

    [TestCase("weight", "convolution weight")]
    [TestCase("bias", "convolution bias")]
    [TestCase("state", "convolution initial state")]
    [TestCase("nan", "convolution weight")]
    public void BadConvolutionsAreRefusedByName(string fault, string named)
    {
        var c = MakeCase(16, 16, bias: true, seed: 5);
        var weight = fault == "weight" ? c.Weight[1..] : c.Weight;
        if (fault == "nan") weight[7] = float.NaN;
        var conv = new ShortConvolution
        {
            Weight = weight, Width = ConvWidth, Bias = fault == "bias" ? c.Bias[1..] : c.Bias, InitialState = fault == "state" ? c.InitialState[2..] : c.InitialState,
        };
        var beta = new float[c.Tokens * Hv];
        var output = Numerics.NaNs(c.Tokens * Hv * 16);
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward(TestDevices.Get(TestBackend.Cpu), c.View(0, Hk, 16), c.View(Hk * 16, Hk, 16),
            c.View(2 * Hk * 16, Hv, 16), new ReadOnlyTensorSpan<float>(beta, [1, c.Tokens, Hv], []), default, new TensorSpan<float>(output, [1, c.Tokens, Hv, 16], []),
            cuSeqlens: c.Offsets, options: new DeltaRuleOptions { Convolution = conv }))!;
        Assert.That(e.Message, Does.StartWith(named), e.Message);
    }

    /// <summary>
    /// Finite rows and weights whose convolution overflows fp32, on the backends that convolve before their run (the GPU backend
    /// on ILGPU's CPU accelerator): refused as the convolution's overflow; it was refused as a v that is not finite, the index
    /// one of the convolved copy.
    /// </summary>
    [Test]
    public void AConvolutionThatOverflowsFp32IsRefusedAsSuch([Values(Backend.Reference, Backend.Gpu)] Backend backend)
    {
        var c = MakeCase(16, 16, bias: false, seed: 7);
        int channel = 2 * Hk * 16;
        c.Weight[channel * ConvWidth + ConvWidth - 1] = 3e38f;
        c.Rows[10 * c.Width + channel] = 10f;
        var beta = new float[c.Tokens * Hv];
        var output = Numerics.NaNs(c.Tokens * Hv * 16);
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward(TestDevices.Of(backend), c.View(0, Hk, 16), c.View(Hk * 16, Hk, 16),
            c.View(2 * Hk * 16, Hv, 16), new ReadOnlyTensorSpan<float>(beta, [1, c.Tokens, Hv], []), default, new TensorSpan<float>(output, [1, c.Tokens, Hv, 16], []),
            cuSeqlens: c.Offsets, options: new DeltaRuleOptions { Convolution = new ShortConvolution { Weight = c.Weight, Width = ConvWidth } }))!;
        Assert.That(e.Message, Does.StartWith("options: the short convolution of v overflows fp32"), e.Message);
    }

    [Test]
    public void SessionsRefuseAConvolution()
    {
        var conv = new ShortConvolution { Weight = new float[4], Width = 1 };
        var e = Assert.Throws<NotSupportedException>(() => new DeltaRuleSession(TestDevices.Get(TestBackend.Cpu), 1, new HeadLayout(1, 1, 1, 16, 16),
            GateKind.None, new DeltaRuleOptions { Convolution = conv }))!;
        Assert.That(e.Message, Does.Contain("sessions"));
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Gla;

/// <summary>
/// The GLA GPU kernels beyond the cross-backend grid: called directly on ILGPU's CPU accelerator (the constant
/// gate, every chunk size, the CUDA group size, buffer reuse across calls, the recurrent shared-memory limit),
/// through a session (prefill, then decode steps). Every result is compared with the
/// float64 reference.
/// </summary>
[TestFixture]
public sealed class GlaGpuTests
{
    private GpuRuntime _runtime = null!;
    private GpuRuntime _cudaGroupRuntime = null!;
    private GpuRuntime _cudaWarpRuntime = null!;

    [OneTimeSetUp]
    public void CreateRuntimes()
    {
        _runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator);
        _cudaGroupRuntime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128);
        _cudaWarpRuntime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator, cpuGroupSize: 128, cpuWarpSize: MmaTf32.WarpSize);
    }

    [OneTimeTearDown]
    public void DisposeRuntimes()
    {
        _runtime.Dispose();
        _cudaGroupRuntime.Dispose();
        _cudaWarpRuntime.Dispose();
    }

    /// <summary>One call's inputs, fixed by a seed, with its float64 reference result.</summary>
    private sealed class Problem
    {
        public Problem(GlaConfig config, SequenceLayout layout, int seed)
        {
            var heads = config.Heads;
            var data = new TestData(seed);
            int t = layout.TotalTokens;
            Config = config;
            Layout = layout;
            Q = data.Normal((long)t * heads.QHeads * heads.KeyDim);
            K = data.UnitRows((long)t * heads.KeyHeads, heads.KeyDim);
            V = data.Normal((long)t * heads.ValueHeads * heads.ValueDim);
            G = data.LogGates((long)t * config.GatePerToken, 1.0);
            InitialState = data.Normal(layout.Count * heads.StatePerSequence, 0.5);
        }

        public GlaConfig Config { get; }
        public SequenceLayout Layout { get; }
        public float[] Q { get; }
        public float[] K { get; }
        public float[] V { get; }
        public float[] G { get; }
        public float[] InitialState { get; }

        private long OutputLength => (long)Layout.TotalTokens * Config.Heads.OutputHeads * Config.Heads.ValueDim;

        public (double[] Output, double[] State) Reference()
        {
            var output = new double[OutputLength];
            var state = TestData.ToDouble(InitialState);
            GlaReference.Forward(Config, Layout, Q, K, V, G, output, state);
            return (output, state);
        }

        public (float[] Output, float[] State) Run(GlaGpu gpu, bool chunked)
        {
            var output = Numerics.NaNs(OutputLength);
            using var state = gpu.Runtime.Accelerator.Allocate1D(InitialState);
            gpu.Run(chunked, Layout, Q, K, V, G, output, state.View);
            return (output, state.GetAsArray1D());
        }
    }

    /// <summary>The tensor-core precisions' stated bound on the relative RMS error against the float64 reference (<see cref="GpuPrecision.Tf32"/>, <see cref="GpuPrecision.Fp16"/>).</summary>
    private const double TensorCoreTolerance = 2e-3;

    private static void AssertMatches((float[] Output, float[] State) actual, (double[] Output, double[] State) expected, string what,
        double tolerance = Numerics.Fp32Tolerance)
    {
        double outputError = Numerics.RelativeRms(actual.Output, expected.Output);
        double stateError = Numerics.RelativeRms(actual.State, expected.State);
        Assert.That(outputError, Is.LessThanOrEqualTo(tolerance), $"{what}: output relative RMS error {outputError:E2}");
        Assert.That(stateError, Is.LessThanOrEqualTo(tolerance), $"{what}: final state relative RMS error {stateError:E2}");
    }

    [Test]
    public void ConstantGateMatchesReference([Values] bool chunked)
    {
        var config = new GlaConfig(new HeadLayout(4, 2, 8, 12), GateKind.Constant, 1f, 16, [-0.05f, -0.7f]);
        var problem = new Problem(config, SequenceLayout.Packed([0, 0, 1, 41, 58], 58), seed: 11);
        using var gpu = new GlaGpu(config, _runtime);
        AssertMatches(problem.Run(gpu, chunked), problem.Reference(), chunked ? "chunked" : "recurrent");
    }

    [Test]
    public void EveryChunkSizeMatchesReference([ValueSource(typeof(GlaConfig), nameof(GlaConfig.ChunkSizes))] int chunk)
    {
        var config = new GlaConfig(new HeadLayout(2, 1, 8, 8), GateKind.PerKey, 0.35f, chunk);
        var problem = new Problem(config, SequenceLayout.Packed([0, 1, 70, 270], 270), seed: 51);
        using var gpu = new GlaGpu(config, _runtime);
        AssertMatches(problem.Run(gpu, chunked: true), problem.Reference(), $"chunk {chunk}");
    }

    /// <summary>
    /// The thread layouts CUDA uses (128 threads per group), simulated: 4 × 4 tiles of 16 × 8 threads, split key rows in decode;
    /// grouped query heads (2 over 1) and grouped value heads (1 query/key head, 2 value heads).
    /// </summary>
    [TestCase(16, true, 2, 1)]
    [TestCase(64, true, 2, 1)]
    [TestCase(64, false, 2, 1)]
    [TestCase(16, true, 1, 2)]
    [TestCase(64, false, 1, 2)]
    public void CudaGroupSizeMatchesReference(int chunk, bool chunked, int qkHeads, int valueHeads)
    {
        var heads = qkHeads > valueHeads ? new HeadLayout(qkHeads, valueHeads, 40, 36) : new HeadLayout(qkHeads, qkHeads, valueHeads, 40, 36);
        var config = new GlaConfig(heads, GateKind.PerKey, 0.3f, chunk);
        var problem = new Problem(config, SequenceLayout.Packed([0, 1, 1, 40], 40), seed: 61);
        using var gpu = new GlaGpu(config, _cudaGroupRuntime);
        AssertMatches(problem.Run(gpu, chunked), problem.Reference(), chunked ? $"chunked, chunk {chunk}" : "recurrent");
    }

    /// <summary>
    /// The tensor-core paths, emulated in CUDA's geometry (128 threads, 32-lane warps): within their bound, and not within the
    /// fp32 one (the products' operands are rounded to tf32 or fp16). Per-key gates (each chunk size's tile shape), Lightning's
    /// constant gate and no gate, over an empty sequence and one of a chunk and 7 tokens (a partial chunk that leaves rows empty in
    /// both halves of a warp's 16, and a partial step of the products over its tokens). K = 8 is one slice of keys and a partial
    /// step of fp16's depth of 16. Once each (the emulation is slow): grouped query heads (2 over 1), and K = 40, a second, partial
    /// slice.
    /// </summary>
    [TestCase(GpuPrecision.Tf32, 16, GateKind.PerKey, 2, 8)]
    [TestCase(GpuPrecision.Tf32, 64, GateKind.PerKey, 1, 8)]
    [TestCase(GpuPrecision.Tf32, 32, GateKind.Constant, 1, 8)]
    [TestCase(GpuPrecision.Fp16, 16, GateKind.PerKey, 1, 8)]
    [TestCase(GpuPrecision.Fp16, 64, GateKind.PerKey, 1, 8)]
    [TestCase(GpuPrecision.Fp16, 32, GateKind.Constant, 1, 8)]
    [TestCase(GpuPrecision.Fp16, 16, GateKind.None, 1, 40)]
    public void TensorCoresMatchReferenceWithinTheirBound(GpuPrecision precision, int chunk, GateKind gate, int queryHeads, int keyDim)
    {
        var config = new GlaConfig(new HeadLayout(queryHeads, 1, keyDim, 12), gate, 0.3f, chunk, gate == GateKind.Constant ? [-0.2f] : null, precision);
        int tokens = chunk + 7;
        var problem = new Problem(config, SequenceLayout.Packed([0, 0, tokens], tokens), seed: 71);
        using var gpu = new GlaGpu(config, _cudaWarpRuntime);
        var actual = problem.Run(gpu, chunked: true);
        var expected = problem.Reference();
        AssertMatches(actual, expected, $"{precision}, chunk {chunk}", TensorCoreTolerance);
        Assert.That(Numerics.RelativeRms(actual.Output, expected.Output), Is.GreaterThan(Numerics.Fp32Tolerance), $"the products are rounded to {precision}");
    }

    /// <summary>
    /// A fault in fp16: a value past fp16's range in a later token of the chunk (so its key row, and its scores, overflow) reaches
    /// no earlier row: the rows before it keep their bound, the rows from it on are not finite.
    /// </summary>
    [Test]
    public void Fp16OverflowOfALaterTokenReachesNoEarlierRow()
    {
        var heads = new HeadLayout(1, 1, 8, 12);
        var config = new GlaConfig(heads, GateKind.PerKey, 1f, 64, gpuPrecision: GpuPrecision.Fp16);
        var problem = new Problem(config, SequenceLayout.Packed([0, 40], 40), seed: 73);
        const int fault = 21;
        problem.K[fault * heads.KeyDim + 3] = 1e6f;
        problem.V[fault * heads.ValueDim + 5] = 1e6f;
        using var gpu = new GlaGpu(config, _cudaWarpRuntime);
        var (output, _) = problem.Run(gpu, chunked: true);
        var expected = problem.Reference().Output;
        int before = fault * heads.ValueDim;
        Assert.That(Numerics.RelativeRms(output[..before], expected[..before]), Is.LessThanOrEqualTo(TensorCoreTolerance), "the rows before the fault");
        Assert.That(output[before..].Any(x => !float.IsFinite(x)), "the fault's own row and later ones overflow fp16");
    }

    [Test]
    public void TensorCoresNeedWholeWarps([Values(GpuPrecision.Tf32, GpuPrecision.Fp16)] GpuPrecision precision)
    {
        var config = new GlaConfig(new HeadLayout(1, 1, 32, 32), GateKind.PerKey, 1f, 16, gpuPrecision: precision);
        var error = Assert.Throws<NotSupportedException>(() => new GlaGpu(config, _cudaGroupRuntime).Dispose());
        Assert.That(error!.Message, Does.Contain($"{precision} precision").And.Contain("warps of 32 threads").And.Contain("have 4"));
    }

    [Test]
    public void RepeatedCallsOnOneInstanceReuseBuffers([Values] bool chunked)
    {
        var config = new GlaConfig(new HeadLayout(2, 1, 8, 8), GateKind.PerKey, 0.4f, 16);
        var large = new Problem(config, SequenceLayout.Dense(2, 35), seed: 21);
        var small = new Problem(config, SequenceLayout.Packed([0, 3, 4], 4), seed: 22);
        using var gpu = new GlaGpu(config, _runtime);
        var first = large.Run(gpu, chunked);
        var between = small.Run(gpu, chunked);
        var again = large.Run(gpu, chunked);
        AssertMatches(first, large.Reference(), "first call");
        AssertMatches(between, small.Reference(), "smaller call in between");
        Assert.That(again.Output, Is.EqualTo(first.Output), "the repeated call gives the same output");
        Assert.That(again.State, Is.EqualTo(first.State), "the repeated call gives the same state");
    }

    [Test]
    public void RecurrentModeRefusesStateTilesBeyondSharedMemory()
    {
        var config = new GlaConfig(new HeadLayout(1, 1, 4096, 4), GateKind.PerHead, 1f, 16);
        var problem = new Problem(config, SequenceLayout.Dense(1, 1), seed: 31);
        using var gpu = new GlaGpu(config, _runtime);
        var error = Assert.Throws<NotSupportedException>(() => problem.Run(gpu, chunked: false));
        Assert.That(error!.Message, Does.Contain("K = 4096").And.Contain("K can be at most"));
        AssertMatches(problem.Run(gpu, chunked: true), problem.Reference(), "chunked mode with the same K");
    }

    /// <summary>
    /// Grouped query heads (2 over 1 key/value head) and grouped value heads (2 value heads over 1 query/key head); the
    /// CPU kernels' session the same way with grouped value heads.
    /// </summary>
    [TestCase(TestBackend.GpuOnCpuAccelerator, 2, 1, 1)]
    [TestCase(TestBackend.GpuOnCpuAccelerator, 1, 1, 2)]
    [TestCase(TestBackend.Cpu, 1, 1, 2)]
    public void SessionDecodeStepsContinuePrefill(TestBackend backend, int qHeads, int keyHeads, int valueHeads)
    {
        const int batch = 2, prompt = 21, steps = 4, total = prompt + steps;
        var heads = new HeadLayout(qHeads, keyHeads, valueHeads, 8, 8);
        var options = new GlaOptions { ChunkSize = 16 };
        var config = new GlaConfig(heads, GateKind.PerKey, 1f / MathF.Sqrt(heads.KeyDim), options.ChunkSize);
        var whole = new Problem(config, SequenceLayout.Dense(batch, total), seed: 41);
        var expected = whole.Reference();

        var device = TestDevices.Get(backend);
        using var session = new GlaSession(device, batch, heads, GateKind.PerKey, options);
        session.SetState(new ReadOnlyTensorSpan<float>(whole.InitialState, [batch, valueHeads, 8, 8]));
        var output = Numerics.NaNs((long)batch * total * heads.OutputHeads * heads.ValueDim);
        Call(session, whole, output, 0, prompt, prefill: true);
        for (int t = prompt; t < total; t++) Call(session, whole, output, t, 1, prefill: false);
        var state = Numerics.NaNs(whole.InitialState.Length);
        session.GetState(new TensorSpan<float>(state, [batch, valueHeads, 8, 8]));
        AssertMatches((output, state), expected, "prefill then decode");
    }

    /// <summary>Runs tokens [from, from + count) of every sequence of a dense batch through the session.</summary>
    private static void Call(GlaSession session, Problem whole, float[] output, int from, int count, bool prefill)
    {
        var heads = whole.Config.Heads;
        int batch = whole.Layout.Count, total = whole.Layout.Length(0);
        float[] Slice(float[] source, int perToken)
        {
            var part = new float[batch * count * perToken];
            for (int b = 0; b < batch; b++)
                Array.Copy(source, ((long)b * total + from) * perToken, part, (long)b * count * perToken, (long)count * perToken);
            return part;
        }
        int qRow = heads.QHeads * heads.KeyDim, kRow = heads.KeyHeads * heads.KeyDim, vRow = heads.ValueHeads * heads.ValueDim;
        int gRow = heads.ValueHeads * heads.KeyDim, oRow = heads.OutputHeads * heads.ValueDim;
        var q = new ReadOnlyTensorSpan<float>(Slice(whole.Q, qRow), [batch, count, heads.QHeads, heads.KeyDim]);
        var k = new ReadOnlyTensorSpan<float>(Slice(whole.K, kRow), [batch, count, heads.KeyHeads, heads.KeyDim]);
        var v = new ReadOnlyTensorSpan<float>(Slice(whole.V, vRow), [batch, count, heads.ValueHeads, heads.ValueDim]);
        var g = new ReadOnlyTensorSpan<float>(Slice(whole.G, gRow), [batch, count, heads.ValueHeads, heads.KeyDim]);
        var o = Numerics.NaNs(batch * count * oRow);
        var os = new TensorSpan<float>(o, [batch, count, heads.OutputHeads, heads.ValueDim]);
        if (prefill) session.Prefill(q, k, v, g, os);
        else session.Step(q, k, v, g, os);
        for (int b = 0; b < batch; b++)
            Array.Copy(o, (long)b * count * oRow, output, ((long)b * total + from) * oRow, (long)count * oRow);
    }
}

using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gpu;

/// <summary>
/// Device tensors on ILGPU's CPU accelerator: copies both ways (float and float16), the refusals (shape, device,
/// disposal), and the ops and sessions run on them against the float64 reference, with the values checked on the device
/// and the host↔device traffic of each call read from the device's counters.
/// </summary>
[TestFixture]
public sealed class DeviceTensorTests
{
    private const int Heads = 2, Dim = 16, Tokens = 20;
    private static readonly nint[] Shape = [1, Tokens, Heads, Dim], PerHead = [1, Tokens, Heads], StateShape = [1, Heads, Dim, Dim];

    private EngineDevice _gpu = null!;

    [OneTimeSetUp]
    public void CreateDevice() => _gpu = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });

    [OneTimeTearDown]
    public void DisposeDevice() => _gpu.Dispose();

    /// <summary>The description gives the geometry the kernels are launched in (it gave the accelerator's most threads per group, 32).</summary>
    [Test]
    public void TheCpuAcceleratorIsDescribedByTheGroupsItLaunches()
    {
        Assert.That(_gpu.Description, Is.EqualTo("gpu: ILGPU CPU accelerator (16 threads per group in warps of 4; correctness only)"));
        using var cudaGeometry = EngineDevice.Create(Backend.Gpu,
            new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator, CpuAcceleratorGroupSize = 128, CpuAcceleratorWarpSize = 32 });
        Assert.That(cudaGeometry.Description, Does.Contain("(128 threads per group in warps of 32;"));
    }

    /// <summary>
    /// A CPU accelerator group size that is a multiple of 16 but not a power of two: 48 in warps of 4 ended in ILGPU's own
    /// exception (naming numThreadsPerWarp), and 96 in warps of 32 made a device whose GLA and Lightning calls all failed.
    /// Refused when the device is made.
    /// </summary>
    [TestCase(48, 4)]
    [TestCase(96, 32)]
    public void ACpuAcceleratorGroupSizeThatIsNotAPowerOfTwoIsRefused(int groupSize, int warpSize)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => EngineDevice.Create(Backend.Gpu,
            new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator, CpuAcceleratorGroupSize = groupSize, CpuAcceleratorWarpSize = warpSize }).Dispose())!;
        Assert.That(e.ActualValue, Is.EqualTo(groupSize));
        Assert.That(e.Message, Does.Contain("a power of two >= 16"));
    }

    /// <summary>
    /// A kernel loaded once its runtime is disposed (a device disposed on another thread while a call builds its kernels) is
    /// refused as a disposed runtime, as a call is: it was loaded on the freed accelerator without the runtime's lock.
    /// </summary>
    [Test]
    public void AKernelLoadedAfterItsRuntimeWasDisposedIsRefusedAsDisposed()
    {
        var runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator);
        runtime.Dispose();
        var e = Assert.Throws<ObjectDisposedException>(() => runtime.Kernel<TensorGpuArgs, TensorGpuShape>(TensorGpuKernels.Check))!;
        Assert.That(e.ObjectName, Is.EqualTo(nameof(GpuRuntime)));
    }

    /// <summary>
    /// A buffer the accelerator cannot hold (a petabyte: past any address space) is refused naming what it was for and its
    /// size; it was the allocator's own OutOfMemoryException ("insufficient memory to continue"), naming neither.
    /// </summary>
    [Test]
    public void ABufferTheAcceleratorCannotHoldIsRefusedNamingWhatItWasFor()
    {
        using var runtime = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator);
        var e = Assert.Throws<InsufficientMemoryException>(() => runtime.Allocate<float>(1L << 48, "the GPU kernels' ChunkStates buffer").Dispose())!;
        Assert.That(e.Message, Does.StartWith($"the GPU kernels' ChunkStates buffer: {1L << 48} elements of 4 bytes could not be allocated on "));
        Assert.That(runtime.Allocate<float>(16, "a small buffer").Length, Is.EqualTo(16), "the runtime still allocates afterwards");
    }

    [Test]
    public void UploadThenDownloadGivesTheValuesBackForFloatAndHalf()
    {
        var values = new TestData(1).Normal(Tokens * Heads * Dim);
        using var floats = _gpu.Upload(Tensor.Create(values, Shape));
        Assert.That(floats.ToTensor().ToArray(), Is.EqualTo(values));
        var halves = TestData.ToHalf(values);
        using var device = _gpu.Allocate<Half>(Shape);
        device.Upload(halves);
        var back = new Half[halves.Length];
        device.Download(back);
        Assert.That(back, Is.EqualTo(halves));
    }

    [Test]
    public void RefusesAWrongShapeAnotherDeviceAndUseAfterDispose()
    {
        using var tensor = _gpu.Allocate<float>(Shape);
        var wrong = Assert.Throws<ArgumentException>(() => tensor.Upload(Tensor.Create(new float[10], [10]).AsReadOnlyTensorSpan()));
        Assert.That(wrong!.Message, Does.Contain("expected shape [1, 20, 2, 16]"));
        Assert.Throws<ArgumentException>(() => tensor.Download(new float[3]));
        using var cpu = EngineDevice.Create(Backend.Cpu);
        Assert.Throws<InvalidOperationException>(() => cpu.Allocate<float>(Shape), "a CPU device has no device memory");
        Assert.Throws<NotSupportedException>(() => _gpu.Allocate<double>(Shape));

        using var other = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        using var foreign = other.Allocate<float>(Shape);
        using var k = _gpu.Allocate<float>(Shape);
        using var v = _gpu.Allocate<float>(Shape);
        using var output = _gpu.Allocate<float>(Shape);
        var error = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(_gpu, foreign, k, v, null, output));
        Assert.That(error!.ParamName, Is.EqualTo("q"));
        Assert.That(error.Message, Does.Contain("another device"));

        var disposed = _gpu.Allocate<float>(Shape);
        disposed.Dispose();
        Assert.Throws<ObjectDisposedException>(() => disposed.Download(new float[disposed.FlattenedLength]));
        Assert.Throws<ObjectDisposedException>(() => Engine.Gla.Forward(_gpu, disposed, k, v, null, output));
    }

    /// <summary>
    /// One device tensor as the output and an input, or as a state and an input or the output: the kernels read the one while
    /// they write the other (GLA's output was wrong, no error). Refused, naming both roles. With T = H = K = V a state has
    /// q's shape, so only the roles tell them apart.
    /// </summary>
    [TestCase("output", "q")]
    [TestCase("output", "v")]
    [TestCase("final_state", "q")]
    [TestCase("initial_state", "output")]
    public void OneDeviceTensorInTwoRolesIsRefused(string written, string read)
    {
        const int n = 16;
        nint[] shape = [1, n, n, n];
        var data = new TestData(4);
        using var dq = _gpu.Upload(Tensor.Create(data.Normal(n * n * n), shape));
        using var dk = _gpu.Upload(Tensor.Create(data.UnitRows(n * n, n), shape));
        using var dv = _gpu.Upload(Tensor.Create(data.Normal(n * n * n), shape));
        using var dOutput = _gpu.Allocate<float>(shape);
        var e = Assert.Throws<ArgumentException>(() =>
        {
            switch (written)
            {
                case "output": Engine.Gla.Forward(_gpu, dq, dk, dv, null, read == "q" ? dq : dv); break;
                case "final_state": Engine.Gla.Forward(_gpu, dq, dk, dv, null, dOutput, finalState: dq); break;
                default: Engine.Gla.Forward(_gpu, dq, dk, dv, null, dOutput, initialState: dOutput); break;
            }
        })!;
        Assert.That(e.ParamName, Is.EqualTo(written));
        Assert.That(e.Message, Does.Contain($"is the device tensor given as {read}"));
    }

    /// <summary>
    /// One device tensor as both u and y of an LSSL call or session: the scan and conv kernels read rows of u that y had
    /// already been written over (a relative RMS error of 4-8% against the float64 reference, no error). Refused, naming
    /// both roles, before anything runs: u keeps its values and the session its state.
    /// </summary>
    [TestCase(LsslMode.Scan)]
    [TestCase(LsslMode.Conv)]
    public void OneDeviceTensorAsLsslInputAndOutputIsRefused(LsslMode mode)
    {
        const int batch = 2, length = 37, channels = 3;
        nint[] shape = [batch, length, channels];
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, channels, 4, seed: 3).Layer();
        var u = new TestData(5).Normal(batch * length * channels);
        using var du = _gpu.Upload(Tensor.Create(u, shape));
        using var session = layer.CreateSession(_gpu, batch);
        Assert.Multiple(() =>
        {
            foreach (var call in new TestDelegate[] { () => layer.Forward(_gpu, du, du, mode: mode), () => session.Prefill(du, du, mode) })
            {
                var e = Assert.Throws<ArgumentException>(call)!;
                Assert.That(e.ParamName, Is.EqualTo("y"));
                Assert.That(e.Message, Does.Contain("is the device tensor given as u"));
            }
            Assert.That(du.ToTensor().ToArray(), Is.EqualTo(u), "u as it was");
            var state = Numerics.NaNs(batch * channels * 4);
            session.GetState(new TensorSpan<float>(state, session.StateShape, []));
            Assert.That(state, Is.All.EqualTo(0f), "the session's state as it was");
        });
    }

    /// <summary>An empty batch on device tensors runs (it ended the process: the check words' read staged nothing past the end).</summary>
    [Test]
    public void AnEmptyBatchOnDeviceTensorsRuns()
    {
        nint[] shape = [0, 4, Heads, Dim];
        using var dq = _gpu.Allocate<float>(shape);
        using var dOutput = _gpu.Allocate<float>(shape);
        using var dg = _gpu.Allocate<float>(0, 4, Heads);
        using var dState = _gpu.Allocate<float>(0, Heads, Dim, Dim);
        Assert.That(() => Engine.Gla.Forward(_gpu, dq, dq, dq, dg, dOutput), Throws.Nothing);
        Assert.That(() => Engine.Gla.Forward(_gpu, dq, dq, dq, dg, dOutput, dState, dState), Throws.Nothing, "its empty state in place");
    }

    [Test]
    public void GlaOnDeviceTensorsMatchesTheReferenceAndMovesNothing()
    {
        var (q, k, v, g) = Inputs(seed: 2, perKey: true);
        var initial = new TestData(3).Normal(Heads * Dim * Dim, 0.5);
        var (expectedOutput, expectedState) = ReferenceGla(q, k, v, g, initial);

        using var d = Upload(q, k, v, g);
        using var dInitial = _gpu.Upload(Tensor.Create(initial, StateShape));
        using var dOutput = _gpu.Upload(Tensor.Create(Numerics.NaNs(q.Length), Shape));
        using var dFinal = _gpu.Allocate<float>(StateShape);
        var options = new GlaOptions { ChunkSize = 16 };
        Engine.Gla.Forward(_gpu, d.Q, d.K, d.V, d.G, dOutput, dInitial, dFinal, options: options);
        var before = _gpu.GpuTraffic;
        Engine.Gla.Forward(_gpu, d.Q, d.K, d.V, d.G, dOutput, dInitial, dFinal, options: options);
        var call = _gpu.GpuTraffic.Since(before);

        Assert.Multiple(() =>
        {
            Assert.That(call.BytesToDevice, Is.Zero, "inputs, output and state on the device");
            Assert.That(call.BytesToHost, Is.Zero);
            Assert.That(call.Allocations, Is.Zero, "buffers grown once");
            Assert.That(call.Launches, Is.EqualTo(3 + 7), "three GLA kernels; checks of g, q, k, v, the initial state, the output and the final state");
            Assert.That(Numerics.RelativeRms(dOutput.ToTensor().ToArray(), expectedOutput), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(dFinal.ToTensor().ToArray(), expectedState), Is.LessThanOrEqualTo(1e-5));
        });
    }

    [Test]
    public void AHostCallMovesExactlyItsInputsAndOutputsAndAllocatesNothing()
    {
        var (q, k, v, g) = Inputs(seed: 4, perKey: false);
        var initial = new TestData(5).Normal(Heads * Dim * Dim, 0.5);
        var output = Numerics.NaNs(q.Length);
        var final = Numerics.NaNs(initial.Length);
        void Call() => Engine.Gla.Forward<float>(_gpu, Tensor.Create(q, Shape), Tensor.Create(k, Shape), Tensor.Create(v, Shape),
            Tensor.Create(g, PerHead), new TensorSpan<float>(output, Shape, []), Tensor.Create(initial, StateShape), new TensorSpan<float>(final, StateShape, []),
            options: new GlaOptions { ChunkSize = 16 });
        Call();
        var before = _gpu.GpuTraffic;
        Call();
        var call = _gpu.GpuTraffic.Since(before);
        var (expectedOutput, expectedState) = ReferenceGla(q, k, v, g, initial);
        Assert.Multiple(() =>
        {
            Assert.That(call.BytesToDevice, Is.EqualTo((q.Length + k.Length + v.Length + g.Length + initial.Length) * sizeof(float)), "q, k, v, g and the initial state, once");
            Assert.That(call.BytesToHost, Is.EqualTo((output.Length + final.Length) * sizeof(float)), "the output and the final state");
            Assert.That(call.Allocations, Is.Zero);
            Assert.That(Numerics.RelativeRms(output, expectedOutput), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(final, expectedState), Is.LessThanOrEqualTo(1e-5));
        });
    }

    [Test]
    public void DeltaRuleInHalfOnDeviceTensorsMatchesTheReference()
    {
        var data = new TestData(6);
        var q = TestData.RoundToHalf(data.Normal(Tokens * Heads * Dim));
        var k = TestData.RoundToHalf(data.UnitRows(Tokens * Heads, Dim));
        var v = TestData.RoundToHalf(data.Normal(Tokens * Heads * Dim));
        var beta = TestData.RoundToHalf(data.Uniform(Tokens * Heads, 0.1, 0.9));
        var g = TestData.RoundToHalf(data.LogGates(Tokens * Heads, 1));
        var options = new DeltaRuleOptions { ChunkSize = 16 };
        var expected = Engine.DeltaRule.Forward(TestDevices.Reference, Tensor.Create(q, Shape), Tensor.Create(k, Shape), Tensor.Create(v, Shape),
            Tensor.Create(beta, PerHead), Tensor.Create(g, PerHead), options);

        using var dq = _gpu.Upload(Tensor.Create(TestData.ToHalf(q), Shape));
        using var dk = _gpu.Upload(Tensor.Create(TestData.ToHalf(k), Shape));
        using var dv = _gpu.Upload(Tensor.Create(TestData.ToHalf(v), Shape));
        using var dBeta = _gpu.Upload(Tensor.Create(TestData.ToHalf(beta), PerHead));
        using var dg = _gpu.Upload(Tensor.Create(TestData.ToHalf(g), PerHead));
        using var dOutput = _gpu.Upload(Tensor.Create(Enumerable.Repeat(Half.NaN, q.Length).ToArray(), Shape));
        using var dFinal = _gpu.Allocate<float>(StateShape);
        Engine.DeltaRule.Forward(_gpu, dq, dk, dv, dBeta, dg, dOutput, finalState: dFinal, options: options);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(TestData.FromHalf(dOutput.ToTensor().ToArray()), expected.Output.ToArray()), Is.LessThanOrEqualTo(5e-3));
            Assert.That(Numerics.RelativeRms(dFinal.ToTensor().ToArray(), expected.FinalState.ToArray()), Is.LessThanOrEqualTo(1e-5));
        });
    }

    [Test]
    public void ASessionOnDeviceTensorsPrefillsAndStepsLikeTheReferenceAndAStepMovesNothing()
    {
        var (q, k, v, g) = Inputs(seed: 7, perKey: true);
        var heads = new HeadLayout(Heads, Heads, Dim, Dim);
        var options = new GlaOptions { ChunkSize = 16 };
        using var reference = new GlaSession(TestDevices.Reference, 1, heads, GateKind.PerKey, options);
        using var session = new GlaSession(_gpu, 1, heads, GateKind.PerKey, options);
        int prompt = Tokens - 2;
        nint[] promptShape = [1, prompt, Heads, Dim], tokenShape = [1, 1, Heads, Dim];
        int promptLength = prompt * Heads * Dim, tokenLength = Heads * Dim;

        var expected = new float[q.Length];
        reference.Prefill<float>(Slice(q, 0, promptShape), Slice(k, 0, promptShape), Slice(v, 0, promptShape), Slice(g, 0, promptShape),
            new TensorSpan<float>(expected.AsSpan(0, promptLength), promptShape, []));
        using var pq = _gpu.Upload(Slice(q, 0, promptShape));
        using var pk = _gpu.Upload(Slice(k, 0, promptShape));
        using var pv = _gpu.Upload(Slice(v, 0, promptShape));
        using var pg = _gpu.Upload(Slice(g, 0, promptShape));
        using var pOutput = _gpu.Allocate<float>(promptShape);
        session.Prefill(pq, pk, pv, pg, pOutput);
        var actual = new float[q.Length];
        pOutput.Download(actual.AsSpan(0, promptLength));

        using var tq = _gpu.Allocate<float>(tokenShape);
        using var tk = _gpu.Allocate<float>(tokenShape);
        using var tv = _gpu.Allocate<float>(tokenShape);
        using var tg = _gpu.Allocate<float>(tokenShape);
        using var tOutput = _gpu.Allocate<float>(tokenShape);
        GpuTraffic step = default;
        for (int t = prompt; t < Tokens; t++)
        {
            int at = t * tokenLength;
            reference.Step<float>(Slice(q, at, tokenShape), Slice(k, at, tokenShape), Slice(v, at, tokenShape), Slice(g, at, tokenShape),
                new TensorSpan<float>(expected.AsSpan(at, tokenLength), tokenShape, []));
            tq.Upload(Slice(q, at, tokenShape));
            tk.Upload(Slice(k, at, tokenShape));
            tv.Upload(Slice(v, at, tokenShape));
            tg.Upload(Slice(g, at, tokenShape));
            var before = _gpu.GpuTraffic;
            session.Step(tq, tk, tv, tg, tOutput);
            step = _gpu.GpuTraffic.Since(before);
            tOutput.Download(actual.AsSpan(at, tokenLength));
        }
        var state = new float[Heads * Dim * Dim];
        var expectedState = new float[state.Length];
        session.GetState(new TensorSpan<float>(state, StateShape, []));
        reference.GetState(new TensorSpan<float>(expectedState, StateShape, []));
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(actual, expected), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(1e-5));
            Assert.That(step.BytesToDevice + step.BytesToHost, Is.Zero, "the second step: its token, output and state on the device");
            Assert.That(step.Allocations, Is.Zero);
        });
    }

    [Test]
    public void APositiveLogGateOnTheDeviceIsRefusedAsOnTheHostAndLeavesTheSessionsStateAsItWas()
    {
        var (q, k, v, g) = Inputs(seed: 8, perKey: true);
        g[37] = 0.5f;
        var hostError = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu),
            Tensor.Create(q, Shape), Tensor.Create(k, Shape), Tensor.Create(v, Shape), Tensor.Create(g, Shape)));

        var heads = new HeadLayout(Heads, Heads, Dim, Dim);
        using var session = new GlaSession(_gpu, 1, heads, GateKind.PerKey, new GlaOptions { ChunkSize = 16 });
        var initial = new TestData(9).Normal(Heads * Dim * Dim, 0.5);
        session.SetState(Tensor.Create(initial, StateShape));
        using var d = Upload(q, k, v, g);
        using var dOutput = _gpu.Allocate<float>(Shape);
        var deviceError = Assert.Throws<ArgumentException>(() => session.Prefill(d.Q, d.K, d.V, d.G, dOutput));
        var state = new float[initial.Length];
        session.GetState(new TensorSpan<float>(state, StateShape, []));
        Assert.Multiple(() =>
        {
            Assert.That(deviceError!.ParamName, Is.EqualTo("g"));
            Assert.That(deviceError.Message, Is.EqualTo(hostError!.Message));
            Assert.That(state, Is.EqualTo(initial), "a refused call leaves the state as it was");
        });
    }

    /// <summary>
    /// k·vᵀ past fp32's range with q = 0: the output stays 0 and the chunked state is infinite. On device tensors the final state
    /// was returned infinite, and a session kept it; now refused, naming the final state, and the session's state kept.
    /// </summary>
    [Test]
    public void AFinalStateThatOverflowsOnTheDeviceIsRefusedAndASessionKeepsItsState()
    {
        nint[] shape = [1, 1, Heads, Dim];
        var large = Enumerable.Repeat(1e20f, Heads * Dim).ToArray();
        using var dq = _gpu.Upload(Tensor.Create(new float[Heads * Dim], shape));
        using var dLarge = _gpu.Upload(Tensor.Create(large, shape));
        using var dOutput = _gpu.Allocate<float>(shape);
        using var dFinal = _gpu.Allocate<float>(StateShape);
        var forward = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(_gpu, dq, dLarge, dLarge, null, dOutput, finalState: dFinal))!;

        using var session = new GlaSession(_gpu, 1, new HeadLayout(Heads, Heads, Dim, Dim), GateKind.None);
        var initial = new TestData(14).Normal(Heads * Dim * Dim, 0.5);
        session.SetState(Tensor.Create(initial, StateShape));
        var prefill = Assert.Throws<ArgumentException>(() => session.Prefill(dq, dLarge, dLarge, null, dOutput))!;
        var state = new float[initial.Length];
        session.GetState(new TensorSpan<float>(state, StateShape, []));
        Assert.Multiple(() =>
        {
            Assert.That(forward.ParamName, Is.EqualTo("final_state"));
            Assert.That(forward.Message, Does.Contain("overflows fp32"));
            Assert.That(prefill.ParamName, Is.EqualTo("final_state"));
            Assert.That(state, Is.EqualTo(initial), "a refused call leaves the state as it was");
        });
    }

    /// <summary>
    /// A whole-sequence call on device tensors with the final state the initial state's tensor: the kernels updated it where it
    /// lay, so a call refused after they ran (a state that overflowed) left the caller's state infinite. They now run on the
    /// instance's buffer, copied back once every check passed; a call that passes still updates the state in place.
    /// </summary>
    [Test]
    public void AWholeSequenceCallInPlaceOnDeviceTensorsKeepsTheStateWhenRefused()
    {
        var (q, k, v, g) = Inputs(seed: 16, perKey: true);
        var initial = new TestData(17).Normal(Heads * Dim * Dim, 0.5);
        var (expectedOutput, expectedState) = ReferenceGla(q, k, v, g, initial);
        using var d = Upload(q, k, v, g);
        using var dState = _gpu.Upload(Tensor.Create(initial, StateShape));
        using var dOutput = _gpu.Allocate<float>(Shape);
        Engine.Gla.Forward(_gpu, d.Q, d.K, d.V, d.G, dOutput, dState, dState, options: new GlaOptions { ChunkSize = 16 });
        var passed = dState.ToTensor().ToArray();
        var passedOutput = dOutput.ToTensor().ToArray();

        // q = 0 keeps the output 0 while k·vᵀ overflows the chunked state.
        using var dZeros = _gpu.Upload(Tensor.Create(new float[q.Length], Shape));
        using var dLarge = _gpu.Upload(Tensor.Create(Enumerable.Repeat(1e20f, q.Length).ToArray(), Shape));
        var refused = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(_gpu, dZeros, dLarge, dLarge, d.G, dOutput, dState, dState))!;
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(passedOutput, expectedOutput), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(passed, expectedState), Is.LessThanOrEqualTo(1e-5), "in place");
            Assert.That(refused.ParamName, Is.EqualTo("final_state"), refused.Message);
            Assert.That(dState.ToTensor().ToArray(), Is.EqualTo(passed), "the refused call left the state as it was");
        });

        // LSSL, a stable system whose input overflows the state (C = 0: y = D u stays finite).
        nint[] uShape = [1, 64, 2], stateShape = [1, 2, 4];
        static Tensor<float> Filled(float value, params nint[] shape) => Tensor.Create(Enumerable.Repeat(value, (int)shape.Aggregate((nint)1, (a, d) => a * d)).ToArray(), shape);
        using var overflowing = new LsslLayer(Filled(-1f, 2, 4), Filled(1e30f, 2, 4), Filled(0f, 2, 4), Filled(2f, 2), Filled(2f / 3, 2),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        var lsslInitial = new TestData(18).Normal(8, 0.5);
        using var dLsslState = _gpu.Upload(Tensor.Create(lsslInitial, stateShape));
        using var du = _gpu.Upload(Filled(1e37f, uShape));
        using var dy = _gpu.Allocate<float>(uShape);
        var lssl = Assert.Throws<ArgumentException>(() => overflowing.Forward(_gpu, du, dy, dLsslState, dLsslState, LsslMode.Conv))!;
        Assert.That(lssl.Message, Does.Contain("final state overflowed"));
        Assert.That(dLsslState.ToTensor().ToArray(), Is.EqualTo(lsslInitial), "the refused call left the state as it was");
    }

    [Test]
    public void AnLsslSessionWhoseStateOverflowsOnTheDeviceIsRefusedAndKeepsItsState()
    {
        nint[] shape = [1, 64, 2], stateShape = [1, 2, 4];
        static Tensor<float> Filled(float value, params nint[] shape) => Tensor.Create(Enumerable.Repeat(value, (int)shape.Aggregate((nint)1, (a, d) => a * d)).ToArray(), shape);
        // A stable system whose input overflows the state (B = 1e30, u = 1e37); C = 0, so y = D u stays finite.
        using var overflowing = new LsslLayer(Filled(-1f, 2, 4), Filled(1e30f, 2, 4), Filled(0f, 2, 4), Filled(2f, 2), Filled(2f / 3, 2),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        using var session = overflowing.CreateSession(_gpu, 1);
        var initial = new TestData(15).Normal(8, 0.5);
        session.SetState(Tensor.Create(initial, stateShape));
        using var du = _gpu.Upload(Filled(1e37f, shape));
        using var dy = _gpu.Allocate<float>(shape);
        var error = Assert.Throws<ArgumentException>(() => session.Prefill(du, dy, LsslMode.Conv))!;
        var state = new float[8];
        session.GetState(new TensorSpan<float>(state, stateShape, []));
        Assert.That(error.Message, Does.Contain("final state overflowed"));
        Assert.That(state, Is.EqualTo(initial), "a refused call leaves the state as it was");
    }

    [Test]
    public void ABetaThatIsNotFiniteOnTheDeviceIsRefusedNamingBeta()
    {
        var (q, k, v, _) = Inputs(seed: 10, perKey: false);
        var beta = new float[Tokens * Heads];
        Array.Fill(beta, 0.5f);
        beta[5] = float.NaN;
        using var dq = _gpu.Upload(Tensor.Create(q, Shape));
        using var dk = _gpu.Upload(Tensor.Create(k, Shape));
        using var dv = _gpu.Upload(Tensor.Create(v, Shape));
        using var dBeta = _gpu.Upload(Tensor.Create(beta, PerHead));
        using var dOutput = _gpu.Allocate<float>(Shape);
        var error = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.Forward(_gpu, dq, dk, dv, dBeta, null, dOutput, options: new DeltaRuleOptions { ChunkSize = 16 }));
        Assert.That(error!.ParamName, Is.EqualTo("beta"));
        Assert.That(error.Message, Does.Contain("at flat index 5"));
    }

    /// <summary>
    /// A device check's word starts above every flat index a tensor can have: it started at 0x7F7F7F7F, below the last
    /// 8.4 million elements of a tensor of Array.MaxLength elements, whose NaNs then passed unrefused.
    /// </summary>
    [Test]
    public void TheCheckWordStartsAboveEveryFlatIndex() => Assert.That((ulong)Array.MaxLength, Is.LessThan(GpuChecks.None));

    [Test]
    public void AProfileNamesEachKernelWithItsLaunches()
    {
        var (q, k, v, g) = Inputs(seed: 11, perKey: true);
        using var d = Upload(q, k, v, g);
        using var dOutput = _gpu.Allocate<float>(Shape);
        _gpu.StartGpuProfile();
        for (int i = 0; i < 2; i++) Engine.Gla.Forward(_gpu, d.Q, d.K, d.V, d.G, dOutput, options: new GlaOptions { ChunkSize = 16 });
        var times = _gpu.StopGpuProfile();
        Assert.That(times.Select(t => (t.Kernel, t.Launches)), Is.EqualTo(new[]
        {
            ("tensor.Check", 10L), ("gla.ChunkDeltas", 2L), ("gla.StateScan", 2L), ("gla.Output", 2L),
        }), "per call: checks of g, q, k, v and the output, then the three GLA kernels");
        Assert.Throws<InvalidOperationException>(() => _gpu.StopGpuProfile(), "no profile is being taken");
    }

    /// <summary>
    /// An LSSL layer's first call on a device uploads its tables, and a conv call longer than any before it K̄ for its length:
    /// GpuTraffic counted neither (the ILGPU buffers were allocated and filled around the runtime), so a call on device
    /// tensors reported no bytes and no allocation while it moved both. A call that reuses them moves nothing.
    /// </summary>
    [Test]
    public void GpuTrafficCountsAnLsslLayersTablesAndConvKernel()
    {
        const int batch = 1, channels = 3, stateSize = 4;
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, channels, stateSize, seed: 14).Layer();
        GpuTraffic Call(int length)
        {
            using var du = _gpu.Upload(Tensor.Create(new TestData(15).Normal(batch * length * channels), [batch, length, channels]));
            using var dy = _gpu.Allocate<float>(batch, length, channels);
            var before = _gpu.GpuTraffic;
            layer.Forward(_gpu, du, dy, mode: LsslMode.Conv);
            return _gpu.GpuTraffic.Since(before);
        }
        var first = Call(20);
        var again = Call(12);
        var longer = Call(200);
        Assert.Multiple(() =>
        {
            Assert.That(first.Allocations, Is.GreaterThanOrEqualTo(9), "8 tables and K̄, besides the instance's buffers");
            Assert.That(first.BytesToDevice, Is.GreaterThanOrEqualTo(20 * channels * sizeof(float)), "K̄ of 20 steps at least");
            Assert.That((again.BytesToDevice, again.Allocations), Is.EqualTo((0L, 0L)), "the tables and the longer K̄ serve");
            Assert.That(longer.BytesToDevice, Is.GreaterThanOrEqualTo(200 * channels * sizeof(float)), "K̄ of 200 steps at least");
            Assert.That(longer.BytesToHost, Is.Zero);
        });
    }

    [TestCase(LsslMode.Recurrent)]
    [TestCase(LsslMode.Scan)]
    public void AnLsslLayerAndSessionOnDeviceTensorsMatchTheReference(LsslMode mode)
    {
        const int batch = 2, length = 20, channels = 4, stateSize = 8;
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, channels, stateSize, seed: 12).Layer(new LsslOptions { ChunkLength = 16 });
        var data = new TestData(13);
        var u = data.Normal(batch * length * channels);
        var initial = data.Normal(batch * channels * stateSize, 0.3);
        nint[] shape = [batch, length, channels], stateShape = [batch, channels, stateSize];
        var expectedFinal = Tensor.Create(new float[initial.Length], stateShape);
        var expected = layer.Forward(TestDevices.Reference, Tensor.Create(u, shape), LsslMode.Recurrent, Tensor.Create(initial, stateShape), expectedFinal);

        using var du = _gpu.Upload(Tensor.Create(u, shape));
        using var dy = _gpu.Upload(Tensor.Create(Numerics.NaNs(u.Length), shape));
        using var dInitial = _gpu.Upload(Tensor.Create(initial, stateShape));
        using var dFinal = _gpu.Allocate<float>(stateShape);
        Assert.That(layer.Forward(_gpu, du, dy, dInitial, dFinal, mode), Is.EqualTo(mode));
        var before = _gpu.GpuTraffic;
        layer.Forward(_gpu, du, dy, dInitial, dFinal, mode);
        var call = _gpu.GpuTraffic.Since(before);

        using var session = layer.CreateSession(_gpu, batch);
        session.SetState(Tensor.Create(initial, stateShape));
        using var dySession = _gpu.Allocate<float>(shape);
        session.Prefill(du, dySession, mode);
        var sessionState = new float[initial.Length];
        session.GetState(new TensorSpan<float>(sessionState, stateShape, []));
        Assert.Multiple(() =>
        {
            Assert.That(call.BytesToDevice + call.BytesToHost, Is.Zero);
            Assert.That(call.Allocations, Is.Zero);
            Assert.That(Numerics.RelativeRms(dy.ToTensor().ToArray(), expected.ToArray()), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(dFinal.ToTensor().ToArray(), expectedFinal.ToArray()), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(dySession.ToTensor().ToArray(), expected.ToArray()), Is.LessThanOrEqualTo(1e-5));
            Assert.That(Numerics.RelativeRms(sessionState, expectedFinal.ToArray()), Is.LessThanOrEqualTo(1e-5));
        });

        u[7] = float.PositiveInfinity;
        du.Upload(u);
        var error = Assert.Throws<ArgumentException>(() => session.Step(du, dySession));
        var after = new float[initial.Length];
        session.GetState(new TensorSpan<float>(after, stateShape, []));
        Assert.That(error!.ParamName, Is.EqualTo("u"));
        Assert.That(after, Is.EqualTo(sessionState), "a refused step leaves the state as it was");
    }

    /// <summary>q, k, v and a per-key g [B, T, H, d] on the device.</summary>
    private sealed record DeviceInputs(DeviceTensor<float> Q, DeviceTensor<float> K, DeviceTensor<float> V, DeviceTensor<float> G) : IDisposable
    {
        public void Dispose()
        {
            Q.Dispose();
            K.Dispose();
            V.Dispose();
            G.Dispose();
        }
    }

    private DeviceInputs Upload(float[] q, float[] k, float[] v, float[] g) =>
        new(_gpu.Upload(Tensor.Create(q, Shape)), _gpu.Upload(Tensor.Create(k, Shape)), _gpu.Upload(Tensor.Create(v, Shape)), _gpu.Upload(Tensor.Create(g, Shape)));

    private static (float[] Q, float[] K, float[] V, float[] G) Inputs(int seed, bool perKey)
    {
        var data = new TestData(seed);
        return (data.Normal(Tokens * Heads * Dim), data.UnitRows(Tokens * Heads, Dim), data.Normal(Tokens * Heads * Dim),
            data.LogGates(Tokens * Heads * (perKey ? Dim : 1), 1));
    }

    private static (float[] Output, float[] State) ReferenceGla(float[] q, float[] k, float[] v, float[] g, float[] initial)
    {
        var gate = Tensor.Create(g, g.Length == q.Length ? Shape : PerHead);
        var result = Engine.Gla.Forward(TestDevices.Reference, Tensor.Create(q, Shape), Tensor.Create(k, Shape), Tensor.Create(v, Shape), gate,
            new GlaOptions { ChunkSize = 16 }, Tensor.Create(initial, StateShape));
        return (result.Output.ToArray(), result.FinalState.ToArray());
    }

    private static Tensor<float> Slice(float[] values, int start, nint[] shape)
    {
        int n = (int)shape.Aggregate(1L, (a, d) => a * d);
        return Tensor.Create(values.AsSpan(start, n).ToArray(), shape);
    }
}

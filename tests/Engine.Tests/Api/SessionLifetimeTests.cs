using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// A session outliving its device or disposed under a call, an LSSL session's refused call, an LSSL call in place: clear
/// refusals, the state as it was, or the results of the call with its tensors apart.
/// </summary>
[TestFixture]
public sealed class SessionLifetimeTests
{
    private static Tensor<float> Filled(float value, params nint[] shape) =>
        Tensor.Create(Enumerable.Repeat(value, (int)shape.Aggregate((nint)1, (a, d) => a * d)).ToArray(), shape);

    private static LsslLayer DiagonalLayer() => new(Filled(-1f, 2, 4), Filled(1f, 2, 4), Filled(1f, 2, 4), Filled(2f, 2), Filled(0.01f, 2),
        new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });

    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void ASessionWhoseDeviceWasDisposedRefusesEveryCall(Backend backend)
    {
        // Devices of their own: the shared test devices live to the end of the run.
        var device = EngineDevice.Create(backend, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        using var gla = new GlaSession(device, 1, new HeadLayout(1, 1, 4, 4), GateKind.None);
        using var layer = DiagonalLayer();
        using var lssl = layer.CreateSession(device, 1);
        device.Dispose();
        var state = new float[16];
        Action[] calls =
        [
            () => gla.GetState(new TensorSpan<float>(state, [1, 1, 4, 4])),
            () => gla.SetState(new ReadOnlyTensorSpan<float>(state, [1, 1, 4, 4])),
            () => gla.ResetState(),
            () => gla.Step(Filled(1f, 1, 1, 1, 4), Filled(1f, 1, 1, 1, 4), Filled(1f, 1, 1, 1, 4), null, Filled(0f, 1, 1, 1, 4)),
            () => lssl.GetState(new TensorSpan<float>(new float[8], [1, 2, 4])),
            () => lssl.Step(Filled(1f, 1, 1, 2), Filled(0f, 1, 1, 2)),
        ];
        foreach (var call in calls)
            Assert.That(() => call(), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain("device"));
    }

    /// <summary>
    /// Dispose on one thread while another runs calls: it waits for the running call (which before freed the state under the
    /// kernel: a crash on the GPU, the state handed back to the array pool on the CPU), and every later call is refused.
    /// </summary>
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void DisposeWaitsForACallOnAnotherThread(Backend backend)
    {
        var device = TestDevices.Of(backend);
        var heads = new HeadLayout(2, 2, 32, 32);
        var session = new GlaSession(device, 1, heads, GateKind.None);
        var data = new TestData(5);
        var q = Tensor.Create(data.Normal(256 * 2 * 32), [1, 256, 2, 32]);
        var output = Tensor.Create(new float[256 * 2 * 32], [1, 256, 2, 32]);
        int calls = 0;
        Exception? failure = null;
        var worker = new Thread(() =>
        {
            try
            {
                while (true)
                {
                    session.Prefill<float>(q, q, q, null, output);
                    Interlocked.Increment(ref calls);
                }
            }
            catch (Exception e) { failure = e; }
        });
        worker.Start();
        SpinWait.SpinUntil(() => Volatile.Read(ref calls) >= 2);
        session.Dispose();
        Assert.That(worker.Join(TimeSpan.FromSeconds(30)), Is.True, "the worker's calls ended");
        Assert.That(failure, Is.InstanceOf<ObjectDisposedException>(), failure?.ToString());
        Assert.That(() => session.ResetState(), Throws.InstanceOf<ObjectDisposedException>());
    }

    /// <summary>
    /// Runs <paramref name="call"/> in a loop on four threads, disposes <paramref name="target"/> once they are running, and
    /// returns what ended each thread's loop: every call must finish or be refused as disposed (a call waiting for the GPU's
    /// lock used to run on the freed accelerator and end the process).
    /// </summary>
    private static Exception?[] DisposeWhileCalling(IDisposable target, Action call)
    {
        int calls = 0;
        var failures = new Exception?[4];
        var threads = Enumerable.Range(0, failures.Length).Select(i => new Thread(() =>
        {
            try
            {
                for (int n = 0; n < 100_000; n++)
                {
                    call();
                    Interlocked.Increment(ref calls);
                }
            }
            catch (Exception e) { failures[i] = e; }
        })).ToArray();
        foreach (var t in threads) t.Start();
        SpinWait.SpinUntil(() => Volatile.Read(ref calls) >= 8);
        target.Dispose();
        foreach (var t in threads) Assert.That(t.Join(TimeSpan.FromSeconds(60)), Is.True, "the calls ended");
        return failures;
    }

    [Test]
    public void AGpuDeviceDisposedWhileThreadsCallItRefusesTheCallsAfter()
    {
        var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        var data = new TestData(16);
        var q = Tensor.Create(data.Normal(32 * 2 * 16), [1, 32, 2, 16]);
        var g = Filled(-0.1f, 1, 32, 2);
        Assert.That(DisposeWhileCalling(device, () => Engine.Gla.Forward(device, q, q, q, g)), Has.All.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void AnLsslLayerDisposedWhileThreadsRunItOnTheGpuRefusesTheCallsAfter()
    {
        var device = TestDevices.Of(Backend.Gpu);
        var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, 8, 16, seed: 1).Layer();
        var u = Tensor.Create(new TestData(17).Normal(64 * 8), [1, 64, 8]);
        Assert.That(DisposeWhileCalling(layer, () => layer.Forward(device, u, LsslMode.Scan)), Has.All.InstanceOf<ObjectDisposedException>());
    }

    [Test]
    public void ADeviceTensorDisposedWhileThreadsReadItRefusesTheCallsAfter()
    {
        var device = TestDevices.Of(Backend.Gpu);
        nint[] shape = [1, 32, 2, 16];
        var q = device.Upload(Tensor.Create(new TestData(18).Normal(32 * 2 * 16), shape));
        using var output = device.Allocate<float>(shape);
        Assert.That(DisposeWhileCalling(q, () => Engine.Gla.Forward(device, q, q, q, null, output)), Has.All.InstanceOf<ObjectDisposedException>());
    }

    /// <summary>Disposes its session from inside the session's call.</summary>
    private sealed class DisposingScheduler : IWorkScheduler
    {
        public IDisposable? Session;
        public int Workers => 1;

        public void Run(int count, Action<int, int> body)
        {
            Session?.Dispose();
            for (int i = 0; i < count; i++) body(i, 0);
        }
    }

    /// <summary>A session disposed from inside its own call waited for that call for ever; it is refused, and the session runs on.</summary>
    [Test]
    public void ASessionDisposedFromInsideItsCallIsRefused()
    {
        var scheduler = new DisposingScheduler();
        var session = new GlaSession(TestDevices.Of(Backend.Cpu), 1, new HeadLayout(1, 1, 16, 16), GateKind.None, new GlaOptions { Scheduler = scheduler });
        scheduler.Session = session;
        var x = Filled(0.5f, 1, 4, 1, 16);
        var e = Assert.Throws<InvalidOperationException>(() => session.Prefill(x, x, x, null, Filled(0f, 1, 4, 1, 16)))!;
        Assert.That(e.Message, Does.Contain("cannot be disposed from inside one of its calls"));
        scheduler.Session = null;
        Assert.That(() => session.Prefill(x, x, x, null, Filled(0f, 1, 4, 1, 16)), Throws.Nothing);
        session.Dispose();
    }

    private sealed class NoWorkers : IWorkScheduler
    {
        public int Workers => 0;
        public void Run(int count, Action<int, int> body) => throw new InvalidOperationException("never run");
    }

    /// <summary>A scheduler of no workers divided by zero inside the kernels; refused where it is given, by name.</summary>
    [Test]
    public void ASchedulerWithoutWorkersIsRefused()
    {
        var x = Filled(0.5f, 1, 4, 1, 16);
        Assert.Multiple(() =>
        {
            Assert.That(() => EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { Scheduler = new NoWorkers() }),
                Throws.ArgumentException.With.Message.Contains("Workers must be >= 1"));
            Assert.That(() => EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { Scheduler = new ThreadPoolScheduler(2), CpuThreads = 4 }),
                Throws.ArgumentException.With.Message.Contains("give one"));
            Assert.That(() => Engine.Gla.Forward(TestDevices.Of(Backend.Cpu), x, x, x, null, new GlaOptions { Scheduler = new NoWorkers() }),
                Throws.ArgumentException.With.Message.Contains("Workers must be >= 1"));
            using var layer = DiagonalLayer();
            Assert.That(() => layer.Forward<float>(TestDevices.Of(Backend.Cpu), Filled(1f, 1, 4, 2), new TensorSpan<float>(new float[8], [1, 4, 2], []),
                scheduler: new NoWorkers()), Throws.ArgumentException.With.Message.Contains("Workers must be >= 1"));
        });
    }

    /// <summary>A disposed layer is refused by name on every backend (the host paths ran on; the GPU named an internal type).</summary>
    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void ADisposedLsslLayerRefusesEveryCall(Backend backend)
    {
        var device = TestDevices.Of(backend);
        var layer = DiagonalLayer();
        using var session = layer.CreateSession(device, 1);
        layer.Dispose();
        Action[] calls =
        [
            () => layer.Forward(device, Filled(1f, 1, 3, 2)),
            () => layer.CreateSession(device, 1),
            () => session.Step(Filled(1f, 1, 1, 2), Filled(0f, 1, 1, 2)),
        ];
        foreach (var call in calls)
            Assert.That(() => call(), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain(nameof(LsslLayer)));
    }

    /// <summary>y written over u: the CPU's conv mode read u for the final state after it wrote y (a wrong state, no error).</summary>
    [Test]
    public void AnLsslCallInPlaceGivesTheResultsOfOneWithYApart(
        [Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend, [Values(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)] LsslMode mode)
    {
        var device = TestDevices.Of(backend);
        using var layer = DiagonalLayer();
        var u = new TestData(4).Normal(40 * 2);
        var initial = Tensor.Create(new TestData(5).Normal(2 * 4), [1, 2, 4]);
        var apart = new float[u.Length];
        var stateApart = new float[8];
        layer.Forward<float>(TestDevices.Reference, Tensor.Create(u, [1, 40, 2]), new TensorSpan<float>(apart, [1, 40, 2], []), initial,
            new TensorSpan<float>(stateApart, [1, 2, 4], []), LsslMode.Recurrent);
        var inPlace = (float[])u.Clone();
        var state = new float[8];
        layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(inPlace, [1, 40, 2], []), new TensorSpan<float>(inPlace, [1, 40, 2], []), initial,
            new TensorSpan<float>(state, [1, 2, 4], []), mode);
        Assert.That(Numerics.RelativeRms(inPlace, apart), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "y");
        Assert.That(Numerics.RelativeRms(state, stateApart), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state");
    }

    /// <summary>
    /// A system whose output does not read the state (C = 0) and whose input overflows it (B = 1e30, u = 1e10): y = D u stays
    /// finite while the state overflows. Returned infinite before by the reference and the conv mode; refused now by every
    /// backend and mode.
    /// </summary>
    [Test]
    public void AnLsslFinalStateThatOverflowsIsRefused(
        [Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend, [Values(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)] LsslMode mode)
    {
        var device = TestDevices.Of(backend);
        using var overflowing = new LsslLayer(Filled(-1f, 2, 4), Filled(1e30f, 2, 4), Filled(0f, 2, 4), Filled(2f, 2), Filled(1.9f, 2),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        var y = new float[64 * 2];
        var e = Assert.Throws<ArgumentException>(() => overflowing.Forward<float>(device, Filled(1e10f, 1, 64, 2), new TensorSpan<float>(y, [1, 64, 2], []),
            default, new TensorSpan<float>(new float[8], [1, 2, 4], []), mode))!;
        Assert.That(e.Message, Does.Contain("overflowed"));
        Assert.That(e.ParamName, Is.EqualTo("u"), "a stable system overflows from its input (an unstable A is refused when the layer is built)");
    }

    /// <summary>
    /// A system in a session, in the conv mode, whose y does not read the state (C = 0) and whose input overflows it (B = 1e30,
    /// u = 1e37): y = D u stays finite while the state overflows. A GPU session kept such a state on the device unchecked, and every later call went on from
    /// it; now refused on every backend, the state kept.
    /// </summary>
    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void AnLsslSessionWhoseStateOverflowsIsRefusedAndKeepsItsState(Backend backend)
    {
        using var overflowing = new LsslLayer(Filled(-1f, 2, 4), Filled(1e30f, 2, 4), Filled(0f, 2, 4), Filled(2f, 2), Filled(2f / 3, 2),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        using var session = overflowing.CreateSession(TestDevices.Of(backend), 1);
        session.Prefill(Filled(1f, 1, 3, 2), Filled(0f, 1, 3, 2), LsslMode.Conv);
        var before = new float[8];
        session.GetState(new TensorSpan<float>(before, [1, 2, 4]));
        var e = Assert.Throws<ArgumentException>(() => session.Prefill(Filled(1e37f, 1, 64, 2), Filled(0f, 1, 64, 2), LsslMode.Conv))!;
        var after = new float[8];
        session.GetState(new TensorSpan<float>(after, [1, 2, 4]));
        Assert.That(e.Message, Does.Contain("final state overflowed"));
        Assert.That(after, Is.EqualTo(before), "the refused call left the state as it was");
    }

    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void ARefusedLsslSessionCallLeavesTheStateAsItWas(Backend backend)
    {
        var device = TestDevices.Of(backend);
        using var layer = DiagonalLayer();
        using var session = layer.CreateSession(device, 1);
        var u = new TestData(3).Normal(6);
        session.Step(Tensor.Create(u, [1, 3, 2]), Filled(0f, 1, 3, 2));
        float[] State()
        {
            var state = new float[8];
            session.GetState(new TensorSpan<float>(state, [1, 2, 4]));
            return state;
        }
        var before = State();
        var e = Assert.Throws<ArgumentException>(() => session.Step(Filled(2e38f, 1, 1, 2), Filled(0f, 1, 1, 2)))!;
        Assert.That(e.Message, Does.Contain("overflowed"));
        Assert.That(State(), Is.EqualTo(before), "the refused call left the state as it was");
    }

    /// <summary>
    /// A call whose cu_seqlens packs another number of sequences than the session holds is refused naming cu_seqlens, on host
    /// and device tensors; the message began with q, whose batch (B = 1) was not at fault.
    /// </summary>
    [TestCase(Backend.Cpu, false)]
    [TestCase(Backend.Gpu, false)]
    [TestCase(Backend.Gpu, true)]
    public void APackedCallOfAnotherSequenceCountIsRefusedNamingCuSeqlens(Backend backend, bool onDevice)
    {
        var device = TestDevices.Of(backend);
        using var session = new GlaSession(device, 2, new HeadLayout(1, 1, 4, 4), GateKind.None);
        var x = Filled(1f, 1, 5, 1, 4);
        var output = Filled(float.NaN, 1, 5, 1, 4);
        int[] cu = [0, 2, 2, 5];
        ArgumentException e;
        if (onDevice)
        {
            using var dx = device.Upload(x.AsReadOnlyTensorSpan());
            using var dOutput = device.Upload(output.AsReadOnlyTensorSpan());
            e = Assert.Throws<ArgumentException>(() => session.Prefill(dx, dx, dx, null, dOutput, cu))!;
        }
        else e = Assert.Throws<ArgumentException>(() => session.Prefill<float>(x, x, x, null, output, cu))!;
        Assert.That(e.ParamName, Is.EqualTo("cu_seqlens"));
        Assert.That(e.Message, Does.StartWith("cu_seqlens: the session holds 2 sequences, this call has 3 (4 offsets)"));
    }

    /// <summary>
    /// The state shape a session hands out is the caller's to change: changed (e.g. to make a state tensor for more
    /// sequences), the session still holds its own sequences, refuses a call of another batch and checks its state against
    /// its own shape. Before, it handed out the very array its calls checked against: a batch of more sequences than its
    /// state held ran past the end of the state (a crash, or another sequence's state read and written).
    /// </summary>
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void ChangingTheStateShapeHandedOutLeavesTheSessionAsItWas(Backend backend)
    {
        var device = TestDevices.Of(backend);
        using var gla = new GlaSession(device, 1, new HeadLayout(1, 1, 4, 4), GateKind.None);
        using var layer = DiagonalLayer();
        using var lssl = layer.CreateSession(device, 1);
        foreach (StatefulSession session in new StatefulSession[] { gla, lssl })
        {
            var shape = session.StateShape;
            nint[] made = [.. shape];
            shape[0] = 8;
            Assert.That(session.Sequences, Is.EqualTo(1), session.GetType().Name);
            Assert.That(session.StateShape, Is.EqualTo(made), session.GetType().Name);
            Assert.That(() => session.GetState(new TensorSpan<float>(new float[8 * made[1] * made[2] * (made.Length > 3 ? made[3] : 1)], shape)),
                Throws.ArgumentException.With.Message.Contain("state: expected shape"), session.GetType().Name);
        }
        var x = Filled(1f, 8, 3, 1, 4);
        Assert.That(() => gla.Prefill<float>(x, x, x, null, Filled(0f, 8, 3, 1, 4)),
            Throws.ArgumentException.With.Message.Contain("the session holds 1 sequences, this call has 8"));
        Assert.That(() => lssl.Step(Filled(1f, 8, 1, 2), Filled(0f, 8, 1, 2)),
            Throws.ArgumentException.With.Message.Contain("the session holds 1 sequences, this call has batch B = 8"));
    }
}

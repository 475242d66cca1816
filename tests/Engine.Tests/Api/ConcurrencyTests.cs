using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// What a program with many threads does to the API: sessions of one device on many threads, a session entered by a
/// second thread, a call whose scheduler throws part way, objects disposed twice or by two threads at once, device
/// tensors used after their device is gone or handed to another device.
/// </summary>
[TestFixture]
public sealed class ConcurrencyTests
{
    private static readonly HeadLayout Heads = new(2, 2, 16, 16);
    private const int PromptLength = 40, DecodeSteps = 3;

    private static Tensor<float> Normal(int seed, int tokens, int width = 16) =>
        Tensor.Create(new TestData(seed).Normal(tokens * 2 * width), [1, tokens, 2, width]);

    private static Tensor<float> LogGates(int seed, int tokens) =>
        Tensor.Create(Array.ConvertAll(new TestData(seed).Normal(tokens * 2), x => -0.05f - 0.1f * MathF.Abs(x)), [1, tokens, 2]);

    /// <summary>A prompt and a few decode steps on a session of its own: every output, then the final state, concatenated.</summary>
    private static float[] PrefillAndDecode(EngineDevice device, int seed, GlaOptions? options = null)
    {
        using var session = new GlaSession(device, 1, Heads, GateKind.PerHead, options);
        var results = new List<float>();
        var output = Tensor.Create(new float[PromptLength * 32], [1, PromptLength, 2, 16]);
        session.Prefill(Normal(seed, PromptLength), Normal(seed + 1, PromptLength), Normal(seed + 2, PromptLength), LogGates(seed + 3, PromptLength), output);
        results.AddRange(output);
        for (int step = 0; step < DecodeSteps; step++)
        {
            var one = Tensor.Create(new float[32], [1, 1, 2, 16]);
            int s = seed + 10 * (step + 1);
            session.Step(Normal(s, 1), Normal(s + 1, 1), Normal(s + 2, 1), LogGates(s + 3, 1), one);
            results.AddRange(one);
        }
        var state = new float[2 * 16 * 16];
        session.GetState(new TensorSpan<float>(state, [1, 2, 16, 16]));
        results.AddRange(state);
        return [.. results];
    }

    /// <summary>Sessions of one device on four threads at once, each with its own inputs: each gives what it gives alone, bit for bit.</summary>
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void SessionsOfOneDeviceOnManyThreadsEachGiveTheirResultAlone(Backend backend)
    {
        var device = TestDevices.Of(backend);
        const int threads = 4, rounds = 5;
        var alone = Enumerable.Range(0, threads).Select(i => PrefillAndDecode(device, 100 * i)).ToArray();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            try
            {
                for (int round = 0; round < rounds; round++)
                {
                    start.SignalAndWait();
                    if (!PrefillAndDecode(device, 100 * i).AsSpan().SequenceEqual(alone[i]))
                        failures.Enqueue($"thread {i}, round {round}: differs from its run alone");
                }
            }
            catch (Exception e)
            {
                failures.Enqueue($"thread {i}: {e}");
                start.RemoveParticipant();
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.That(failures, Is.Empty);
    }

    /// <summary>Holds the call that runs on it until released, after telling that it is inside.</summary>
    private sealed class GateScheduler : IWorkScheduler
    {
        public readonly ManualResetEventSlim Entered = new(), Release = new();
        public bool Hold = true;
        public int Workers => 1;

        public void Run(int count, Action<int, int> body)
        {
            if (Hold)
            {
                Hold = false;
                Entered.Set();
                Release.Wait();
            }
            for (int i = 0; i < count; i++) body(i, 0);
        }
    }

    /// <summary>
    /// A second thread entering a session while a call runs on it is refused at once, saying so, by every method; the
    /// running call is not disturbed, and the session ends as one that never saw the refused calls.
    /// </summary>
    [Test]
    public void ASecondThreadEnteringABusySessionIsRefusedAndTheRunningCallIsUntouched()
    {
        var device = TestDevices.Of(Backend.Cpu);
        var expected = PrefillAndDecode(device, 7, new GlaOptions { Scheduler = new ThreadPoolScheduler(1) });
        var scheduler = new GateScheduler();
        using var session = new GlaSession(device, 1, Heads, GateKind.PerHead, new GlaOptions { Scheduler = scheduler });
        var prefill = HeldPrefill.Start(session, scheduler);
        var state = new float[2 * 16 * 16];
        var one = Tensor.Create(new float[32], [1, 1, 2, 16]);
        Action[] calls =
        [
            () => session.Step(Normal(1, 1), Normal(2, 1), Normal(3, 1), LogGates(4, 1), one),
            () => session.Prefill(Normal(1, 1), Normal(2, 1), Normal(3, 1), LogGates(4, 1), one),
            () => session.GetState(new TensorSpan<float>(state, [1, 2, 16, 16])),
            () => session.SetState(new ReadOnlyTensorSpan<float>(state, [1, 2, 16, 16])),
            session.ResetState,
        ];
        foreach (var call in calls)
            Assert.That(() => call(), Throws.InvalidOperationException.With.Message.Contain("already running a call on another thread"));
        scheduler.Release.Set();
        prefill.Thread.Join();
        Assert.That(prefill.Failure, Is.Null);
        Assert.That(prefill.Output.ToArray(), Is.EqualTo(expected[..(PromptLength * 32)]), "the prompt's output");
        for (int step = 0; step < DecodeSteps; step++)
        {
            int s = 7 + 10 * (step + 1);
            session.Step(Normal(s, 1), Normal(s + 1, 1), Normal(s + 2, 1), LogGates(s + 3, 1), one);
        }
        session.GetState(new TensorSpan<float>(state, [1, 2, 16, 16]));
        Assert.That(state, Is.EqualTo(expected[^state.Length..]), "the state after the decode steps");
    }

    /// <summary>
    /// Runs <paramref name="dispose"/> of each of <paramref name="iterations"/> fresh objects on two threads released together by
    /// a barrier, and returns what either thread threw. A thread caught in a hang fails the join.
    /// </summary>
    private static List<Exception> DisposeOnTwoThreadsAtOnce<TObject>(int iterations, Func<TObject> make, Action<TObject> dispose)
    {
        var objects = new TObject[iterations];
        for (int i = 0; i < iterations; i++) objects[i] = make();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using var start = new Barrier(2);
        var threads = Enumerable.Range(0, 2).Select(_ => new Thread(() =>
        {
            foreach (var o in objects)
            {
                start.SignalAndWait();
                try { dispose(o); }
                catch (Exception e) { failures.Enqueue(e); }
            }
        }) { IsBackground = true }).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.That(t.Join(TimeSpan.FromSeconds(30)), Is.True, "both Dispose calls returned");
        return [.. failures];
    }

    /// <summary>
    /// Two threads disposing one session at once both return. Both could pass the disposed check before either set it, and
    /// the second then waited for ever for the call flag the first keeps; that window is a few instructions wide, so this
    /// loop states the contract rather than reliably catching the race.
    /// </summary>
    [Test]
    public void ASessionDisposedByTwoThreadsAtOnceIsDisposedOnce()
    {
        var device = TestDevices.Of(Backend.Cpu);
        var failures = DisposeOnTwoThreadsAtOnce(3000, () => new GlaSession(device, 1, new HeadLayout(1, 1, 4, 4), GateKind.None), s => s.Dispose());
        Assert.That(failures, Is.Empty);
    }

    /// <summary>
    /// A kernel given back to its device by one thread while another disposes the device is disposed, whichever comes first:
    /// it was lost when the device drained its pools between the return's look at the disposed mark and its adding the kernel
    /// to the pool (2,000 rounds lost kernels in every run tried).
    /// </summary>
    [Test]
    public void AKernelReturnedWhileTheDeviceIsDisposedIsDisposed()
    {
        var lease = typeof(EngineDevice).GetMethod("Lease", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!
            .MakeGenericMethod(typeof(CountedKernel), typeof(string));
        var kernels = new List<CountedKernel>();
        using var start = new Barrier(2);
        for (int i = 0; i < 2000; i++)
        {
            var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 1 });
            var kernel = new CountedKernel();
            kernels.Add(kernel);
            var leased = (IDisposable)lease.Invoke(device, ["config", (Func<string, EngineDevice, CountedKernel>)((_, _) => kernel)])!;
            var returner = new Thread(() =>
            {
                start.SignalAndWait();
                leased.Dispose();
            }) { IsBackground = true };
            returner.Start();
            start.SignalAndWait();
            device.Dispose();
            Assert.That(returner.Join(TimeSpan.FromSeconds(30)), Is.True, "the return finished");
        }
        Assert.That(kernels.Count(k => k.Disposals != 1), Is.Zero, "kernels not disposed exactly once");
    }

    private sealed class CountedKernel : IDisposable
    {
        private int _disposals;

        public int Disposals => Volatile.Read(ref _disposals);

        public void Dispose() => Interlocked.Increment(ref _disposals);
    }

    /// <summary>
    /// Holds the GPU runtime's lock of <paramref name="device"/> (internal to the library, reached by reflection) until disposed:
    /// the calls and disposals of other threads queue behind it.
    /// </summary>
    private static GpuRuntime.CallLock HoldGpuLock(EngineDevice device)
    {
        var gpu = typeof(EngineDevice).GetProperty("Gpu", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!;
        return ((GpuRuntime)gpu.GetValue(device)!).Enter();
    }

    /// <summary>
    /// Starts <paramref name="count"/> threads running <paramref name="action"/> and returns once every one is blocked (on the
    /// lock the caller holds) or done (one that found nothing to wait for).
    /// </summary>
    private static (Thread[] Threads, Exception?[] Failures) StartBlocked(int count, Action action)
    {
        var failures = new Exception?[count];
        var threads = Enumerable.Range(0, count).Select(i => new Thread(() =>
        {
            try { action(); }
            catch (Exception e) { failures[i] = e; }
        })).ToArray();
        foreach (var t in threads) t.Start();
        SpinWait.SpinUntil(() => threads.All(t => (t.ThreadState & (ThreadState.WaitSleepJoin | ThreadState.Stopped)) != 0));
        return (threads, failures);
    }

    /// <summary>
    /// Two threads disposing one device tensor while a call holds the device: both found the buffer there, queued for the
    /// lock, and the second disposed the buffer the first had already freed and cleared (a NullReferenceException).
    /// </summary>
    [Test]
    public void ADeviceTensorDisposedByTwoThreadsWhileTheDeviceIsBusyIsDisposedOnce()
    {
        var device = TestDevices.Of(Backend.Gpu);
        var tensor = device.Allocate<float>(4);
        (Thread[] Threads, Exception?[] Failures) disposers;
        using (HoldGpuLock(device)) disposers = StartBlocked(2, tensor.Dispose);
        foreach (var t in disposers.Threads) t.Join();
        Assert.That(disposers.Failures, Is.All.Null);
        Assert.That(() => tensor.ToTensor(), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain("device tensor was disposed"));
    }

    /// <summary>
    /// A device tensor disposed on another thread while a call is running on it (its kernels launched, the output already
    /// read once): the call finishes as it does alone, and only then is the tensor freed. Dispose used to let go of the
    /// buffer before it waited for the call, so the call's second read of its float16 output (to convert the result into
    /// it) found the tensor gone and the call was refused part way with an ObjectDisposedException.
    /// </summary>
    [Test]
    public void ADeviceTensorDisposedDuringACallOnItLetsTheCallFinish()
    {
        using var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        const int tokens = 64;
        var data = new TestData(5);
        using var q = device.Upload(new ReadOnlyTensorSpan<Half>(TestData.ToHalf(data.Normal(tokens * 32)), [1, tokens, 2, 16]));
        using var k = device.Upload(new ReadOnlyTensorSpan<Half>(TestData.ToHalf(data.UnitRows(tokens * 2, 16)), [1, tokens, 2, 16]));
        using var v = device.Upload(new ReadOnlyTensorSpan<Half>(TestData.ToHalf(data.Normal(tokens * 32)), [1, tokens, 2, 16]));
        var options = new GlaOptions { Mode = AttentionMode.Recurrent };
        int raced = 0;
        for (int attempt = 0; attempt < 50 && raced < 5; attempt++)
        {
            var output = device.Allocate<Half>(1, tokens, 2, 16);
            long before = device.GpuTraffic.Launches;
            Exception? failure = null;
            var call = new Thread(() =>
            {
                try { Engine.Gla.Forward(device, q, k, v, null, output, options: options); }
                catch (Exception e) { failure = e; }
            });
            call.Start();
            // q, k and v converted and checked (six launches), then the kernel: once it is launched the call has read its output tensor.
            bool during = SpinWait.SpinUntil(() => device.GpuTraffic.Launches > before + 6 || !call.IsAlive, TimeSpan.FromSeconds(10)) && call.IsAlive;
            output.Dispose();
            call.Join();
            if (during) raced++;
            Assert.That(failure, Is.Null, $"attempt {attempt}: the call running when its output was disposed");
        }
        Assert.That(raced, Is.GreaterThan(0), "no Dispose landed while a call ran");
    }

    /// <summary>Every call on a disposed device, of every backend, is refused as disposed, naming the device.</summary>
    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void ADisposedDeviceRefusesEveryCall(Backend backend)
    {
        var device = EngineDevice.Create(backend, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        device.Dispose();
        device.Dispose();
        var q = Normal(1, 4);
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, 2, 4, seed: 1).Layer();
        Action[] calls =
        [
            () => Engine.Gla.Forward(device, q, q, q, LogGates(2, 4)),
            () => Engine.DeltaRule.Forward(device, q, q, q, Tensor.Create(new float[8], [1, 4, 2]), null),
            () => _ = new GlaSession(device, 1, Heads, GateKind.PerHead),
            () => layer.Forward(device, Tensor.Create(new float[8], [1, 4, 2])),
            () => layer.CreateSession(device, 1),
        ];
        for (int i = 0; i < calls.Length; i++)
            Assert.That(() => calls[i](), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain(nameof(EngineDevice)), $"call {i}");
    }

    /// <summary>A device tensor outliving its device: its copies are refused as disposed, and disposing it after is harmless.</summary>
    [Test]
    public void ADeviceTensorWhoseDeviceWasDisposedIsRefusedAndDisposesQuietly()
    {
        var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        var tensor = device.Upload(Normal(1, 4));
        device.Dispose();
        Assert.That(() => tensor.ToTensor(), Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(() => tensor.Upload(new float[tensor.FlattenedLength]), Throws.InstanceOf<ObjectDisposedException>());
        Assert.That(() => { tensor.Dispose(); tensor.Dispose(); }, Throws.Nothing);
    }

    /// <summary>A device tensor handed to a call or session of another device is refused by name, before anything runs.</summary>
    [Test]
    public void ADeviceTensorOfAnotherDeviceIsRefusedByName()
    {
        using var other = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator });
        var device = TestDevices.Of(Backend.Gpu);
        using var foreign = other.Upload(Normal(1, 4));
        using var q = device.Upload(Normal(1, 4));
        using var output = device.Allocate<float>(q.Lengths);
        using var session = new GlaSession(device, 1, Heads, GateKind.None);
        Assert.Multiple(() =>
        {
            Assert.That(() => Engine.Gla.Forward(device, q, foreign, q, null, output), Throws.ArgumentException.With.Property("ParamName").EqualTo("k"));
            Assert.That(() => session.Prefill(q, q, foreign, null, output), Throws.ArgumentException.With.Property("ParamName").EqualTo("v"));
        });
    }

    /// <summary>
    /// The thread-pool scheduler passes an item's exception on as itself, as IWorkScheduler asks, whatever its workers: with
    /// more than one it came wrapped in an AggregateException, so a caller saw another type than with one.
    /// </summary>
    [TestCase(1)]
    [TestCase(2)]
    [TestCase(4)]
    public void TheThreadPoolSchedulerPassesAnItemsExceptionOnAsItself(int workers)
    {
        var scheduler = new ThreadPoolScheduler(workers);
        Assert.That(() => scheduler.Run(8, (item, _) => { if (item == 5) throw new FormatException("item 5"); }),
            Throws.InstanceOf<FormatException>().With.Message.EqualTo("item 5"));
    }

    /// <summary>Runs the first half of the first call's items, then throws: a call stopped part way, as a cancelled one would be.</summary>
    private sealed class FailingScheduler : IWorkScheduler
    {
        public bool Fail = true;
        public int Workers => 1;

        public void Run(int count, Action<int, int> body)
        {
            int end = Fail ? count / 2 : count;
            for (int i = 0; i < end; i++) body(i, 0);
            if (!Fail) return;
            Fail = false;
            throw new OperationCanceledException("stopped part way");
        }
    }

    /// <summary>A prefill that fails part way (its scheduler throws) leaves the session's state as it was: the session goes on as though it had not been made.</summary>
    [Test]
    public void APrefillThatFailsPartWayLeavesTheStateAsItWas()
    {
        var device = TestDevices.Of(Backend.Cpu);
        var expected = PrefillAndDecode(device, 7, new GlaOptions { Scheduler = new ThreadPoolScheduler(1) });
        using var session = new GlaSession(device, 1, Heads, GateKind.PerHead, new GlaOptions { Scheduler = new FailingScheduler() });
        var output = Tensor.Create(new float[PromptLength * 32], [1, PromptLength, 2, 16]);
        var garbage = Normal(99, PromptLength);
        Assert.That(() => session.Prefill(garbage, garbage, garbage, LogGates(98, PromptLength), output), Throws.InstanceOf<OperationCanceledException>());
        session.Prefill(Normal(7, PromptLength), Normal(8, PromptLength), Normal(9, PromptLength), LogGates(10, PromptLength), output);
        Assert.That(output.ToArray(), Is.EqualTo(expected[..(PromptLength * 32)]), "the prompt's output");
        var one = Tensor.Create(new float[32], [1, 1, 2, 16]);
        for (int step = 0; step < DecodeSteps; step++)
        {
            int s = 7 + 10 * (step + 1);
            session.Step(Normal(s, 1), Normal(s + 1, 1), Normal(s + 2, 1), LogGates(s + 3, 1), one);
        }
        var state = new float[2 * 16 * 16];
        session.GetState(new TensorSpan<float>(state, [1, 2, 16, 16]));
        Assert.That(state, Is.EqualTo(expected[^state.Length..]), "the state after the decode steps");
    }

    /// <summary>The same for an LSSL session: a prefill stopped part way leaves the state it had.</summary>
    [TestCase(LsslMode.Recurrent)]
    [TestCase(LsslMode.Scan)]
    [TestCase(LsslMode.Conv)]
    public void AnLsslPrefillThatFailsPartWayLeavesTheStateAsItWas(LsslMode mode)
    {
        var device = TestDevices.Of(Backend.Cpu);
        using var layer = Engine.Lssl.Parameters(LsslInitKind.Legs, 32, 8, seed: 1).Layer();
        using var session = layer.CreateSession(device, 1, new FailingScheduler { Fail = false });
        var y = Tensor.Create(new float[64 * 32], [1, 64, 32]);
        session.Prefill(Tensor.Create(new TestData(1).Normal(64 * 32), [1, 64, 32]), y, mode);
        var before = new float[32 * 8];
        session.GetState(new TensorSpan<float>(before, [1, 32, 8]));
        using var failing = layer.CreateSession(device, 1, new FailingScheduler());
        failing.SetState(new ReadOnlyTensorSpan<float>(before, [1, 32, 8]));
        Assert.That(() => failing.Prefill(Tensor.Create(new TestData(2).Normal(64 * 32), [1, 64, 32]), y, mode), Throws.InstanceOf<OperationCanceledException>());
        var after = new float[before.Length];
        failing.GetState(new TensorSpan<float>(after, [1, 32, 8]));
        Assert.That(after, Is.EqualTo(before));
    }

    /// <summary>
    /// A device disposed while a session's call runs on another thread (held inside its scheduler): the call finishes with the
    /// results it has alone, and the session's later calls are refused as disposed, naming the device.
    /// </summary>
    [Test]
    public void ADeviceDisposedDuringASessionsCallLetsTheCallFinish()
    {
        var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 1 });
        var expected = PrefillAndDecode(TestDevices.Of(Backend.Cpu), 7, new GlaOptions { Scheduler = new ThreadPoolScheduler(1) });
        var scheduler = new GateScheduler();
        using var session = new GlaSession(device, 1, Heads, GateKind.PerHead, new GlaOptions { Scheduler = scheduler });
        var prefill = HeldPrefill.Start(session, scheduler);
        device.Dispose();
        scheduler.Release.Set();
        prefill.Thread.Join();
        Assert.That(prefill.Failure, Is.Null);
        Assert.That(prefill.Output.ToArray(), Is.EqualTo(expected[..(PromptLength * 32)]), "the prompt's output");
        Assert.That(() => session.ResetState(), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain("device"));
    }

    /// <summary>The prompt's prefill on a thread of its own, held inside the session's call by its scheduler until released.</summary>
    private sealed class HeldPrefill
    {
        public required Thread Thread { get; init; }
        public required Tensor<float> Output { get; init; }
        public Exception? Failure { get; private set; }

        public static HeldPrefill Start(GlaSession session, GateScheduler scheduler)
        {
            var output = Tensor.Create(new float[PromptLength * 32], [1, PromptLength, 2, 16]);
            HeldPrefill? held = null;
            var thread = new Thread(() =>
            {
                try { session.Prefill(Normal(7, PromptLength), Normal(8, PromptLength), Normal(9, PromptLength), LogGates(10, PromptLength), output); }
                catch (Exception e) { held!.Failure = e; }
            });
            held = new HeldPrefill { Thread = thread, Output = output };
            thread.Start();
            scheduler.Entered.Wait();
            return held;
        }
    }
}

using System.Collections.Concurrent;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Lssl;

/// <summary>
/// LSSL's parallel work goes through the scheduler a call is given (the system's build, K̄, its spectra, the
/// passes), and one layer serves calls from several threads at once.
/// </summary>
[TestFixture]
public sealed class LsslSchedulerTests
{
    /// <summary>Runs items on the thread pool and records each Run's item count and any worker index out of range.</summary>
    private sealed class CountingScheduler(int workers) : IWorkScheduler
    {
        private readonly ThreadPoolScheduler _inner = new(workers);
        private readonly ConcurrentQueue<int> _runs = new();
        private int _badWorkers;

        public int Workers => workers;

        public int BadWorkers => Volatile.Read(ref _badWorkers);

        public void Run(int count, Action<int, int> body)
        {
            _runs.Enqueue(count);
            _inner.Run(count, (item, worker) =>
            {
                if (worker < 0 || worker >= Workers) Interlocked.Increment(ref _badWorkers);
                body(item, worker);
            });
        }

        /// <summary>The item counts of the Runs since the last take, in order.</summary>
        public int[] TakeRuns()
        {
            var runs = new List<int>();
            while (_runs.TryDequeue(out int count)) runs.Add(count);
            return [.. runs];
        }
    }

    private const int B = 2, H = 41, N = 8, Q = 16;
    private const int Pairs = (H + 1) / 2, Blocks = (H + 15) / 16;

    [Test]
    public void ASchedulerClaimingMoreWorkersThanItemsGetsScratchForTheItemsOnly([Values(LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv)] LsslMode mode)
    {
        var scheduler = new ManyWorkersScheduler();
        var p = LsslProblem.Make(H, N, LsslStateMatrix.DenseShared, seed: 31);
        using var system = p.System(LsslDiscretization.Bilinear, Q, scheduler);
        using var cpu = new LsslCpu(system.Config);
        const int length = 40;
        var u = new TestData(length).Normal(B * length * H);
        var expectedY = new double[B * length * H];
        LsslReference.Forward(system, B, length, u, expectedY, new double[B * H * N]);
        var y = Numerics.NaNs(B * length * H);
        cpu.Run(scheduler, mode, system, B, length, u, y, new float[B * H * N]);
        Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [TestCase(LsslStateMatrix.DenseShared)]
    [TestCase(LsslStateMatrix.DensePerChannel)]
    [TestCase(LsslStateMatrix.Diagonal)]
    public void EveryParallelPartRunsOnTheSchedulerItIsGiven(LsslStateMatrix form)
    {
        var scheduler = new CountingScheduler(workers: 3);
        var p = LsslProblem.Make(H, N, form, seed: 31);
        using var system = p.System(LsslDiscretization.Bilinear, Q, scheduler);
        Assert.That(scheduler.TakeRuns(), Is.EqualTo(new[] { H }), "the build: an item per channel");
        using var cpu = new LsslCpu(system.Config);

        void Check(LsslMode mode, int length, bool withState, int[] runs, string what)
        {
            var u = new TestData(length).Normal(B * length * H);
            var x0 = withState ? new TestData(length + 1).Normal(B * H * N, 0.5) : new float[B * H * N];
            var expectedY = new double[B * length * H];
            var expectedState = TestData.ToDouble(x0);
            LsslReference.Forward(system, B, length, u, expectedY, expectedState);
            var y = Numerics.NaNs(B * length * H);
            var state = (float[])x0.Clone();
            cpu.Run(scheduler, mode, system, B, length, u, y, state, initialStateIsZero: !withState, needFinalState: withState);
            Assert.That(scheduler.TakeRuns(), Is.EqualTo(runs), $"{mode} L = {length}: {what}");
            Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode} L = {length}: y");
            if (withState)
                Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode} L = {length}: state");
        }

        Check(LsslMode.Conv, 100, false, [H, Pairs, B * Pairs], "K̄ per channel, its spectra per channel pair, the FFT per (sequence, pair)");
        Check(LsslMode.Conv, 100, false, [B * Pairs], "K̄ and the spectra kept");
        Check(LsslMode.Conv, 300, false, [H, Pairs, B * Pairs], "a longer K̄ and its spectra");
        Check(LsslMode.Conv, 37, true, [Pairs, B * Pairs, B * Blocks], "K̄ kept (long enough), spectra for 37, the state pass per (sequence, channel block)");
        Check(LsslMode.Scan, 300, true, [B * Blocks], "one item per (sequence, channel block)");
        Check(LsslMode.Recurrent, 37, true, [B * Blocks], "one item per (sequence, channel block)");
        Assert.That(scheduler.BadWorkers, Is.Zero, "worker indices below Workers");
    }

    [Test]
    public void ALayersCallsRunOnTheDevicesScheduler()
    {
        var scheduler = new CountingScheduler(workers: 3);
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { Scheduler = scheduler });
        var p = LsslProblem.Make(H, N, LsslStateMatrix.DenseShared, seed: 32);
        using var layer = p.Layer(LsslDiscretization.Bilinear, Q);
        using var system = p.System(LsslDiscretization.Bilinear, Q);
        scheduler.TakeRuns();
        const int length = 100;
        var u = new TestData(33).Normal(B * length * H);
        var expected = new double[B * length * H];
        LsslReference.Forward(system, B, length, u, expected, new double[B * H * N]);
        var y = Numerics.NaNs(B * length * H);
        layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [B, length, H]), new TensorSpan<float>(y, [B, length, H]), mode: LsslMode.Conv);
        Assert.That(scheduler.TakeRuns(), Is.EqualTo(new[] { H, Pairs, B * Pairs }), "K̄, its spectra and the FFT");
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void TheGpusConvolutionKernelIsBuiltOnTheDevicesScheduler()
    {
        var scheduler = new CountingScheduler(workers: 3);
        using var device = EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator, Scheduler = scheduler });
        const int h = 3, length = 37;
        var p = LsslProblem.Make(h, N, LsslStateMatrix.DensePerChannel, seed: 34);
        using var layer = p.Layer(LsslDiscretization.Bilinear, Q);
        using var system = p.System(LsslDiscretization.Bilinear, Q);
        var u = new TestData(35).Normal(length * h);
        var expected = new double[length * h];
        LsslReference.Forward(system, 1, length, u, expected, new double[h * N]);
        var y = Numerics.NaNs(length * h);
        layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [1, length, h]), new TensorSpan<float>(y, [1, length, h]), mode: LsslMode.Conv);
        Assert.That(scheduler.TakeRuns(), Is.EqualTo(new[] { h }), "K̄, an item per channel");
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>
    /// Calls of every mode and several lengths on one layer from 8 threads at once, starting cold (K̄ and the
    /// spectra built, rebuilt and replaced while other calls use them), against the same calls one at a time on
    /// a layer of its own: each work item computes the same thing whichever thread runs it, so results are equal.
    /// </summary>
    [TestCase(LsslStateMatrix.DenseShared)]
    [TestCase(LsslStateMatrix.DensePerChannel)]
    [TestCase(LsslStateMatrix.Diagonal)]
    public void ConcurrentCallsOnOneLayerEqualSingleThreadedOnes(LsslStateMatrix form)
    {
        const int h = 6, n = 16, threads = 8, rounds = 3;
        var device = TestDevices.Get(TestBackend.Cpu);
        var p = LsslProblem.Make(h, n, form, seed: 36);
        (LsslMode Mode, int Length)[] calls =
        [
            (LsslMode.Conv, 100), (LsslMode.Conv, 300), (LsslMode.Scan, 300), (LsslMode.Conv, 37),
            (LsslMode.Recurrent, 100), (LsslMode.Conv, 1000), (LsslMode.Scan, 37), (LsslMode.Conv, 300),
        ];
        var x0 = new TestData(37).Normal(B * h * n, 0.5);

        (float[] Y, float[] State) Call(LsslLayer layer, int i)
        {
            var (mode, length) = calls[i];
            var u = new TestData(38 + i).Normal(B * length * h);
            var y = Numerics.NaNs(B * length * h);
            var state = Numerics.NaNs(B * h * n);
            layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [B, length, h]), new TensorSpan<float>(y, [B, length, h]),
                new ReadOnlyTensorSpan<float>(x0, [B, h, n]), new TensorSpan<float>(state, [B, h, n]), mode);
            return (y, state);
        }

        (float[] Y, float[] State)[] expected;
        using (var alone = p.Layer(LsslDiscretization.Bilinear))
            expected = [.. Enumerable.Range(0, calls.Length).Select(i => Call(alone, i))];

        using var shared = p.Layer(LsslDiscretization.Bilinear);
        var mismatches = new ConcurrentQueue<string>();
        var errors = new ConcurrentQueue<Exception>();
        using var start = new Barrier(threads);
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                for (int r = 0; r < rounds * calls.Length; r++)
                {
                    int i = (t + r) % calls.Length;
                    var (y, state) = Call(shared, i);
                    if (!y.AsSpan().SequenceEqual(expected[i].Y) || !state.AsSpan().SequenceEqual(expected[i].State))
                        mismatches.Enqueue($"thread {t}, {calls[i].Mode} L = {calls[i].Length}");
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.That(errors, Is.Empty);
        Assert.That(mismatches, Is.Empty);
    }
}

using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>Several threads on one session, garbage collections during runs, and sessions made and disposed in a loop.</summary>
[TestFixture]
public sealed class SessionLifetimeTests
{
    [Test]
    public void SeveralThreadsRunOneSessionWhileTheGarbageCollectorRuns()
    {
        const int threads = 4, runsPerThread = 10;
        // Half the calls are large enough to run on ORT's intra-op pool, half small enough to run inline.
        var cases = Enumerable.Range(0, threads).Select(i => new LinearAttentionNodeCase
        {
            Rule = UpdateRule.Gated, B = i % 2 == 0 ? 2 : 1, T = i % 2 == 0 ? 80 + i : 9 + i, PastState = true, Hq = 4, Hkv = 2, Dk = 64, Dv = 64,
        }).ToArray();
        Assert.That(cases.Count(c => (long)c.B * c.T * c.Hq * c.Dk * c.Dv > 1 << 20), Is.EqualTo(threads / 2), "calls that use the pool");
        var inputs = cases.Select(c => c.Inputs()).ToArray();
        var expected = cases.Select((c, i) => c.Reference(inputs[i])).ToArray();
        using var session = OnnxTestHost.Open(cases[0].Model(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));

        using var stop = new CancellationTokenSource();
        var collector = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
                Thread.Sleep(1);
            }
        });
        var failures = new System.Collections.Concurrent.ConcurrentBag<string>();
        var workers = Enumerable.Range(0, threads).Select(i => new Thread(() =>
        {
            for (int run = 0; run < runsPerThread; run++)
            {
                var result = session.Run(inputs[i]);
                double err = Harness.Numerics.RelativeRms(result["output"].As<float>(), expected[i].Output);
                double stateErr = Harness.Numerics.RelativeRms(result["present_state"].As<float>(), expected[i].State);
                if (!(err <= Harness.Numerics.Fp32Tolerance && stateErr <= Harness.Numerics.Fp32Tolerance))
                    failures.Add($"thread {i} run {run}: output error {err:E2}, state error {stateErr:E2}");
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        stop.Cancel();
        collector.Wait();
        Assert.That(failures, Is.Empty);
    }

    [Test]
    public void SessionsMadeAndDisposedInALoopLeaveNoKernels()
    {
        var spec = new LinearAttentionBlockSpec { Hidden = 16, QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8, Layers = 2 };
        var model = SampleModels.LinearAttentionBlock(spec);
        var (inputs, _, _) = ModelGraphTests.BlockInputs(spec);
        using var host = new KernelHost(new KernelHostOptions { IntraOpThreads = 2 });
        var options = new ModelSessionOptions { Host = host, AllowSpinning = false };
        TensorData? first = null;
        for (int i = 0; i < 25; i++)
        {
            using (var session = ModelSession.Open(model, options))
            {
                Assert.That(host.LiveKernels, Is.EqualTo(2), "one kernel per engine node while the session is open");
                Assert.That(host.OpenSessions, Is.EqualTo(1));
                var y = session.Run(inputs)["y_1"];
                if (first is null) first = y;
                else Assert.That(y.As<float>(), Is.EqualTo(first.As<float>()), "every session computes the same");
            }
            Assert.That(host.LiveKernels, Is.Zero, "kernels destroyed with their session");
            Assert.That(host.OpenSessions, Is.Zero);
        }
    }

    [Test]
    public void HostDisposedBeforeItsSessionWaitsForIt()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, PastState = true };
        var inputs = c.Inputs();
        var host = new KernelHost(new KernelHostOptions { IntraOpThreads = 1 });
        var session = ModelSession.Open(c.Model(), new ModelSessionOptions { Host = host });
        host.Dispose();
        Assert.Throws<ObjectDisposedException>(() => ModelSession.Open(c.Model(), new ModelSessionOptions { Host = host }));
        OnnxAssert.Close(session.Run(inputs)["output"], c.Reference(inputs).Output, "a session outliving its host's Dispose still runs");
        session.Dispose();
        Assert.That(host.LiveKernels, Is.Zero);
        Assert.That(host.OpenSessions, Is.Zero);
    }

    /// <summary>A Dispose on another thread waits for the run in progress (it released ORT's session under it and crashed); later runs are refused.</summary>
    [Test]
    public void DisposeWaitsForTheRunInProgress()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, PastState = true };
        var inputs = c.Inputs();
        var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        using var reading = new ManualResetEventSlim();
        using var disposing = new ManualResetEventSlim();
        bool runEnded = false;  // set by the run's last step
        var run = Task.Run(() => session.Run(inputs, (name, type, shape, bytes) =>
        {
            reading.Set();
            disposing.Wait();
            // The run holds ORT's outputs a while after Dispose was called.
            Thread.Sleep(50);
            Assert.That(bytes.ToArray(), Has.Length.GreaterThan(0));
            Volatile.Write(ref runEnded, true);
        }));
        reading.Wait();
        var dispose = Task.Run(() =>
        {
            disposing.Set();
            session.Dispose();
            return Volatile.Read(ref runEnded);
        });
        run.Wait();
        Assert.That(dispose.Result, Is.True, "Dispose returned after the run ended");
        Assert.Throws<ObjectDisposedException>(() => session.Run(inputs));
    }

    /// <summary>
    /// A second Dispose, on another thread while the first waits for a run, also returns only once that run has ended: it
    /// returned at once, and its caller could free what the run still read.
    /// </summary>
    [Test]
    public void ASecondDisposeWhileTheFirstWaitsAlsoWaitsForTheRun()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, PastState = true };
        var inputs = c.Inputs();
        var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        using var reading = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        bool runEnded = false;  // set by the run's last step
        var run = Task.Factory.StartNew(() => session.Run(inputs, (_, _, _, _) =>
        {
            reading.Set();
            release.Wait();
            Volatile.Write(ref runEnded, true);
        }, ["output"]), TaskCreationOptions.LongRunning);
        reading.Wait();
        var first = Task.Factory.StartNew(session.Dispose, TaskCreationOptions.LongRunning);
        // The first Dispose has begun once the session refuses runs.
        while (true)
        {
            try
            {
                session.Run(inputs, ["output"]);
                Thread.Sleep(1);
            }
            catch (ObjectDisposedException)
            {
                break;
            }
        }
        var second = Task.Factory.StartNew(() =>
        {
            session.Dispose();
            return Volatile.Read(ref runEnded);
        }, TaskCreationOptions.LongRunning);
        second.Wait(500);
        release.Set();
        run.Wait();
        first.Wait();
        Assert.That(second.Result, Is.True, "the second Dispose returned after the run ended");
    }

    /// <summary>
    /// The profile lands at the prefix asked for: it went to the working directory under ORT's default name, so a service's
    /// profiles piled up wherever it ran, and a caller cleaning up by the prefix found none of them.
    /// </summary>
    [Test]
    public void TheProfileIsWrittenAtThePrefixGiven()
    {
        string folder = Path.Combine(Path.GetTempPath(), $"engine-profile-test-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        try
        {
            string prefix = Path.Combine(folder, "run");
            var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, PastState = true };
            string file;
            using (var session = ModelSession.Open(c.Model(), OnnxTestHost.Options(HandoverBackend.Cpu) with { ProfilePrefix = prefix }))
            {
                session.Run(c.Inputs());
                file = session.EndProfiling();
            }
            try
            {
                Assert.That(Path.GetFullPath(file), Does.StartWith(prefix));
                Assert.That(Directory.GetFiles(folder), Has.Length.EqualTo(1));
            }
            finally
            {
                File.Delete(file);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void DisposeFromInsideARunIsRefused()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Linear, PastState = true };
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Cpu);
        Exception? refused = null;
        session.Run(c.Inputs(), (_, _, _, _) => refused ??= Assert.Catch(session.Dispose));
        Assert.That(refused, Is.InstanceOf<InvalidOperationException>().With.Message.Contain("inside one of its runs"));
        Assert.That(session.Run(c.Inputs()), Is.Not.Empty, "the session still runs");
    }
}

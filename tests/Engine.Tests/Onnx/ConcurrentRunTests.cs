using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// ONNX Runtime lets several threads run one session at once. Models with the engine's nodes, run that way with a
/// different input on every thread (decode steps that run inline, prompts long enough for ORT's intra-op pool), give
/// each thread exactly what the same input gives run alone: the kernels keep no per-node scratch between calls.
/// </summary>
[TestFixture]
public sealed class ConcurrentRunTests
{
    private const int Threads = 4, Rounds = 6;

    /// <summary>Every output of every input run alone, then all of them at once, each thread starting its round at a barrier.</summary>
    private static void RunConcurrentlyAndCompare(ModelSession session, IReadOnlyList<Dictionary<string, TensorData>> inputs)
    {
        var alone = inputs.Select(i => session.Run(i)).ToArray();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var start = new Barrier(inputs.Count);
        var workers = inputs.Select((input, i) => new Thread(() =>
        {
            try
            {
                for (int round = 0; round < Rounds; round++)
                {
                    start.SignalAndWait();
                    var together = session.Run(input);
                    foreach (var (name, expected) in alone[i])
                        if (!together[name].Bytes.SequenceEqual(expected.Bytes))
                            failures.Enqueue($"input {i}, round {round}: {name} differs from the same input run alone");
                }
            }
            catch (Exception e)
            {
                failures.Enqueue($"input {i}: {e}");
                start.RemoveParticipant();
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.That(failures, Is.Empty);
    }

    private static Dictionary<string, TensorData> Inputs(OnnxModel model, long batch, long length, int seed) =>
        ModelInputs.Random(model, new Dictionary<string, long>
        {
            ["batch_size"] = batch, ["sequence_length"] = length, ["B"] = batch, ["T"] = length, ["L"] = length,
        }, seed);

    [TestCase(HandoverBackend.Cpu, TensorElementType.Float)]
    [TestCase(HandoverBackend.Cpu, TensorElementType.Float16)]
    [TestCase(HandoverBackend.Gpu, TensorElementType.Float)]
    public void TheGatedDeltaNetLayerRunOnManyThreadsGivesEachInputItsResultAlone(HandoverBackend backend, TensorElementType type)
    {
        var model = GatedDeltaNetLayer.Model(new GatedDeltaNetSpec { ElementType = type });
        using var session = OnnxTestHost.Open(model, backend);
        Assert.That(session.Handover.EngineNodes, Is.Not.Empty);
        // Decode steps (inline) and prompts (chunked; the longest on ORT's pool), batch 1 and 2. The GPU kernels run on ILGPU's
        // CPU accelerator here, slowly: short calls only (the recurrent form), on the device's lock from every thread.
        (long Batch, long Length)[] shapes = backend == HandoverBackend.Cpu ? [(1, 1), (2, 1), (1, 40), (2, 300)] : [(1, 1), (2, 1), (1, 3), (2, 5)];
        RunConcurrentlyAndCompare(session, shapes.Select((s, i) => Inputs(model, s.Batch, s.Length, seed: 10 + i)).ToArray());
    }

    [Test]
    public void TheLinearAttentionBlockRunOnManyThreadsGivesEachInputItsResultAlone()
    {
        var spec = new LinearAttentionBlockSpec { Hidden = 64, QHeads = 4, KvHeads = 2, KeyDim = 32, ValueDim = 32, Layers = 2 };
        var model = SampleModels.LinearAttentionBlock(spec);
        using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        (long Batch, long Length)[] shapes = [(1, 1), (1, 7), (2, 64), (1, 257)];
        RunConcurrentlyAndCompare(session, shapes.Select((s, i) => Inputs(model, s.Batch, s.Length, seed: 20 + i)).ToArray());
    }

    /// <summary>LsslScan's kernel keeps the discretized system and spectra for the longest length seen: lengths that grow on other threads meanwhile.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void TheLsslScanRunOnManyThreadsGivesEachInputItsResultAlone(bool diagonal)
    {
        var model = SampleModels.LsslScanNode(channels: 8, stateSize: 16, diagonal);
        using var session = OnnxTestHost.Open(model, HandoverBackend.Cpu);
        long[] lengths = [1, 33, 200, 1100];
        RunConcurrentlyAndCompare(session, lengths.Select((l, i) => Inputs(model, 1 + i % 2, l, seed: 30 + i)).ToArray());
    }

    /// <summary>
    /// Sessions opened at once from one model on a new host (which makes its backend on the first open), each run and
    /// disposed on its thread: each gives what a session of the shared test host gives, and the host ends with no kernels.
    /// </summary>
    [Test]
    public void SessionsOpenedAtOnceOnOneHostFromOneModelEachRunAlike()
    {
        var model = GatedDeltaNetLayer.Model(new GatedDeltaNetSpec());
        var inputs = Inputs(model, 1, 20, seed: 40);
        IReadOnlyDictionary<string, TensorData> expected;
        using (var reference = OnnxTestHost.Open(model, HandoverBackend.Cpu)) expected = reference.Run(inputs);
        using var host = new KernelHost(new KernelHostOptions { IntraOpThreads = 2 });
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var start = new Barrier(Threads);
        var workers = Enumerable.Range(0, Threads).Select(i => new Thread(() =>
        {
            try
            {
                start.SignalAndWait();
                using var session = ModelSession.Open(model, new ModelSessionOptions { Host = host });
                foreach (var (name, values) in session.Run(inputs))
                    if (!values.Bytes.SequenceEqual(expected[name].Bytes)) failures.Enqueue($"thread {i}: {name} differs");
            }
            catch (Exception e)
            {
                failures.Enqueue($"thread {i}: {e}");
            }
        })).ToArray();
        foreach (var w in workers) w.Start();
        foreach (var w in workers) w.Join();
        Assert.That(failures, Is.Empty);
        Assert.That((host.OpenSessions, host.LiveKernels), Is.EqualTo((0, 0)));
    }

    /// <summary>
    /// Disposing the shared host (as a caller may, with the host it was handed) leaves it serving: it released the
    /// process-wide host, and every session opened later without a host of its own was refused as disposed.
    /// </summary>
    [Test]
    public void DisposingTheSharedHostLeavesItServing()
    {
        KernelHost.Shared.Dispose();
        Assert.That(KernelHost.Shared.Describe(HandoverBackend.Cpu), Does.StartWith("cpu"));
        using var session = ModelSession.Open(SampleModels.LsslScanNode(channels: 2, stateSize: 4), new ModelSessionOptions { AllowSpinning = false });
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));
    }

    /// <summary>
    /// A disposed host refuses what would make a backend: describing one made its device and native op tables again, which
    /// nothing would release. Disposing it again is harmless.
    /// </summary>
    [Test]
    public void ADisposedHostRefusesToMakeABackend()
    {
        var host = new KernelHost(new KernelHostOptions { IntraOpThreads = 1 });
        Assert.That(host.Describe(HandoverBackend.Cpu), Does.StartWith("cpu"));
        host.Dispose();
        host.Dispose();
        Assert.Multiple(() =>
        {
            Assert.That(() => host.Describe(HandoverBackend.Gpu), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain(nameof(KernelHost)));
            Assert.That(() => host.Describe(HandoverBackend.Cpu), Throws.InstanceOf<ObjectDisposedException>().With.Message.Contain(nameof(KernelHost)));
            Assert.That(() => ModelSession.Open(SampleModels.LsslScanNode(channels: 2, stateSize: 4), new ModelSessionOptions { Host = host }),
                Throws.InstanceOf<ObjectDisposedException>());
        });
    }
}

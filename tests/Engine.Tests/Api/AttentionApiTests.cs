using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// The contract of the attention API every op shares: the scheduler handed with a call runs its work, the final
/// state may be the initial state's own tensor, Tensor arguments infer the element type, and a session serves one
/// thread at a time.
/// </summary>
[TestFixture]
public sealed class AttentionApiTests
{
    private const int T = 40, H = 2, K = 16, V = 16;

    private static EngineDevice Cpu => TestDevices.Get(TestBackend.Cpu);

    private static (Tensor<float> Q, Tensor<float> K, Tensor<float> V, Tensor<float> G, Tensor<float> H0) Inputs()
    {
        var data = new TestData(3);
        return (Tensor.Create(data.Normal(T * H * K), [1, T, H, K]), Tensor.Create(data.Normal(T * H * K), [1, T, H, K]),
            Tensor.Create(data.Normal(T * H * V), [1, T, H, V]), Tensor.Create(data.LogGates(T * H * K, 0.5), [1, T, H, K]),
            Tensor.Create(data.Normal(H * K * V), [1, H, K, V]));
    }

    private static float[] Flat(Tensor<float> t)
    {
        var a = new float[t.FlattenedLength];
        t.FlattenTo(a);
        return a;
    }

    /// <summary>An enum value no member names is refused where it is given, on every backend (the reference ran some as another).</summary>
    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    public void UndefinedEnumValuesAreRefused(Backend backend)
    {
        var device = backend == Backend.Reference ? TestDevices.Reference : Cpu;
        var (q, k, v, g, _) = Inputs();
        Assert.Multiple(() =>
        {
            Assert.That(() => new GlaSession(device, 1, new HeadLayout(H, H, K, V), (GateKind)99),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("gate").And.Message.Contain("99"));
            Assert.That(() => Engine.Gla.Forward(device, q, k, v, g, new GlaOptions { Mode = (AttentionMode)5 }),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("options").And.Message.Contain("mode"));
            using var layer = new LsslLayer(Tensor.Create(Enumerable.Repeat(-1f, 4).ToArray(), [1, 4]), Tensor.Create(new float[4], [1, 4]),
                Tensor.Create(new float[4], [1, 4]), Tensor.Create(new float[1], [1]), Tensor.Create(new[] { 0.1f }, [1]),
                new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
            Assert.That(() => layer.Forward(device, Tensor.Create(new float[3], [1, 3, 1]), (LsslMode)9),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("mode"));
        });
    }

    /// <summary>Refusals that named a parameter the caller never passed (qHeads) or none at all.</summary>
    [Test]
    public void RefusalsNameWhatTheCallerGave()
    {
        var (_, k, v, g, _) = Inputs();
        Assert.That(() => Engine.Gla.Forward(Cpu, Tensor.Create(new float[0], [1, T, 0, K]), k, v, g),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("q").And.Message.EqualTo("q: query heads must be >= 1, got 0 (Parameter 'q')"));
        Assert.That(() => new GlaSession(Cpu, int.MaxValue, new HeadLayout(H, H, K, V), GateKind.PerHead),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("sequences").And.Message.Contain("more than one array holds"));
        // 2^64 floats: a long product wraps to 0.
        Assert.That(() => new GlaSession(Cpu, 1, new HeadLayout(1, 1, 1 << 22, 1 << 21, 1 << 21), GateKind.PerHead),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("sequences").And.Message.Contain("more than one array holds"));
        Assert.That(() => Engine.Lightning.Forward(Cpu, Tensor.Create(new float[T * H * K], [1, T, H, K]), k, v, new LightningOptions { Layers = 4 }),
            Throws.ArgumentException.With.Property("ParamName").EqualTo("layer").And.Message.Contain("give both or neither, got layers 4 alone"));
    }

    /// <summary>
    /// default(HeadLayout), which no constructor makes, has no heads: a GLA or delta-rule session with a scale given, or a
    /// Lightning session with its slopes, was made with an empty state and refused every call as heads that differ; without
    /// a scale it was refused as an infinite scale. Refused now as the heads it is.
    /// </summary>
    [Test]
    public void ASessionOfDefaultHeadsIsRefused()
    {
        Func<IDisposable>[] sessions =
        [
            () => new GlaSession(Cpu, 1, default, GateKind.None, new GlaOptions { Scale = 1f }),
            () => new GlaSession(Cpu, 1, default, GateKind.PerHead),
            () => new DeltaRuleSession(Cpu, 1, default, GateKind.None, new DeltaRuleOptions { Scale = 1f }),
            () => new DeltaRuleSession(Cpu, 1, default, GateKind.PerHead),
            () => new LightningSession(Cpu, 1, default, new LightningOptions { Slopes = [] }),
            () => new LightningSession(Cpu, 1, default),
        ];
        foreach (var session in sessions)
            Assert.That(() => session().Dispose(),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("heads").And.Message.Contain("default(HeadLayout)"));
    }

    /// <summary>
    /// A null <see cref="Tensor{T}"/> given to a session's Prefill or Step, or to <see cref="EngineDevice.Upload{T}(Tensor{T})"/>,
    /// threw a NullReferenceException from inside the engine; refused now naming the argument, the state left as it was.
    /// </summary>
    [Test]
    public void ANullTensorIsRefusedByName()
    {
        using var gla = new GlaSession(Cpu, 1, new HeadLayout(1, 1, 4, 4), GateKind.None);
        using var delta = new DeltaRuleSession(Cpu, 1, new HeadLayout(1, 1, 4, 4), GateKind.None);
        using var lightning = new LightningSession(Cpu, 1, new HeadLayout(1, 1, 4, 4));
        using var layer = new LsslLayer(Tensor.Create(Enumerable.Repeat(-1f, 4).ToArray(), [1, 4]), Tensor.Create(new float[4], [1, 4]),
            Tensor.Create(new float[4], [1, 4]), Tensor.Create(new float[1], [1]), Tensor.Create(new[] { 0.1f }, [1]),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        using var lssl = layer.CreateSession(Cpu, 1);
        var x = Tensor.Create(new float[4], [1, 1, 1, 4]);
        var b = Tensor.Create(new float[1], [1, 1, 1]);
        Tensor<float> none = null!;
        (Action Call, string Name)[] calls =
        [
            (() => gla.Prefill(none, x, x, null, x), "q"),
            (() => gla.Step(x, x, none, null, x), "v"),
            (() => gla.Step(x, x, x, null, none), "output"),
            (() => delta.Prefill(x, none, x, b, null, x), "k"),
            (() => delta.Step(x, x, x, none, null, x), "beta"),
            (() => lightning.Prefill(x, x, x, none), "output"),
            (() => lightning.Step(none, x, x, x), "q"),
            (() => lssl.Step(none, b), "u"),
            (() => lssl.Prefill(b, none), "y"),
            (() => Cpu.Upload(none), "source"),
        ];
        foreach (var (call, name) in calls)
            Assert.That(() => call(), Throws.InstanceOf<ArgumentNullException>().With.Property("ParamName").EqualTo(name), name);
    }

    /// <summary>
    /// AttentionResult.Allocate gave an undefined state layout the key-major state's shape, and a negative length an
    /// exception that named no argument; both are refused by name now (the convenience forms name their options).
    /// </summary>
    [Test]
    public void AllocateRefusesAnUndefinedLayoutOrANegativeLength()
    {
        nint[] x = [1, 2, 1, 4];
        Assert.Multiple(() =>
        {
            Assert.That(() => AttentionResult<float>.Allocate(x, x, x, default, (StateLayout)7),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("layout").And.Message.Contain("7"));
            Assert.That(() => AttentionResult<float>.Allocate(x, x, [1, 2, -1, 4]), Throws.ArgumentException.With.Property("ParamName").EqualTo("v"));
            Assert.That(() => AttentionResult<float>.Allocate([-1, 2, 1, 4], x, x), Throws.ArgumentException.With.Property("ParamName").EqualTo("q"));
            var t = Tensor.Create(new float[8], x);
            Assert.That(() => Engine.Gla.Forward(Cpu, t, t, t, null, new GlaOptions { StateLayout = (StateLayout)7 }),
                Throws.ArgumentException.With.Property("ParamName").EqualTo("options").And.Message.Contain("state layout"));
        });
    }

    /// <summary>A backend no member names was taken; the device's description then called itself until the stack overflowed.</summary>
    [Test]
    public void AnUndefinedBackendOrGpuPreferenceIsRefused()
    {
        Assert.That(() => EngineDevice.Create((Backend)9), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("backend"));
        Assert.That(() => EngineDevice.Create(Backend.Gpu, new EngineDeviceOptions { Gpu = (GpuPreference)9 }),
            Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("options").And.Message.Contain("options.Gpu"));
    }

    /// <summary>
    /// The CPU kernels write the output in place while they read q, k and v: an output overlapping one of them, other than
    /// that very tensor, gave wrong results (q's memory as the output of grouped value heads, or shifted by a token). Refused
    /// on every backend; q's very tensor as the output is taken.
    /// </summary>
    [Test]
    public void AnOutputOverlappingAnInputOtherThanAsItsTensorIsRefused([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend)
    {
        var device = TestDevices.Of(backend);
        var (q, k, v, g, _) = Inputs();
        var memory = new float[(T + 1) * H * K];
        Flat(q).CopyTo(memory, 0);
        ReadOnlyTensorSpan<float> Q(float[] m) => new(m.AsSpan(0, T * H * K), [1, T, H, K], []);
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<float>(device, Q(memory), k, v, g,
            new TensorSpan<float>(memory.AsSpan(H * K, T * H * V), [1, T, H, V], []), default, default))!;
        Assert.That(e.ParamName, Is.EqualTo("output"));
        Assert.That(e.Message, Does.StartWith("output: shares memory with q without being its tensor"));
        // Grouped value heads: two per key head, the output [1, T, 2H, V/2] laid over q [1, T, H, K] (K = V).
        Assert.That(() => Engine.Gla.Forward<float>(device, Q(memory), k, Tensor.Create(new float[T * 2 * H * (V / 2)], [1, T, 2 * H, V / 2]),
            Tensor.Create(new float[T * 2 * H * K], [1, T, 2 * H, K]), new TensorSpan<float>(memory.AsSpan(0, T * H * V), [1, T, 2 * H, V / 2], []), default, default),
            Throws.ArgumentException.With.Message.StartWith("output: shares memory with q without being its tensor"));
        var inPlace = (float[])memory.Clone();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g).Output;
        Engine.Gla.Forward<float>(device, Q(inPlace), k, v, g,
            new TensorSpan<float>(inPlace.AsSpan(0, T * H * V), [1, T, H, V], []), default, default);
        Assert.That(Numerics.RelativeRms(inPlace[..(T * H * V)], Flat(expected)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "q's own tensor as the output");
    }

    /// <summary>Counts the work items it runs and checks every worker index is in range.</summary>
    private sealed class CountingScheduler(int workers) : IWorkScheduler
    {
        private int _items;

        public int Workers => workers;
        public int Items => _items;

        public void Run(int count, Action<int, int> body)
        {
            for (int i = 0; i < count; i++)
            {
                Interlocked.Increment(ref _items);
                body(i, i % workers);
            }
        }
    }

    [Test]
    public void TheCallsSchedulerRunsTheWork([Values(AttentionMode.Chunked, AttentionMode.Recurrent)] AttentionMode mode)
    {
        var (q, k, v, g, h0) = Inputs();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, new GlaOptions { Mode = mode }, h0);
        var scheduler = new CountingScheduler(3);
        var r = Engine.Gla.Forward(Cpu, q, k, v, g, new GlaOptions { Mode = mode, Scheduler = scheduler }, h0);
        Assert.Multiple(() =>
        {
            Assert.That(scheduler.Items, Is.EqualTo(H), "one item per (sequence, head block) went through the call's scheduler");
            Assert.That(Numerics.RelativeRms(Flat(r.Output), Flat(expected.Output)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
            Assert.That(Numerics.RelativeRms(Flat(r.FinalState), Flat(expected.FinalState)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        });
    }

    [Test]
    public void ASchedulerClaimingMoreWorkersThanItemsGetsScratchForTheItemsOnly([Values(AttentionMode.Chunked, AttentionMode.Recurrent)] AttentionMode mode)
    {
        var (q, k, v, g, h0) = Inputs();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, new GlaOptions { Mode = mode }, h0);
        var r = Engine.Gla.Forward(Cpu, q, k, v, g, new GlaOptions { Mode = mode, Scheduler = new ManyWorkersScheduler() }, h0);
        Assert.That(Numerics.RelativeRms(Flat(r.Output), Flat(expected.Output)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Reference)]
    public void TheFinalStateMayBeTheInitialStatesTensor(Backend backend)
    {
        var device = backend == Backend.Cpu ? Cpu : TestDevices.Reference;
        var (q, k, v, g, h0) = Inputs();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, initialState: h0);
        var state = Tensor.Create(Flat(h0), [1, H, K, V]);
        var output = Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]);
        Engine.Gla.Forward<float>(device, q, k, v, g, output, state, state);
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(Flat(output), Flat(expected.Output)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
            Assert.That(Numerics.RelativeRms(Flat(state), Flat(expected.FinalState)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        });
    }

    /// <summary>
    /// Host tensors with the final state the initial state's tensor, refused after the kernels ran: on the GPU backend the
    /// final state was downloaded before the output was checked (and refused as a non-finite initial_state); on the CPU and
    /// the reference the kernels wrote the caller's state as they ran, and a refused output (an fp32 overflow, or a float16
    /// output beyond float16's range) left it written; a chunked call's state that overflowed on its own was downloaded
    /// infinite over it. Now each is named and the caller's state kept; a call that passes still writes the reference's
    /// state in place.
    /// </summary>
    [Test]
    public void ACallInPlaceRefusedAfterTheKernelsRanKeepsTheState(
        [Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend, [Values] AttentionMode mode)
    {
        var device = TestDevices.Of(backend);
        var options = new GlaOptions { Mode = mode };
        var (q, k, v, g, h0) = Inputs();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g, options, h0);
        var state = Tensor.Create(Flat(h0), [1, H, K, V]);
        var output = Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]);
        Engine.Gla.Forward<float>(device, q, k, v, g, output, state, state, options: options);
        Assert.That(Numerics.RelativeRms(Flat(state), Flat(expected.FinalState)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "in place");

        var before = Flat(state);
        var large = Tensor.Create(Enumerable.Repeat(1e20f, T * H * K).ToArray(), [1, T, H, K]);
        var overflow = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<float>(device, large, large, large, g, output, state, state, options: options))!;
        var halves = Enumerable.Repeat((Half)200, T * H * K).ToArray();
        var halfOutput = new Half[T * H * V];
        var outOfRange = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<Half>(device, new ReadOnlyTensorSpan<Half>(halves, [1, T, H, K]),
            new ReadOnlyTensorSpan<Half>(halves, [1, T, H, K]), new ReadOnlyTensorSpan<Half>(halves, [1, T, H, V]), default,
            new TensorSpan<Half>(halfOutput, [1, T, H, V]), state, state, options: options))!;
        Assert.Multiple(() =>
        {
            Assert.That(overflow.ParamName, Is.EqualTo("output"), overflow.Message);
            Assert.That(overflow.Message, Does.Contain("overflow"));
            Assert.That(outOfRange.Message, Does.Contain("outside float16's range"));
            Assert.That(Flat(state), Is.EqualTo(before), "the refused calls left the state as it was");
        });
        if (mode == AttentionMode.Recurrent) return;
        // q = 0 keeps the output 0 while k·vᵀ overflows the state, which no output reads.
        var zeros = Tensor.Create(new float[T * H * K], [1, T, H, K]);
        var stateOverflow = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<float>(device, zeros, large, large, g, output, state, state, options: options))!;
        Assert.That(stateOverflow.ParamName, Is.EqualTo("final_state"), stateOverflow.Message);
        Assert.That(Flat(state), Is.EqualTo(before), "the refused call left the state as it was");
    }

    /// <summary>
    /// An output laid in the gap between q's first two token rows, a view of rows far apart in one buffer, shares no element
    /// with q: it was refused as sharing memory with it (the check compared first and last bytes). It is taken, and gives the
    /// output of separate tensors.
    /// </summary>
    [Test]
    public void AnOutputInTheGapsOfAStridedQIsTaken([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend)
    {
        var device = TestDevices.Of(backend);
        var (q, k, v, g, _) = Inputs();
        const int rowStride = H * K + T * H * V;
        var memory = Numerics.NaNs((T - 1) * rowStride + H * K);
        var dense = Flat(q);
        for (int t = 0; t < T; t++) dense.AsSpan(t * H * K, H * K).CopyTo(memory.AsSpan(t * rowStride));
        var strided = new ReadOnlyTensorSpan<float>(memory, [1, T, H, K], [0, rowStride, K, 1]);
        Engine.Gla.Forward<float>(device, strided, k, v, g, new TensorSpan<float>(memory.AsSpan(H * K, T * H * V), [1, T, H, V], []), default, default);
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g).Output;
        Assert.That(Numerics.RelativeRms(memory[(H * K)..(H * K + T * H * V)], Flat(expected)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void AFinalStateOverlappingTheInitialStateIsRefused()
    {
        var (q, k, v, g, _) = Inputs();
        var memory = new float[H * K * V + 1];
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<float>(Cpu, q, k, v, g, Tensor.Create(new float[T * H * V], [1, T, H, V]),
            new ReadOnlyTensorSpan<float>(memory.AsSpan(0, H * K * V), [1, H, K, V], []), new TensorSpan<float>(memory.AsSpan(1), [1, H, K, V], [])))!;
        Assert.That(e.ParamName, Is.EqualTo("final_state"));
    }

    /// <summary>
    /// A state that shares memory with an input or the output (the CPU kernels wrote one while reading the other: wrong
    /// results, no error) is refused on every backend, naming both tensors.
    /// </summary>
    [Test]
    public void AStateSharingMemoryWithAnInputOrTheOutputIsRefused(
        [Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend,
        [Values("initial_state", "final_state")] string state,
        [Values("q", "g", "output")] string other)
    {
        var device = TestDevices.Of(backend);
        var (q, k, v, g, h0) = Inputs();
        // T·H·K = T·H·V floats: a state [1, H, K, V] fits in the first H·K·V of them. Tensor.Create wraps the array.
        var memory = other switch { "q" => Flat(q), "g" => Flat(g), _ => Numerics.NaNs(T * H * V) };
        var shared = Tensor.Create(memory, [1, T, H, K]);
        if (other == "q") q = shared;
        if (other == "g") g = shared;
        var output = other == "output" ? shared : Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]);
        var final = Tensor.Create(new float[H * K * V], [1, H, K, V]);
        var e = Assert.Throws<ArgumentException>(() =>
        {
            var stateView = new TensorSpan<float>(memory.AsSpan(0, H * K * V), [1, H, K, V], []);
            Engine.Gla.Forward<float>(device, q, k, v, g, output, state == "initial_state" ? stateView : h0, state == "final_state" ? stateView : final);
        })!;
        Assert.That(e.ParamName, Is.EqualTo(state));
        Assert.That(e.Message, Does.Contain($"shares memory with {other}"));
    }

    /// <summary>
    /// k·vᵀ past fp32's range with q = 0: the output stays 0 and the state is infinite (accepted before, where no output reads
    /// the last chunk's state). Refused on every backend and form, by the output's or the state's overflow.
    /// </summary>
    [Test]
    public void AFinalStateThatOverflowsIsRefused([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend,
        [Values(AttentionMode.Chunked, AttentionMode.Recurrent)] AttentionMode mode)
    {
        var q = Tensor.Create(new float[H * K], [1, 1, H, K]);
        var kv = Tensor.Create(Enumerable.Repeat(1e20f, H * K).ToArray(), [1, 1, H, K]);
        var output = Tensor.Create(Numerics.NaNs(H * V), [1, 1, H, V]);
        var final = Tensor.Create(new float[H * K * V], [1, H, K, V]);
        var e = Assert.Throws<ArgumentException>(() =>
            Engine.Gla.Forward<float>(TestDevices.Of(backend), q, kv, kv, default, output, default, final, options: new GlaOptions { Mode = mode }))!;
        Assert.That(e.ParamName, Is.AnyOf("final_state", "output"));
        Assert.That(e.Message, Does.Contain("overflow"));
    }

    /// <summary>
    /// q and k rows of 1e38 under L2 normalization: normalized they are ordinary, but their raw products with the state
    /// overflow fp32. The GPU's recurrent form multiplied the raw rows and refused the call; every backend and form now
    /// normalizes each element first and gives the reference's output.
    /// </summary>
    [Test]
    public void RowsNear3e38UnderL2NormalizationRunOnEveryBackendAndForm([Values(Backend.Cpu, Backend.Gpu)] Backend backend,
        [Values(AttentionMode.Chunked, AttentionMode.Recurrent)] AttentionMode mode)
    {
        const int dim = 16;
        var qk = Tensor.Create(Enumerable.Repeat(1e38f, dim).ToArray(), [1, 1, 1, dim]);
        var v = Tensor.Create(Enumerable.Repeat(1f, dim).ToArray(), [1, 1, 1, dim]);
        var beta = Tensor.Create([0.5f], [1, 1, 1]);
        var g = Tensor.Create([-0.1f], [1, 1, 1]);
        var initial = Tensor.Create(Enumerable.Repeat(1f, dim * dim).ToArray(), [1, 1, dim, dim]);
        var options = new DeltaRuleOptions { QkL2Norm = true, Mode = mode };
        var expected = Engine.DeltaRule.Forward(TestDevices.Reference, qk, qk, v, beta, g, options, initial).Output;
        var actual = Engine.DeltaRule.Forward(TestDevices.Of(backend), qk, qk, v, beta, g, options, initial).Output;
        Assert.That(Numerics.RelativeRms(actual.ToArray(), expected.ToArray()), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>An empty packed sequence's initial state reaches no output; a NaN in it was copied to the final state on the host.</summary>
    [Test]
    public void ANonFiniteInitialStateOfAnEmptySequenceIsRefused([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend)
    {
        var (q, k, v, g, _) = Inputs();
        var initial = Tensor.Create(new float[2 * H * K * V], [2, H, K, V]);
        initial[0, 0, 0, 3] = float.NaN;
        var output = Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]);
        var final = Tensor.Create(new float[2 * H * K * V], [2, H, K, V]);
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<float>(TestDevices.Of(backend), q, k, v, g, output, initial, final, [0, 0, T]))!;
        Assert.That(e.ParamName, Is.EqualTo("initial_state"));
    }

    /// <summary>A session's prefill whose state overflows is refused and leaves the state as it was (before: an infinite state, then every call refused).</summary>
    [Test]
    public void ASessionPrefillWhoseStateOverflowsIsRefusedAndLeavesTheState([Values(Backend.Reference, Backend.Cpu, Backend.Gpu)] Backend backend)
    {
        using var session = new GlaSession(TestDevices.Of(backend), 1, new HeadLayout(H, H, K, V), GateKind.None);
        var (q, k, v, _, _) = Inputs();
        session.Prefill(q, k, v, null, Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]));
        var before = new float[H * K * V];
        session.GetState(new TensorSpan<float>(before, [1, H, K, V], []));
        var zero = Tensor.Create(new float[H * K], [1, 1, H, K]);
        var large = Tensor.Create(Enumerable.Repeat(1e20f, H * K).ToArray(), [1, 1, H, K]);
        var e = Assert.Throws<ArgumentException>(() => session.Prefill(zero, large, large, null, Tensor.Create(Numerics.NaNs(H * V), [1, 1, H, V])))!;
        Assert.That(e.Message, Does.Contain("overflow"));
        var after = new float[H * K * V];
        session.GetState(new TensorSpan<float>(after, [1, H, K, V], []));
        Assert.That(after, Is.EqualTo(before), "the refused call left the state as it was");
        Assert.That(() => session.Prefill(q, k, v, null, Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V])), Throws.Nothing, "the session runs on");
    }

    [Test]
    public void SessionCallsInferTheElementTypeFromTensors()
    {
        var (q, k, v, g, _) = Inputs();
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g);
        using var session = new GlaSession(Cpu, 1, new HeadLayout(H, H, K, V), GateKind.PerKey);
        var output = Tensor.Create(Numerics.NaNs(T * H * V), [1, T, H, V]);
        session.Prefill(q, k, v, g, output);
        Assert.That(Numerics.RelativeRms(Flat(output), Flat(expected.Output)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    /// <summary>Holds the first item of a call until released, so a second call can be made while the first runs.</summary>
    private sealed class GateScheduler : IWorkScheduler
    {
        public readonly ManualResetEventSlim Entered = new(), Release = new();
        public int Workers => 1;

        public void Run(int count, Action<int, int> body)
        {
            Entered.Set();
            Release.Wait(TimeSpan.FromSeconds(30));
            for (int i = 0; i < count; i++) body(i, 0);
        }
    }

    [Test]
    public void ASessionRefusesASecondThreadWhileACallRuns()
    {
        var (q, k, v, g, _) = Inputs();
        var scheduler = new GateScheduler();
        using var session = new GlaSession(Cpu, 1, new HeadLayout(H, H, K, V), GateKind.PerKey, new GlaOptions { Scheduler = scheduler });
        var first = Task.Run(() => session.Prefill(q, k, v, g, Tensor.Create(new float[T * H * V], [1, T, H, V])));
        Assert.That(scheduler.Entered.Wait(TimeSpan.FromSeconds(30)), "the first call started");
        var e = Assert.Throws<InvalidOperationException>(() => session.Prefill(q, k, v, g, Tensor.Create(new float[T * H * V], [1, T, H, V])));
        Assert.That(e!.Message, Does.Contain("one thread at a time"));
        Assert.Throws<InvalidOperationException>(() => session.ResetState());
        scheduler.Release.Set();
        first.Wait();

        // The refused calls touched nothing: the state is the first call's alone.
        var expected = Engine.Gla.Forward(TestDevices.Reference, q, k, v, g);
        var state = Tensor.Create(new float[H * K * V], [1, H, K, V]);
        session.GetState(state);
        Assert.That(Numerics.RelativeRms(Flat(state), Flat(expected.FinalState)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }
}

/// <summary>float16 outputs: a value float16 cannot hold is refused, naming the output and the index, never written as ±Inf.</summary>
[TestFixture]
public sealed class HalfOutputRangeTests
{
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Reference)]
    public void AnOutputBeyondFloat16sRangeIsRefused(Backend backend)
    {
        var device = TestDevices.Of(backend);
        const int t = 4, h = 1, k = 16;
        var x = Enumerable.Repeat((Half)200, t * h * k).ToArray();
        var output = Enumerable.Repeat(Half.NaN, t * h * k).ToArray();
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward<Half>(device,
            new ReadOnlyTensorSpan<Half>(x, [1, t, h, k]), new ReadOnlyTensorSpan<Half>(x, [1, t, h, k]), new ReadOnlyTensorSpan<Half>(x, [1, t, h, k]),
            default, new TensorSpan<Half>(output, [1, t, h, k])))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo("output"));
            Assert.That(e.Message, Does.Contain("outside float16's range").And.Contain("at flat index 0"));
            Assert.That(output, Has.None.Matches<Half>(Half.IsInfinity), "nothing infinite was written");
        });
    }

    /// <summary>
    /// A session's float16 output beyond float16's range is refused after the kernels ran: the state stays as it was (the
    /// session swapped in the new state before the output's range check, so the refused tokens were in it).
    /// </summary>
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Reference)]
    [TestCase(Backend.Gpu)]
    public void ASessionsOutputBeyondFloat16sRangeLeavesTheStateAsItWas(Backend backend)
    {
        var device = TestDevices.Of(backend);
        const int t = 4, h = 1, k = 16;
        var x = Enumerable.Repeat((Half)200, t * h * k).ToArray();
        var output = new Half[t * h * k];
        using var session = new GlaSession(device, 1, new HeadLayout(h, h, k, k), GateKind.None);
        var before = new TestData(3).Normal(h * k * k, 0.1);
        session.SetState(new ReadOnlyTensorSpan<float>(before, [1, h, k, k]));
        foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
        {
            var e = Assert.Throws<ArgumentException>(() =>
            {
                var q = new ReadOnlyTensorSpan<Half>(x, [1, t, h, k]);
                var o = new TensorSpan<Half>(output, [1, t, h, k]);
                if (mode == AttentionMode.Chunked) session.Prefill(q, q, q, default, o);
                else session.Step(q, q, q, default, o);
            })!;
            Assert.That(e.Message, Does.Contain("outside float16's range"), $"{mode}");
            var after = new float[h * k * k];
            session.GetState(new TensorSpan<float>(after, [1, h, k, k]));
            Assert.That(after, Is.EqualTo(before), $"{mode}: the state after the refused call");
        }
    }

    [Test]
    public void TheLargestValuesFloat16HoldsAreWritten()
    {
        // Inputs chosen so the outputs land just under float16's largest finite value: o = S^T q with S = k v^T, one token.
        const int k = 16;
        var q = new Half[k];
        var kk = new Half[k];
        var v = new Half[k];
        q[0] = (Half)1; kk[0] = (Half)1;
        for (int i = 0; i < k; i++) v[i] = (Half)65504;
        var output = Enumerable.Repeat(Half.NaN, k).ToArray();
        Engine.Gla.Forward<Half>(TestDevices.Get(TestBackend.Cpu), new ReadOnlyTensorSpan<Half>(q, [1, 1, 1, k]), new ReadOnlyTensorSpan<Half>(kk, [1, 1, 1, k]),
            new ReadOnlyTensorSpan<Half>(v, [1, 1, 1, k]), default, new TensorSpan<Half>(output, [1, 1, 1, k]), options: new GlaOptions { Scale = 1f });
        Assert.That(output, Has.All.EqualTo((Half)65504));
    }
}

/// <summary>
/// q, k and v are checked as the kernels run (on their output, not as passes over the inputs): a non-finite value is
/// refused naming the tensor and its flat index, finite inputs whose products overflow fp32 are refused naming the
/// output, and a session's state is left as it was.
/// </summary>
[TestFixture]
public sealed class NonFiniteInputTests
{
    private const int T = 40, H = 2, K = 16, V = 16;

    public static IEnumerable<TestCaseData> Cases() =>
        from backend in new[] { Backend.Cpu, Backend.Reference, Backend.Gpu }
        from op in new[] { "gla", "lightning", "delta" }
        from tensor in new[] { "q", "k", "v" }
        from mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent }
        select new TestCaseData(backend, op, tensor, mode).SetName($"non-finite {tensor} refused: {op} {mode} on {backend}");

    private static void Run(EngineDevice device, string op, AttentionMode mode, Tensor<float> q, Tensor<float> k, Tensor<float> v, Tensor<float>? state = null)
    {
        var data = new TestData(9);
        switch (op)
        {
            case "gla":
                Engine.Gla.Forward(device, q, k, v, Tensor.Create(data.LogGates(T * H * K, 0.5), [1, T, H, K]), new GlaOptions { Mode = mode, ChunkSize = 16 }, state);
                break;
            case "lightning":
                Engine.Lightning.Forward(device, q, k, v, new LightningOptions { Mode = mode, BlockSize = 16 }, state);
                break;
            default:
                Engine.DeltaRule.Forward(device, q, k, v, Tensor.Create(data.Uniform(T * H, 0.1, 0.9), [1, T, H]), null, new DeltaRuleOptions { Mode = mode, ChunkSize = 16 }, state);
                break;
        }
    }

    [TestCaseSource(nameof(Cases))]
    public void ANonFiniteInputIsNamedWithItsIndex(Backend backend, string op, string tensor, AttentionMode mode)
    {
        var data = new TestData(4);
        var x = new Dictionary<string, float[]> { ["q"] = data.Normal(T * H * K), ["k"] = data.UnitRows(T * H, K), ["v"] = data.Normal(T * H * V) };
        int index = 23 * H * K + 5;
        x[tensor][index] = float.NaN;
        var device = TestDevices.Of(backend);
        var e = Assert.Throws<ArgumentException>(() => Run(device, op, mode,
            Tensor.Create(x["q"], [1, T, H, K]), Tensor.Create(x["k"], [1, T, H, K]), Tensor.Create(x["v"], [1, T, H, V])))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo(tensor));
            Assert.That(e.Message, Does.Contain($"got NaN at flat index {index}"));
        });
    }

    /// <summary>A long call's output is checked a slice per worker: a NaN in the first or the last slice is found and named.</summary>
    [TestCase(3)]
    [TestCase(1000)]
    public void ANonFiniteValueInAnySliceOfALongCallIsNamed(int token)
    {
        const int t = 1024, h = 4, k = 16, v = 64;
        var data = new TestData(6);
        var vs = data.Normal(t * h * v);
        int index = token * h * v + 7;
        vs[index] = float.PositiveInfinity;
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 4 });
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(device, Tensor.Create(data.Normal(t * h * k), [1, t, h, k]),
            Tensor.Create(data.UnitRows(t * h, k), [1, t, h, k]), Tensor.Create(vs, [1, t, h, v]), Tensor.Create(data.LogGates(t * h * k, 0.5), [1, t, h, k])))!;
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo("v"));
            Assert.That(e.Message, Does.Contain($"at flat index {index}"));
        });
    }

    [TestCase(1, "cpu: 1 thread, ")]
    [TestCase(3, "cpu: 3 threads, ")]
    public void TheCpuDeviceIsDescribedByItsThreads(int threads, string start)
    {
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = threads });
        Assert.That(device.Description, Does.StartWith(start));
    }

    /// <summary>An invalid log gate anywhere in a long call (its gates are checked a slice per worker) is named, and the state is left as it was.</summary>
    [TestCase(3, 0.5f)]
    [TestCase(1500, float.NaN)]
    [TestCase(2047, float.NegativeInfinity)]
    public void AnInvalidLogGateInAnySliceOfALongCallIsNamed(int token, float gate)
    {
        const int t = 2048, h = 4, k = 32, v = 16;
        var data = new TestData(8);
        var gs = data.LogGates(t * h * k, 0.5);
        int index = token * h * k + h * k - 1;
        gs[index] = gate;
        var state = Tensor.Create(Enumerable.Repeat(0.25f, h * k * v).ToArray(), [1, h, k, v]);
        using var device = EngineDevice.Create(Backend.Cpu, new EngineDeviceOptions { CpuThreads = 4 });
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(device, Tensor.Create(data.Normal(t * h * k), [1, t, h, k]),
            Tensor.Create(data.UnitRows(t * h, k), [1, t, h, k]), Tensor.Create(data.Normal(t * h * v), [1, t, h, v]), Tensor.Create(gs, [1, t, h, k]),
            null, state))!;
        var after = new float[h * k * v];
        state.FlattenTo(after);
        Assert.Multiple(() =>
        {
            Assert.That(e.ParamName, Is.EqualTo("g"));
            Assert.That(e.Message, Does.Contain($"at flat index {index}"));
            Assert.That(after, Is.All.EqualTo(0.25f), "refused before a kernel ran: the state as it was");
        });
    }

    [Test]
    public void FiniteInputsWhoseProductsOverflowAreRefusedNamingTheOutput()
    {
        var big = Enumerable.Repeat(1e30f, T * H * K).ToArray();
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu),
            Tensor.Create(big, [1, T, H, K]), Tensor.Create(big, [1, T, H, K]), Tensor.Create(big, [1, T, H, V]), null))!;
        Assert.That(e.ParamName, Is.EqualTo("output"));
        Assert.That(e.Message, Does.Contain("overflow"));
    }

    public static IEnumerable<TestCaseData> RefusedSessionCalls() =>
        from backend in new[] { TestBackend.Cpu, TestBackend.GpuOnCpuAccelerator }
        from mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent }
        from overflow in new[] { false, true }
        select new TestCaseData(backend, mode, overflow).SetName($"a refused session call leaves the state: {(overflow ? "output overflow" : "infinite q")}, {mode} on {backend}");

    /// <summary>Refused before the kernels run (an infinite q) or after (finite inputs whose output overflows): the session's state as it was, and it goes on.</summary>
    [TestCaseSource(nameof(RefusedSessionCalls))]
    public void ARefusedSessionCallLeavesTheStateAsItWas(TestBackend backend, AttentionMode mode, bool overflow)
    {
        var data = new TestData(5);
        var (q, k, v, g) = (data.Normal(T * H * K), data.Normal(T * H * K), data.Normal(T * H * V), data.LogGates(T * H * K, 0.5));
        using var session = new GlaSession(TestDevices.Get(backend), 1, new HeadLayout(H, H, K, V), GateKind.PerKey);
        var output = new float[T * H * V];
        void Call(float[] qs, float[] vs)
        {
            var (qt, kt, vt, gt) = (Tensor.Create(qs, [1, T, H, K]), Tensor.Create(k, [1, T, H, K]), Tensor.Create(vs, [1, T, H, V]), Tensor.Create(g, [1, T, H, K]));
            var ot = Tensor.Create(output, [1, T, H, V]);
            if (mode == AttentionMode.Chunked) session.Prefill(qt, kt, vt, gt, ot);
            else session.Step(qt, kt, vt, gt, ot);
        }
        float[] State()
        {
            var state = new float[H * K * V];
            session.GetState(new TensorSpan<float>(state, [1, H, K, V]));
            return state;
        }
        Call(q, v);
        var before = State();
        var (badQ, badV) = ((float[])q.Clone(), (float[])v.Clone());
        if (overflow)
        {
            Array.Fill(badQ, 1e20f);
            Array.Fill(badV, 1e20f);
        }
        else badQ[^1] = float.PositiveInfinity;
        var e = Assert.Throws<ArgumentException>(() => Call(badQ, badV))!;
        Assert.That(e.ParamName, Is.EqualTo(overflow ? "output" : "q"));
        Assert.That(State(), Is.EqualTo(before), "the refused call left the state as it was");
        Assert.DoesNotThrow(() => Call(q, v), "the session goes on");
    }
}

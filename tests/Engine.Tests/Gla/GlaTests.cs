using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Gla;

/// <summary>GLA behaviour beyond the shape grid: sessions, state carry, long sequences, bad input.</summary>
[TestFixture]
public sealed class GlaTests
{
    private const int B = 2, T = 100, H = 2, K = 32, V = 24;

    private static (float[] q, float[] k, float[] v, float[] g) Inputs(int b, int t, int h, int kd, int vd, GateKind gate, double gateScale = 1.0, int seed = 7)
    {
        var data = new TestData(seed);
        long rows = (long)b * t * h;
        return (data.Normal(rows * kd), data.UnitRows(rows, kd), data.Normal(rows * vd),
            gate == GateKind.PerKey ? data.LogGates(rows * kd, gateScale) : gate == GateKind.PerHead ? data.LogGates(rows, gateScale) : []);
    }

    private static double[] Reference(int b, int t, int h, int kd, int vd, GateKind gate, float[] q, float[] k, float[] v, float[] g, double[] state)
    {
        var o = new double[(long)b * t * h * vd];
        GlaReference.Forward(new GlaConfig(new HeadLayout(h, h, kd, vd), gate, 1f / MathF.Sqrt(kd), 64), SequenceLayout.Dense(b, t), q, k, v, g, o, state);
        return o;
    }

    /// <summary>Rows [t0, t1) of a [B, T, H, D] array.</summary>
    private static float[] Slice(float[] a, int b, int t, int t0, int t1, int perToken)
    {
        var r = new float[(long)b * (t1 - t0) * perToken];
        for (int bi = 0; bi < b; bi++)
            Array.Copy(a, ((long)bi * t + t0) * perToken, r, (long)bi * (t1 - t0) * perToken, (long)(t1 - t0) * perToken);
        return r;
    }

    [TestCase(TestBackend.Cpu, GateKind.PerKey)]
    [TestCase(TestBackend.Cpu, GateKind.PerHead)]
    [TestCase(TestBackend.Cpu, GateKind.None)]
    public void SessionPrefillThenDecodeMatchesWholeSequence(TestBackend backend, GateKind gate)
    {
        var (q, k, v, g) = Inputs(B, T, H, K, V, gate);
        var expected = Reference(B, T, H, K, V, gate, q, k, v, g, new double[B * H * K * V]);
        var device = TestDevices.Get(backend);
        using var session = new GlaSession(device, B, new HeadLayout(H, H, K, V), gate);
        int prompt = 37;
        var output = new float[(long)B * T * H * V];
        int gPer = gate == GateKind.PerKey ? H * K : gate == GateKind.PerHead ? H : 0;

        void Run(int t0, int t1, bool prefill)
        {
            int n = t1 - t0;
            var o = Numerics.NaNs((long)B * n * H * V);
            var qs = new ReadOnlyTensorSpan<float>(Slice(q, B, T, t0, t1, H * K), [B, n, H, K]);
            var ks = new ReadOnlyTensorSpan<float>(Slice(k, B, T, t0, t1, H * K), [B, n, H, K]);
            var vs = new ReadOnlyTensorSpan<float>(Slice(v, B, T, t0, t1, H * V), [B, n, H, V]);
            var gs = gate == GateKind.None ? default
                : new ReadOnlyTensorSpan<float>(Slice(g, B, T, t0, t1, gPer), gate == GateKind.PerKey ? [B, n, H, K] : [B, n, H]);
            if (prefill) session.Prefill(qs, ks, vs, gs, new TensorSpan<float>(o, [B, n, H, V]));
            else session.Step(qs, ks, vs, gs, new TensorSpan<float>(o, [B, n, H, V]));
            for (int bi = 0; bi < B; bi++)
                Array.Copy(o, (long)bi * n * H * V, output, ((long)bi * T + t0) * H * V, (long)n * H * V);
        }

        Run(0, prompt, prefill: true);
        for (int t = prompt; t < T; t++) Run(t, t + 1, prefill: false);
        Assert.That(Numerics.RelativeRms(output, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void TwoHalvesWithCarriedStateEqualOneCall()
    {
        var (q, k, v, g) = Inputs(B, T, H, K, V, GateKind.PerKey);
        var refState = new double[B * H * K * V];
        var expected = Reference(B, T, H, K, V, GateKind.PerKey, q, k, v, g, refState);
        var device = TestDevices.Get(TestBackend.Cpu);
        var mid = Numerics.NaNs(B * H * K * V);
        var last = Numerics.NaNs(B * H * K * V);
        var output = new float[(long)B * T * H * V];
        int split = 45;
        foreach (var (t0, t1, init, fin) in new[] { (0, split, (float[]?)null, mid), (split, T, mid, last) })
        {
            int n = t1 - t0;
            var o = Numerics.NaNs((long)B * n * H * V);
            Engine.Gla.Forward<float>(device,
                new ReadOnlyTensorSpan<float>(Slice(q, B, T, t0, t1, H * K), [B, n, H, K]),
                new ReadOnlyTensorSpan<float>(Slice(k, B, T, t0, t1, H * K), [B, n, H, K]),
                new ReadOnlyTensorSpan<float>(Slice(v, B, T, t0, t1, H * V), [B, n, H, V]),
                new ReadOnlyTensorSpan<float>(Slice(g, B, T, t0, t1, H * K), [B, n, H, K]),
                new TensorSpan<float>(o, [B, n, H, V]),
                init is null ? default : new ReadOnlyTensorSpan<float>(init, [B, H, K, V]),
                new TensorSpan<float>(fin, [B, H, K, V]));
            for (int bi = 0; bi < B; bi++)
                Array.Copy(o, (long)bi * n * H * V, output, ((long)bi * T + t0) * H * V, (long)n * H * V);
        }
        Assert.That(Numerics.RelativeRms(output, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        Assert.That(Numerics.RelativeRms(last, refState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [TestCase(GateKind.PerKey)]
    [TestCase(GateKind.PerHead)]
    public void StrongGatesOnALongSequenceStayFiniteAndMatch(GateKind gate)
    {
        const int t = 16384, h = 1, kd = 32, vd = 32;
        var (q, k, v, g) = Inputs(1, t, h, kd, vd, gate, gateScale: 10.0, seed: 3);
        var state = new double[h * kd * vd];
        var expected = Reference(1, t, h, kd, vd, gate, q, k, v, g, state);
        var result = Engine.Gla.Forward(TestDevices.Get(TestBackend.Cpu), Tensor.Create(q, [1, t, h, kd]), Tensor.Create(k, [1, t, h, kd]),
            Tensor.Create(v, [1, t, h, vd]), Tensor.Create(g, gate == GateKind.PerKey ? [1, t, h, kd] : [1, t, h]));
        var output = new float[result.Output.FlattenedLength];
        result.Output.FlattenTo(output);
        Assert.That(Numerics.AllFinite(output), Is.True);
        Assert.That(Numerics.RelativeRms(output, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void ConcurrentCallsOnOneDeviceEachGetTheirOwnScratch()
    {
        var (q, k, v, g) = Inputs(1, 300, H, K, V, GateKind.PerKey);
        var expected = Reference(1, 300, H, K, V, GateKind.PerKey, q, k, v, g, new double[H * K * V]);
        var device = TestDevices.Get(TestBackend.Cpu);
        var errors = new double[8];
        Parallel.For(0, errors.Length, i =>
        {
            var r = Engine.Gla.Forward(device, Tensor.Create(q, [1, 300, H, K]), Tensor.Create(k, [1, 300, H, K]),
                Tensor.Create(v, [1, 300, H, V]), Tensor.Create(g, [1, 300, H, K]));
            var o = new float[r.Output.FlattenedLength];
            r.Output.FlattenTo(o);
            errors[i] = Numerics.RelativeRms(o, expected);
        });
        Assert.That(errors, Has.All.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    private static void Call(nint[] qShape, nint[] kShape, nint[] vShape, nint[]? gShape, nint[] oShape,
        nint[]? h0Shape = null, int[]? cu = null, float[]? gValues = null, GlaOptions? options = null)
    {
        static float[] Zeros(nint[] s) => new float[s.Aggregate(1L, (a, d) => a * d)];
        Engine.Gla.Forward<float>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<float>(Zeros(qShape), qShape), new ReadOnlyTensorSpan<float>(Zeros(kShape), kShape),
            new ReadOnlyTensorSpan<float>(Zeros(vShape), vShape),
            gShape is null ? default : new ReadOnlyTensorSpan<float>(gValues ?? Zeros(gShape), gShape),
            new TensorSpan<float>(Zeros(oShape), oShape),
            h0Shape is null ? default : new ReadOnlyTensorSpan<float>(Zeros(h0Shape), h0Shape), default, cu, options);
    }

    private static void AssertRejected(string tensor, string fragment, TestDelegate call)
    {
        var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), call) as ArgumentException;
        Assert.That(e!.ParamName, Is.EqualTo(tensor));
        Assert.That(e.Message, Does.Contain(fragment));
    }

    [Test]
    public void RejectsBadInputNamingTheTensor()
    {
        nint[] q = [2, 10, 4, 8], k = [2, 10, 2, 8], v = [2, 10, 2, 6], o = [2, 10, 4, 6], gk = [2, 10, 2, 8];
        AssertRejected("q", "expected rank 4", () => Call([2, 10, 32], k, v, gk, o));
        AssertRejected("k", "matching q", () => Call(q, [2, 11, 2, 8], v, gk, o));
        AssertRejected("k", "matching q", () => Call(q, [2, 10, 2, 9], v, gk, o));
        AssertRejected("k", "must divide", () => Call(q, [2, 10, 3, 8], [2, 10, 3, 6], [2, 10, 3, 8], o));
        AssertRejected("v", "must equal the key heads of k (2)", () => Call(q, k, [2, 10, 4, 6], gk, o));
        AssertRejected("output", "expected shape [2, 10, 4, 6]", () => Call(q, k, v, gk, [2, 10, 4, 5]));
        AssertRejected("g", "expected shape [2, 10, 2, 8]", () => Call(q, k, v, [2, 10, 2, 7], o));
        AssertRejected("g", "expected rank 4", () => Call(q, k, v, [2, 10], o));
        AssertRejected("initial_state", "expected shape [2, 2, 8, 6]", () => Call(q, k, v, gk, o, h0Shape: [2, 4, 8, 6]));
        AssertRejected("g", "<= 0, got 0.5", () => Call(q, k, v, gk, o, gValues: Enumerable.Repeat(0.5f, 320).ToArray()));
        AssertRejected("g", "got NaN", () => Call(q, k, v, gk, o, gValues: Enumerable.Repeat(float.NaN, 320).ToArray()));
        AssertRejected("g", "got -Infinity", () => Call(q, k, v, gk, o, gValues: Enumerable.Repeat(float.NegativeInfinity, 320).ToArray()));
        AssertRejected("options", "chunk size", () => Call(q, k, v, gk, o, options: new GlaOptions { ChunkSize = 48 }));
        AssertRejected("options", "scale", () => Call(q, k, v, gk, o, options: new GlaOptions { Scale = float.NaN }));
    }

    [Test]
    public void RejectsBadPackedOffsets()
    {
        nint[] q = [1, 10, 1, 8], v = [1, 10, 1, 8];
        AssertRejected("cu_seqlens", "batch B = 1", () => Call([2, 10, 1, 8], [2, 10, 1, 8], [2, 10, 1, 8], null, [2, 10, 1, 8], cu: [0, 5, 10]));
        AssertRejected("cu_seqlens", "must not decrease", () => Call(q, q, v, null, v, cu: [0, 6, 5, 10]));
        AssertRejected("cu_seqlens", "must end at the packed token count 10", () => Call(q, q, v, null, v, cu: [0, 5, 9]));
        AssertRejected("cu_seqlens", "[0] must be 0", () => Call(q, q, v, null, v, cu: [1, 5, 10]));
        AssertRejected("cu_seqlens", "at least 2 offsets", () => Call(q, q, v, null, v, cu: [10]));
        AssertRejected("initial_state", "expected shape [2, 1, 8, 8]", () => Call(q, q, v, null, v, h0Shape: [1, 1, 8, 8], cu: [0, 5, 10]));
    }

    [Test]
    public void SessionRejectsCallsThatDoNotMatchIt()
    {
        using var session = new GlaSession(TestDevices.Get(TestBackend.Cpu), 2, new HeadLayout(2, 2, 8, 8), GateKind.PerHead);
        var x = new float[2 * 1 * 2 * 8];
        var g = new float[2 * 1 * 2];
        AssertRejected("g", "session was made for gate PerHead", () => session.Step(
            new ReadOnlyTensorSpan<float>(x, [2, 1, 2, 8]), new ReadOnlyTensorSpan<float>(x, [2, 1, 2, 8]), new ReadOnlyTensorSpan<float>(x, [2, 1, 2, 8]),
            default, new TensorSpan<float>(new float[32], [2, 1, 2, 8])));
        AssertRejected("q", "holds 2 sequences", () => session.Step(
            new ReadOnlyTensorSpan<float>(x, [1, 2, 2, 8]), new ReadOnlyTensorSpan<float>(x, [1, 2, 2, 8]), new ReadOnlyTensorSpan<float>(x, [1, 2, 2, 8]),
            new ReadOnlyTensorSpan<float>(g, [1, 2, 2]), new TensorSpan<float>(new float[32], [1, 2, 2, 8])));
        AssertRejected("state", "expected shape [2, 2, 8, 8]", () => session.SetState(new ReadOnlyTensorSpan<float>(new float[64], [1, 2, 4, 8])));
    }

    [Test]
    public void RejectsUnsupportedElementTypes()
    {
        var d = new double[8];
        Assert.Throws<NotSupportedException>(() => Engine.Gla.Forward<double>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<double>(d, [1, 1, 1, 8]), new ReadOnlyTensorSpan<double>(d, [1, 1, 1, 8]),
            new ReadOnlyTensorSpan<double>(d, [1, 1, 1, 8]), default, new TensorSpan<double>(new double[8], [1, 1, 1, 8])));
    }
}

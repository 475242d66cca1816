using Engine.IO;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Tests.Cli;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

/// <summary>engine op / bench delta and gated-delta, run in-process, against the float64 reference.</summary>
[TestFixture]
public sealed class DeltaRuleCliTests : CliFixture
{
    /// <summary>Query heads 4 over 2 key/value heads; or (the last case) 2 query/key heads and 4 value heads.</summary>
    [TestCase("delta", GateKind.None, "fp32", 4, 2, 2)]
    [TestCase("gated-delta", GateKind.PerHead, "fp32", 4, 2, 2)]
    [TestCase("gated-delta", GateKind.PerHead, "fp16", 4, 2, 2)]
    [TestCase("gated-delta", GateKind.PerKey, "fp32", 4, 2, 2)]
    [TestCase("gated-delta", GateKind.PerHead, "fp32", 2, 2, 4)]
    public void OpMatchesTheReference(string op, GateKind gate, string precision, int hq, int hk, int hv)
    {
        const int t = 50, k = 16, v = 8;
        int ho = Math.Max(hq, hv);
        bool gated = gate != GateKind.None, half = precision == "fp16";
        int gateWidth = gate == GateKind.PerKey ? hv * k : hv;
        var data = new TestData(23);
        var q = data.Normal(t * hq * k);
        var kk = data.Normal(t * hk * k);
        var vv = data.Normal(t * hv * v);
        var beta = data.Uniform(t * hv, 0.05, 0.95);
        var g = gated ? data.LogGates(t * gateWidth, 1.0) : [];
        var h0 = data.Normal(2 * hv * k * v, 0.3);
        int[] cu = [0, 20, 50];
        if (half)
        {
            q = TestData.RoundToHalf(q); kk = TestData.RoundToHalf(kk); vv = TestData.RoundToHalf(vv);
            beta = TestData.RoundToHalf(beta); g = TestData.RoundToHalf(g);
        }
        NpyArray Input(float[] a, nint[] s) => half ? NpyArray.From(TestData.ToHalf(a), s) : NpyArray.From(a, s);
        var args = new List<string>
        {
            "op", op,
            "--q", Save("q.npy", Input(q, [1, t, hq, k])), "--k", Save("k.npy", Input(kk, [1, t, hk, k])),
            "--v", Save("v.npy", Input(vv, [1, t, hv, v])), "--beta", Save("beta.npy", Input(beta, [1, t, hv])),
            "--h0", Save("h0.npy", NpyArray.From(h0, [2, hv, k, v])), "--cu-seqlens", Save("cu.npy", NpyArray.From(cu, [3])),
            "--chunk", "16", "--qk-l2norm", "--o", PathOf("o.npy"), "--ht", PathOf("ht.npy"),
        };
        if (gated) args.AddRange(["--g", Save("g.npy", Input(g, gate == GateKind.PerKey ? [1, t, hv, k] : [1, t, hv]))]);
        var (code, _, stderr) = Engine([.. args]);
        Assert.That(code, Is.Zero, stderr);

        var expectedOut = new double[t * ho * v];
        var expectedState = TestData.ToDouble(h0);
        DeltaRuleReference.Forward(new DeltaRuleConfig(new HeadLayout(hq, hk, hv, k, v), gate, 1f / MathF.Sqrt(k), 16, qkL2Norm: true),
            SequenceLayout.Packed(cu, t), q, kk, vv, beta, g, expectedOut, expectedState);
        var o = Npy.Read(PathOf("o.npy"));
        double tolerance = half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        Assert.Multiple(() =>
        {
            Assert.That(o.Type, Is.EqualTo(half ? NpyType.Float16 : NpyType.Float32));
            Assert.That(o.Shape, Is.EqualTo(new nint[] { 1, t, ho, v }));
            Assert.That(Numerics.RelativeRms(o.ToFloat32(), expectedOut), Is.LessThanOrEqualTo(tolerance));
            Assert.That(Numerics.RelativeRms(Npy.Read(PathOf("ht.npy")).ToFloat32(), expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        });
    }

    [Test]
    public void GatedDeltaWithoutGIsAUsageError()
    {
        var x = Save("x.npy", NpyArray.From(new float[1 * 3 * 1 * 4], [1, 3, 1, 4]));
        var b = Save("b.npy", NpyArray.From(new float[3], [1, 3, 1]));
        AssertOneLineError(Engine("op", "gated-delta", "--q", x, "--k", x, "--v", x, "--beta", b, "--o", PathOf("o.npy")), 2, "--g is required");
        AssertOneLineError(Engine("op", "delta", "--q", x, "--k", x, "--v", x, "--beta", b, "--g", b, "--o", PathOf("o.npy")), 2, "unknown option --g");
    }

    [Test]
    public void BenchTakesAPerKeyGateAndRefusesTheOthers()
    {
        var (code, stdout, stderr) = Engine("bench", "gated-delta", "--gate", "per-key", "--T", "40", "--H", "1", "--K", "16", "--V", "16",
            "--chunk", "16", "--repeats", "1", "--mode", "both", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.EnumerateArray().Select(r => r.GetProperty("variant").GetString()),
            Is.EqualTo(new[] { "per-key C16 chunked", "per-key C16 recurrent" }));
        AssertOneLineError(Engine("bench", "gated-delta", "--gate", "constant", "--T", "16"), 2, "--gate must be one of per-head|per-key, got 'constant'");
        AssertOneLineError(Engine("bench", "gated-delta", "--gate", "none", "--T", "16"), 2, "--gate must be one of per-head|per-key, got 'none'");
        AssertOneLineError(Engine("bench", "delta", "--gate", "per-key", "--T", "16"), 2, "unknown option --gate");
    }

    [Test]
    public void NaNBetaIsOneLineOnStderr()
    {
        var x = Save("x.npy", NpyArray.From(new float[1 * 3 * 1 * 4], [1, 3, 1, 4]));
        var b = Save("b.npy", NpyArray.From(new[] { 0.5f, float.NaN, 0.5f }, [1, 3, 1]));
        AssertOneLineError(Engine("op", "delta", "--q", x, "--k", x, "--v", x, "--beta", b, "--o", PathOf("o.npy")), 1,
            $"engine: error: --beta ({b}): values must be finite, got NaN");
    }

    [Test]
    public void BenchPrintsJsonWithTheModelFlopFormula()
    {
        var (code, stdout, stderr) = Engine("bench", "gated-delta", "--T", "64", "--H", "1", "--K", "16", "--V", "16",
            "--chunk", "32", "--repeats", "1", "--mode", "both", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(2));
        // Two chunks of C = 32, K = V = 16, one head: 2C²K + C³/3 + 2C²(K+V) + 4CKV + 2C²K + 2C²V + 2CKV per chunk.
        const double c = 32, d = 16;
        double expected = 2 * (2 * c * c * d + c * c * c / 3 + 2 * c * c * 2 * d + 4 * c * d * d + 2 * c * c * d + 2 * c * c * d + 2 * c * d * d);
        foreach (var row in doc.RootElement.EnumerateArray())
        {
            double flops = row.GetProperty("model_gflops").GetDouble() * row.GetProperty("milliseconds").GetDouble() / 1e3 * 1e9;
            Assert.That(flops, Is.EqualTo(expected).Within(1e-6).Percent);
        }
    }
}

using Engine.IO;
using Engine.Kernels.Lssl;
using Engine.Tests.Cli;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Lssl;

/// <summary>engine lssl-init, op lssl and bench lssl, run in-process, against the float64 reference.</summary>
[TestFixture]
public sealed class LsslCliTests : CliFixture
{
    [Test]
    public void InitWritesTheHippoParameters()
    {
        var (code, stdout, stderr) = Engine("lssl-init", "--N", "6", "--H", "3", "--kind", "legt", "--seed", "4", "--out-dir", Directory);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("legt"));
        var a = Npy.Read(PathOf("A.npy"));
        var (legT, legTB) = LsslInit.HippoLegT(6);
        Assert.Multiple(() =>
        {
            Assert.That(a.Shape, Is.EqualTo(new nint[] { 6, 6 }));
            Assert.That(a.ToFloat32(), Is.EqualTo(legT.Select(x => (float)x).ToArray()));
            Assert.That(Npy.Read(PathOf("B.npy")).ToFloat32(), Is.EqualTo(legTB.Select(x => (float)x).ToArray()));
            Assert.That(Npy.Read(PathOf("C.npy")).Shape, Is.EqualTo(new nint[] { 3, 6 }));
            Assert.That(Npy.Read(PathOf("D.npy")).Shape, Is.EqualTo(new nint[] { 3 }));
            var dt = Npy.Read(PathOf("dt.npy")).ToFloat32();
            Assert.That(dt, Is.EqualTo(LsslInit.LogUniformDt(3, 4).Select(x => (float)x).ToArray()));
        });
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--kind", "diagonal", "--out-dir", Directory).code, Is.Zero);
        Assert.That(Npy.Read(PathOf("A.npy")).ToFloat32(), Is.EqualTo(new float[] { -1, -2, -3, -4, -1, -2, -3, -4 }));
    }

    [TestCase("recurrent", "fp32")]
    [TestCase("scan", "fp32")]
    [TestCase("conv", "fp32")]
    [TestCase("auto", "fp16")]
    public void OpMatchesTheReference(string mode, string precision)
    {
        const int b = 2, l = 70, h = 3, n = 8;
        bool half = precision == "fp16";
        Assert.That(Engine("lssl-init", "--N", $"{n}", "--H", $"{h}", "--seed", "9", "--out-dir", Directory).code, Is.Zero);
        var data = new TestData(31);
        var u = data.Normal(b * l * h);
        if (half) u = TestData.RoundToHalf(u);
        var x0 = data.Normal(b * h * n, 0.3);
        Npy.Write(PathOf("u.npy"), half ? NpyArray.From(TestData.ToHalf(u), [b, l, h]) : NpyArray.From(u, [b, l, h]));
        Npy.Write(PathOf("x0.npy"), NpyArray.From(x0, [b, h, n]));
        var (code, stdout, stderr) = Engine("op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"),
            "--C", PathOf("C.npy"), "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--x0", PathOf("x0.npy"),
            "--method", "zoh", "--mode", mode, "--y", PathOf("y.npy"), "--xt", PathOf("xt.npy"));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain(mode == "auto" ? "mode: scan" : $"mode: {mode}"));

        var p = new LsslProblem(h, n, LsslStateMatrix.DenseShared, Npy.Read(PathOf("A.npy")).ToFloat32(), Npy.Read(PathOf("B.npy")).ToFloat32(), true,
            Npy.Read(PathOf("C.npy")).ToFloat32(), Npy.Read(PathOf("D.npy")).ToFloat32(), Npy.Read(PathOf("dt.npy")).ToFloat32());
        using var system = p.System(LsslDiscretization.ZeroOrderHold, 16);
        var expectedY = new double[b * l * h];
        var expectedState = TestData.ToDouble(x0);
        LsslReference.Forward(system, b, l, u, expectedY, expectedState);
        var y = Npy.Read(PathOf("y.npy"));
        Assert.Multiple(() =>
        {
            Assert.That(y.Type, Is.EqualTo(half ? NpyType.Float16 : NpyType.Float32));
            Assert.That(y.Shape, Is.EqualTo(new nint[] { b, l, h }));
            Assert.That(Numerics.RelativeRms(y.ToFloat32(), expectedY), Is.LessThanOrEqualTo(half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance));
            Assert.That(Numerics.RelativeRms(Npy.Read(PathOf("xt.npy")).ToFloat32(), expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        });
    }

    [TestCase(new[] { "--method", "gbt", "--alpha", "2" }, "--alpha must lie in [0, 1]")]
    [TestCase(new[] { "--method", "zoh", "--alpha", "0.5" }, "--alpha goes with --method gbt")]
    [TestCase(new[] { "--mode", "fft" }, "--mode must be one of auto|recurrent|scan|conv")]
    public void BadOptionsAreUsageErrors(string[] extra, string message)
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[10 * 2], [1, 10, 2]));
        AssertOneLineError(Engine(["op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"),
            "--C", PathOf("C.npy"), "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--y", PathOf("y.npy"), .. extra]), 2, message);
    }

    [Test]
    public void BadTensorsAreOneLineErrors()
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[10 * 3], [1, 10, 3]));
        Npy.Write(PathOf("bad_dt.npy"), NpyArray.From(new float[] { 0.01f, -1f }, [2]));
        AssertOneLineError(Engine("op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"),
            "--C", PathOf("C.npy"), "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--y", PathOf("y.npy")), 1,
            $"engine: error: --u ({PathOf("u.npy")}): expected shape [*, *, 2]");
        AssertOneLineError(Engine("op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"),
            "--C", PathOf("C.npy"), "--D", PathOf("D.npy"), "--dt", PathOf("bad_dt.npy"), "--y", PathOf("y.npy")), 1,
            $"engine: error: --dt ({PathOf("bad_dt.npy")}): steps must be finite and > 0, got -1 for channel 1");
    }

    /// <summary>An A whose discretization grows without bound is refused when the layer is built, naming --A and the channel.</summary>
    [Test]
    public void AnUnstableStateMatrixIsAOneLineError()
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--kind", "diagonal", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[1 * 10 * 2], [1, 10, 2]));
        Npy.Write(PathOf("unstable_A.npy"), NpyArray.From(new float[] { -1, -2, -3, -4, -1, -2, 0.5f, -4 }, [2, 4]));
        AssertOneLineError(Engine("op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("unstable_A.npy"), "--B", PathOf("B.npy"),
            "--C", PathOf("C.npy"), "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--y", PathOf("y.npy")), 1,
            $"engine: error: --A ({PathOf("unstable_A.npy")}): the gbt(alpha=0.5) discretization of channel 1");
        Assert.That(File.Exists(PathOf("y.npy")), Is.False);
    }

    [TestCase("--u")]
    [TestCase("--A")]
    [TestCase("--dt")]
    [TestCase("--x0")]
    public void AMissingInputFileNamesItsOptionAndThePathAsGiven(string option)
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[1 * 8 * 2], [1, 8, 2]));
        var files = new[] { "--u", "--A", "--B", "--C", "--D", "--dt" }.ToDictionary(o => o, o => PathOf(o[2..] + ".npy"));
        files[option] = "nope.npy";
        AssertOneLineError(Engine(["op", "lssl", .. files.SelectMany(f => new[] { f.Key, f.Value }), "--y", PathOf("y.npy")]), 1,
            $"engine: error: {option}: file not found: nope.npy");
    }

    /// <summary>A [N, N] with H = N: the error names --a-form, not the library's LsslOptions.StateMatrix; with it the op runs.</summary>
    [Test]
    public void AnAmbiguousStateMatrixAsksForTheFormOption()
    {
        Assert.That(Engine("lssl-init", "--N", "8", "--H", "8", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[1 * 4 * 8], [1, 4, 8]));
        string[] op = ["op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"), "--C", PathOf("C.npy"),
            "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--y", PathOf("y.npy")];
        var run = Engine(op);
        AssertOneLineError(run, 1, $"engine: error: --A ({PathOf("A.npy")}): shape [8, 8] is both [N, N] (shared) and [H, N] (diagonal) as H = N = 8: " +
            "give --a-form dense-shared or --a-form diagonal");
        Assert.That(run.stderr, Does.Not.Contain("LsslOptions"));
        var (code, stdout, stderr) = Engine([.. op, "--a-form", "dense-shared"]);
        Assert.That(code, Is.Zero, stderr);
    }

    [Test]
    public void BenchReportsEveryMode()
    {
        var (code, stdout, stderr) = Engine("bench", "lssl", "--T", "64", "--H", "4", "--N", "8", "--mode", "all", "--repeats", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        foreach (var mode in new[] { "legs recurrent", "legs scan", "legs conv" }) Assert.That(stdout, Does.Contain(mode));
        Assert.That(stdout, Does.Contain("\"model_gflops\""));
    }

    [TestCase(new string[0], "bilinear")]
    [TestCase(new[] { "--alpha", "0.3" }, "gbt(alpha=0.3)")]
    [TestCase(new[] { "--method", "gbt", "--alpha", "0.5" }, "bilinear")]
    [TestCase(new[] { "--method", "zoh" }, "zoh")]
    public void TheDiscretizationIsPrintedAsTheOptionsNameIt(string[] method, string printed)
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[1 * 8 * 2], [1, 8, 2]));
        var (code, stdout, stderr) = Engine(["op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"), "--C", PathOf("C.npy"),
            "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--mode", "recurrent", "--y", PathOf("y.npy"), .. method]);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout.ReplaceLineEndings("\n"), Does.Contain($"mode: recurrent ({printed})\n"));
    }

    /// <summary>The chunk length Q is printed for the scan, the one mode with chunks.</summary>
    [TestCase("recurrent", "mode: recurrent (bilinear)\n")]
    [TestCase("conv", "mode: conv (bilinear)\n")]
    [TestCase("scan", "mode: scan (bilinear, Q = 16)\n")]
    public void TheChunkLengthIsPrintedForTheScanOnly(string mode, string printed)
    {
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Npy.Write(PathOf("u.npy"), NpyArray.From(new float[1 * 8 * 2], [1, 8, 2]));
        var (code, stdout, stderr) = Engine("op", "lssl", "--u", PathOf("u.npy"), "--A", PathOf("A.npy"), "--B", PathOf("B.npy"), "--C", PathOf("C.npy"),
            "--D", PathOf("D.npy"), "--dt", PathOf("dt.npy"), "--mode", mode, "--y", PathOf("y.npy"));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout.ReplaceLineEndings("\n"), Does.Contain(printed));
    }
}

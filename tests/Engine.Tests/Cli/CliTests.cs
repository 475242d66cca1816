using System.Text.RegularExpressions;
using System.Xml.Linq;
using Engine.Cli;
using Engine.IO;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>The `engine` command, run in-process: exit codes, one-line errors, and op results against the reference.</summary>
[TestFixture]
public sealed class CliTests : CliFixture
{
    [TestCase("fp32")]
    [TestCase("fp16")]
    public void OpGlaMatchesTheReference(string precision)
    {
        const int t = 50, h = 2, k = 16, v = 8;
        var data = new TestData(11);
        var q = data.Normal(t * h * k);
        var kk = data.UnitRows(t * h, k);
        var vv = data.Normal(t * h * v);
        var g = data.LogGates(t * h * k, 1.0);
        var h0 = data.Normal(2 * h * k * v, 0.3);
        int[] cu = [0, 20, 50];
        bool half = precision == "fp16";
        if (half) { q = TestData.RoundToHalf(q); kk = TestData.RoundToHalf(kk); vv = TestData.RoundToHalf(vv); g = TestData.RoundToHalf(g); }
        NpyArray Input(float[] a, nint[] s) => half ? NpyArray.From(TestData.ToHalf(a), s) : NpyArray.From(a, s);
        var (code, stdout, stderr) = Engine("op", "gla",
            "--q", Save("q.npy", Input(q, [1, t, h, k])), "--k", Save("k.npy", Input(kk, [1, t, h, k])),
            "--v", Save("v.npy", Input(vv, [1, t, h, v])), "--g", Save("g.npy", Input(g, [1, t, h, k])),
            "--h0", Save("h0.npy", NpyArray.From(h0, [2, h, k, v])), "--cu-seqlens", Save("cu.npy", NpyArray.From(cu.Select(x => (long)x).ToArray(), [3])),
            "--chunk", "16", "--o", PathOf("o.npy"), "--ht", PathOf("ht.npy"));
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"o: {(half ? "float16" : "float32")} [1, {t}, {h}, {v}] -> {PathOf("o.npy")}")
            .And.Contain($"ht: float32 [2, {h}, {k}, {v}] -> {PathOf("ht.npy")}").And.Contain("gla: "));

        var expectedOut = new double[t * h * v];
        var expectedState = TestData.ToDouble(h0);
        GlaReference.Forward(new GlaConfig(new HeadLayout(h, h, k, v), GateKind.PerKey, 1f / MathF.Sqrt(k), 16),
            SequenceLayout.Packed(cu, t), q, kk, vv, g, expectedOut, expectedState);
        var o = Npy.Read(PathOf("o.npy"));
        Assert.That(o.Type, Is.EqualTo(half ? NpyType.Float16 : NpyType.Float32));
        Assert.That(o.Shape, Is.EqualTo(new nint[] { 1, t, h, v }));
        double tolerance = half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        Assert.That(Numerics.RelativeRms(o.ToFloat32(), expectedOut), Is.LessThanOrEqualTo(tolerance));
        Assert.That(Numerics.RelativeRms(Npy.Read(PathOf("ht.npy")).ToFloat32(), expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void OpReportsWhatItWroteAsJson()
    {
        var x = Save("x.npy", NpyArray.From(new float[1 * 3 * 2 * 4], [1, 3, 2, 4]));
        var (code, stdout, stderr) = Engine("op", "lightning", "--q", x, "--k", x, "--v", x, "--o", PathOf("o.npy"), "--ht", PathOf("ht.npy"), "--json");
        Assert.That(code, Is.Zero, stderr);
        var report = System.Text.Json.JsonDocument.Parse(stdout).RootElement;
        Assert.That(report.GetProperty("op").GetString(), Is.EqualTo("lightning"));
        Assert.That(report.GetProperty("milliseconds").GetDouble(), Is.GreaterThan(0));
        var outputs = report.GetProperty("outputs").EnumerateArray().Select(o =>
            $"{o.GetProperty("name").GetString()} {o.GetProperty("file").GetString()} {o.GetProperty("dtype").GetString()} " +
            string.Join(",", o.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64())));
        Assert.That(outputs, Is.EqualTo(new[] { $"o {PathOf("o.npy")} float32 1,3,2,4", $"ht {PathOf("ht.npy")} float32 1,2,4,4" }));
        using var o = Npy.Read(PathOf("o.npy"));
        Assert.That(o.Values<float>().ToArray(), Is.All.EqualTo(0f), "zero inputs give zero outputs");
    }

    [Test]
    public void InputsAreWrittenForTheOp()
    {
        var (code, stdout, stderr) = Engine("inputs", "gated-delta", "--T", "5", "--H", "2", "--K", "4", "--V", "3", "--gate", "per-key", "--out-dir", Directory);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"q: float32 [1, 5, 2, 4] -> {PathOf("q.npy")}").And.Contain($"beta: float32 [1, 5, 2] -> {PathOf("beta.npy")}"));
        using var k = Npy.Read(PathOf("k.npy"));
        using var beta = Npy.Read(PathOf("beta.npy"));
        using var g = Npy.Read(PathOf("g.npy"));
        using var v = Npy.Read(PathOf("v.npy"));
        Assert.Multiple(() =>
        {
            Assert.That(v.Shape, Is.EqualTo(new nint[] { 1, 5, 2, 3 }));
            Assert.That(g.Shape, Is.EqualTo(new nint[] { 1, 5, 2, 4 }));
            Assert.That(g.Values<float>().ToArray(), Is.All.LessThanOrEqualTo(0f));
            Assert.That(beta.Values<float>().ToArray(), Is.All.InRange(0f, 1f));
            var keys = k.Values<float>().ToArray();
            for (int row = 0; row < keys.Length / 4; row++)
                Assert.That(keys.Skip(row * 4).Take(4).Sum(x => x * x), Is.EqualTo(1f).Within(1e-5f), "unit key rows");
        });
        var run = Engine("op", "gated-delta", "--q", PathOf("q.npy"), "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), "--beta", PathOf("beta.npy"),
            "--g", PathOf("g.npy"), "--o", PathOf("o.npy"));
        Assert.That(run.code, Is.Zero, run.stderr);
        AssertOneLineError(Engine("inputs", "delta", "--gate", "per-key", "--out-dir", Directory), 2, "DeltaNet takes no gate");
    }

    [Test]
    public void BadInputIsOneLineOnStderrAndANonZeroExit()
    {
        var q = Save("q.npy", NpyArray.From(new float[2 * 4 * 8], [2, 4, 8]));
        var run = Engine("op", "gla", "--q", q, "--k", q, "--v", q, "--o", PathOf("o.npy"));
        AssertOneLineError(run, 1, $"engine: error: --q ({q}): expected rank 4");
        Assert.That(run.stderr, Does.Not.Contain("(Parameter '"), "the message names the tensor itself; .NET's suffix is dropped");
    }

    [Test]
    public void PositiveGateIsRefused()
    {
        var x = Save("x.npy", NpyArray.From(new float[1 * 3 * 1 * 4], [1, 3, 1, 4]));
        var g = Save("g.npy", NpyArray.From(new[] { 0f, 0.25f, -1f }, [1, 3, 1]));
        AssertOneLineError(Engine("op", "gla", "--q", x, "--k", x, "--v", x, "--g", g, "--o", PathOf("o.npy")), 1,
            $"engine: error: --g ({g}): log gates must be finite and <= 0, got 0.25");
    }

    /// <summary>devices --json says what the text says: where the gpu backend runs (here, without CUDA, the CPU accelerator).</summary>
    [Test]
    public void DevicesJsonSaysWhereTheGpuBackendRuns()
    {
        Assume.That(TestDevices.HasCuda, Is.False, "a machine without CUDA");
        var (code, stdout, stderr) = Engine("devices", "--json");
        Assert.That(code, Is.Zero, stderr);
        var json = System.Text.Json.JsonDocument.Parse(stdout).RootElement;
        Assert.That(json.GetProperty("gpu_backend_runs_on").GetString(), Is.EqualTo("ilgpu-cpu-accelerator"));
        Assert.That(json.GetProperty("cuda_devices").GetArrayLength(), Is.Zero);
    }

    /// <summary>A state file the op refuses is named by its option and path, as the user gave it, not by the op's name for it.</summary>
    [Test]
    public void AStateFileIsNamedByItsOption()
    {
        var x = Save("x.npy", NpyArray.From(new float[1 * 3 * 1 * 4], [1, 3, 1, 4]));
        var wrongShape = Save("h0.npy", NpyArray.From(new float[4 * 2], [1, 1, 4, 2]));
        var notFinite = Save("h0nan.npy", NpyArray.From(Enumerable.Repeat(float.NaN, 16).ToArray(), [1, 1, 4, 4]));
        AssertOneLineError(Engine("op", "gla", "--q", x, "--k", x, "--v", x, "--h0", wrongShape, "--o", PathOf("o.npy")), 1,
            $"engine: error: --h0 ({wrongShape}): expected shape [1, 1, 4, 4]");
        AssertOneLineError(Engine("op", "gla", "--q", x, "--k", x, "--v", x, "--h0", notFinite, "--o", PathOf("o.npy")), 1,
            $"engine: error: --h0 ({notFinite}): values must be finite, got NaN");
    }

    private static byte[] NpyBytes(NpyArray array)
    {
        using var stream = new MemoryStream();
        Npy.Write(stream, array);
        return stream.ToArray();
    }

    public static IEnumerable<TestCaseData> BadNpyFiles()
    {
        var valid = NpyBytes(NpyArray.From(new float[4 * 8], [1, 4, 1, 8]));
        TestCaseData Case(string option, byte[] file, string message, string name) => new TestCaseData(option, file, message).SetName(name);
        yield return Case("q", [], "file ends inside the preamble", "Empty npy file");
        yield return Case("q", valid[..5], "file ends inside the preamble", "Npy file cut inside the preamble");
        yield return Case("q", valid[..40], "file ends inside the header", "Npy file cut inside the header");
        yield return Case("q", valid[..^4], "file ends inside the data of shape [1, 4, 1, 8] (<f4): expected 128 bytes, got 124", "Npy data cut short");
        yield return Case("q", IO.NpyTests.Handmade(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483647, 2147483647, 2147483647), }", []),
            "shape [2147483647, 2147483647, 2147483647] of <f4 is too large", "Npy shape whose element count overflows");
        yield return Case("q", NpyBytes(NpyArray.From(new int[4 * 8], [1, 4, 1, 8])), "expected a float array (float32, float16 or float64), got <i4", "Int32 npy where floats are expected");
        yield return Case("cu-seqlens", NpyBytes(NpyArray.From([0L, 1L << 40], [2])), "expected values in the int32 range, got 1099511627776 at index 1", "Int64 cu_seqlens out of int32 range");
        yield return Case("cu-seqlens", NpyBytes(NpyArray.From(Array.Empty<long>(), [0])), "expected --cu-seqlens offsets of rank 1 with at least 2 values (0, ..., T), got shape [0]", "Empty cu_seqlens");
        yield return Case("cu-seqlens", NpyBytes(NpyArray.From([0f, 4f], [2])), "expected --cu-seqlens offsets of int32 or int64, got <f4", "Float cu_seqlens");
        yield return Case("cu-seqlens", NpyBytes(NpyArray.From([0L, 4L], [1, 2])), "expected --cu-seqlens offsets of rank 1 with at least 2 values (0, ..., T), got shape [1, 2]", "Cu_seqlens of rank 2");
    }

    [TestCaseSource(nameof(BadNpyFiles))]
    public void BadNpyFileIsNamedWithWhatWasExpected(string option, byte[] file, string message)
    {
        var x = Save("x.npy", NpyArray.From(new float[4 * 8], [1, 4, 1, 8]));
        string bad = PathOf("bad.npy");
        File.WriteAllBytes(bad, file);
        string q = option == "q" ? bad : x;
        string cu = option == "cu-seqlens" ? bad : Save("cu.npy", NpyArray.From([0, 4], [2]));
        AssertOneLineError(Engine("op", "gla", "--q", q, "--k", x, "--v", x, "--cu-seqlens", cu, "--o", PathOf("o.npy")), 1, $"engine: error: {bad}: {message}");
    }

    [TestCase(new[] { "nope" }, "unknown command 'nope' (see: engine --help)")]
    [TestCase(new[] { "help", "nope" }, "unknown command 'nope' (see: engine --help)")]
    [TestCase(new[] { "op" }, "op needs one of")]
    [TestCase(new[] { "op", "nope" }, "unknown op 'nope': one of gla, lightning, delta, gated-delta, lssl (see: engine op --help)")]
    [TestCase(new[] { "op", "gla", "--q" }, "--q needs a value")]
    [TestCase(new[] { "op", "gla", "--frobnicate", "1" }, "unknown option --frobnicate (see: engine op gla --help)")]
    [TestCase(new[] { "ptx", "some-folder", "--arch", "sm_70" }, "--arch must be one of sm_80|sm_90, got 'sm_70' (see: engine ptx --help)")]
    [TestCase(new[] { "bench", "gla", "--T", "many" }, "--T must be an integer")]
    [TestCase(new[] { "generate", "some-folder", "--prompt-tokens", "99999999999", "--new-tokens", "1" }, "--prompt-tokens must be <= 2147483647, got 99999999999 (see: engine generate --help)")]
    [TestCase(new[] { "bench", "gla", "--H", "-99999999999" }, "--H must be >= 1, got -99999999999")]
    [TestCase(new[] { "bench", "gla", "--T", "0" }, "--T must be an integer >= 1 or a comma-separated list of them (T = 0 times nothing), got '0'")]
    [TestCase(new[] { "inputs", "gated-delta", "--gate", "none", "--out-dir", "some-folder" }, "--gate must be per-key or per-head, got none (see: engine inputs --help)")]
    [TestCase(new[] { "bench", "lssl", "--T", "64,0" }, "--T must be an integer >= 1")]
    [TestCase(new[] { "bench", "lssl", "--T", "64,99999999999" }, "--T must be <= 2147483647, got 99999999999 (see: engine bench lssl --help)")]
    [TestCase(new[] { "bench-model", "--sample", "linear", "--T", "0" }, "--T must be an integer >= 1")]
    [TestCase(new[] { "bench", "gla", "--backend", "tpu" }, "--backend must be one of reference|cpu|gpu")]
    [TestCase(new[] { "bench", "gla", "--gpu-precision", "tf32", "--T", "32" }, "--gpu-precision tf32: the cpu backend multiplies in fp32; it applies to --backend gpu")]
    public void UsageErrorsExitWithTwo(string[] args, string message) => AssertOneLineError(Engine(args), 2, message);

    /// <summary>
    /// --gpu-precision reaches the op: without CUDA the CPU accelerator is made in CUDA's geometry, whose 32-lane warps the
    /// emulated tensor-core products need (with its default 4-lane warps the run was refused).
    /// </summary>
    [Test]
    public void BenchGpuPrecisionReachesTheOp()
    {
        var (code, stdout, stderr) = Engine("bench", "gated-delta", "--backend", "gpu", "--gpu-precision", "fp16", "--T", "32", "--H", "1", "--K", "16", "--V", "16",
            "--repeats", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement[0].GetProperty("variant").GetString(), Does.EndWith("fp16"));
    }

    /// <summary>--T reads its lengths as every integer option reads its value: "+32" was refused there and taken by --H.</summary>
    [Test]
    public void LengthsAndOtherIntegersAreReadAlike()
    {
        var (code, stdout, stderr) = Engine("bench", "lightning", "--T", "+32, 48", "--H", "+1", "--K", "16", "--V", "16", "--repeats", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.EnumerateArray().Select(r => r.GetProperty("t").GetInt32()), Is.EqualTo(new[] { 32, 48 }));
    }

    [Test]
    public void MissingFileIsAnError()
    {
        AssertOneLineError(Engine("op", "gla", "--q", PathOf("absent.npy"), "--k", "x", "--v", "x", "--o", "o.npy"), 1, "engine: error: ");
    }

    [Test]
    public void BenchBestOfInterleavesEveryLengthAndMode()
    {
        var (code, stdout, stderr) = Engine("bench", "lightning", "--T", "32,64", "--H", "1", "--K", "16", "--V", "16", "--mode", "both", "--best-of", "2", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(4));
        Assert.That(doc.RootElement[0].GetProperty("timing").GetString(), Does.StartWith("best of 2 rounds"));
        Assert.That(Engine("bench", "gla", "--repeats", "3", "--best-of", "2").stderr, Does.Contain("not both"));
    }

    [Test]
    public void HelpListsEveryCommand()
    {
        var (code, stdout, _) = Engine("help");
        Assert.That(code, Is.Zero);
        foreach (var c in new[] { "demo", "devices", "op ", "bench ", "gated-delta, lssl" }) Assert.That(stdout, Does.Contain(c));
        Assert.That(Engine("help", "op", "gla").stdout, Does.Contain("--cu-seqlens"));
    }

    [Test]
    public void VersionIsThePackagesVersion()
    {
        // The one version of the packages (Directory.Build.props); a build from a git checkout appends the commit.
        string prefix = XDocument.Load(Path.Combine(Repository.Root, "Directory.Build.props")).Descendants("VersionPrefix").Single().Value;
        var (code, stdout, stderr) = Engine("--version");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout.TrimEnd(), Does.Match($@"^{Regex.Escape(prefix)}(-[0-9A-Za-z.]+)?(\+[0-9a-f]{{40}})?$"));
    }

    [Test]
    public void BenchGlaPrintsJsonWithModelFlops()
    {
        var (code, stdout, stderr) = Engine("bench", "gla", "--T", "64", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1", "--mode", "both", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(2));
        var row = doc.RootElement[0];
        double flops = row.GetProperty("model_gflops").GetDouble() * row.GetProperty("milliseconds").GetDouble() / 1e3 * 1e9;
        Assert.That(flops, Is.EqualTo(64 * (2.0 * 64 * 32 + 4.0 * 16 * 16)).Within(1e-6).Percent, "chunked model flops 2·C·(K+V) + 4·K·V per token");
        Assert.That(row.GetProperty("gpu_launches").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null), "no GPU traffic on the CPU");
    }

    [Test]
    public void BenchOnTheGpuReportsLaunchesAndBytesPerCall()
    {
        var (code, stdout, stderr) = Engine("bench", "gla", "--backend", "gpu", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1",
            "--mode", "both", "--json");
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var rows = doc.RootElement.EnumerateArray().ToDictionary(r => r.GetProperty("variant").GetString()!);
        // q, k, v, g of 32 tokens × 16 floats up; the 32 × 16 output down (a call without a final state).
        const long tensorBytes = 32 * 16 * sizeof(float);
        Assert.Multiple(() =>
        {
            Assert.That(rows["per-key chunked"].GetProperty("gpu_launches").GetInt64(), Is.EqualTo(3), "chunk deltas, state scan, output");
            Assert.That(rows["per-key recurrent"].GetProperty("gpu_launches").GetInt64(), Is.EqualTo(1));
            foreach (var row in rows.Values)
            {
                Assert.That(row.GetProperty("gpu_bytes_to_device").GetInt64(), Is.GreaterThanOrEqualTo(4 * tensorBytes));
                Assert.That(row.GetProperty("gpu_bytes_to_host").GetInt64(), Is.GreaterThanOrEqualTo(tensorBytes));
            }
        });
    }

    [TestCase("gla", "per-key", new[] { "gla.ChunkDeltas", "gla.StateScan", "gla.Output" })]
    [TestCase("gla", "per-head", new[] { "gla.ChunkDeltas", "gla.StateScan", "gla.Output" })]
    [TestCase("gla", "none", new[] { "gla.ChunkDeltas", "gla.StateScan", "gla.Output" })]
    [TestCase("gated-delta", "per-head", new[] { "delta-rule.Prepare", "delta-rule.StatePass", "delta-rule.Output" })]
    [TestCase("delta", null, new[] { "delta-rule.Prepare", "delta-rule.StatePass", "delta-rule.Output" })]
    public void BenchOnTheGpuTimesEachKernelOfTheCall(string op, string? gate, string[] chunkedKernels)
    {
        string[] args = ["bench", op, "--backend", "gpu", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "2", "--chunk", "16",
            "--mode", "both", "--json", .. gate is null ? Array.Empty<string>() : ["--gate", gate]];
        var (code, stdout, stderr) = Engine(args);
        Assert.That(code, Is.Zero, stderr);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout);
        var rows = doc.RootElement.EnumerateArray().ToList();
        string prefix = op == "gla" ? "gla" : "delta-rule";
        Assert.Multiple(() =>
        {
            Assert.That(rows, Has.Count.EqualTo(2), "chunked and recurrent; no ort-cuda row without CUDA");
            foreach (var row in rows)
            {
                bool chunked = row.GetProperty("variant").GetString()!.EndsWith("chunked", StringComparison.Ordinal);
                var kernels = row.GetProperty("gpu_kernels").EnumerateArray().ToList();
                Assert.That(kernels.Select(k => k.GetProperty("kernel").GetString()), Is.EqualTo(chunked ? chunkedKernels : new[] { prefix + ".Recurrent" }));
                Assert.That(kernels.Select(k => k.GetProperty("launches").GetInt64()), Is.All.EqualTo(1));
                Assert.That(kernels.Count, Is.EqualTo(row.GetProperty("gpu_launches").GetInt64()), "the profile sees every launch the traffic counts");
                Assert.That(row.GetProperty("gpu_kernels_ms").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Number));
            }
        });
    }

    [Test]
    public void BenchOnTheGpuSaysWhyOrtCudaIsLeftOutAndRunsTheRest()
    {
        var (code, stdout, stderr) = Engine("bench", "gated-delta", "--backend", "gpu", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1",
            "--chunk", "16");
        Assert.That(code, Is.Zero, stderr);
        var notes = stdout.Split('\n').Where(line => line.StartsWith("note: ort-cuda rows left out: ", StringComparison.Ordinal)).ToList();
        Assert.That(notes, Has.Count.EqualTo(1), stdout);
        Assert.That(notes[0], Does.Contain("CUDA"), "the reason, as ONNX Runtime gives it");
        Assert.That(stdout, Does.Contain("delta-rule.StatePass").And.Contain("gated-delta  per-head C16 chunked"));

        var (jsonCode, json, jsonErr) = Engine("bench", "gla", "--backend", "gpu", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1",
            "--json");
        Assert.That(jsonCode, Is.Zero, jsonErr);
        Assert.That(System.Text.Json.JsonDocument.Parse(json).RootElement.GetArrayLength(), Is.EqualTo(1), "the note stays out of the JSON document");
        Assert.That(jsonErr, Does.Contain("note: ort-cuda rows left out: "));
    }

    /// <summary>Without CUDA the GPU kernels run slowly on ILGPU's CPU accelerator: said on stderr before the timing, not only in the report.</summary>
    [Test]
    public void BenchOnTheCpuAcceleratorSaysSoBeforeTiming()
    {
        Assume.That(TestDevices.HasCuda, Is.False, "the note is for machines without CUDA");
        string[] args = ["bench", "gla", "--backend", "gpu", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1"];
        const string note = "note: no CUDA device, the GPU kernels run on ILGPU's CPU accelerator";
        var (code, stdout, stderr) = Engine(args);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stderr, Does.StartWith(note));
        // stdout and stderr into one writer, in the order written: the note comes before the report's first line.
        var both = new StringWriter();
        Assert.That(global::Engine.Cli.Cli.Run(args, both, both), Is.Zero, both.ToString());
        string text = both.ToString();
        Assert.That(text.IndexOf(note, StringComparison.Ordinal), Is.GreaterThanOrEqualTo(0).And.LessThan(text.IndexOf("device: gpu", StringComparison.Ordinal)), text);
    }

    [Test]
    public void BenchOnTheCpuLeavesOrtCudaOut()
    {
        var (code, stdout, stderr) = Engine("bench", "gla", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout + stderr, Does.Not.Contain("ort-cuda").And.Not.Contain("all kernels"));
    }

    [Test]
    public void BenchReportsEachPeerAgainstTheEngineRowOfItsLength()
    {
        var shape = new BenchShape(1, 64, 1, 16, 16);
        BenchResult[] results =
        [
            new("gla", "per-key chunked", "gpu", shape, 0.002, 1e6, null),
            new("gla", "per-key chunked", "gpu", shape with { T = 128 }, 0.004, 2e6, null),
            new("gla", "ort-cuda linear-attention", "gpu", shape with { T = 128 }, 0.010, 2e6, null, PeerOf: "per-key chunked"),
            new("gla", "ort-cuda linear-attention", "gpu", shape, 0.003, 1e6, null, PeerOf: "per-key chunked"),
        ];
        var stdout = new StringWriter();
        using var device = EngineDevice.Create(Backend.Reference);
        BenchReport.Report(new CliContext(stdout, new StringWriter()), results, device, new BenchTiming(1, Interleaved: false), json: true, chart: null);
        var rows = System.Text.Json.JsonDocument.Parse(stdout.ToString()).RootElement.EnumerateArray().ToList();
        Assert.Multiple(() =>
        {
            Assert.That(rows[0].GetProperty("ratio_to_engine").ValueKind, Is.EqualTo(System.Text.Json.JsonValueKind.Null));
            Assert.That(rows[2].GetProperty("ratio_to_engine").GetDouble(), Is.EqualTo(2.5).Within(1e-12));
            Assert.That(rows[3].GetProperty("ratio_to_engine").GetDouble(), Is.EqualTo(1.5).Within(1e-12));
            Assert.That(rows[3].GetProperty("peer_of").GetString(), Is.EqualTo("per-key chunked"));
        });
    }

    [Test]
    public void ThePeakIsMeasuredOnAtMostTheMachinesCores()
    {
        int cores = Environment.ProcessorCount;
        var (code, stdout, stderr) = Engine("bench", "peak", "--threads", (cores + 3).ToString(), "--rounds", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"on {cores} threads").And.Contain($"(not {cores + 3}: threads past the machine's {cores} cores add no FMA throughput)"));
    }

    /// <summary>A missing input file is named by its option and its path as given (it was .NET's "Could not find file '/full/path'").</summary>
    [TestCase("--q", "nope.npy")]
    [TestCase("--v", "no-such-folder/nope.npy")]
    [TestCase("--h0", "nope.npy")]
    [TestCase("--cu-seqlens", "nope.npy")]
    [TestCase("--g", "nope.npy")]
    public void AMissingInputFileNamesItsOptionAndThePathAsGiven(string option, string missing)
    {
        var x = Save("x.npy", NpyArray.From(new float[4 * 8], [1, 4, 1, 8]));
        var files = new Dictionary<string, string> { ["--q"] = x, ["--k"] = x, ["--v"] = x, [option] = missing };
        var run = Engine(["op", "gla", .. files.SelectMany(f => new[] { f.Key, f.Value }), "--o", PathOf("o.npy")]);
        AssertOneLineError(run, 1, $"engine: error: {option}: file not found: {missing}");
    }

    [Test]
    public void AnOutOfRangeValueFromTheLibraryIsOneLineWithoutDotNetsSuffixes() =>
        Assert.That(global::Engine.Cli.Cli.OneLine(new ArgumentOutOfRangeException("layer", 30, "layer must be in [0, 23]")), Is.EqualTo("layer must be in [0, 23]"));

    /// <summary>--layer and --layers are option values: refused as usage errors naming the options (it was the library's "layer must be in", exit code 1).</summary>
    [TestCase("30", "24", "engine: --layer must be in [0, 23] (--layers 24), got 30")]
    [TestCase("-1", "24", "engine: --layer must be in [0, 23] (--layers 24), got -1")]
    [TestCase("0", "1", "engine: --layers must be >= 2 for the per-layer slope schedule, got 1")]
    public void ALayerOutsideTheLayersIsAUsageError(string layer, string layers, string message)
    {
        var x = Save("x.npy", NpyArray.From(new float[4 * 8], [1, 4, 1, 8]));
        AssertOneLineError(Engine("op", "lightning", "--q", x, "--k", x, "--v", x, "--o", PathOf("o.npy"), "--layer", layer, "--layers", layers), 2, message);
    }
}

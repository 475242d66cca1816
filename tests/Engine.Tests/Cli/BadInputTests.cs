using Engine.IO;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>
/// Bad command lines and values no other fixture covers: each refused with one line naming the option, argument or file,
/// before anything is allocated or written.
/// </summary>
[TestFixture]
public sealed class BadInputTests : CliFixture
{
    /// <summary>An empty path is named by its option or argument (.NET's own refusal names neither).</summary>
    [TestCase(new[] { "op", "gla", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--o", "" }, "--o is an empty path")]
    [TestCase(new[] { "op", "lssl", "--u", "", "--A", "A.npy", "--B", "B.npy", "--C", "C.npy", "--D", "D.npy", "--dt", "dt.npy", "--y", "y.npy" }, "--u is an empty path")]
    [TestCase(new[] { "inputs", "gla", "--out-dir", "" }, "--out-dir is an empty path")]
    [TestCase(new[] { "run", "", "--output-dir", "out" }, "model.onnx is an empty path")]
    [TestCase(new[] { "inspect", "" }, "model.onnx is an empty path")]
    [TestCase(new[] { "generate", "", "--prompt-tokens", "1", "--new-tokens", "1" }, "MODEL_DIR is an empty path")]
    [TestCase(new[] { "samples", "" }, "DIR is an empty path")]
    [TestCase(new[] { "ptx", "" }, "DIR is an empty path")]
    public void AnEmptyPathIsNamed(string[] args, string message) => AssertOneLineError(Engine(args), 2, message);

    /// <summary>A chunk size given with the recurrent form, which has no chunks, was ignored.</summary>
    [TestCase("gla", "--chunk")]
    [TestCase("gated-delta", "--chunk")]
    [TestCase("lightning", "--block")]
    public void AChunkSizeWithTheRecurrentFormIsRefused(string op, string option)
    {
        string[] files = op == "gated-delta" ? ["--beta", "beta.npy", "--g", "g.npy"] : [];
        AssertOneLineError(Engine(["op", op, "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", .. files, "--o", "o.npy", "--mode", "recurrent", option, "16"]), 2,
            $"{option} applies to --mode chunked: the recurrent form runs token by token");
    }

    /// <summary>
    /// A round count far past any useful one: --repeats 2000000000 allocated 16 GB for the times after the warm-up (out of
    /// memory without naming the option), and --rounds ran for years.
    /// </summary>
    [TestCase("gla", "--repeats", "2000000000", "--repeats must be <= 1000000, got 2000000000")]
    [TestCase("lssl", "--best-of", "1000001", "--best-of must be <= 1000000, got 1000001")]
    [TestCase("peak", "--rounds", "2000000000", "--rounds must be <= 1000, got 2000000000")]
    public void ARoundCountFarPastAnyUsefulOneIsRefused(string op, string option, string value, string message) =>
        AssertOneLineError(Engine(["bench", op, .. op == "peak" ? Array.Empty<string>() : ["--T", "16", "--H", "1"], option, value]), 2, message);

    /// <summary>A head dim past the delta-rule kernels' limit was refused naming the op's tensor (q, v), not the option.</summary>
    [TestCase("delta", "--K")]
    [TestCase("gated-delta", "--V")]
    public void ADeltaRuleBenchHeadDimPastTheKernelsLimitNamesTheOption(string op, string option) =>
        AssertOneLineError(Engine("bench", op, "--T", "16", "--H", "1", "--K", option == "--K" ? "300" : "16", "--V", option == "--V" ? "300" : "16", "--best-of", "1"), 2,
            $"{option} must be <= 256 (the delta-rule kernels' limit), got 300");

    /// <summary>Slopes given both ways were refused as bad input (exit code 1) after the files were read, naming "layer/layers".</summary>
    [Test]
    public void LightningSlopesAndTheLayerScheduleTogetherAreAUsageError() =>
        AssertOneLineError(Engine("op", "lightning", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--o", "o.npy", "--slopes", "s.npy", "--layer", "1", "--layers", "4"), 2,
            "--slopes and --layer/--layers are two ways to give the slopes: give one");

    /// <summary>A bench's chunk size given with the recurrent form only, which has no chunks, was ignored (and printed in the label).</summary>
    [TestCase("gla", "--chunk")]
    [TestCase("delta", "--chunk")]
    [TestCase("gated-delta", "--chunk")]
    [TestCase("lightning", "--block")]
    public void ABenchChunkSizeWithTheRecurrentFormIsRefused(string op, string option) =>
        AssertOneLineError(Engine("bench", op, "--T", "16", "--H", "1", "--K", "16", "--V", "16", "--best-of", "1", "--mode", "recurrent", option, "32"), 2,
            $"{option} applies to --mode chunked or both: the recurrent form runs token by token");

    /// <summary>LSSL's chunk length given with a mode that has no chunks (the recurrence, the convolution) was ignored.</summary>
    [TestCase("recurrent")]
    [TestCase("conv")]
    public void AnLsslChunkLengthWithAModeWithoutChunksIsRefused(string mode) =>
        AssertOneLineError(Engine("op", "lssl", "--u", "u.npy", "--A", "A.npy", "--B", "B.npy", "--C", "C.npy", "--D", "D.npy", "--dt", "dt.npy",
            "--y", "y.npy", "--mode", mode, "--chunk", "16"), 2, $"--chunk applies to --mode scan or auto: the {mode} mode has no chunks");

    /// <summary>A folder the command cannot make is named with the option that gave it.</summary>
    [TestCase("inputs", "--out-dir")]
    [TestCase("lssl-init", "--out-dir")]
    [TestCase("ptx", "DIR")]
    public void AFolderThatCannotBeMadeIsNamedWithItsOption(string command, string option)
    {
        string[] args = command switch
        {
            "inputs" => ["inputs", "gla", "--T", "2", "--H", "1", "--K", "2", "--V", "2", "--out-dir", "/proc/engine-out"],
            "lssl-init" => ["lssl-init", "--H", "2", "--N", "4", "--out-dir", "/proc/engine-out"],
            _ => ["ptx", "/proc/engine-out"],
        };
        AssertOneLineError(Engine(args), 1, $"{option} /proc/engine-out: the folder cannot be made");
    }

    [Test]
    public void APlotPathThatIsAFolderIsRefusedBeforeTheBench() =>
        AssertOneLineError(Engine("bench", "gla", "--T", "16", "--plot", System.IO.Directory.CreateDirectory(PathOf("chart.svg")).FullName), 2, "is a folder");

    [Test]
    public void APlotFileThatCannotBeWrittenIsNamedWithTheOption()
    {
        var (code, _, stderr) = Engine("bench", "gla", "--T", "16", "--H", "1", "--K", "16", "--V", "16", "--best-of", "1", "--plot", "/proc/engine-chart.svg");
        Assert.That(code, Is.EqualTo(1), stderr);
        Assert.That(stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), stderr);
        Assert.That(stderr, Does.StartWith("engine: error: --plot /proc/engine-chart.svg: cannot be written"));
    }

    /// <summary>dt is written as float32: bounds past its range would write steps of 0 or infinity, which `op lssl` refuses.</summary>
    [TestCase("--dt-max", "1e300")]
    [TestCase("--dt-min", "1e-320")]
    public void LsslInitRefusesStepsFloat32CannotHold(string option, string value)
    {
        string dir = PathOf("params");
        AssertOneLineError(Engine("lssl-init", "--H", "2", "--N", "4", option, value, "--out-dir", dir), 2, "--dt-min and --dt-max must lie in [1.1754944E-38, 3.4028235E+38]");
        Assert.That(System.IO.Directory.Exists(dir), Is.False, "nothing written");
    }

    [Test]
    public void LogUniformDtRefusesStepsFloat32CannotHold() =>
        Assert.That(() => global::Engine.Lssl.LogUniformDt(4, seed: 0, dtMin: 1e-3, dtMax: 1e300),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("steps must lie in float32's range"));

    /// <summary>Sizes that each fit an array but together need terabytes: refused before anything is allocated.</summary>
    [Test]
    public void SamplesRefuseAModelNoMachineHolds()
    {
        AssertOneLineError(Engine("samples", Directory, "--layers", "2000000000"), 1,
            "--layers 2000000000 --context 8192 --qk-heads 2 --value-heads 4 --head-dim 32: the hybrid decoder would take");
        Assert.That(System.IO.Directory.GetFileSystemEntries(Directory), Is.Empty, "nothing written");
    }

    /// <summary>100 lengths, each within an array and a few GB, held together through the sweep: terabytes.</summary>
    [TestCase("gla", 2_000_000, "--H 8 --K 128 --V 128", "B 1, T 2000000,...,2000099 (100 lengths), H 8, K 128, V 128: q, k, v, gates, output and state would take")]
    [TestCase("lssl", 100_000_000, "--H 20 --N 4", "B 1, L 100000000,...,100000099 (100 lengths), H 20, N 4: u, y and the state would take")]
    public void BenchRefusesLengthsWhoseWorkloadsTogetherNoMachineHolds(string op, int first, string sizes, string message) =>
        AssertOneLineError(Engine(["bench", op, "--T", string.Join(",", Enumerable.Range(first, 100)), .. sizes.Split(' ')]), 1, "out of memory: " + message);

    /// <summary>A folder given as a response file was a crash with a stack trace.</summary>
    [Test]
    public void AFolderAsAResponseFileIsAParseError() =>
        AssertOneLineError(Engine("inputs", "@" + Directory), 2, $"response file '{Directory}' is a folder, not a file");

    /// <summary>Slopes of another rank were flattened and taken when their count matched.</summary>
    [Test]
    public void SlopesOfAnotherRankAreRefusedNamingTheFile()
    {
        string Tensor(string name, int heads) => Save(name + ".npy", NpyArray.From(new float[4 * heads * 4], [1, 4, heads, 4]));
        string slopes = Save("slopes.npy", NpyArray.From([0.5f, 0.25f], [1, 2]));
        AssertOneLineError(Engine("op", "lightning", "--q", Tensor("q", 2), "--k", Tensor("k", 2), "--v", Tensor("v", 2), "--slopes", slopes, "--o", PathOf("o.npy")), 1,
            $"--slopes ({slopes}): expected shape [Hv] (one slope per value head), got [1, 2]");
    }

    /// <summary>A response file that names itself (or any other) was followed until the stack overflowed: a crash of 60,000 lines.</summary>
    [Test]
    public void AResponseFileNamingAnotherIsAParseError()
    {
        File.WriteAllText(PathOf("self.rsp"), "devices\n@" + PathOf("self.rsp") + "\n");
        AssertOneLineError(Engine("@" + PathOf("self.rsp")), 2, $"response file '{PathOf("self.rsp")}' names another response file ('@{PathOf("self.rsp")}'): response files do not nest");
    }

    /// <summary>--threads with the reference backend was ignored (its report says one thread).</summary>
    [TestCase("bench", "gla")]
    [TestCase("bench", "lssl")]
    public void ThreadsWithTheReferenceBackendAreAUsageError(string command, string op) =>
        AssertOneLineError(Engine(command, op, "--T", "16", "--backend", "reference", "--threads", "2"), 2,
            "--threads applies to --backend cpu and gpu: the reference runs on one thread");

    /// <summary>inputs wrote delta-rule files with head dims the kernels then refused in `op`.</summary>
    [TestCase("delta", "--K")]
    [TestCase("gated-delta", "--V")]
    public void InputsRefuseDeltaRuleHeadDimsTheKernelsDoNotTake(string op, string option) =>
        AssertOneLineError(Engine("inputs", op, "--T", "4", option, "300", "--out-dir", Directory), 2,
            $"{option} must be <= 256 (the delta-rule kernels' limit), got 300");

    [Test]
    public void AnOptionAfterTheEndOfOptionsIsAnArgument() =>
        AssertOneLineError(Engine("op", "gla", "--", "--q"), 2, "unexpected argument '--q' (after --, every word is an argument)");
}

using System.Diagnostics;
using System.Text.Json;
using Engine.IO;
using NUnit.Framework;
using DataType = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Cli;

/// <summary>engine bench-model's random inputs and its report on a model the engine takes no node of.</summary>
[TestFixture]
public sealed class BenchModelInputTests : CliFixture
{
    /// <summary>y = x + x over [B, T, 8]: nothing for the engine to take.</summary>
    private string AddModel() => SaveModel("add.onnx", builder =>
    {
        string x = builder.Input("x", DataType.Float, "B", "T", 8);
        builder.Output(builder.Op("Add", x, x), DataType.Float);
    });

    [Test]
    public void NoEngineNodeShowsNoNodeSpeedup()
    {
        string model = AddModel();
        var (code, stdout, stderr) = Engine("bench-model", model, "--dim", "B=1", "--dim", "T=4", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        var row = JsonDocument.Parse(stdout).RootElement[0];
        Assert.That(row.GetProperty("engine_kernel_nodes").GetInt32(), Is.Zero);
        Assert.That(row.GetProperty("node_speedup").ValueKind, Is.EqualTo(JsonValueKind.Null));

        var text = Engine("bench-model", model, "--dim", "B=1", "--dim", "T=4", "--repeats", "1", "--threads", "1");
        Assert.That(text.code, Is.Zero, text.stderr);
        Assert.That(text.stdout, Does.Not.Contain("NaN").And.Not.Contain("∞"));
    }

    [Test]
    public void ARandomInputTooLargeForAnArrayIsNamed() =>
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "B=1", "--dim", "T=1000000000", "--repeats", "1"), 1,
            $"input 'x' of shape [1, 1000000000, 8] would hold 8000000000 elements; a random input holds at most {Array.MaxLength}");

    /// <summary>Run as its own process under a 512 MiB heap limit, so that the allocation fails as it would on a small machine.</summary>
    [Test]
    public void ARandomInputBeyondMemoryIsOneLine()
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            ArgumentList = { Path.Combine(AppContext.BaseDirectory, "engine.dll"), "bench-model", AddModel(), "--dim", "B=1", "--dim", "T=20000000", "--repeats", "1" },
            RedirectStandardOutput = true, RedirectStandardError = true,
            Environment = { ["DOTNET_GCHeapHardLimit"] = "0x20000000" },
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        Assert.That(process.WaitForExit(120_000), Is.True, "exits");
        AssertOneLineError((process.ExitCode, stdout.Result, stderr), 1,
            "engine: error: out of memory: input 'x' of shape [1, 20000000, 8]: its 160000000 random values do not fit in memory");
    }

    [Test]
    public void DimsWhoseProductOverflowsAreNamed() =>
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "B=100000000000", "--dim", "T=100000000000", "--repeats", "1"), 1,
            "input 'x' of shape [100000000000, 100000000000, 8] would hold 80000000000000000000000 elements");

    [Test]
    public void ADimGivenTwiceIsRefused() =>
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "T=4", "--dim", "T=8", "--repeats", "1"), 2, "--dim T is given more than once");

    [TestCase(new[] { "--sample", "linear", "--input", "x=x.npy" }, "--input goes with a model file: --sample makes its own inputs")]
    [TestCase(new[] { "--sample", "linear", "--dim", "B=1" }, "--dim goes with a model file: --sample makes its own inputs")]
    public void OptionsOfAModelFileAreRefusedWithASample(string[] args, string message) =>
        AssertOneLineError(Engine(["bench-model", .. args]), 2, message);

    [TestCase("--T", "64")]
    [TestCase("--decode")]
    public void OptionsOfASampleAreRefusedWithAModelFile(params string[] option) =>
        AssertOneLineError(Engine(["bench-model", AddModel(), "--dim", "B=1", "--dim", "T=4", .. option]), 2, $"{option[0]} goes with --sample: a model file's dims come from --dim");

    [TestCase(new string[0], "the random inputs have the symbolic dims B, T: give each value as --dim B=VALUE --dim T=VALUE")]
    [TestCase(new[] { "--dim", "B=1" }, "the random inputs have the symbolic dim T: give its value as --dim T=VALUE")]
    public void AnUnsetDimIsNamedWithTheOptionThatSetsIt(string[] dims, string message) =>
        AssertOneLineError(Engine(["bench-model", AddModel(), .. dims, "--repeats", "1"]), 1, message);

    [Test]
    public void ANegativeDimIsRefusedAsSuch() =>
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "B=1", "--dim", "T=-1"), 2, "--dim T must be an integer >= 0, got '-1'");

    [Test]
    public void AnInputWithoutItsFileIsRefusedAsTheHelpSpellsIt()
    {
        AssertOneLineError(Engine("run", AddModel(), "--input", "x", "--output-dir", Directory), 2, "--input takes NAME=FILE.npy, got 'x'");
        AssertOneLineError(Engine("bench-model", AddModel(), "--input", "x="), 2, "--input takes NAME=FILE.npy, got 'x='");
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "T"), 2, "--dim takes NAME=VALUE, got 'T'");
    }

    [Test]
    public void ADimTheModelDoesNotHaveIsRefused() =>
        AssertOneLineError(Engine("bench-model", AddModel(), "--dim", "B=1", "--dim", "T=4", "--dim", "Z=3", "--repeats", "1"), 1,
            "--dim Z: the model has no symbolic dim 'Z' (its symbolic dims: B, T)");

    /// <summary>A dim only the input files have: their shapes set it, and --dim was ignored.</summary>
    [Test]
    public void ADimOnlyTheInputFilesHaveIsRefused()
    {
        string x = Save("x.npy", NpyArray.From(new float[80], [1, 10, 8]));
        AssertOneLineError(Engine("bench-model", AddModel(), "--input", $"x={x}", "--dim", "T=4", "--repeats", "1"), 2,
            "--dim T: only inputs given as files have it (x), and a file's shape sets it: --dim sets the random inputs' dims");
    }

    [Test]
    public void DecodeWithT1InTheListTimesT1Once()
    {
        var (code, stdout, stderr) = Engine("bench-model", "--sample", "linear", "--T", "1,16", "--decode", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        var runs = JsonDocument.Parse(stdout).RootElement.EnumerateArray()
            .Select(r => (Model: r.GetProperty("model").GetString(), Case: r.GetProperty("case").GetString())).ToArray();
        Assert.That(runs.Where(r => r.Model == "linear block").Select(r => r.Case), Is.EqualTo(new[] { "decode T=1", "T=16" }));
    }

    [Test]
    public void InspectJsonGivesFixedDimsAsNumbersAndTypesAsRunSpellsThem()
    {
        var (code, stdout, stderr) = Engine("inspect", AddModel(), "--json");
        Assert.That(code, Is.Zero, stderr);
        var x = JsonDocument.Parse(stdout).RootElement.GetProperty("inputs")[0];
        Assert.That(x.GetProperty("dtype").GetString(), Is.EqualTo("float32"));
        var dims = x.GetProperty("shape").EnumerateArray().ToArray();
        Assert.That(dims.Select(d => d.ValueKind), Is.EqualTo(new[] { JsonValueKind.String, JsonValueKind.String, JsonValueKind.Number }));
        Assert.That((dims[0].GetString(), dims[1].GetString(), dims[2].GetInt64()), Is.EqualTo(("B", "T", 8L)));
    }
}

using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;
using Engine.Onnx.Ops;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>
/// The command line as System.CommandLine parses it: help for every command, --version, suggestions for mistyped words,
/// response files, tab completion, one JSON document per reporting command, and no terminal escapes in captured output.
/// </summary>
[TestFixture]
public sealed class CommandLineTests : CliFixture
{
    /// <summary>Every command and group, as the words that name it (op gla, bench peak, demo...).</summary>
    public static IEnumerable<string[]> EveryCommand()
    {
        IEnumerable<string[]> Walk(Command command, string[] path) =>
            command.Subcommands.SelectMany(c => Walk(c, [.. path, c.Name]).Prepend([.. path, c.Name]));
        return Walk(global::Engine.Cli.Cli.Root(), []);
    }

    [TestCaseSource(nameof(EveryCommand))]
    public void EveryCommandHasHelp(string[] command)
    {
        var (code, stdout, stderr) = Engine([.. command, "--help"]);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stderr, Is.Empty);
        Assert.That(stdout, Does.Contain("Usage:").And.Contain($"engine {string.Join(" ", command)}"));
        Assert.That(Engine(["help", .. command]).stdout, Is.EqualTo(stdout), "engine help <command> shows the same");
        var notes = stdout.Split('\n').SkipWhile(line => line != "Notes:").Skip(1).Where(line => line.Trim().Length > 0).ToArray();
        Assert.That(notes.Where(line => !line.StartsWith("  ", StringComparison.Ordinal) || line.StartsWith("        ", StringComparison.Ordinal) || line.Length > 124),
            Is.Empty, "the notes indented as written (by two spaces), no line longer than 124");
    }

    /// <summary>An option the command needs is marked (REQUIRED) by the help, not only said to be in its description.</summary>
    [Test]
    public void GenerateMarksItsRequiredOptions()
    {
        var lines = Engine("generate", "--help").stdout.Split('\n');
        foreach (var option in new[] { "--prompt-tokens", "--new-tokens" })
            Assert.That(lines.Single(l => l.TrimStart().StartsWith(option + " ", StringComparison.Ordinal)), Does.Contain("(REQUIRED)").And.Not.Contain("; required"));
    }

    /// <summary>--threads states its default once, in words (it showed "(default: the machine's cores) [default: 2]").</summary>
    [TestCase("op", "gla")]
    [TestCase("bench", "peak")]
    [TestCase("run")]
    public void TheThreadsDefaultIsStatedOnceInWords(params string[] command)
    {
        string line = Engine([.. command, "--help"]).stdout.Split('\n').Single(l => l.TrimStart().StartsWith("--threads ", StringComparison.Ordinal));
        Assert.That(line.TrimEnd(), Does.EndWith("(default: the machine's cores)"));
        Assert.That(line.Split("default").Length - 1, Is.EqualTo(1), line);
    }

    [Test]
    public void EveryOptionHasADescription()
    {
        var undescribed = EveryCommand().Select(words => words.Aggregate((Command)global::Engine.Cli.Cli.Root(), (c, w) => c.Subcommands.Single(s => s.Name == w)))
            .SelectMany(c => c.Options.Where(o => string.IsNullOrWhiteSpace(o.Description)).Select(o => $"{c.Name} {o.Name}"));
        Assert.That(undescribed, Is.Empty);
    }

    /// <summary>A default the help shows is one the option takes: a choice's default as it is spelled on the command line.</summary>
    [TestCaseSource(nameof(EveryCommand))]
    public void EveryShownDefaultParsesWhenTypedBack(string[] command)
    {
        var root = global::Engine.Cli.Cli.Root();
        string help = Engine([.. command, "--help"]).stdout;
        var target = command.Aggregate((Command)root, (c, w) => c.Subcommands.Single(s => s.Name == w));
        foreach (var option in target.Options.Where(o => o.HasDefaultValue && o.HelpName?.Contains('|') == true))
        {
            string line = help.Split('\n').Single(l => l.TrimStart().StartsWith(option.Name + " <", StringComparison.Ordinal));
            string shown = line[(line.LastIndexOf("[default: ", StringComparison.Ordinal) + "[default: ".Length)..line.LastIndexOf(']')];
            var parsed = root.Parse([.. command, option.Name, shown]);
            // Errors of the option itself: a command's required arguments are left out here.
            var errors = parsed.Errors.Where(e => e.SymbolResult is OptionResult r && r.Option == option).Select(e => e.Message);
            Assert.That(errors, Is.Empty, $"{string.Join(" ", command)} {option.Name} {shown}");
            Assert.That(parsed.GetValue<object>(option.Name), Is.EqualTo(option.GetDefaultValue()));
        }
    }

    [Test]
    public void NoArgumentsShowTheOverview()
    {
        var (code, stdout, _) = Engine();
        Assert.That(code, Is.Zero);
        Assert.That(stdout, Does.Contain("Commands:").And.Contain("bench-model"));
    }

    [TestCase(new[] { "dmeo" }, "unknown command 'dmeo'; did you mean 'demo'?")]
    [TestCase(new[] { "bench", "lightnign" }, "unknown bench 'lightnign': one of peak, gla, lightning, delta, gated-delta, lssl; did you mean 'lightning'?")]
    [TestCase(new[] { "bench", "gla", "--chunck", "32" }, "unknown option --chunck; did you mean '--chunk'? (see: engine bench gla --help)")]
    public void MistypedWordsGetASuggestion(string[] args, string message) => AssertOneLineError(Engine(args), 2, message);

    [Test]
    public void AnUnknownWordFarFromEveryCommandGetsNoSuggestion() =>
        Assert.That(Engine("frobnicate").stderr, Does.Not.Contain("did you mean"));

    [TestCase(new[] { "bench", "gla", "--T", "64", "--T", "128" }, "--T given 2 times")]
    [TestCase(new[] { "bench", "gla", "--threads", "0" }, "--threads must be >= 1, got 0")]
    [TestCase(new[] { "op", "gla", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--o", "o.npy", "--threads", "99999999" }, "--threads must be <= 1024, got 99999999")]
    [TestCase(new[] { "bench", "peak", "--threads", "1025" }, "--threads must be <= 1024, got 1025")]
    [TestCase(new[] { "inputs", "gla", "--out-dir", "d", "--gate", "constant" }, "--gate must be one of none|per-head|per-key, got 'constant'")]
    [TestCase(new[] { "bench", "gla", "--gate", "constant" }, "--gate must be one of per-key|per-head|none, got 'constant'")]
    [TestCase(new[] { "bench", "gla", "--chunk", "48" }, "--chunk must be one of 16, 32, 64, 128, 256, got '48' (see: engine bench gla --help)")]
    [TestCase(new[] { "op", "delta", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--beta", "b.npy", "--o", "o.npy", "--chunk", "128" }, "--chunk must be one of 16, 32, 64, got '128'")]
    [TestCase(new[] { "op", "lssl", "--u", "u", "--A", "a", "--B", "b", "--C", "c", "--D", "d", "--dt", "t", "--y", "y", "--chunk", "8" }, "--chunk must be one of 16, 32, 64, 128, 256, got '8'")]
    [TestCase(new[] { "op", "lightning", "--q", "q", "--k", "k", "--v", "v", "--o", "o", "--block", "48" }, "--block must be one of 16, 32, 64, 128, 256, got '48'")]
    [TestCase(new[] { "op", "lightning", "--q", "q", "--k", "k", "--v", "v", "--o", "o", "--layer", "3" }, "--layer and --layers go together: give both or neither")]
    [TestCase(new[] { "bench", "gla", "--mode", "sideways" }, "--mode must be one of chunked|recurrent|both, got 'sideways'")]
    [TestCase(new[] { "op", "lssl", "--u", "u.npy" }, "--A is required")]
    [TestCase(new[] { "op", "gla", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--o", "o.npy", "--scale", "nan" }, "--scale must be a finite number, got 'nan'")]
    [TestCase(new[] { "inspect" }, "give the model file")]
    [TestCase(new[] { "devices", "extra" }, "unexpected argument 'extra'")]
    public void MalformedValuesAreUsageErrors(string[] args, string message) => AssertOneLineError(Engine(args), 2, message);

    [Test]
    public void AResponseFileGivesTheArguments()
    {
        string response = PathOf("inputs.rsp");
        File.WriteAllLines(response, ["inputs gla", "--T 6 --H 1 --K 4 --V 4", $"--out-dir \"{Directory}\""]);
        var (code, stdout, stderr) = Engine($"@{response}", "--json");
        Assert.That(code, Is.Zero, stderr);
        var outputs = JsonDocument.Parse(stdout).RootElement.GetProperty("outputs").EnumerateArray().Select(o => o.GetProperty("name").GetString());
        Assert.That(outputs, Is.EqualTo(new[] { "q", "k", "v", "g" }));
        Assert.That(File.Exists(PathOf("g.npy")), Is.True);
    }

    [Test]
    public void AMissingResponseFileIsAUsageError() =>
        AssertOneLineError(Engine($"@{PathOf("absent.rsp")}"), 2, "absent.rsp");

    [Test]
    public void TabCompletionOffersCommandsAndTheKebabSpelledValues()
    {
        var (code, stdout, stderr) = Engine("[suggest:8]", "bench li");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "lightning" }));
        var modes = Engine("[suggest:17]", "bench gla --gate ").stdout.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        Assert.That(modes, Is.EquivalentTo(new[] { "none", "per-head", "per-key" }));
    }

    /// <summary>The cheap reporting commands, each with --json: one JSON document on stdout.</summary>
    public static IEnumerable<TestCaseData> JsonCommands()
    {
        TestCaseData Case(string name, params string[] args) => new TestCaseData((object)args).SetName($"Json {name}");
        yield return Case("devices", "devices");
        yield return Case("bench peak", "bench", "peak", "--threads", "1", "--rounds", "1");
        yield return Case("bench lightning", "bench", "lightning", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1");
        yield return Case("inputs", "inputs", "delta", "--T", "4", "--H", "1", "--K", "4", "--V", "4", "--out-dir", "{dir}");
        yield return Case("op lightning", "op", "lightning", "--q", "{dir}/q.npy", "--k", "{dir}/k.npy", "--v", "{dir}/v.npy", "--o", "{dir}/o.npy");
        yield return Case("op lssl", "op", "lssl", "--u", "{dir}/u.npy", "--A", "{dir}/A.npy", "--B", "{dir}/B.npy", "--C", "{dir}/C.npy", "--D", "{dir}/D.npy",
            "--dt", "{dir}/dt.npy", "--y", "{dir}/y.npy");
        yield return Case("inspect", "inspect", "{dir}/block.onnx");
    }

    [TestCaseSource(nameof(JsonCommands))]
    public void JsonIsOneDocumentOnStdout(string[] args)
    {
        Assert.That(Engine("inputs", "lightning", "--T", "4", "--H", "1", "--K", "4", "--V", "4", "--out-dir", Directory).code, Is.Zero);
        Assert.That(Engine("lssl-init", "--N", "4", "--H", "2", "--out-dir", Directory).code, Is.Zero);
        Save("u.npy", global::Engine.IO.NpyArray.From(new float[1 * 8 * 2], [1, 8, 2]));
        SampleModels.LinearAttentionBlock(new LinearAttentionBlockSpec { Hidden = 16, QHeads = 2, KvHeads = 1, KeyDim = 8, ValueDim = 8, Rule = UpdateRule.GatedDelta })
            .Save(PathOf("block.onnx"));
        var (code, stdout, stderr) = Engine([.. args.Select(a => a.Replace("{dir}", Directory)), "--json"]);
        Assert.That(code, Is.Zero, stderr);
        using var document = JsonDocument.Parse(stdout);
        Assert.That(document.RootElement.ValueKind, Is.AnyOf(JsonValueKind.Object, JsonValueKind.Array));
        Assert.That(stdout, Does.Not.Contain('\u001b'));
    }

    [Test]
    public void CapturedOutputHasNoTerminalEscapes()
    {
        foreach (var args in new[] { new[] { "--help" }, ["op", "gla", "--help"], ["devices"],
                     ["bench", "lightning", "--T", "32", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1"] })
        {
            var (code, stdout, stderr) = Engine(args);
            Assert.That(code, Is.Zero, stderr);
            Assert.That(stdout + stderr, Does.Not.Contain('\u001b'), string.Join(" ", args));
        }
    }
}

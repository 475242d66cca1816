using System.Text.Json;
using Engine.Tests.Cli;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>engine samples and engine generate, run in-process on a folder the samples command writes.</summary>
[TestFixture]
public sealed class GenerateCommandTests : CliFixture
{
    private string WriteSamples()
    {
        var (code, stdout, stderr) = Engine("samples", Directory, "--vocab", "64", "--hidden", "32", "--context", "256");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.StartWith("wrote 5 sample models"));
        return PathOf("hybrid_decoder");
    }

    /// <summary>
    /// The engine, ORT alone and ONNX Runtime GenAI's own loop, greedy: all three make the same tokens (GenAI's checked
    /// against ORT alone's by the command). --no-genai leaves GenAI out.
    /// </summary>
    [Test]
    public void GenerateTimesEveryPathAndTheyGenerateTheSameTokens()
    {
        string folder = WriteSamples();
        Assert.That(File.Exists(PathOf("gla_block.onnx")), Is.True, "the other samples");
        string[] run = ["generate", folder, "--prompt-tokens", "12", "--new-tokens", "5", "--repeats", "1", "--threads", "1", "--json"];
        var (code, stdout, stderr) = Engine(run);
        Assert.That(code, Is.Zero, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.That(json.GetProperty("same_tokens").GetBoolean(), Is.True);
        Assert.That(json.GetProperty("first_different_token").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(json.GetProperty("genai_same_tokens").GetBoolean(), Is.True);
        Assert.That(json.GetProperty("genai_version").GetString(), Does.Match(@"^\d+\.\d+\.\d+"));
        Assert.That(json.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(12));
        foreach (var path in new[] { "engine", "ort", "genai" })
            foreach (var key in new[] { "ttft_ms", "decode_tokens_per_s", "median_step_ms" })
                Assert.That(json.GetProperty(path).GetProperty(key).GetDouble(), Is.GreaterThan(0), $"{path} {key}");

        (code, stdout, stderr) = Engine([.. run, "--no-genai"]);
        Assert.That(code, Is.Zero, stderr);
        json = JsonDocument.Parse(stdout).RootElement;
        Assert.That(json.TryGetProperty("genai", out _), Is.False, "--no-genai");
        Assert.That(json.GetProperty("genai_same_tokens").ValueKind, Is.EqualTo(JsonValueKind.Null));
    }

    /// <summary>A folder GenAI cannot run (a model type it does not know) is timed without it, and stderr says why.</summary>
    [Test]
    public void AFolderGenAiCannotRunIsTimedWithoutIt()
    {
        string folder = WriteSamples();
        string config = Path.Combine(folder, "genai_config.json");
        var document = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(config))!;
        document["model"]!["type"] = "not_a_model_type";
        File.WriteAllText(config, document.ToJsonString());
        var (code, stdout, stderr) = Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "2", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stderr, Does.StartWith($"engine: ONNX Runtime GenAI ").And.Contain($"cannot run {folder}, timed without it: "));
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.That(json.TryGetProperty("genai", out _), Is.False);
        Assert.That(json.GetProperty("same_tokens").GetBoolean(), Is.True, "the engine and ORT alone still run");
    }

    /// <summary>
    /// --search sample samples on both paths from --seed, so their tokens still compare; the report names the search. With
    /// top_k 1 sampling is greedy: the same tokens as a greedy run.
    /// </summary>
    [Test]
    public void GenerateSamplesWhereAskedAndBothPathsDrawAlike()
    {
        string folder = WriteSamples();
        string[] run = ["generate", folder, "--prompt-tokens", "6", "--new-tokens", "4", "--repeats", "1", "--threads", "1", "--json"];
        var (code, stdout, stderr) = Engine([.. run, "--search", "sample", "--top-k", "5", "--temperature", "2", "--seed", "4"]);
        Assert.That(code, Is.Zero, stderr);
        var json = JsonDocument.Parse(stdout).RootElement;
        Assert.That(json.GetProperty("search").GetString(), Is.EqualTo("sampling (top_k 5, top_p 1, temperature 2, seed 4)"));
        Assert.That(json.GetProperty("same_tokens").GetBoolean(), Is.True);
        (code, stdout, stderr) = Engine([.. run, "--search", "greedy", "--repetition-penalty", "1.5"]);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(JsonDocument.Parse(stdout).RootElement.GetProperty("search").GetString(), Is.EqualTo("greedy, repetition penalty 1.5"));
    }

    /// <summary>A benchmark makes exactly the tokens asked for: past search.max_length (the config's or --max-length) it is refused, not cut short.</summary>
    [Test]
    public void GeneratePastMaxLengthIsRefused()
    {
        string folder = WriteSamples();
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "8", "--new-tokens", "5", "--max-length", "12", "--backend", "none"), 1,
            "8 prompt tokens and 5 new ones pass search.max_length 12 (every run makes exactly the new tokens asked for; --max-length sets it)");
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "8", "--new-tokens", "5", "--top-p", "1.5", "--backend", "none"), 1,
            "SearchOptions.TopP must be in [0, 1], got 1.5");
    }

    /// <summary>Where two generations part: the first index that differs, where the shorter one ends, or −1.</summary>
    [TestCase(new long[] { 1, 2, 3 }, new long[] { 1, 2, 3 }, -1)]
    [TestCase(new long[] { 1, 2, 3 }, new long[] { 1, 2, 4 }, 2)]
    [TestCase(new long[] { 5, 2 }, new long[] { 1, 2 }, 0)]
    [TestCase(new long[] { 1, 2 }, new long[] { 1, 2, 3 }, 2)]
    [TestCase(new long[0], new long[0], -1)]
    public void TokensPartAtTheFirstDifference(long[] engine, long[] ort, int expected) =>
        Assert.That(global::Engine.Cli.Commands.GenerateCommand.FirstDifference(engine, ort), Is.EqualTo(expected));

    [Test]
    public void Int4SamplesProjectWithMatMulNBitsAndTheEngineStillTakesTheMixers()
    {
        var (code, _, stderr) = Engine("samples", Directory, "--vocab", "64", "--hidden", "32", "--context", "256", "--int4");
        Assert.That(code, Is.Zero, stderr);
        string folder = PathOf("hybrid_decoder");
        var model = global::Engine.Onnx.OnnxModel.Load(Path.Combine(folder, "model.onnx"));
        Assert.That(model.NodeOpTypes, Has.None.EqualTo("MatMul").And.Some.EqualTo("MatMulNBits"), "every projection, the LM head's too");
        using var generator = global::Engine.Onnx.Generator.Open(folder, OnnxTestHost.Options(global::Engine.Onnx.HandoverBackend.Cpu));
        Assert.That(generator.Handover.EngineNodes.Count(n => n.OpType == "LinearAttention"), Is.EqualTo(3), "the three Gated DeltaNet layers' mixers");
    }

    [Test]
    public void OneNewTokenHasNoDecodeFigures()
    {
        string folder = WriteSamples();
        var (code, stdout, stderr) = Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "1", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        var engine = JsonDocument.Parse(stdout).RootElement.GetProperty("engine");
        Assert.That(engine.GetProperty("ttft_ms").GetDouble(), Is.GreaterThan(0));
        Assert.That(engine.GetProperty("decode_tokens_per_s").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That(engine.GetProperty("median_step_ms").ValueKind, Is.EqualTo(JsonValueKind.Null));
    }

    [Test]
    public void OneNewTokenPrintsNoNaN()
    {
        string folder = WriteSamples();
        var (code, stdout, stderr) = Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "1", "--repeats", "1", "--threads", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Not.Contain("NaN").And.Contain("decode n/a tokens/s").And.Contain("decode n/a;"));
    }

    [Test]
    public void GenerateShowsProgressAndTheComparison()
    {
        string folder = WriteSamples();
        var (code, stdout, stderr) = Engine("generate", folder, "--prompt-tokens", "8", "--new-tokens", "3", "--repeats", "2", "--threads", "1");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("engine nodes: 3").And.Contain("[2/2] ort    first token after").And.Contain("same tokens: yes"));
    }

    [Test]
    public void GenerateErrorsAreOneLine()
    {
        string missing = PathOf("nowhere");
        AssertOneLineError(Engine("generate", missing, "--prompt-tokens", "4", "--new-tokens", "2"), 1, $"{missing}: no such model folder");
        AssertOneLineError(Engine("generate", Directory, "--prompt-tokens", "4"), 2, "engine: --new-tokens is required (see: engine generate --help)");
        AssertOneLineError(Engine("generate", Directory, "--new-tokens", "4"), 2, "engine: --prompt-tokens is required (see: engine generate --help)");
        string folder = WriteSamples();
        string config = Path.Combine(folder, "genai_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"logits\": \"logits\"", "\"logits\": \"scores\""));
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "2"), 1,
            $"{config}: model.decoder.outputs.logits names 'scores', which model.onnx does not give");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"scores\"", "\"logits\""));
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "250", "--new-tokens", "8", "--max-length", "1000", "--backend", "none"), 1,
            "250 prompt tokens and 8 new ones need 257 positions; the model's context_length is 256");
    }
}

using System.Text.Json.Nodes;
using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;
using GenAi = Microsoft.ML.OnnxRuntimeGenAI;

namespace Engine.Tests.Onnx;

/// <summary>
/// genai_config.json's search section and stop tokens as ONNX Runtime GenAI 0.20 applies them, side by side with
/// <see cref="Generator"/> over ONNX Runtime alone on the default hybrid decoder sample: the same config file read by
/// both, the same greedy tokens exactly, the same stop, and the same refusals.
/// </summary>
[TestFixture]
public sealed class GenAiSearchTests
{
    private static readonly HybridDecoderSpec Spec = new();
    private string _root = "";
    private string _sample = "";
    private int _folders;

    [OneTimeSetUp]
    public void WriteSample()
    {
        _root = Path.Combine(Path.GetTempPath(), $"engine-genai-search-{Environment.ProcessId}-{Guid.NewGuid():N}");
        _sample = Path.Combine(_root, "sample");
        HybridDecoder.Write(_sample, Spec);
    }

    [OneTimeTearDown]
    public void DeleteRoot()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>
    /// Stop tokens, min_length, the repetition penalty and greedy sampling, each in a config edited given the sample's first
    /// greedy tokens (so that the stop token really comes): Generator, over ONNX Runtime alone and with the hand-over, makes
    /// GenAI's tokens step by step (GetNextTokens), the stop token included, and stops where GenAI stops. GenAI's sequence
    /// leaves the stop token out at batch 1 (its search appends a token only while not done): prompt and Generator's tokens
    /// but a last stop token.
    /// </summary>
    [TestCaseSource(nameof(Searches))]
    public void GeneratorStopsWhereGenAiStops(Action<JsonNode, long[]> edit)
    {
        long[] prompt = Prompt(12);
        long[] greedy = [.. GenerateWithGenAi(Folder(c => c["search"]!["max_length"] = prompt.Length + 8), prompt).Tokens];
        Assert.That(greedy.Take(3).Distinct().Count(), Is.EqualTo(3), "the first three greedy tokens differ, so the third first comes third");
        string folder = Folder(c =>
        {
            c["search"]!["max_length"] = prompt.Length + 8;
            edit(c, greedy);
        });
        var (genAiTokens, genAiSequence) = GenerateWithGenAi(folder, prompt);
        foreach (var backend in new[] { HandoverBackend.None, HandoverBackend.Cpu })
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(backend));
            var result = generator.Generate(prompt, 100);
            Assert.That(result.Tokens, Is.EqualTo(genAiTokens), $"{backend}: the tokens GenAI chose");
            bool stopped = generator.EosTokenIds.Contains(result.Tokens[^1]);
            Assert.That(result.StopReason, Is.EqualTo(stopped ? GenerationStopReason.StopToken : GenerationStopReason.MaxLength), $"{backend}: why it ended");
            Assert.That(genAiSequence, Is.EqualTo(prompt.Concat(stopped ? result.Tokens.SkipLast(1) : result.Tokens)), $"{backend}: GenAI's sequence");
        }
    }

    public static IEnumerable<TestCaseData> Searches()
    {
        static TestCaseData Case(string name, Action<JsonNode, long[]> edit) => new TestCaseData(edit).SetName($"GeneratorStopsWhereGenAiStops({name})");
        static void Eos(JsonNode c, JsonNode? eos) => c["model"]!["eos_token_id"] = eos;
        static void Search(JsonNode c, string key, JsonNode value) => c["search"]![key] = value;
        yield return Case("eos the third token", (c, g) => Eos(c, g[2]));
        yield return Case("eos the first token", (c, g) => Eos(c, g[0]));
        yield return Case("eos a list", (c, g) => Eos(c, new JsonArray(g[5], g[2])));
        yield return Case("no eos, pad_token_id", (c, g) => { c["model"]!.AsObject().Remove("eos_token_id"); c["model"]!["pad_token_id"] = g[2]; });
        yield return Case("eos an empty list, pad_token_id", (c, g) => { Eos(c, new JsonArray()); c["model"]!["pad_token_id"] = g[2]; });
        yield return Case("eos the token that reaches max_length", (c, g) => { Eos(c, g[2]); Search(c, "max_length", 15); });
        // The sequence before the third token is 14 long: min_length 14 lets the stop token come, 15 keeps it off.
        foreach (int minLength in new[] { 5, 12, 14, 15 })
            yield return Case($"eos the third token, min_length {minLength}", (c, g) => { Eos(c, g[2]); Search(c, "min_length", minLength); });
        yield return Case("eos the first token, min_length 13", (c, g) => { Eos(c, g[0]); Search(c, "min_length", 13); });
        yield return Case("eos a list, min_length 15", (c, g) => { Eos(c, new JsonArray(g[0], g[2])); Search(c, "min_length", 15); });
        foreach (double penalty in new[] { 1.3, 0.7 })
            yield return Case($"repetition_penalty {penalty}", (c, g) => { Eos(c, g[2]); Search(c, "repetition_penalty", penalty); });
        yield return Case("do_sample at temperature 0", (c, g) => { Eos(c, g[2]); Search(c, "do_sample", true); Search(c, "temperature", 0); });
        yield return Case("do_sample with top_k 1", (c, g) => { Eos(c, g[2]); Search(c, "do_sample", true); Search(c, "top_k", 1); });
        yield return Case("do_sample with top_k 0 and top_p 0", (c, g) => { Eos(c, g[2]); Search(c, "do_sample", true); Search(c, "top_k", 0); Search(c, "top_p", 0); });
    }

    /// <summary>GenAI refuses to start a generation whose max_length passes the context length, even one whose tokens fit it.</summary>
    [Test]
    public void AMaxLengthPastTheContextLengthIsRefusedAsGenAiRefusesIt()
    {
        long[] prompt = Prompt(12);
        string atContext = Folder(c => { c["model"]!["context_length"] = 20; c["search"]!["max_length"] = 20; });
        var (genAiTokens, _) = GenerateWithGenAi(atContext, prompt);
        Assert.That(genAiTokens, Has.Count.EqualTo(8), "GenAI fills max_length, the context length");
        Assert.That(Generate(atContext, prompt, 8).Tokens, Is.EqualTo(genAiTokens));

        string pastContext = Folder(c => { c["model"]!["context_length"] = 20; c["search"]!["max_length"] = 21; });
        Assert.That(() => GenerateWithGenAi(pastContext, prompt), Throws.InstanceOf<GenAi.OnnxRuntimeGenAIException>()
            .With.Message.Contains("max_length (21) cannot be greater than model context_length (20)"));
        Assert.That(() => Generate(pastContext, prompt, 8), Throws.ArgumentException.With.Message.StartWith(
            $"search.max_length 21 passes the model's context_length 20 ({Path.Combine(pastContext, HybridDecoder.ConfigFile)}): no sequence may be longer than the context"));
    }

    /// <summary>
    /// A prompt that reaches max_length (here the context length: max_length 0) leaves no room for a token: GenAI takes it
    /// and is done at once, and refuses one token more; Generator refuses both, naming max_length, not the positions of the
    /// tokens asked for, which it would never make.
    /// </summary>
    [Test]
    public void APromptThatReachesMaxLengthIsRefusedNamingMaxLength()
    {
        string folder = Folder(c => { c["model"]!["context_length"] = 12; c["search"]!["max_length"] = 0; });
        var (tokens, sequence) = GenerateWithGenAi(folder, Prompt(12));
        Assert.That(tokens, Is.Empty, "GenAI is done with the prompt");
        Assert.That(sequence, Is.EqualTo(Prompt(12)));
        Assert.That(() => GenerateWithGenAi(folder, Prompt(13)), Throws.InstanceOf<GenAi.OnnxRuntimeGenAIException>()
            .With.Message.Contains("exceeds max length (12)"));
        foreach (int promptTokens in new[] { 12, 13 })
            Assert.That(() => Generate(folder, Prompt(promptTokens), 28), Throws.ArgumentException.With.Message.StartWith(
                $"the prompt's {promptTokens} tokens reach search.max_length 12 (prompt and new tokens): no room for a new token"));
    }

    /// <summary>The sample's genai_config.json edited by <paramref name="edit"/>, in a folder of its own beside a copy of the model.</summary>
    private string Folder(Action<JsonNode> edit)
    {
        string folder = Path.Combine(_root, $"case-{Interlocked.Increment(ref _folders)}");
        Directory.CreateDirectory(folder);
        foreach (string file in Directory.GetFiles(_sample).Where(f => Path.GetFileName(f) != HybridDecoder.ConfigFile))
            File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        var config = HybridDecoder.Config(Spec);
        edit(config);
        File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
        return folder;
    }

    private static long[] Prompt(int tokens)
    {
        var random = new Random(7);
        return [.. Enumerable.Range(0, tokens).Select(_ => (long)random.Next(Spec.VocabSize))];
    }

    private static GenerationResult Generate(string folder, long[] prompt, int newTokens)
    {
        using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
        return generator.Generate(prompt, newTokens);
    }

    /// <summary>GenAI's loop as its config says: each step's token (GetNextTokens) and, once done, the sequence it holds.</summary>
    private static (List<long> Tokens, long[] Sequence) GenerateWithGenAi(string folder, long[] prompt)
    {
        using var model = new GenAi.Model(folder);
        using var options = new GenAi.GeneratorParams(model);
        using var generator = new GenAi.Generator(model, options);
        generator.AppendTokens([.. prompt.Select(t => checked((int)t))]);
        var tokens = new List<long>();
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            tokens.Add(generator.GetNextTokens()[0]);
        }
        return (tokens, [.. generator.GetSequence(0).ToArray().Select(t => (long)t)]);
    }
}

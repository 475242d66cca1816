using System.Text.Json.Nodes;
using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// genai_config.json's search section as <see cref="Generator"/> applies it: max_length and min_length, the repetition
/// penalty, the built-in top-k / top-p / temperature sampler (checked against softmaxes computed here), which choice wins,
/// and the refusal of values out of range and of beam search.
/// </summary>
[TestFixture]
public sealed class SearchOptionsTests
{
    /// <summary>The fixed model's logits, whatever the token: greedy picks 2; the eos token (5, the config's) is the lowest.</summary>
    private static readonly float[] Row = [-1f, 1f, 3f, 0.5f, 2.9f, -2f];

    /// <summary>A model folder whose logits are <see cref="Row"/> at every position; <paramref name="edit"/> edits genai_config.json.</summary>
    private static string FixedLogitsModel(Action<JsonNode> edit)
    {
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float, I64 = Engine.Onnx.Proto.TensorProto.Types.DataType.Int64;
        int vocab = Row.Length;
        var b = new ModelBuilder(21, "fixed");
        string ids = b.Input("input_ids", I64, "batch_size", "sequence_length");
        b.Input("attention_mask", I64, "batch_size", "total_sequence_length");
        float[] table = [.. Enumerable.Range(0, vocab).SelectMany(_ => Row)];
        b.Node("Gather", [b.Initializer("table", table, vocab, vocab), ids], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", vocab);
        string folder = Directory.CreateTempSubdirectory("engine-search-").FullName;
        b.Build().Save(Path.Combine(folder, HybridDecoder.ModelFile));
        var config = HybridDecoder.Config(new HybridDecoderSpec { VocabSize = vocab, ContextLength = 64 });
        edit(config);
        File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
        return folder;
    }

    private static void WithGenerator(Action<JsonNode> edit, Action<Generator> test)
    {
        string folder = FixedLogitsModel(edit);
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            test(generator);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static Action<JsonNode> Search(params (string Key, JsonNode? Value)[] values) => config =>
    {
        foreach (var (key, value) in values) config["search"]![key] = value;
    };

    [Test]
    public void TheConfigsSearchSectionIsRead()
    {
        WithGenerator(Search(("do_sample", true), ("top_k", 7), ("top_p", 0.9), ("temperature", 0.5), ("min_length", 3), ("max_length", 20),
            ("repetition_penalty", 1.2), ("random_seed", 11)), generator => Assert.That(generator.Search, Is.EqualTo(new SearchOptions
            {
                DoSample = true, TopK = 7, TopP = 0.9f, Temperature = 0.5f, MinLength = 3, MaxLength = 20, RepetitionPenalty = 1.2f, RandomSeed = 11,
            })));
        // GenAI's defaults where the section leaves keys out; max_length is then the context length, and random_seed -1 a random seed.
        WithGenerator(c => c.AsObject().Remove("search"), generator => Assert.That(generator.Search, Is.EqualTo(new SearchOptions { MaxLength = 64 })));
        WithGenerator(Search(("max_length", 0), ("random_seed", -1)), generator => Assert.That(generator.Search.MaxLength, Is.EqualTo(64)));
    }

    /// <summary>search.max_length caps prompt and new tokens together; a prompt that already reaches it is refused naming it and both numbers.</summary>
    [Test]
    public void GenerationStopsAtMaxLength()
    {
        WithGenerator(Search(("max_length", 5)), generator =>
        {
            var result = generator.Generate([1, 3], 10);
            Assert.That(result.Tokens, Is.EqualTo(new long[] { 2, 2, 2 }), "two prompt tokens and three new ones");
            Assert.That(result.StopReason, Is.EqualTo(GenerationStopReason.MaxLength));
            Assert.That(generator.Generate([1, 3], 3).StopReason, Is.EqualTo(GenerationStopReason.Length), "the tokens asked for, exactly at max_length");
            Assert.That(generator.Generate([1, 3], 10, new GenerationOptions { Search = generator.Search with { MaxLength = 4 } }).Tokens, Has.Count.EqualTo(2));
            Assert.That(() => generator.Generate([1, 1, 1, 1, 1], 1), Throws.ArgumentException.With.Message.StartWith(
                "the prompt's 5 tokens reach search.max_length 5 (prompt and new tokens): no room for a new token"));
        });
    }

    /// <summary>
    /// Below search.min_length (the sequence's length before the token, the prompt's counted, as GenAI and Hugging Face
    /// count it) a stop token gets a logit of −∞: greedy takes the next best, and the callbacks see the masked logits.
    /// </summary>
    [TestCase(0, new long[] { 5 })]
    [TestCase(2, new long[] { 2, 5 })]
    [TestCase(3, new long[] { 2, 2, 5 })]
    public void StopTokensAreNotChosenBeforeMinLength(int minLength, long[] expected)
    {
        WithGenerator(Search(("min_length", minLength)), generator =>
        {
            // A sampler that takes the eos token (5) wherever its logit is not masked.
            var seen = new List<float>();
            var options = new GenerationOptions
            {
                Sampler = logits =>
                {
                    seen.Add(logits[5]);
                    return float.IsNegativeInfinity(logits[5]) ? 2 : 5;
                },
            };
            var result = generator.Generate([1], 10, options);
            Assert.That(result.Tokens, Is.EqualTo(expected));
            Assert.That(result.StopReason, Is.EqualTo(GenerationStopReason.StopToken));
            Assert.That(seen.Count(float.IsNegativeInfinity), Is.EqualTo(Math.Max(0, minLength - 1)), "steps whose sequence was shorter than min_length");
        });
    }

    /// <summary>With greedy search and the stop token 2 (the best logit), min_length makes greedy take the second best until then.</summary>
    [Test]
    public void GreedySearchTakesTheNextBestBeforeMinLength()
    {
        WithGenerator(c => { c["model"]!["eos_token_id"] = 2; c["search"]!["min_length"] = 3; }, generator =>
            Assert.That(generator.Generate([1], 10).Tokens, Is.EqualTo(new long[] { 4, 4, 2 })));
    }

    /// <summary>
    /// The repetition penalty as GenAI and Hugging Face apply it over the tokens seen (the prompt's too): a positive logit
    /// divided, a negative one multiplied. Computed here from the row and compared with the logits the callback sees.
    /// </summary>
    [Test]
    public void TheRepetitionPenaltyDividesPositiveAndMultipliesNegativeLogitsOfTokensSeen()
    {
        WithGenerator(Search(("repetition_penalty", 2.0)), generator =>
        {
            var logits = new List<float[]>();
            var result = generator.Generate([0, 2], 4, new GenerationOptions { OnToken = (_, row) => logits.Add(row.ToArray()) });
            // Seen {0, 2}: 2 falls to 1.5, so 4 (2.9) wins; then with 4 seen too (1.45), 2 wins, and stays.
            Assert.That(result.Tokens, Is.EqualTo(new long[] { 4, 2, 2, 2 }));
            var seen = new HashSet<long> { 0, 2 };
            for (int step = 0; step < logits.Count; step++)
            {
                float[] expected = [.. Row.Select((x, id) => seen.Contains(id) ? x < 0 ? x * 2 : x / 2 : x)];
                Assert.That(logits[step], Is.EqualTo(expected), $"step {step}");
                seen.Add(result.Tokens[step]);
            }
        });
    }

    /// <summary>
    /// do_sample in the config samples; top_k 1 and a tiny top_p leave only the best token, so sampling gives greedy's
    /// tokens; a seed repeats a generation; the caller's options win: a sampler of its own, or a greedy search.
    /// </summary>
    [Test]
    public void TheConfigSamplesUnlessTheCallerChoosesOtherwise()
    {
        WithGenerator(Search(("do_sample", true), ("top_k", 0), ("temperature", 4.0), ("random_seed", 5)), generator =>
        {
            var sampled = generator.Generate([1], 40, new GenerationOptions { StopTokenIds = [] }).Tokens;
            Assert.That(sampled.Distinct().Count(), Is.GreaterThan(3), "a hot temperature over every token draws several");
            Assert.That(generator.Generate([1], 40, new GenerationOptions { StopTokenIds = [] }).Tokens, Is.EqualTo(sampled), "the config's seed repeats it");
            var other = generator.Generate([1], 40, new GenerationOptions { StopTokenIds = [], Search = generator.Search with { RandomSeed = 6 } }).Tokens;
            Assert.That(other, Is.Not.EqualTo(sampled), "another seed");

            Assert.That(generator.Generate([1], 8, new GenerationOptions { Search = generator.Search with { TopK = 1 } }).Tokens, Is.All.EqualTo(2L));
            Assert.That(generator.Generate([1], 8, new GenerationOptions { Search = generator.Search with { TopP = 1e-6f } }).Tokens, Is.All.EqualTo(2L));
            Assert.That(generator.Generate([1], 8, new GenerationOptions { Search = generator.Search with { DoSample = false } }).Tokens, Is.All.EqualTo(2L));
            Assert.That(generator.Generate([1], 3, new GenerationOptions { Sampler = _ => 3 }).Tokens, Is.All.EqualTo(3L), "the caller's sampler");
        });
    }

    /// <summary>top_k 1 and a top_p below the best token's probability choose as greedy does (the lowest id among equal logits) for any draw.</summary>
    [Test]
    public void TopKOneAndATinyTopPAreGreedy()
    {
        var random = new Random(17);
        foreach (var search in new[] { new SearchOptions { DoSample = true, TopK = 1 }, new SearchOptions { DoSample = true, TopK = 0, TopP = 1e-7f } })
        {
            var sampler = new SearchSampler(search, new Random(3));
            for (int trial = 0; trial < 200; trial++)
            {
                // Rounded to tenths: ties among the best are common.
                float[] logits = [.. Enumerable.Range(0, 50).Select(_ => MathF.Round((float)random.NextDouble() * 4, 1))];
                long greedy = Array.IndexOf(logits, logits.Max());
                Assert.That(sampler.Sample(logits), Is.EqualTo(greedy), $"trial {trial}, top_k {search.TopK}, top_p {search.TopP}");
            }
        }
    }

    /// <summary>
    /// The drawn tokens follow the softmax of the top k logits at the temperature, computed here: over 40,000 draws each
    /// frequency within 0.01 (four standard deviations) of its probability, and no token outside the top k.
    /// </summary>
    [Test]
    public void TopKAndTemperatureSampleTheSoftmaxOfTheKBest()
    {
        float[] logits = [2f, 1f, 0.5f, -1f, 3f, 0.9f];
        const float temperature = 0.7f;
        int[] best = [4, 0, 1];
        double[] weights = [.. best.Select(id => Math.Exp(logits[id] / temperature))];
        var expected = new double[logits.Length];
        for (int i = 0; i < best.Length; i++) expected[best[i]] = weights[i] / weights.Sum();
        AssertFrequencies(new SearchOptions { DoSample = true, TopK = 3, Temperature = temperature }, logits, expected);
    }

    /// <summary>
    /// top_p as GenAI's CPU search applies it: a draw u in [0, p) walks the sorted probabilities, so with probabilities 0.5,
    /// 0.3, 0.2 and p = 0.6 the first token takes 0.5 / 0.6 of the draws, the second the remaining 0.1 / 0.6, the third none.
    /// </summary>
    [Test]
    public void TopPKeepsTheNucleusAsGenAiWalksIt()
    {
        float[] logits = [MathF.Log(0.2f), MathF.Log(0.5f), MathF.Log(0.3f)];
        AssertFrequencies(new SearchOptions { DoSample = true, TopK = 0, TopP = 0.6f }, logits, [0, 0.5 / 0.6, 0.1 / 0.6]);
    }

    /// <summary>
    /// top_p 0 as GenAI reads it (it accepts [0, 1]): with a top_k above 1, no top-p at all, so the draws follow the k tokens'
    /// softmax; with top_k 0, only the best token.
    /// </summary>
    [Test]
    public void TopPZeroSamplesTheTopKWholeOrTakesTheBest()
    {
        float[] logits = [2f, 1f, 0.5f, -1f, 3f, 0.9f];
        int[] best = [4, 0, 1];
        double[] weights = [.. best.Select(id => Math.Exp(logits[id]))];
        var expected = new double[logits.Length];
        for (int i = 0; i < best.Length; i++) expected[best[i]] = weights[i] / weights.Sum();
        AssertFrequencies(new SearchOptions { DoSample = true, TopK = 3, TopP = 0 }, logits, expected);
        AssertFrequencies(new SearchOptions { DoSample = true, TopK = 0, TopP = 0 }, logits, [0, 0, 0, 0, 1, 0]);
    }

    private static void AssertFrequencies(SearchOptions search, float[] logits, double[] expected)
    {
        const int draws = 40_000;
        var sampler = new SearchSampler(search, new Random(23));
        var counts = new int[logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Sample(logits)]++;
        for (int id = 0; id < logits.Length; id++)
        {
            if (expected[id] == 0) Assert.That(counts[id], Is.Zero, $"token {id} is outside the kept tokens");
            else Assert.That((double)counts[id] / draws, Is.EqualTo(expected[id]).Within(0.01), $"token {id}");
        }
    }

    public static IEnumerable<TestCaseData> BadSearches()
    {
        static TestCaseData Case(string key, JsonNode? value, string message, bool sample = false) =>
            new TestCaseData(key, value, sample, message).SetName($"Bad search.{key}: {value?.ToJsonString() ?? "null"}{(sample ? " sampling" : "")}");
        yield return Case("top_p", 1.5, "search.top_p must be in [0, 1], got 1.5");
        yield return Case("top_p", -0.1, "search.top_p must be in [0, 1], got -0.1");
        yield return Case("top_k", -1, "search.top_k must not be negative (0 keeps every token), got -1");
        yield return Case("temperature", -0.5, "search.temperature must be finite and not negative when sampling (do_sample; 0 is greedy), got -0.5", sample: true);
        yield return Case("repetition_penalty", 0, "search.repetition_penalty must be positive and finite (1: none), got 0");
        yield return Case("max_length", -3, "search.max_length must be a positive integer, got -3");
        yield return Case("min_length", -1, "search.min_length must not be negative, got -1");
        yield return Case("num_beams", 0, "search.num_beams must be at least 1, got 0");
        yield return Case("random_seed", -2, "search.random_seed must not be negative (-1 in genai_config.json: a random seed), got -2");
        yield return Case("do_sample", "yes", "search.do_sample must be true or false, got \"yes\"");
        yield return Case("top_k", 2.5, "search.top_k must be an integer, got 2.5");
        yield return Case("temperature", null, "search.temperature must be a number, got null");
    }

    [TestCaseSource(nameof(BadSearches))]
    public void ASearchValueOutOfRangeIsRefusedNamingItsKey(string key, JsonNode? value, bool sample, string message)
    {
        string folder = FixedLogitsModel(c =>
        {
            c["search"]!["do_sample"] = sample;
            c["search"]![key] = value;
        });
        try
        {
            Assert.That(() => Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)), Throws.InstanceOf<InvalidDataException>().With.Message.EqualTo(
                $"{Path.Combine(folder, HybridDecoder.ConfigFile)}: {message}"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>A temperature of 0 is no error for greedy search, which does not read it, and makes sampling greedy (as in GenAI).</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void AZeroTemperatureSearchesGreedily(bool doSample) =>
        WithGenerator(Search(("temperature", 0), ("do_sample", doSample), ("top_k", 0)), generator =>
            Assert.That(generator.Generate([1], 8, new GenerationOptions { StopTokenIds = [] }).Tokens, Is.All.EqualTo(2L)));

    /// <summary>num_beams above 1 (beam search) is refused when generating, not run greedily; the caller's num_beams 1 runs. Options the caller gives out of range are named as properties.</summary>
    [Test]
    public void BeamSearchAndTheCallersOptionsOutOfRangeAreRefused()
    {
        WithGenerator(Search(("num_beams", 4)), generator =>
        {
            Assert.That(() => generator.Generate([1], 2), Throws.ArgumentException.With.Message.StartWith(
                "search.num_beams is 4: beam search is not supported (greedy or sampling: num_beams 1)"));
            Assert.That(generator.Generate([1], 2, new GenerationOptions { Search = generator.Search with { NumBeams = 1 } }).Tokens, Is.All.EqualTo(2L));
            Assert.That(() => generator.Generate([1], 2, new GenerationOptions { Search = new SearchOptions { TopP = 2 } }),
                Throws.ArgumentException.With.Message.StartWith("SearchOptions.TopP must be in [0, 1], got 2"));
            Assert.That(() => generator.Validate([1], 2, new SearchOptions { DoSample = true, Temperature = -1 }),
                Throws.ArgumentException.With.Message.StartWith("SearchOptions.Temperature must be finite and not negative when sampling (do_sample; 0 is greedy), got -1"));
        });
    }
}

using System.Text.Json.Nodes;
using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Onnx;

/// <summary>
/// The hybrid decoder sample (Qwen3.5's layout) written as a GenAI model folder, and <see cref="Generator"/> over it: the
/// hand-over against ONNX Runtime alone, cancellation, the sampling callback, and bad folders and configs.
/// </summary>
[TestFixture]
public sealed class GeneratorTests
{
    private string _folder = "";

    [OneTimeSetUp]
    public void WriteSample()
    {
        _folder = Path.Combine(Path.GetTempPath(), $"engine-hybrid-{Environment.ProcessId}-{Guid.NewGuid():N}");
        HybridDecoder.Write(_folder, new HybridDecoderSpec());
    }

    [OneTimeTearDown]
    public void DeleteSample() => Directory.Delete(_folder, recursive: true);

    /// <summary>
    /// The sample's config for a test model whose KV cache is a Concat of past and new rows: a new present each run, not one
    /// buffer written in place (search.past_present_share_buffer, which the builder sets for GroupQueryAttention only).
    /// </summary>
    private static JsonObject ConcatCacheConfig(HybridDecoderSpec spec)
    {
        var config = HybridDecoder.Config(spec);
        config["search"]!["past_present_share_buffer"] = false;
        return config;
    }

    private static IReadOnlyList<long> Prompt(int length, int vocab, int seed = 3)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => (long)random.Next(vocab)).ToArray();
    }

    [Test]
    public void TheFolderIsTheBuildersLayout()
    {
        Assert.That(File.Exists(Path.Combine(_folder, HybridDecoder.ModelFile)) && File.Exists(Path.Combine(_folder, HybridDecoder.DataFile)), Is.True, "model.onnx and its external data");
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, HybridDecoder.ConfigFile)))!;
        Assert.That((string?)config["model"]!["decoder"]!["inputs"]!["past_key_names"], Is.EqualTo("past_key_values.%d.key"));
        var model = OnnxModel.Load(Path.Combine(_folder, HybridDecoder.ModelFile));
        Assert.That(model.HasExternalData, Is.True);
        Assert.That(model.NodeOpTypes.Count(t => t == "CausalConvWithState"), Is.EqualTo(3), "three Gated DeltaNet layers");
        Assert.That(model.NodeOpTypes.Count(t => t == "GroupQueryAttention"), Is.EqualTo(1), "one full-attention layer");
    }

    /// <summary>
    /// Greedy generation, a prompt of 40 tokens then 16 decode steps: the same tokens, and every step's logits within
    /// the tolerance (relative RMS) of ONNX Runtime alone's: float32's, and float16's for a float16 model (every tensor
    /// between the nodes rounded to float16 on both paths). The GPU kernels run on ILGPU's CPU accelerator here (a
    /// shorter generation: it is slow), on CUDA where there is a device. The int4 export's projections (MatMulNBits) run at
    /// accuracy_level 0 here: at 4, ORT rounds each projection's input to int8, which turns the paths' float32 differences
    /// (1e-6) into whole int8 steps and logits about 1e-2 apart, too far for greedy tokens to agree (the layer's own test
    /// runs it at 4).
    /// </summary>
    [TestCase(TensorElementType.Float, HandoverBackend.Cpu, 40, 17, false)]
    [TestCase(TensorElementType.Float16, HandoverBackend.Cpu, 40, 17, false)]
    [TestCase(TensorElementType.Float, HandoverBackend.Cpu, 40, 17, true)]
    [TestCase(TensorElementType.Float, HandoverBackend.Gpu, 6, 3, false)]
    public void HandoverGeneratesWhatOrtAloneGeneratesGreedily(TensorElementType type, HandoverBackend backend, int promptLength, int newTokens, bool int4Weights)
    {
        string folder = type == TensorElementType.Float && !int4Weights ? _folder : Path.Combine(_folder, $"{type}-int4-{int4Weights}");
        if (folder != _folder) HybridDecoder.Write(folder, new HybridDecoderSpec { ElementType = type, Int4Weights = int4Weights, Int4AccuracyLevel = 0 });
        using var ort = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
        using var engine = Generator.Open(folder, OnnxTestHost.Options(backend));
        Assert.That(engine.Handover.EngineNodes.Select(n => n.OpType).Order(),
            Is.EqualTo(Enumerable.Repeat("CausalConvWithState", 3).Concat(Enumerable.Repeat("LinearAttention", 3)).Concat(Enumerable.Repeat("SimplifiedLayerNormalization", 3))),
            "the three Gated DeltaNet layers' convolution, LinearAttention and gated norm chain");
        Assert.That(ort.Handover.EngineNodes, Is.Empty);
        Assert.That(engine.CarriedStates, Has.Count.EqualTo(8), "conv and recurrent states of three layers, key and value of one");

        var prompt = Prompt(promptLength, engine.VocabSize!.Value);
        var (ortTokens, ortLogits) = Generate(ort, prompt, newTokens);
        var (engineTokens, engineLogits) = Generate(engine, prompt, newTokens);
        Assert.That(engineTokens, Is.EqualTo(ortTokens), "greedy tokens");
        double tolerance = type == TensorElementType.Float ? Harness.Numerics.Fp32Tolerance : Harness.Numerics.Fp16Tolerance;
        for (int step = 0; step < ortLogits.Count; step++)
        {
            Assert.That(ortLogits[step].Any(v => v != 0), Is.True, $"step {step}: ORT's logits are not all zeros");
            double err = Harness.Numerics.RelativeRms(engineLogits[step], ortLogits[step]);
            Assert.That(err, Is.LessThanOrEqualTo(tolerance), $"step {step} ({(step == 0 ? "prefill" : "decode")}): logits, relative RMS vs ORT alone");
        }
    }

    private static (IReadOnlyList<long> Tokens, List<float[]> Logits) Generate(Generator generator, IReadOnlyList<long> prompt, int newTokens)
    {
        var logits = new List<float[]>();
        var result = generator.Generate(prompt, newTokens, new GenerationOptions { OnToken = (_, row) => logits.Add(row.ToArray()) });
        Assert.That(result.Tokens, Has.Count.EqualTo(newTokens));
        Assert.That(logits, Has.Count.EqualTo(newTokens), "one callback per token");
        return (result.Tokens, logits);
    }

    [Test]
    public void CancellingStopsGenerationAndTheGeneratorStaysUsable()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        var prompt = Prompt(8, generator.VocabSize!.Value);
        var expected = generator.Generate(prompt, 6).Tokens;

        using var cancel = new CancellationTokenSource();
        var seen = new List<long>();
        var options = new GenerationOptions
        {
            OnToken = (token, _) =>
            {
                seen.Add(token.TokenId);
                if (token.Index == 2) cancel.Cancel();
            },
        };
        Assert.Throws<OperationCanceledException>(() => generator.Generate(prompt, 6, options, cancel.Token));
        Assert.That(seen, Is.EqualTo(expected.Take(3)), "tokens before the cancellation");

        Assert.Throws<OperationCanceledException>(() => generator.Generate(prompt, 6, cancellationToken: cancel.Token), "already cancelled");
        Assert.That(generator.Generate(prompt, 6).Tokens, Is.EqualTo(expected), "a generation after the cancelled ones starts from empty states");
    }

    [Test]
    public void CancellingDuringThePrefillStopsTheRunInProgress()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        var prompt = Prompt(8000, generator.VocabSize!.Value);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(30));
        int tokens = 0;
        Assert.Throws<OperationCanceledException>(() => generator.Generate(prompt, 4, new GenerationOptions { OnToken = (_, _) => tokens++ }, cancel.Token));
        // Without the terminate flag the prefill would run to its end and its token be reported before the cancellation is seen.
        Assert.That(tokens, Is.Zero, "cancelled before the first token");
        Assert.That(generator.Generate(prompt.Take(8).ToArray(), 2).Tokens, Has.Count.EqualTo(2), "usable after the terminated run");
    }

    [Test]
    public void TheSamplerChoosesTokensAndAChoiceOutsideTheVocabularyIsRefused()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        var prompt = Prompt(5, generator.VocabSize!.Value);
        int calls = 0;
        var tokens = generator.Generate(prompt, 4, new GenerationOptions { Sampler = logits => { calls++; return logits.Length - 2 - calls; } }).Tokens;
        Assert.That(tokens, Is.EqualTo(new long[] { 1021, 1020, 1019, 1018 }));

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate(prompt, 2, new GenerationOptions { Sampler = logits => logits.Length }));
        Assert.That(e!.Message, Does.StartWith("the sampler's token 0 is 1024, outside the vocabulary [0, 1024)"));
        var prompted = Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate([1, -4], 2));
        Assert.That(prompted!.Message, Does.StartWith("prompt token 1 is -4"));
    }

    [Test]
    public void OneGenerationAtATimeAndNoneAfterDispose()
    {
        var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        long[] prompt = [3, 1, 4];
        Exception? second = null;
        generator.Generate(prompt, 2, new GenerationOptions { OnToken = (_, _) => second ??= Assert.Catch(() => generator.Generate(prompt, 1)) });
        Assert.That(second, Is.InstanceOf<InvalidOperationException>().With.Message.EqualTo("the generator is already generating (one generation at a time)"));
        Assert.That(generator.Generate(prompt, 1).Tokens, Has.Count.EqualTo(1), "usable once the first has ended");
        generator.Dispose();
        Assert.Throws<ObjectDisposedException>(() => generator.Generate(prompt, 1));
    }

    /// <summary>
    /// A callback that throws (the per-token callback, the sampler) ends the generation with its own exception, and the
    /// generator goes on as if that generation had never been made.
    /// </summary>
    [Test]
    public void ACallbackThatThrowsEndsTheGenerationAndTheGeneratorStaysUsable()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        var prompt = Prompt(8, generator.VocabSize!.Value);
        var expected = generator.Generate(prompt, 5).Tokens;
        var onToken = new GenerationOptions { OnToken = (token, _) => { if (token.Index == 2) throw new FormatException("from the callback"); } };
        Assert.That(() => generator.Generate(prompt, 5, onToken), Throws.InstanceOf<FormatException>().With.Message.EqualTo("from the callback"));
        Assert.That(generator.Generate(prompt, 5).Tokens, Is.EqualTo(expected), "after the per-token callback threw");
        var sampler = new GenerationOptions { Sampler = _ => throw new FormatException("from the sampler") };
        Assert.That(() => generator.Generate(prompt, 5, sampler), Throws.InstanceOf<FormatException>().With.Message.EqualTo("from the sampler"));
        Assert.That(generator.Generate(prompt, 5).Tokens, Is.EqualTo(expected), "after the sampler threw");
    }

    /// <summary>
    /// A second thread's generation while one runs is refused at once, and the running one is not disturbed; generators of
    /// their own on the same model folder run at once, each generating what it generates alone.
    /// </summary>
    [Test]
    public void OneGeneratorServesOneThreadAndGeneratorsOfTheirOwnRunTogether()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        using var other = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        var prompts = new[] { Prompt(8, generator.VocabSize!.Value, seed: 1), Prompt(5, generator.VocabSize!.Value, seed: 2) };
        var expected = prompts.Select(p => generator.Generate(p, 6).Tokens).ToArray();

        using var inside = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var held = Task.Run(() => generator.Generate(prompts[0], 6, new GenerationOptions
        {
            OnToken = (token, _) =>
            {
                if (token.Index != 1) return;
                inside.Set();
                release.Wait();
            },
        }));
        inside.Wait();
        Assert.That(() => generator.Generate(prompts[1], 2), Throws.InvalidOperationException.With.Message.Contain("already generating"));
        release.Set();
        Assert.That(held.Result.Tokens, Is.EqualTo(expected[0]), "the held generation");

        using var start = new Barrier(2);
        var together = new[] { generator, other }.Select((g, i) => Task.Factory.StartNew(() =>
        {
            start.SignalAndWait();
            return g.Generate(prompts[i], 6).Tokens;
        }, TaskCreationOptions.LongRunning)).ToArray();
        Assert.That(together.Select(t => t.Result), Is.EqualTo(expected), "two generators at once");
    }

    /// <summary>Dispose on another thread waits for the generation in progress to end (it released the session under it and crashed); from inside it, it is refused.</summary>
    [Test]
    public void DisposeWaitsForTheGenerationInProgress()
    {
        var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        long[] prompt = [3, 1, 4];
        Exception? fromInside = null;
        generator.Generate(prompt, 1, new GenerationOptions { OnToken = (_, _) => fromInside = Assert.Catch(generator.Dispose) });
        Assert.That(fromInside, Is.InstanceOf<InvalidOperationException>());

        using var generating = new ManualResetEventSlim();
        int lastToken = -1;
        var generation = Task.Run(() => generator.Generate(prompt, 6, new GenerationOptions
        {
            OnToken = (token, _) =>
            {
                Volatile.Write(ref lastToken, token.Index);
                generating.Set();
            },
        }));
        generating.Wait();
        generator.Dispose();
        Assert.That(Volatile.Read(ref lastToken), Is.EqualTo(5), "Dispose returned after the generation's last token");
        Assert.That(generation.Result.Tokens, Has.Count.EqualTo(6));
        var refused = Assert.Throws<ObjectDisposedException>(() => generator.Generate(prompt, 1))!;
        Assert.That(refused.ObjectName, Does.Contain(nameof(Generator)), "the generator is named, not its session");
    }

    /// <summary>A second Dispose, on another thread while the first waits for a generation, also returns only once the generation has ended (it returned at once).</summary>
    [Test]
    public void ASecondDisposeWhileTheFirstWaitsAlsoWaitsForTheGeneration()
    {
        var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.Cpu));
        long[] prompt = [3, 1, 4];
        using var generating = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        bool generationEnded = false;  // set by the generation's last token
        var generation = Task.Factory.StartNew(() => generator.Generate(prompt, 2, new GenerationOptions
        {
            StopTokenIds = [],
            OnToken = (token, _) =>
            {
                generating.Set();
                release.Wait();
                if (token.Index == 1) Volatile.Write(ref generationEnded, true);
            },
        }), TaskCreationOptions.LongRunning);
        generating.Wait();
        var first = Task.Factory.StartNew(generator.Dispose, TaskCreationOptions.LongRunning);
        // The first Dispose has begun once the generator refuses generations.
        while (true)
        {
            try
            {
                generator.Validate(prompt, 1);
                Thread.Sleep(1);
            }
            catch (ObjectDisposedException)
            {
                break;
            }
        }
        var second = Task.Factory.StartNew(() =>
        {
            generator.Dispose();
            return Volatile.Read(ref generationEnded);
        }, TaskCreationOptions.LongRunning);
        second.Wait(500);
        release.Set();
        Assert.That(generation.Result.Tokens, Has.Count.EqualTo(2));
        first.Wait();
        Assert.That(second.Result, Is.True, "the second Dispose returned after the generation ended");
    }

    /// <summary>
    /// Generating from the positions model returns the positions of the tokens it feeds: position_ids count on from the
    /// prompt, whether the model takes its ids, mask and positions as int64 or int32 (which was refused).
    /// </summary>
    [TestCase(TensorElementType.Int64)]
    [TestCase(TensorElementType.Int32)]
    public void PositionIdsCountOnFromThePrompt(TensorElementType indexType)
    {
        string folder = PositionsModel(PositionsVocab, indexType: indexType);
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.CarriedStates, Is.EqualTo(new[] { ("past_key_values.0.key", "present.0.key"), ("past_key_values.0.value", "present.0.value") }));
            Assert.That(generator.Generate([9, 9, 9], 5).Tokens, Is.EqualTo(new long[] { 2, 3, 4, 5, 6 }));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// A model that leaves the logits' vocabulary dim symbolic: prompt tokens are checked against the config's vocab_size
    /// (when it gives one), the sampler's token against the logits it was given.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void WithASymbolicVocabularyTokensAreStillChecked(bool configVocab)
    {
        string folder = PositionsModel("vocab", configVocab);
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.VocabSize, configVocab ? Is.EqualTo(PositionsVocab) : Is.Null);
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => generator.Generate([1, 2], 1, new GenerationOptions { Sampler = _ => PositionsVocab }));
            Assert.That(e!.Message, Does.StartWith($"the sampler's token 0 is {PositionsVocab}, outside the vocabulary [0, {PositionsVocab})"));
            if (configVocab)
                Assert.That(() => generator.Validate([1, PositionsVocab], 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.StartWith($"prompt token 1 is {PositionsVocab}"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>Where the model does not fix the vocabulary, int32 input_ids bound the prompt's ids: one past int32's range is refused naming the input.</summary>
    [Test]
    public void Int32IdsPastTheirRangeAreRefused()
    {
        string folder = PositionsModel("vocab", configVocab: false, indexType: TensorElementType.Int32);
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(() => generator.Validate([1, 1L << 31], 1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.StartWith(
                "prompt token 1 is 2147483648, past the largest id the model's input_ids holds (2147483647)"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// The hybrid decoder written with int32 input_ids and attention_mask (which were refused) generates what the int64 one
    /// generates, on the hand-over and on ONNX Runtime alone: the same weights, the ids and mask fed in the model's type.
    /// </summary>
    [TestCase(HandoverBackend.Cpu)]
    [TestCase(HandoverBackend.None)]
    public void Int32InputIdsGenerateWhatInt64IdsGenerate(HandoverBackend backend)
    {
        string folder = Path.Combine(_folder, $"int32-{backend}");
        HybridDecoder.Write(folder, new HybridDecoderSpec { IndexType = TensorElementType.Int32 });
        Assert.That(OnnxModel.Load(Path.Combine(folder, HybridDecoder.ModelFile)).Inputs.Where(i => i.Name is "input_ids" or "attention_mask").Select(i => i.ElementType),
            Is.EqualTo(new[] { TensorElementType.Int32, TensorElementType.Int32 }));
        using var int64 = Generator.Open(_folder, OnnxTestHost.Options(backend));
        using var int32 = Generator.Open(folder, OnnxTestHost.Options(backend));
        var prompt = Prompt(9, int64.VocabSize!.Value);
        var options = new GenerationOptions { StopTokenIds = [] };
        var expected = int64.Generate(prompt, 6, options).Tokens;
        Assert.That(int32.Generate(prompt, 6, options).Tokens, Is.EqualTo(expected));
        Assert.That(int32.Generate(prompt, 6, options).Tokens, Is.EqualTo(expected), "a second generation, the buffers kept from the first");
    }

    /// <summary>
    /// A prefill whose logits [1, T, V] pass 2 GiB (V = 2^18, T = 2,049 float32: 2^31 + 1 MiB) reads the last row only,
    /// where a span over the whole tensor threw. The last row is (id - 1) · row, the row's largest entry at V - 10; the
    /// rows before it are zeros (padded), whose greedy token is 0. The same output from
    /// <see cref="ModelSession.Run(IReadOnlyDictionary{string, TensorData}, IReadOnlyCollection{string}?)"/>, which hands
    /// outputs on as spans, is refused naming it.
    /// </summary>
    [Test]
    public void APrefillWhoseLogitsPass2GiBReadsTheLastRowOnly()
    {
        const int vocab = 1 << 18, promptLength = 2049;
        Assert.That((long)vocab * promptLength * sizeof(float), Is.GreaterThan(int.MaxValue));
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float, I64 = Engine.Onnx.Proto.TensorProto.Types.DataType.Int64;
        var b = new ModelBuilder(21, "wide");
        string ids = b.Input("input_ids", I64, "batch_size", "sequence_length");
        b.Input("attention_mask", I64, "batch_size", "total_sequence_length");
        var row = new float[vocab];
        for (int i = 0; i < vocab; i++) row[i] = i % 1000 / 1000f;
        row[vocab - 10] = 5;
        string last = b.Op("Slice", ids, b.Int64s("starts", -1), b.Int64s("ends", long.MaxValue), b.Int64s("slice_axes", 1));
        string scale = b.Op("Sub", b.Node("Cast", [last], attributes: [("to", 1L)])[0], b.Initializer("one", [1f], 1));
        string lastRow = b.Op("Mul", b.Op("Unsqueeze", scale, b.Int64s("unsqueeze_axes", 2)), b.Initializer("row", row, 1, 1, vocab));
        // Padding fills the rows before the last with zeros: no arithmetic over 2 GiB.
        string before = b.Op("Sub", b.Op("Gather", b.Op("Shape", ids), b.Int64s("index", 1)), b.Int64s("one_row", 1));
        string pads = b.Node("Concat", [b.Int64s("zeros_before", 0), before, b.Int64s("zeros_after", 0, 0, 0, 0)], attributes: [("axis", 0L)])[0];
        b.Node("Pad", [lastRow, pads], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", vocab);
        string folder = Directory.CreateTempSubdirectory("engine-wide-").FullName;
        try
        {
            b.Build().Save(Path.Combine(folder, "model.onnx"));
            var config = ConcatCacheConfig(new HybridDecoderSpec { VocabSize = vocab, ContextLength = 4096 });
            File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
            var prompt = new long[promptLength];
            prompt[^1] = 2;
            using (var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)))
            {
                float first = float.NaN;
                var result = generator.Generate(prompt, 2, new GenerationOptions { OnToken = (t, logits) => { if (t.Index == 0) first = logits[vocab - 10]; } });
                Assert.That(result.Tokens, Is.EqualTo(new long[] { vocab - 10, vocab - 10 }));
                Assert.That(first, Is.EqualTo(5f), "the last row, (2 - 1) · row");
            }

            using var session = ModelSession.Open(Path.Combine(folder, "model.onnx"), OnnxTestHost.Options(HandoverBackend.None));
            var inputs = new Dictionary<string, TensorData>
            {
                ["input_ids"] = TensorData.Create(prompt, 1, promptLength),
                ["attention_mask"] = TensorData.Create(Enumerable.Repeat(1L, promptLength).ToArray(), 1, promptLength),
            };
            Assert.That(() => session.Run(inputs), Throws.InstanceOf<NotSupportedException>().With.Message.Contains($"output 'logits' (Float [1, {promptLength}, {vocab}]) is {(long)vocab * promptLength * 4} bytes"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private const int PositionsVocab = 16;

    /// <summary>
    /// A model folder whose logits are one-hot at its position_ids (and whose KV cache appends them): greedy generation returns
    /// the positions of the tokens it feeds. <paramref name="vocabDim"/>: the logits' last dim as declared; <paramref name="configVocab"/>:
    /// whether genai_config.json gives vocab_size.
    /// </summary>
    private static string PositionsModel(object vocabDim, bool configVocab = true, TensorElementType indexType = TensorElementType.Int64)
    {
        const int vocab = PositionsVocab;
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float;
        var index = (Engine.Onnx.Proto.TensorProto.Types.DataType)indexType;
        var b = new ModelBuilder(21, "positions");
        b.Input("input_ids", index, "batch_size", "sequence_length");
        b.Input("attention_mask", index, "batch_size", "total_sequence_length");
        string positions = b.Input("position_ids", index, "batch_size", "sequence_length");
        var identity = new float[vocab * vocab];
        for (int i = 0; i < vocab; i++) identity[i * vocab + i] = 1;
        b.Node("Gather", [b.Initializer("one_hot", identity, vocab, vocab), positions], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", vocabDim);
        string asKeys = b.Op("Unsqueeze", b.Node("Cast", [positions], attributes: [("to", 1L)])[0], b.Int64s("axes", 1, 3));
        foreach (var part in new[] { "key", "value" })
        {
            b.Input($"past_key_values.0.{part}", F, "batch_size", 1, "past_sequence_length", 1);
            b.Node("Concat", [$"past_key_values.0.{part}", asKeys], outputNames: [$"present.0.{part}"], attributes: [("axis", 2L)]);
            b.Output($"present.0.{part}", F, "batch_size", 1, "total_sequence_length", 1);
        }
        string folder = Directory.CreateTempSubdirectory("engine-positions-").FullName;
        b.Build().Save(Path.Combine(folder, "model.onnx"));
        var config = ConcatCacheConfig(new HybridDecoderSpec { VocabSize = vocab, ContextLength = vocab });
        config["model"]!["decoder"]!["inputs"]!["position_ids"] = "position_ids";
        if (!configVocab) config["model"]!.AsObject().Remove("vocab_size");
        File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
        return folder;
    }

    /// <summary>
    /// LFM2 as GenAI's builder writes it (lfm2.py): genai_config.json names the conv cache by past_conv_names and
    /// present_conv_names, which GenAI reads (config.h) and carries present to past; left out, they are GenAI's defaults.
    /// </summary>
    [TestCase(true)]
    [TestCase(false)]
    public void AnLfm2ConvCacheIsCarriedByItsTemplates(bool named)
    {
        string folder = CountingModel(conv: true, config =>
        {
            if (!named) return;
            config["model"]!["decoder"]!["inputs"]!["past_conv_names"] = "past_conv.%d";
            config["model"]!["decoder"]!["outputs"]!["present_conv_names"] = "present_conv.%d";
        });
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.CarriedStates, Is.EqualTo(new[]
            {
                ("past_conv.0", "present_conv.0"), ("past_key_values.1.key", "present.1.key"), ("past_key_values.1.value", "present.1.value"),
            }));
            Assert.That(generator.Generate([3], 3).Tokens, Is.EqualTo(new long[] { 4, 5, 6 }));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// GenAI lets a config leave out the decoder's inputs and outputs objects and every name in them (config.h gives the
    /// defaults: input_ids, attention_mask, logits, past_key_values.%d.key, present.%d.key, ...): such a config runs.
    /// </summary>
    [TestCase("inputs", "outputs")]
    [TestCase("past_key_names", "past_value_names", "present_key_names", "present_value_names")]
    public void NamesLeftOutAreGenAisDefaults(params string[] keys)
    {
        string folder = CountingModel(conv: false, config =>
        {
            var decoder = config["model"]!["decoder"]!.AsObject();
            foreach (var key in keys)
            {
                decoder.Remove(key);
                decoder["inputs"]?.AsObject().Remove(key);
                decoder["outputs"]?.AsObject().Remove(key);
            }
        });
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.CarriedStates, Is.EqualTo(new[] { ("past_key_values.1.key", "present.1.key"), ("past_key_values.1.value", "present.1.value") }));
            Assert.That(generator.Generate([3], 3).Tokens, Is.EqualTo(new long[] { 4, 5, 6 }));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// GenAI takes KV templates with no '.' part after the %d (past_key_%d → present_key_%d): it derives no linear-attention
    /// state names from them and carries the cache. Such a config was refused as if the templates were malformed.
    /// </summary>
    [Test]
    public void KvTemplatesWithoutADottedLastPartAreCarried()
    {
        string folder = CountingModel(conv: false, config =>
        {
            config["model"]!["decoder"]!["inputs"]!["past_key_names"] = "past_key_%d";
            config["model"]!["decoder"]!["inputs"]!["past_value_names"] = "past_value_%d";
            config["model"]!["decoder"]!["outputs"]!["present_key_names"] = "present_key_%d";
            config["model"]!["decoder"]!["outputs"]!["present_value_names"] = "present_value_%d";
        }, pastName: "past_{0}_1", presentName: "present_{0}_1");
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.CarriedStates, Is.EqualTo(new[] { ("past_key_1", "present_key_1"), ("past_value_1", "present_value_1") }));
            Assert.That(generator.Generate([3], 3).Tokens, Is.EqualTo(new long[] { 4, 5, 6 }));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// Generation stops at genai_config.json's eos_token_id (a token or a list), as GenAI does, the stop token the last
    /// of the result; GenerationOptions.StopTokenIds replaces them, and an empty list makes every token asked for.
    /// </summary>
    [Test]
    public void GenerationStopsAtTheConfigsEosTokensUnlessToldOtherwise()
    {
        foreach (var (eos, ids) in new (JsonNode Eos, long[] Ids)[] { (6, [6]), (new JsonArray(7, 5), [7, 5]) })
        {
            string folder = CountingModel(conv: false, config => config["model"]!["eos_token_id"] = eos.DeepClone());
            try
            {
                using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
                Assert.That(generator.EosTokenIds, Is.EqualTo(ids));
                var seen = new List<long>();
                var result = generator.Generate([3], 10, new GenerationOptions { OnToken = (t, _) => seen.Add(t.TokenId) });
                long[] expected = ids.Length == 1 ? [4, 5, 6] : [4, 5];
                Assert.That(result.Tokens, Is.EqualTo(expected), $"eos {eos.ToJsonString()}");
                Assert.That(seen, Is.EqualTo(expected), "the stop token reported like the others");
                Assert.That(result.StopReason, Is.EqualTo(GenerationStopReason.StopToken));

                var all = generator.Generate([3], 10, new GenerationOptions { StopTokenIds = [] });
                Assert.That(all.Tokens, Is.EqualTo(new long[] { 4, 5, 6, 7, 0, 1, 2, 3, 4, 5 }));
                Assert.That(all.StopReason, Is.EqualTo(GenerationStopReason.Length));
                Assert.That(generator.Generate([3], 10, new GenerationOptions { StopTokenIds = [1] }).Tokens, Is.EqualTo(new long[] { 4, 5, 6, 7, 0, 1 }));
            }
            finally
            {
                Directory.Delete(folder, recursive: true);
            }
        }
    }

    /// <summary>
    /// Where genai_config.json gives no eos_token_id, or an empty list, GenAI (config.cpp) stops at pad_token_id, and at
    /// token 0 when the config gives no pad_token_id either; the generator read no stop token and made every token asked for.
    /// </summary>
    [TestCase(null, 6L, 6L)]
    [TestCase("[]", 7L, 7L)]
    [TestCase(null, null, 0L)]
    public void WithoutEosTokensGenerationStopsAtThePadToken(string? eos, long? pad, long stop)
    {
        string folder = CountingModel(conv: false, config =>
        {
            var model = config["model"]!.AsObject();
            model.Remove("eos_token_id");
            model.Remove("pad_token_id");
            if (eos is not null) model["eos_token_id"] = JsonNode.Parse(eos);
            if (pad is not null) model["pad_token_id"] = pad;
        });
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.EosTokenIds, Is.EqualTo(new[] { stop }));
            var result = generator.Generate([3], 10);
            Assert.That(result.Tokens[^1], Is.EqualTo(stop));
            Assert.That(result.Tokens, Has.Count.EqualTo((int)((stop - 3 + CountingVocab) % CountingVocab)));
            Assert.That(result.StopReason, Is.EqualTo(GenerationStopReason.StopToken));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// Without a context_length, a generation asked for 100 million tokens (meant to end at a stop token or a cancel)
    /// allocated the attention mask and position ids for all of them (1.6 GB) before its first token.
    /// </summary>
    [Test]
    public void MemoryFollowsTheTokensGeneratedNotThoseAskedFor()
    {
        string folder = CountingModel(conv: false, config => config["model"]!.AsObject().Remove("context_length"));
        try
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            generator.Generate([3], 2);
            using var cancel = new CancellationTokenSource();
            long before = GC.GetAllocatedBytesForCurrentThread(), beforeFirstToken = 0;
            Assert.Throws<OperationCanceledException>(() => generator.Generate([3], 100_000_000, new GenerationOptions
            {
                StopTokenIds = [],
                OnToken = (token, _) =>
                {
                    if (token.Index > 0) return;
                    beforeFirstToken = GC.GetAllocatedBytesForCurrentThread() - before;
                    cancel.Cancel();
                },
            }, cancel.Token));
            Assert.That(beforeFirstToken, Is.LessThan(1_000_000), "bytes allocated before the first token");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// A decode step binds only the attention mask (longer each step) and a KV cache that grows; the logits and every state
    /// are written into buffers the generation made once. Before, each step rebound every input and output and took new
    /// logits and presents from ONNX Runtime: 2.3 KB of managed allocations a step on the sample, now about 300 bytes.
    /// </summary>
    [Test]
    public void ADecodeStepAllocatesUnderAKilobyte()
    {
        using var generator = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.None));
        var prompt = Prompt(8, generator.VocabSize!.Value);
        var options = new GenerationOptions { StopTokenIds = [] };
        generator.Generate(prompt, 64, options);
        long Allocated(int newTokens)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            generator.Generate(prompt, newTokens, options);
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        long few = Allocated(32), many = Allocated(288);
        Assert.That((many - few) / 256.0, Is.LessThan(1024), "managed bytes allocated per decode step");
    }

    /// <summary>
    /// States exported with a window of their last W states ahead of the batch (qwen.py's state_window: conv_state
    /// [W, batch, C, K - 1]) start as zeros with batch 1 at axis 1, as GenAI tells them by their rank; a symbolic dim
    /// other than the batch is refused naming the input, the dim and where the batch is.
    /// </summary>
    [TestCase(4)]
    [TestCase("channels")]
    public void WindowedStatesHaveTheirBatchAfterTheWindow(object channels)
    {
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float, I64 = Engine.Onnx.Proto.TensorProto.Types.DataType.Int64;
        var b = new ModelBuilder(21, "windowed");
        string ids = b.Input("input_ids", I64, "batch_size", "sequence_length");
        b.Input("attention_mask", I64, "batch_size", "total_sequence_length");
        var shifted = new float[CountingVocab * CountingVocab];
        for (int i = 0; i < CountingVocab; i++) shifted[i * CountingVocab + (i + 1) % CountingVocab] = 1;
        b.Node("Gather", [b.Initializer("table", shifted, CountingVocab, CountingVocab), ids], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", CountingVocab);
        b.Input("past_key_values.0.conv_state", F, 2, "batch_size", channels, 3);
        b.Node("Identity", ["past_key_values.0.conv_state"], outputNames: ["present.0.conv_state"]);
        b.Output("present.0.conv_state", F, 2, "batch_size", channels, 3);
        string folder = Directory.CreateTempSubdirectory("engine-windowed-").FullName;
        try
        {
            b.Build().Save(Path.Combine(folder, "model.onnx"));
            var config = ConcatCacheConfig(new HybridDecoderSpec { VocabSize = CountingVocab, ContextLength = 64 });
            File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
            if (channels is string)
            {
                Assert.That(() => Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)), Throws.InstanceOf<InvalidDataException>().With.Message.EqualTo(
                    "model.onnx: input 'past_key_values.0.conv_state' has the symbolic dim 'channels' at axis 2; a carried state needs fixed dims but for the batch (axis 1, after its state window)"));
                return;
            }
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.CarriedStates, Is.EqualTo(new[] { ("past_key_values.0.conv_state", "present.0.conv_state") }));
            Assert.That(generator.Generate([3], 3).Tokens, Is.EqualTo(new long[] { 4, 5, 6 }));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>3-D position ids (a multimodal model's rotary layout, [3, batch, sequence]) are refused at Open, not at the first run.</summary>
    [Test]
    public void PositionIdsInAnotherLayoutAreRefusedAtOpen()
    {
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float, I64 = Engine.Onnx.Proto.TensorProto.Types.DataType.Int64;
        var b = new ModelBuilder(21, "positions3d");
        string ids = b.Input("input_ids", I64, "batch_size", "sequence_length");
        b.Input("attention_mask", I64, "batch_size", "total_sequence_length");
        b.Input("position_ids", I64, 3, "batch_size", "sequence_length");
        b.Node("Gather", [b.Initializer("table", new float[CountingVocab * CountingVocab], CountingVocab, CountingVocab), ids], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", CountingVocab);
        string folder = Directory.CreateTempSubdirectory("engine-positions3d-").FullName;
        try
        {
            b.Build().Save(Path.Combine(folder, "model.onnx"));
            var config = ConcatCacheConfig(new HybridDecoderSpec { VocabSize = CountingVocab, ContextLength = 64 });
            config["model"]!["decoder"]!["inputs"]!["position_ids"] = "position_ids";
            string path = Path.Combine(folder, HybridDecoder.ConfigFile);
            File.WriteAllText(path, config.ToJsonString());
            Assert.That(() => Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)), Throws.InstanceOf<InvalidDataException>().With.Message.StartWith(
                $"{path}: model.decoder.inputs.position_ids ('position_ids') is [3, batch_size, sequence_length] in model.onnx; the generator feeds it as [batch, sequence]"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private const int CountingVocab = 8;

    /// <summary>
    /// A model folder whose logits are one-hot at (token + 1) mod V, so greedy generation counts on from the last token,
    /// with a KV cache for layer 1 (past_key_values.1.key/value → present.1.key/value) and, with <paramref name="conv"/>,
    /// an LFM2-style conv cache past_conv.0 → present_conv.0 as lfm2.py names it. <paramref name="edit"/> edits genai_config.json.
    /// </summary>
    private static string CountingModel(bool conv, Action<JsonNode> edit, string pastName = "past_key_values.1.{0}", string presentName = "present.1.{0}")
    {
        const int vocab = CountingVocab;
        const Engine.Onnx.Proto.TensorProto.Types.DataType F = Engine.Onnx.Proto.TensorProto.Types.DataType.Float, I64 = Engine.Onnx.Proto.TensorProto.Types.DataType.Int64;
        var b = new ModelBuilder(21, "counting");
        string ids = b.Input("input_ids", I64, "batch_size", "sequence_length");
        b.Input("attention_mask", I64, "batch_size", "total_sequence_length");
        var shifted = new float[vocab * vocab];
        for (int i = 0; i < vocab; i++) shifted[i * vocab + (i + 1) % vocab] = 1;
        b.Node("Gather", [b.Initializer("table", shifted, vocab, vocab), ids], outputNames: ["logits"]);
        b.Output("logits", F, "batch_size", "sequence_length", vocab);
        string asKeys = b.Op("Unsqueeze", b.Node("Cast", [ids], attributes: [("to", 1L)])[0], b.Int64s("axes", 1, 3));
        foreach (var part in new[] { "key", "value" })
        {
            string past = string.Format(System.Globalization.CultureInfo.InvariantCulture, pastName, part);
            string present = string.Format(System.Globalization.CultureInfo.InvariantCulture, presentName, part);
            b.Input(past, F, "batch_size", 1, "past_sequence_length", 1);
            b.Node("Concat", [past, asKeys], outputNames: [present], attributes: [("axis", 2L)]);
            b.Output(present, F, "batch_size", 1, "total_sequence_length", 1);
        }
        if (conv)
        {
            b.Input("past_conv.0", F, "batch_size", 4, 2);
            b.Node("Identity", ["past_conv.0"], outputNames: ["present_conv.0"]);
            b.Output("present_conv.0", F, "batch_size", 4, 2);
        }
        string folder = Directory.CreateTempSubdirectory("engine-counting-").FullName;
        b.Build().Save(Path.Combine(folder, "model.onnx"));
        var config = ConcatCacheConfig(new HybridDecoderSpec { VocabSize = vocab, ContextLength = 64 });
        edit(config);
        File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
        return folder;
    }

    [Test]
    public void AMissingFolderOrConfigIsNamed()
    {
        string missing = Path.Combine(_folder, "no-such-folder");
        Assert.That(Assert.Throws<DirectoryNotFoundException>(() => Generator.Open(missing))!.Message, Does.StartWith($"{missing}: no such model folder"));
        Assert.That(Assert.Throws<ArgumentException>(() => Generator.Open(""))!.ParamName, Is.EqualTo("modelDirectory"));
        string file = Path.Combine(_folder, HybridDecoder.ModelFile);
        Assert.That(Assert.Throws<DirectoryNotFoundException>(() => Generator.Open(file))!.Message,
            Is.EqualTo($"{file}: is a file; a model folder (genai_config.json and the model it names) is expected"));
        string empty = Directory.CreateTempSubdirectory("engine-empty-").FullName;
        try
        {
            Assert.That(Assert.Throws<FileNotFoundException>(() => Generator.Open(empty))!.Message,
                Is.EqualTo($"{Path.Combine(empty, "genai_config.json")}: the model folder has no genai_config.json"));
        }
        finally
        {
            Directory.Delete(empty);
        }
    }

    public static IEnumerable<TestCaseData> BadConfigs()
    {
        static TestCaseData Case(string name, Action<JsonNode> edit, string message) => new TestCaseData(edit, message).SetName($"Bad genai_config.json: {name}");
        yield return Case("no decoder", c => c["model"]!.AsObject().Remove("decoder"), "model.decoder is missing");
        yield return Case("inputs not an object", c => c["model"]!["decoder"]!["inputs"] = "input_ids", "model.decoder.inputs must be an object, got String");
        yield return Case("input_ids a number", c => c["model"]!["decoder"]!["inputs"]!["input_ids"] = 3, "model.decoder.inputs.input_ids must be a non-empty string, got Number");
        yield return Case("an empty filename", c => c["model"]!["decoder"]!["filename"] = "", "model.decoder.filename must be a non-empty string, got an empty one");
        yield return Case("unknown input", c => c["model"]!["decoder"]!["inputs"]!["input_ids"] = "tokens", "model.decoder.inputs.input_ids names 'tokens', which model.onnx does not take");
        yield return Case("unknown logits", c => c["model"]!["decoder"]!["outputs"]!["logits"] = "scores", "model.decoder.outputs.logits names 'scores', which model.onnx does not give");
        yield return Case("template without %d", c => c["model"]!["decoder"]!["inputs"]!["past_key_names"] = "past.key", "model.decoder.inputs.past_key_names must hold one %d");
        yield return Case("other past names", c => c["model"]!["decoder"]!["inputs"]!["past_key_names"] = "cache.%d.key",
            "model.onnx takes the input 'past_key_values.0.conv_state', which genai_config.json does not name: it is not model.decoder.inputs' " +
            "input_ids, attention_mask or position_ids, and no past template (cache.%d.key, past_key_values.%d.value, cache.%d.conv_state, cache.%d.recurrent_state, past_conv.%d) matches it");
        yield return Case("other present names", c => c["model"]!["decoder"]!["outputs"]!["present_key_names"] = "present.%d.k",
            "model.onnx takes 'past_key_values.3.key' but does not give 'present.3.k' to carry into it (model.decoder.outputs.present_key_names)");
        yield return Case("present names with no dotted part for the states", c => c["model"]!["decoder"]!["outputs"]!["present_key_names"] = "present_key_%d",
            "model.onnx takes 'past_key_values.0.conv_state', named by model.decoder.inputs.past_key_names with its last part replaced, " +
            "but model.decoder.outputs.present_key_names ('present_key_%d') has no '.' part after its %d to name the output carried into it");
        yield return Case("two pasts from one present", c => c["model"]!["decoder"]!["outputs"]!["present_value_names"] = "present.%d.key",
            "'present.3.key' would be carried into both 'past_key_values.3.key' and 'past_key_values.3.value' (model.decoder.outputs.present_value_names)");
        yield return Case("a file outside the folder", c => c["model"]!["decoder"]!["filename"] = "../model.onnx", "model.decoder.filename must name a file in the model folder, got '../model.onnx'");
        yield return Case("a file outside the folder through a subfolder", c => c["model"]!["decoder"]!["filename"] = "onnx/../../model.onnx",
            "model.decoder.filename must name a file in the model folder, got 'onnx/../../model.onnx'");
        yield return Case("an absolute filename", c => c["model"]!["decoder"]!["filename"] = "/model.onnx",
            "model.decoder.filename must be a path relative to the model folder, got '/model.onnx'");
        yield return Case("a NUL in the filename", c => c["model"]!["decoder"]!["filename"] = "model\0.onnx", "model.decoder.filename contains a NUL character");
        yield return Case("a missing file", c => c["model"]!["decoder"]!["filename"] = "other.onnx", "model.decoder.filename names 'other.onnx', which is not in the folder");
        yield return Case("context length zero", c => c["model"]!["context_length"] = 0, "model.context_length must be a positive integer, got 0");
        yield return Case("eos token not a number", c => c["model"]!["eos_token_id"] = new JsonArray(2, "end"),
            "model.eos_token_id must be a token id or a list of token ids (non-negative integers), got [2,\"end\"]");
        yield return Case("logits naming a cache output", c => c["model"]!["decoder"]!["outputs"]!["logits"] = "present.3.key",
            "the logits output 'present.3.key' must be [batch, tokens, vocabulary], model.onnx declares it [");
        yield return Case("vocab size not a number", c => c["model"]!["vocab_size"] = "many", "model.vocab_size must be a positive integer");
        yield return Case("vocab size not the logits'", c => c["model"]!["vocab_size"] = 10,
            $"model.vocab_size is 10, but model.onnx's logits 'logits' hold {new HybridDecoderSpec().VocabSize} tokens");
        yield return Case("eos token outside the vocabulary", c => c["model"]!["eos_token_id"] = new JsonArray(2, 1_000_000),
            $"model.eos_token_id 1000000 is not a token of the vocabulary ({new HybridDecoderSpec().VocabSize} tokens)");
        yield return Case("pad token as the stop token outside the vocabulary", c => { c["model"]!.AsObject().Remove("eos_token_id"); c["model"]!["pad_token_id"] = 5000; },
            $"model.pad_token_id (the stop token where model.eos_token_id gives none) 5000 is not a token of the vocabulary ({new HybridDecoderSpec().VocabSize} tokens)");
        yield return Case("eos token null", c => c["model"]!["eos_token_id"] = null,
            "model.eos_token_id must be a token id or a list of token ids (non-negative integers), got null");
        yield return Case("context length a string", c => c["model"]!["context_length"] = "4096", "model.context_length must be a positive integer, got \"4096\"");
        yield return Case("pad token a list", c => { c["model"]!.AsObject().Remove("eos_token_id"); c["model"]!["pad_token_id"] = new JsonArray(1); },
            "model.pad_token_id must be a token id (a non-negative integer), got [1]");
    }

    [TestCaseSource(nameof(BadConfigs))]
    public void ABadConfigIsRefusedNamingTheFileAndTheKey(Action<JsonNode> edit, string message)
    {
        string folder = Directory.CreateTempSubdirectory("engine-config-").FullName;
        try
        {
            foreach (var file in new[] { HybridDecoder.ModelFile, HybridDecoder.DataFile })
                File.Copy(Path.Combine(_folder, file), Path.Combine(folder, file));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, HybridDecoder.ConfigFile)))!;
            edit(config);
            string path = Path.Combine(folder, HybridDecoder.ConfigFile);
            File.WriteAllText(path, config.ToJsonString());
            var e = Assert.Catch(() => Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)));
            Assert.That(e, Is.InstanceOf<InvalidDataException>().Or.InstanceOf<FileNotFoundException>());
            Assert.That(e!.Message, Does.StartWith($"{path}: {message}"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>
    /// model.decoder.filename may name a file in a subfolder (onnx/model.onnx, its external data beside it), which was
    /// refused as outside the folder; a subfolder that is a symbolic link out of the folder is still refused.
    /// </summary>
    [Test]
    public void ADecoderFileInASubfolderIsRead()
    {
        string folder = Directory.CreateTempSubdirectory("engine-subfolder-").FullName;
        string outside = Directory.CreateTempSubdirectory("engine-outside-").FullName;
        try
        {
            string subfolder = Directory.CreateDirectory(Path.Combine(folder, "onnx")).FullName;
            foreach (var file in new[] { HybridDecoder.ModelFile, HybridDecoder.DataFile })
                File.Copy(Path.Combine(_folder, file), Path.Combine(subfolder, file));
            var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_folder, HybridDecoder.ConfigFile)))!;
            config["model"]!["decoder"]!["filename"] = "onnx/model.onnx";
            File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), config.ToJsonString());
            var prompt = Prompt(6, new HybridDecoderSpec().VocabSize);
            var options = new GenerationOptions { StopTokenIds = [] };
            using (var expected = Generator.Open(_folder, OnnxTestHost.Options(HandoverBackend.None)))
            using (var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)))
                Assert.That(generator.Generate(prompt, 3, options).Tokens, Is.EqualTo(expected.Generate(prompt, 3, options).Tokens));

            Directory.Move(subfolder, Path.Combine(outside, "onnx"));
            Directory.CreateSymbolicLink(subfolder, Path.Combine(outside, "onnx"));
            Assert.That(() => Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None)), Throws.InstanceOf<InvalidDataException>().With.Message.EqualTo(
                $"{Path.Combine(folder, HybridDecoder.ConfigFile)}: model.decoder.filename names 'onnx/model.onnx', a symbolic link to " +
                $"'{Path.Combine(outside, "onnx", HybridDecoder.ModelFile)}', outside the model folder"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
            Directory.Delete(outside, recursive: true);
        }
    }

    [Test]
    public void AConfigWithAByteOrderMarkIsRead()
    {
        string folder = Directory.CreateTempSubdirectory("engine-config-").FullName;
        try
        {
            foreach (var file in new[] { HybridDecoder.ModelFile, HybridDecoder.DataFile })
                File.Copy(Path.Combine(_folder, file), Path.Combine(folder, file));
            File.WriteAllText(Path.Combine(folder, HybridDecoder.ConfigFile), File.ReadAllText(Path.Combine(_folder, HybridDecoder.ConfigFile)), new System.Text.UTF8Encoding(true));
            Assert.That(File.ReadAllBytes(Path.Combine(folder, HybridDecoder.ConfigFile))[..3], Is.EqualTo(new byte[] { 0xEF, 0xBB, 0xBF }));
            using var generator = Generator.Open(folder, OnnxTestHost.Options(HandoverBackend.None));
            Assert.That(generator.VocabSize, Is.GreaterThan(0));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void AConfigThatIsNotJsonIsNamed()
    {
        string folder = Directory.CreateTempSubdirectory("engine-config-").FullName;
        try
        {
            string path = Path.Combine(folder, HybridDecoder.ConfigFile);
            File.WriteAllText(path, "{ \"model\": ");
            Assert.That(Assert.Throws<InvalidDataException>(() => Generator.Open(folder))!.Message, Does.StartWith($"{path}: not valid JSON"));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

using Engine.Onnx;
using Engine.Workloads;
using NUnit.Framework;
using GenAi = Microsoft.ML.OnnxRuntimeGenAI;

namespace Engine.Tests.Onnx;

/// <summary>
/// ONNX Runtime GenAI 0.20, the runtime the GenAI folder format is made for, runs the hybrid decoder sample folder on the
/// same native ORT 1.32: its greedy generation is the independent peer of <see cref="Generator"/>. Over ONNX Runtime
/// alone, Generator gives GenAI's tokens and each step's logits within <see cref="SameKernelsTolerance"/> (the same ORT
/// kernels on the same inputs, so within float32 rounding of how their threads split the work: bit-equal when this was
/// written); with the hand-over, the same tokens and logits within the fp32 tolerance (or
/// <see cref="Fp16GenerationTolerance"/>). This checks the sample's genai_config.json and model against what GenAI reads,
/// and Generator's prefill, decode and state carrying against GenAI's own loop.
/// </summary>
[TestFixture]
public sealed class GenAiRuntimeTests
{
    private const double SameKernelsTolerance = 1e-6;

    /// <summary>
    /// A float16 model: ORT rounds every tensor between its nodes to float16, the engine's fused mixer keeps its own
    /// intermediates in float32. Measured on three prompts: ORT against itself with graph optimizations off 0.3-1.8e-3 per
    /// step, the engine against ORT 1.5-4.7e-3 and once 6.3e-3.
    /// </summary>
    private const double Fp16GenerationTolerance = 1e-2;
    private string _root = "";

    [OneTimeSetUp]
    public void MakeRoot() => _root = Path.Combine(Path.GetTempPath(), $"engine-genai-{Environment.ProcessId}-{Guid.NewGuid():N}");

    [OneTimeTearDown]
    public void DeleteRoot()
    {
        if (Directory.Exists(_root)) Directory.Delete(_root, recursive: true);
    }

    /// <summary>int4 at accuracy_level 0, as in <see cref="GeneratorTests"/>: at 4 ORT rounds each projection's input to int8.</summary>
    [TestCase(TensorElementType.Float, false, HandoverBackend.Cpu)]
    [TestCase(TensorElementType.Float16, false, HandoverBackend.Cpu)]
    [TestCase(TensorElementType.Float, true, HandoverBackend.Cpu)]
    public void GeneratorGeneratesWhatGenAiGenerates(TensorElementType type, bool int4Weights, HandoverBackend backend)
    {
        string folder = Path.Combine(_root, $"{type}-int4-{int4Weights}");
        HybridDecoder.Write(folder, new HybridDecoderSpec { ElementType = type, Int4Weights = int4Weights, Int4AccuracyLevel = 0 });
        var random = new Random(7);
        long[] prompt = Enumerable.Range(0, 40).Select(_ => (long)random.Next(new HybridDecoderSpec().VocabSize)).ToArray();
        const int NewTokens = 17;

        var (genAiTokens, genAiLogits) = GenerateWithGenAi(folder, prompt, NewTokens);
        Assert.That(genAiTokens, Is.Not.Empty, "GenAI generated tokens");
        Assert.That(genAiLogits.Any(row => row.Any(v => v != 0)), Is.True, "GenAI's logits are not all zeros");

        double handoverTolerance = type == TensorElementType.Float16 ? Fp16GenerationTolerance : Harness.Numerics.Fp32Tolerance;
        foreach (var (path, tolerance) in new[] { (HandoverBackend.None, SameKernelsTolerance), (backend, handoverTolerance) })
        {
            using var generator = Generator.Open(folder, OnnxTestHost.Options(path));
            var logits = new List<float[]>();
            // The config's eos_token_id stops both loops alike.
            var tokens = generator.Generate(prompt, NewTokens, new GenerationOptions { OnToken = (_, row) => logits.Add(row.ToArray()) }).Tokens;
            Assert.That(tokens, Is.EqualTo(genAiTokens), $"{path}: greedy tokens against GenAI's");
            for (int step = 0; step < genAiLogits.Count; step++)
            {
                double error = Harness.Numerics.RelativeRms(logits[step], genAiLogits[step]);
                Assert.That(error, Is.LessThanOrEqualTo(tolerance), $"{path}: step {step} ({(step == 0 ? "prefill" : "decode")}) logits, relative RMS vs GenAI");
            }
        }
    }

    /// <summary>
    /// GenAI's greedy loop and the logits behind each token. GenAI runs the model lazily: AppendTokens runs the prompt, and
    /// GenerateNextToken picks a token from the logits it has, running the model on the previous pick first (from its second
    /// call on). So the logits read after call i (i >= 2) chose token i - 1.
    /// </summary>
    private static (List<long> Tokens, List<float[]> Logits) GenerateWithGenAi(string folder, long[] prompt, int newTokens)
    {
        using var model = new GenAi.Model(folder);
        using var options = new GenAi.GeneratorParams(model);
        options.SetSearchOption("max_length", prompt.Length + newTokens);
        using var generator = new GenAi.Generator(model, options);
        generator.AppendTokens(prompt.Select(t => checked((int)t)).ToArray());
        var logits = new List<float[]> { LastLogits(generator) };
        var tokens = new List<long>();
        while (!generator.IsDone())
        {
            generator.GenerateNextToken();
            if (tokens.Count > 0) logits.Add(LastLogits(generator));
            tokens.Add(generator.GetNextTokens()[0]);
        }
        return (tokens, logits);
    }

    /// <summary>The last position's row of the logits output [1, S, vocab], as float32.</summary>
    private static float[] LastLogits(GenAi.Generator generator)
    {
        using var tensor = generator.GetOutput("logits");
        int vocab = checked((int)tensor.Shape()[^1]);
        if (tensor.Type() == GenAi.ElementType.float16)
        {
            var halves = tensor.GetData<Half>();
            return halves[^vocab..].ToArray().Select(h => (float)h).ToArray();
        }
        return tensor.GetData<float>()[^vocab..].ToArray();
    }
}

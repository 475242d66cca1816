using System.Text.Json;
using Engine.Onnx;

namespace Engine.Cli.Commands;

/// <summary>engine generate: token generation over a GenAI model folder, the hand-over and ONNX Runtime alone in one run.</summary>
internal sealed class GenerateCommand : ICommand
{
    /// <summary>Decode steps of the untimed warm-up generation.</summary>
    private const int WarmupSteps = 128;

    public string Name => "generate";
    public string Summary => "generate tokens from a GenAI model folder: time to first token and decode tokens/s, engine vs ORT";
    public int Positionals => 1;
    public IReadOnlyCollection<string> Options { get; } = ["prompt-tokens", "new-tokens", "repeats", "seed", "backend", "threads", "json"];
    public string Usage => $"""
        engine generate MODEL_DIR --prompt-tokens N --new-tokens M [--repeats 3] [--seed 1] {ModelIo.BackendUsage} [--json]
          Greedy generation over the folder's genai_config.json and model: a prompt of N random token ids (from --seed),
          then M new tokens, every state carried from run to run as ONNX Runtime values. Times the engine's hand-over
          (--backend, default cpu) and ONNX Runtime alone, runs interleaved after a warm-up: median time to first token
          (the prompt's prefill), decode tokens/s and the median decode step. --backend none times ONNX Runtime alone only.
        """;

    public int Run(CommandLine args, CliContext context)
    {
        if (args.Positionals.Count != 1) throw new UsageException("give the model folder: engine generate MODEL_DIR --prompt-tokens N --new-tokens M");
        string folder = args.Positionals[0];
        if (!args.Has("prompt-tokens") || !args.Has("new-tokens")) throw new UsageException("--prompt-tokens and --new-tokens are required");
        int promptTokens = args.Int("prompt-tokens", 0, min: 1), newTokens = args.Int("new-tokens", 0, min: 1);
        int repeats = args.Int("repeats", 3, min: 1), seed = args.Int("seed", 1);
        bool json = args.Flag("json");
        var backend = ModelIo.Backend(args);
        using var host = ModelIo.Host(args);
        // Both sessions' intra-op threads do not spin: the paths run alternately.
        ModelSessionOptions Options(HandoverBackend b) => new() { Backend = b, Host = host, AllowSpinning = false };

        var paths = new List<(string Label, Generator Generator)>();
        try
        {
            if (backend != HandoverBackend.None) paths.Add(("engine", ModelIo.Guard(() => Generator.Open(folder, Options(backend)))));
            paths.Add(("ort", ModelIo.Guard(() => Generator.Open(folder, Options(HandoverBackend.None)))));
            int vocab = paths[0].Generator.VocabSize ?? throw new InvalidDataException($"{folder}: the model's logits do not fix the vocabulary size; random prompts need it");
            var random = new Random(seed);
            long[] prompt = Enumerable.Range(0, promptTokens).Select(_ => (long)random.Next(vocab)).ToArray();
            paths[0].Generator.Validate(prompt, newTokens);

            using var cancel = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                var w = context.Out;
                if (!json)
                {
                    w.WriteLine($"model: {folder}; engine: {host.Describe(backend)}; engine nodes: {paths[0].Generator.Handover.EngineNodes.Count()}");
                    w.WriteLine($"prompt {promptTokens} tokens, {newTokens} new tokens, {repeats} runs each, interleaved after a warm-up");
                }
                // Warm-up, not timed: ORT's first-run allocations, and enough decode steps on a short prompt for .NET's tiered
                // compilation to reach the decode path's final code (two dozen steps left it at 0.65x of its settled speed).
                foreach (var (_, generator) in paths)
                    ModelIo.Guard(() => generator.Generate(prompt[..Math.Min(prompt.Length, 64)], WarmupSteps, cancellationToken: cancel.Token));
                var results = paths.ToDictionary(p => p.Label, _ => new List<TimedRun>());
                for (int run = 0; run < repeats; run++)
                {
                    foreach (var (label, generator) in paths)
                    {
                        var steps = new List<double>(newTokens);
                        TimeSpan previous = default;
                        var options = new GenerationOptions
                        {
                            OnToken = (token, _) =>
                            {
                                if (token.Index > 0) steps.Add((token.Elapsed - previous).TotalMilliseconds);
                                previous = token.Elapsed;
                                if (token.Index == 0 && !json) w.WriteLine($"[{run + 1}/{repeats}] {label,-6} first token after {token.Elapsed.TotalMilliseconds:F1} ms");
                            },
                        };
                        var result = ModelIo.Guard(() => generator.Generate(prompt, newTokens, options, cancel.Token));
                        results[label].Add(new TimedRun(result, steps));
                        if (!json) w.WriteLine($"[{run + 1}/{repeats}] {label,-6} {newTokens} tokens, decode {result.DecodeTokensPerSecond:F1} tokens/s");
                    }
                }
                Print(w, json, folder, host.Describe(backend), promptTokens, newTokens, results);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }
        catch (OperationCanceledException)
        {
            context.Error.WriteLine("engine: generation cancelled");
            return 1;
        }
        finally
        {
            foreach (var (_, generator) in paths) generator.Dispose();
        }
        return 0;
    }

    /// <summary>One timed generation and the time of each decode step (token after token).</summary>
    private sealed record TimedRun(GenerationResult Result, List<double> StepMs);

    private static void Print(TextWriter w, bool json, string folder, string device, int promptTokens, int newTokens, Dictionary<string, List<TimedRun>> results)
    {
        // The median step shows the usual decode step; tokens/s (the mean) also counts the stalls a shared machine adds.
        var summary = results.ToDictionary(r => r.Key, r => new
        {
            TtftMs = BenchTimer.MedianOf(r.Value.Select(x => x.Result.TimeToFirstToken.TotalMilliseconds)),
            DecodeTokensPerSecond = BenchTimer.MedianOf(r.Value.Select(x => x.Result.DecodeTokensPerSecond)),
            MedianStepMs = BenchTimer.MedianOf(r.Value.SelectMany(x => x.StepMs).DefaultIfEmpty(double.NaN)),
        });
        // Greedy generation is deterministic per path: the last run's tokens stand for all.
        bool? same = results.Count == 2 ? results["engine"][^1].Result.Tokens.SequenceEqual(results["ort"][^1].Result.Tokens) : null;
        if (json)
        {
            var document = new Dictionary<string, object?>
            {
                ["model"] = folder, ["device"] = device, ["prompt_tokens"] = promptTokens, ["new_tokens"] = newTokens, ["runs"] = results.First().Value.Count,
                ["same_tokens"] = same,
            };
            foreach (var (label, s) in summary)
                document[label] = new Dictionary<string, double?>
                {
                    // One new token has no decode step: null, not NaN (which JSON cannot hold).
                    ["ttft_ms"] = s.TtftMs, ["decode_tokens_per_s"] = Finite(s.DecodeTokensPerSecond), ["median_step_ms"] = Finite(s.MedianStepMs),
                };
            w.WriteLine(JsonSerializer.Serialize(document, new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        w.WriteLine($"ONNX Runtime {OrtInfo.Version}; medians of the runs");
        w.WriteLine($"{"path",-8} {"TTFT ms",10} {"decode tokens/s",16} {"median step ms",15}");
        foreach (var (label, s) in summary) w.WriteLine($"{label,-8} {s.TtftMs,10:F1} {s.DecodeTokensPerSecond,16:F1} {s.MedianStepMs,15:F3}");
        if (same is bool equal)
        {
            w.WriteLine($"engine vs ORT: TTFT {summary["ort"].TtftMs / summary["engine"].TtftMs:F2}x, decode {summary["engine"].DecodeTokensPerSecond / summary["ort"].DecodeTokensPerSecond:F2}x; " +
                        $"same tokens: {(equal ? "yes" : "no")}");
        }
    }

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

}

/// <summary>engine samples: writes the sample models, and the hybrid decoder as a GenAI model folder.</summary>
internal sealed class SamplesCommand : ICommand
{
    public string Name => "samples";
    public string Summary => "write the sample models and the hybrid decoder folder (Qwen3.5's layout)";
    public int Positionals => 1;
    public IReadOnlyCollection<string> Options { get; } =
        ["vocab", "hidden", "layers", "context", "qk-heads", "value-heads", "head-dim", "float16", "fused-gates"];
    public string Usage => """
        engine samples DIR [--vocab 1024] [--hidden 128] [--layers 4] [--context 8192] [--qk-heads 2] [--value-heads 4]
                           [--head-dim 32] [--float16] [--fused-gates]
          Writes the sample models (gla_block.onnx, …) into DIR and the hybrid decoder (three Gated DeltaNet layers to
          one full-attention layer, random weights) as DIR/hybrid_decoder: model.onnx, model.onnx.data, genai_config.json.
          --qk-heads, --value-heads and --head-dim shape the Gated DeltaNet layers (Qwen3.5: 16, 32, 128).
        """;

    public int Run(CommandLine args, CliContext context)
    {
        if (args.Positionals.Count != 1) throw new UsageException("give the folder to write: engine samples DIR");
        string dir = args.Positionals[0];
        var defaults = new Workloads.HybridDecoderSpec();
        var spec = defaults with
        {
            VocabSize = args.Int("vocab", defaults.VocabSize, min: 2),
            Hidden = args.Int("hidden", defaults.Hidden, min: 1),
            Layers = args.Int("layers", defaults.Layers, min: 1),
            ContextLength = args.Int("context", defaults.ContextLength, min: 1),
            ElementType = args.Flag("float16") ? TensorElementType.Float16 : TensorElementType.Float,
            LinearAttention = defaults.LinearAttention with
            {
                QkHeads = args.Int("qk-heads", defaults.LinearAttention.QkHeads, min: 1),
                ValueHeads = args.Int("value-heads", defaults.LinearAttention.ValueHeads, min: 1),
                KeyDim = args.Int("head-dim", defaults.LinearAttention.KeyDim, min: 1),
                ValueDim = args.Int("head-dim", defaults.LinearAttention.ValueDim, min: 1),
                FusedGates = args.Flag("fused-gates"),
            },
        };
        Workloads.SampleModels.WriteSamples(dir);
        string hybrid = Path.Combine(dir, "hybrid_decoder");
        Workloads.HybridDecoder.Write(hybrid, spec);
        context.Out.WriteLine($"wrote {Workloads.SampleModels.Samples().Count} sample models to {dir} and the hybrid decoder to {hybrid}");
        return 0;
    }
}

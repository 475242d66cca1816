using System.CommandLine;
using System.Text.Json;
using Engine.Onnx;

namespace Engine.Cli.Commands;

/// <summary>engine generate: token generation over a GenAI model folder, the hand-over and ONNX Runtime alone in one run.</summary>
internal sealed class GenerateCommand : EngineCommand
{
    /// <summary>Decode steps of the untimed warm-up generation, where the model's context_length holds them.</summary>
    private const int WarmupSteps = 128;

    /// <summary>Prompt tokens of the warm-up generation, at most.</summary>
    private const int WarmupPromptTokens = 64;

    private readonly Argument<string> _folder = Opt.PathArgument("model-dir", "MODEL_DIR", "the model folder (genai_config.json and the model)");
    private readonly Option<int> _promptTokens = Opt.RequiredInt("--prompt-tokens", "prompt length N (random token ids)", min: 1);
    private readonly Option<int> _newTokens = Opt.RequiredInt("--new-tokens", "tokens to generate M (exactly: no stop at eos_token_id)", min: 1);
    private readonly Option<int> _repeats = Opt.Int("--repeats", 3, "timed generations of each path", min: 1);
    private readonly Option<int> _seed = Opt.Int("--seed", 1, "seed of the random prompt and of sampling");
    private readonly Option<string> _search = Opt.Choice("--search", null, ["greedy", "sample"], "greedy or sampling (default: the config's search.do_sample)");
    private readonly Option<int?> _maxLength = Opt.OptionalInt("--max-length", "prompt and new tokens at most (default: the config's search.max_length)", min: 1);
    private readonly Option<int?> _topK = Opt.OptionalInt("--top-k", "sampling: the k highest logits, 0 all (default: the config's search.top_k)", min: 0);
    private readonly Option<float?> _topP = Opt.Float("--top-p", "sampling: the nucleus, in [0, 1] (default: the config's search.top_p)");
    private readonly Option<float?> _temperature = Opt.Float("--temperature", "sampling: divides the logits (default: the config's search.temperature)");
    private readonly Option<float?> _repetitionPenalty = Opt.Float("--repetition-penalty", "penalty of the tokens seen, 1 none (default: the config's)");
    private readonly Option<bool> _noGenAi = Opt.Flag("--no-genai", "leave out ONNX Runtime GenAI's own generation loop");
    private readonly ModelOptions _model = new();

    public GenerateCommand() : base("generate", "generate tokens from a GenAI model folder: time to first token and decode tokens/s, engine vs ORT", """
        Generation over the folder's genai_config.json and model: a prompt of N random token ids (from --seed), then M
        new tokens, every state carried from run to run as ONNX Runtime values. The config's search section chooses them
        (greedy, or sampling with top_k, top_p and temperature, seeded by --seed; a repetition penalty); the options
        override it. Prompt and new tokens must fit the search's max_length. Times the engine's hand-over
        (--backend, default cpu), ONNX Runtime alone and ONNX Runtime GenAI's own loop (ORT alone), all on ORT's default
        options (intra-op threads spin; each run starts after the previous path's settle), runs interleaved after a
        warm-up: median time to first token (the prompt's prefill), decode tokens/s and the median decode step.
        --backend none leaves the engine out. A benchmark: every run makes exactly M tokens, without stopping at the
        config's eos_token_id, so runs compare; the report says whether the paths made the same tokens.
        """)
    {
        Add(_folder);
        foreach (var option in new Option[] { _promptTokens, _newTokens, _repeats, _seed, _search, _maxLength, _topK, _topP, _temperature, _repetitionPenalty,
            _noGenAi, _model.Backend, _model.Threads, _model.Json }) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        string folder = args.GetValue(_folder)!;
        int promptTokens = args.GetValue(_promptTokens), newTokens = args.GetValue(_newTokens);
        int repeats = args.GetValue(_repeats), seed = args.GetValue(_seed);
        bool json = args.GetValue(_model.Json);
        var backend = args.GetValue(_model.Backend);
        using var host = _model.Host(args);
        // ORT's default options, as GenAI's sessions run: intra-op threads spin (each path's runs start after they settle).
        ModelSessionOptions Options(HandoverBackend b) => new() { Backend = b, Host = host };

        var paths = new List<IGenerationPath>();
        try
        {
            if (backend != HandoverBackend.None) paths.Add(new GeneratorPath("engine", Generator.Open(folder, Options(backend))));
            paths.Add(new GeneratorPath("ort", Generator.Open(folder, Options(HandoverBackend.None))));
            var first = ((GeneratorPath)paths[0]).Generator;
            int vocab = first.VocabSize ?? throw new InvalidDataException($"{folder}: the model's logits do not fix the vocabulary size; random prompts need it");
            var configured = first.Search;
            // Seeded: both paths sample the same draws, so their tokens compare.
            var search = configured with
            {
                DoSample = args.GetValue(_search) is string choice ? choice == "sample" : configured.DoSample,
                MaxLength = args.GetValue(_maxLength) ?? configured.MaxLength,
                TopK = args.GetValue(_topK) ?? configured.TopK,
                TopP = args.GetValue(_topP) ?? configured.TopP,
                Temperature = args.GetValue(_temperature) ?? configured.Temperature,
                RepetitionPenalty = args.GetValue(_repetitionPenalty) ?? configured.RepetitionPenalty,
                RandomSeed = seed,
            };
            // Before the prompt is made: a length the model cannot take would otherwise be allocated first.
            first.ValidateLength(promptTokens, newTokens, search);
            if (search.MaxLength is int maxLength && (long)promptTokens + newTokens > maxLength)
                throw new ArgumentException($"{promptTokens} prompt tokens and {newTokens} new ones pass search.max_length {maxLength} " +
                    "(every run makes exactly the new tokens asked for; --max-length sets it)");
            var random = new Random(seed);
            long[] prompt = Enumerable.Range(0, promptTokens).Select(_ => (long)random.Next(vocab)).ToArray();
            first.Validate(prompt, newTokens, search);
            long[] warmupPrompt = prompt[..Math.Min(prompt.Length, WarmupPromptTokens)];

            // A peer: a folder GenAI cannot run is timed without it, and the report says why. The run fits GenAI's context:
            // prompt and new tokens within max_length, which is within context_length.
            if (!args.GetValue(_noGenAi))
            {
                try
                {
                    paths.Add(GenAiPath.Open(folder, host.IntraOpThreads));
                }
                catch (Microsoft.ML.OnnxRuntimeGenAI.OnnxRuntimeGenAIException e)
                {
                    context.Error.WriteLine($"engine: ONNX Runtime GenAI {GenAiPath.Version} cannot run {folder}, timed without it: {e.Message}");
                }
            }
            // No more steps than context_length holds after the warm-up prompt (at least one: it holds what was asked for), and
            // for GenAI, whose sequence keeps within it, not the one past it that Generator never runs.
            int warmupSteps = Math.Min(WarmupSteps, first.ContextLength is int contextLength
                ? contextLength - warmupPrompt.Length + (paths.Any(p => p is GenAiPath) ? 0 : 1)
                : WarmupSteps);

            var w = context.Out;
            if (!json)
            {
                w.WriteLine($"model: {folder}; engine: {host.Describe(backend)}; engine nodes: {first.Handover.EngineKernelNodes}");
                w.WriteLine($"prompt {promptTokens} tokens, {newTokens} new tokens, {repeats} runs each, interleaved after a warm-up; {Describe(search)}");
            }
            var results = context.Progress.Run(w, progress =>
            {
                // Warm-up, not timed: ORT's first-run allocations, and enough decode steps on a short prompt for .NET's tiered
                // compilation to reach the decode path's final code (two dozen steps left it at 0.65x of its settled speed).
                foreach (var path in paths)
                {
                    var warmup = progress.Add($"warm-up {path.Label}", warmupSteps + 1);
                    path.Generate(warmupPrompt, warmupSteps, search, _ => warmup.Advance(), context.Cancellation);
                    warmup.Finish();
                }
                var results = paths.ToDictionary(p => p.Label, _ => new List<TimedRun>());
                for (int run = 0; run < repeats; run++)
                {
                    foreach (var path in paths)
                    {
                        string label = path.Label;
                        var step = progress.Add($"[{run + 1}/{repeats}] {label} tokens", newTokens);
                        var steps = new List<double>(newTokens);
                        TimeSpan previous = default;
                        Thread.Sleep(BenchTimer.SpinSettle);
                        var result = path.Generate(prompt, newTokens, search, token =>
                        {
                            if (token.Index > 0) steps.Add((token.Elapsed - previous).TotalMilliseconds);
                            previous = token.Elapsed;
                            step.Advance();
                            if (token.Index == 0 && !json) progress.Print($"[{run + 1}/{repeats}] {label,-6} first token after {token.Elapsed.TotalMilliseconds:F1} ms");
                        }, context.Cancellation);
                        results[label].Add(new TimedRun(result, steps));
                        if (!json) progress.Print($"[{run + 1}/{repeats}] {label,-6} {newTokens} tokens, decode {Shown(result.DecodeTokensPerSecond, "F1")} tokens/s");
                    }
                }
                return results;
            });
            Print(w, json, folder, host.Describe(backend), promptTokens, newTokens, Describe(search), search.Samples, first.EosTokenIds, results);
        }
        finally
        {
            foreach (var path in paths) path.Dispose();
        }
        return 0;
    }

    /// <summary>One timed generation and the time of each decode step (token after token).</summary>
    private sealed record TimedRun(GenerationResult Result, List<double> StepMs);

    /// <summary>The search as the report shows it: greedy, or sampling with its parameters; the repetition penalty where there is one.</summary>
    internal static string Describe(SearchOptions search) =>
        (search.Samples ? FormattableString.Invariant($"sampling (top_k {search.TopK}, top_p {search.TopP}, temperature {search.Temperature}, seed {search.RandomSeed})") : "greedy")
        + (search.RepetitionPenalty != 1 ? FormattableString.Invariant($", repetition penalty {search.RepetitionPenalty}") : "");

    private static void Print(TextWriter w, bool json, string folder, string device, int promptTokens, int newTokens, string search, bool sampling,
        IReadOnlyCollection<long> stopTokens, Dictionary<string, List<TimedRun>> results)
    {
        // The median step shows the usual decode step; tokens/s (the mean) also counts the stalls a shared machine adds.
        var summary = results.ToDictionary(r => r.Key, r => new
        {
            TtftMs = BenchTimer.MedianOf(r.Value.Select(x => x.Result.TimeToFirstToken.TotalMilliseconds)),
            DecodeTokensPerSecond = BenchTimer.MedianOf(r.Value.Select(x => x.Result.DecodeTokensPerSecond)),
            MedianStepMs = BenchTimer.MedianOf(r.Value.SelectMany(x => x.StepMs).DefaultIfEmpty(double.NaN)),
        });
        // Generation is deterministic per path (greedy, or sampling from the one seed): the last run's tokens stand for all. Where they part tells a rounding
        // difference late in a long generation from a wrong first token. GenAI samples with a generator of its own: its draws compare only when greedy, and
        // only before ORT alone's first stop token, which GenAI, made to make every token, does not choose.
        int? Difference(string label)
        {
            if (!results.TryGetValue(label, out var runs) || (label == "genai" && sampling)) return null;
            IReadOnlyList<long> tokens = runs[^1].Result.Tokens, ort = results["ort"][^1].Result.Tokens;
            int compared = label == "genai" ? ort.TakeWhile(t => !stopTokens.Contains(t)).Count() : ort.Count;
            return FirstDifference(tokens.Take(compared).ToArray(), ort.Take(compared).ToArray());
        }
        int? engineDifference = Difference("engine"), genAiDifference = Difference("genai");
        if (json)
        {
            var document = new Dictionary<string, object?>
            {
                ["model"] = folder, ["device"] = device, ["prompt_tokens"] = promptTokens, ["new_tokens"] = newTokens, ["search"] = search, ["runs"] = results.First().Value.Count,
                ["same_tokens"] = engineDifference is int e ? e < 0 : null, ["first_different_token"] = engineDifference >= 0 ? engineDifference : null,
                ["genai_version"] = results.ContainsKey("genai") ? GenAiPath.Version : null,
                ["genai_same_tokens"] = genAiDifference is int g ? g < 0 : null, ["genai_first_different_token"] = genAiDifference >= 0 ? genAiDifference : null,
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
        w.WriteLine($"ONNX Runtime {OrtInfo.Version}{(results.ContainsKey("genai") ? $", ONNX Runtime GenAI {GenAiPath.Version}" : "")}; medians of the runs");
        w.WriteLine($"{"path",-8} {"TTFT ms",10} {"decode tokens/s",16} {"median step ms",15}");
        foreach (var (label, s) in summary) w.WriteLine($"{label,-8} {s.TtftMs,10:F1} {Shown(s.DecodeTokensPerSecond, "F1"),16} {Shown(s.MedianStepMs, "F3"),15}");
        string Tokens(int? difference) => difference is int d ? (d < 0 ? "yes" : $"no, from token {d} (counting from 0)") : "not compared (GenAI samples with its own generator)";
        foreach (var (peer, name) in new[] { ("ort", "ORT"), ("genai", "GenAI") })
        {
            if (!summary.ContainsKey("engine") || !summary.TryGetValue(peer, out var p)) continue;
            var engine = summary["engine"];
            w.WriteLine($"engine vs {name}: TTFT {p.TtftMs / engine.TtftMs:F2}x, decode {Shown(engine.DecodeTokensPerSecond / p.DecodeTokensPerSecond, "0.00x")}; " +
                        (peer == "ort" ? $"same tokens: {Tokens(engineDifference)}" : $"GenAI's tokens same as ORT's (before its first stop token): {Tokens(genAiDifference)}"));
        }
        if (!summary.ContainsKey("engine") && summary.ContainsKey("genai")) w.WriteLine($"GenAI's tokens same as ORT's (before its first stop token): {Tokens(genAiDifference)}");
    }

    /// <summary>The first index where the two token lists differ (a shorter list differs where it ends); −1 where they are equal.</summary>
    internal static int FirstDifference(IReadOnlyList<long> a, IReadOnlyList<long> b)
    {
        for (int i = 0; i < Math.Min(a.Count, b.Count); i++)
            if (a[i] != b[i]) return i;
        return a.Count == b.Count ? -1 : Math.Min(a.Count, b.Count);
    }

    private static double? Finite(double value) => double.IsFinite(value) ? value : null;

    /// <summary>A decode figure as text: "n/a" where no decode step was timed (one new token), not NaN.</summary>
    private static string Shown(double value, string format) => double.IsFinite(value) ? value.ToString(format) : "n/a";
}

/// <summary>engine samples: writes the sample models, and the hybrid decoder as a GenAI model folder.</summary>
internal sealed class SamplesCommand : EngineCommand
{
    private static readonly Workloads.HybridDecoderSpec Defaults = new();

    private readonly Argument<string> _dir = Opt.PathArgument("dir", "DIR", "the folder to write");
    private readonly Option<int> _vocab = Opt.Int("--vocab", Defaults.VocabSize, "vocabulary size", min: 2);
    private readonly Option<int> _hidden = Opt.Int("--hidden", Defaults.Hidden, "hidden size", min: 1);
    private readonly Option<int> _layers = Opt.Int("--layers", Defaults.Layers, "layers", min: 1);
    private readonly Option<int> _context = Opt.Int("--context", Defaults.ContextLength, "context length", min: 1);
    private readonly Option<int> _qkHeads = Opt.Int("--qk-heads", Defaults.LinearAttention.QkHeads, "query/key heads of the Gated DeltaNet layers", min: 1);
    private readonly Option<int> _valueHeads = Opt.Int("--value-heads", Defaults.LinearAttention.ValueHeads, "value heads of the Gated DeltaNet layers", min: 1);
    private readonly Option<int> _headDim = Opt.Int("--head-dim", Defaults.LinearAttention.KeyDim, "head dim of the Gated DeltaNet layers", min: 1);
    private readonly Option<bool> _float16 = Opt.Flag("--float16", "float16 weights and activations");
    private readonly Option<bool> _fusedGates = Opt.Flag("--fused-gates", "the fused-gate export of the Gated DeltaNet layers");
    private readonly Option<bool> _int4 = Opt.Flag("--int4", "the CPU int4 export: every projection a com.microsoft MatMulNBits (4 bits, blocks of 32, accuracy_level 4)");

    public SamplesCommand() : base("samples", "write the sample models and the hybrid decoder folder (Qwen3.5's layout)", """
        Writes the sample models (gla_block.onnx, …) into DIR and the hybrid decoder (three Gated DeltaNet layers to
        one full-attention layer, random weights) as DIR/hybrid_decoder: model.onnx, model.onnx.data, genai_config.json.
        --qk-heads, --value-heads and --head-dim shape the Gated DeltaNet layers (Qwen3.5: 16, 32, 128).
        """)
    {
        Add(_dir);
        foreach (var option in new Option[] { _vocab, _hidden, _layers, _context, _qkHeads, _valueHeads, _headDim, _float16, _fusedGates, _int4 }) Add(option);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        string dir = args.GetValue(_dir)!;
        var spec = Defaults with
        {
            VocabSize = args.GetValue(_vocab),
            Hidden = args.GetValue(_hidden),
            Layers = args.GetValue(_layers),
            ContextLength = args.GetValue(_context),
            ElementType = args.GetValue(_float16) ? TensorElementType.Float16 : TensorElementType.Float,
            Int4Weights = args.GetValue(_int4),
            LinearAttention = Defaults.LinearAttention with
            {
                QkHeads = args.GetValue(_qkHeads),
                ValueHeads = args.GetValue(_valueHeads),
                KeyDim = args.GetValue(_headDim),
                ValueDim = args.GetValue(_headDim),
                FusedGates = args.GetValue(_fusedGates),
            },
        };
        var linear = spec.LinearLayer;
        Workloads.ArraySize.Require($"--vocab {spec.VocabSize} --hidden {spec.Hidden}: the embeddings [vocab, hidden]", spec.VocabSize, spec.Hidden);
        Workloads.ArraySize.Require($"--hidden {spec.Hidden} --qk-heads {linear.QkHeads} --value-heads {linear.ValueHeads} --head-dim {linear.KeyDim}: " +
            "the q/k/v projection [hidden, 2·qk-heads·head-dim + value-heads·head-dim]", spec.Hidden, 2L * linear.QkHeads * linear.KeyDim + (long)linear.ValueHeads * linear.ValueDim);
        Workloads.ArraySize.Require($"--hidden {spec.Hidden}: the MLP weights [hidden, {spec.Intermediate}]", spec.Hidden, spec.Intermediate);
        Workloads.ArraySize.Require($"--context {spec.ContextLength}: the rotary caches [context, {spec.HeadSize / 2}]", spec.ContextLength, spec.HeadSize / 2);
        // Each weight is sampled as float32 and copied into the model at its element size; each layer's nodes take about
        // 11 KB in model.onnx.
        double bytes = spec.WeightCount * (sizeof(float) + (spec.ElementType == TensorElementType.Float16 ? 2 : 4)) + spec.Layers * 16384.0;
        Workloads.ArraySize.RequireMemory($"--vocab {spec.VocabSize} --hidden {spec.Hidden} --layers {spec.Layers} --context {spec.ContextLength} " +
            $"--qk-heads {linear.QkHeads} --value-heads {linear.ValueHeads} --head-dim {linear.KeyDim}: the hybrid decoder", bytes);
        // After the sizes are checked: a refused size leaves no empty folder behind.
        OutputFolder.Create(dir, "DIR");
        string hybrid = Path.Combine(dir, "hybrid_decoder");
        OutputFolder.RequireRoom(Workloads.SampleModels.Samples().Keys.Select(name => Path.Combine(dir, name))
            .Concat(new[] { Workloads.HybridDecoder.ModelFile, Workloads.HybridDecoder.DataFile, Workloads.HybridDecoder.ConfigFile }.Select(name => Path.Combine(hybrid, name))), [hybrid]);
        Workloads.SampleModels.WriteSamples(dir);
        Workloads.HybridDecoder.Write(hybrid, spec);
        context.Out.WriteLine($"wrote {Workloads.SampleModels.Samples().Count} sample models to {dir} and the hybrid decoder to {hybrid}");
        return 0;
    }
}

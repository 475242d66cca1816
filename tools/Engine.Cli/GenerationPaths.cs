using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;
using Engine.Onnx;
using GenAi = Microsoft.ML.OnnxRuntimeGenAI;

namespace Engine.Cli;

/// <summary>One way `engine generate` times: the engine's hand-over or ONNX Runtime alone through Generator, or GenAI's own loop.</summary>
internal interface IGenerationPath : IDisposable
{
    string Label { get; }

    /// <summary>Exactly <paramref name="newTokens"/> tokens (no stop token), each reported as it is chosen.</summary>
    GenerationResult Generate(long[] prompt, int newTokens, SearchOptions search, Action<GeneratedToken> onToken, CancellationToken cancellation);
}

/// <summary>Generator over the folder, with the engine's nodes or ONNX Runtime alone.</summary>
internal sealed class GeneratorPath(string label, Generator generator) : IGenerationPath
{
    public string Label { get; } = label;

    public Generator Generator { get; } = generator;

    public GenerationResult Generate(long[] prompt, int newTokens, SearchOptions search, Action<GeneratedToken> onToken, CancellationToken cancellation) =>
        Generator.Generate(prompt, newTokens, new GenerationOptions { StopTokenIds = [], Search = search, OnToken = (token, _) => onToken(token) }, cancellation);

    public void Dispose() => Generator.Dispose();
}

/// <summary>
/// ONNX Runtime GenAI's own generation loop over the folder (ORT alone, GenAI's session options). It makes every token
/// asked for: its min_length is the whole sequence, so it never chooses a stop token (an empty eos_token_id in its config
/// still stops at the model's own); where the other paths choose one, GenAI takes the next best. GenAI runs the model
/// lazily: AppendTokens runs the prompt, and each GenerateNextToken after the first runs the previous token before it
/// picks; so the first token's time is the prompt's, and each later one a decode step, as Generator counts them.
/// </summary>
internal sealed class GenAiPath : IGenerationPath
{
    private readonly GenAi.Config _config;
    private readonly GenAi.Model _model;

    private GenAiPath(GenAi.Config config, GenAi.Model model)
    {
        _config = config;
        _model = model;
    }

    public string Label => "genai";

    /// <summary>GenAI's model for the folder, its decoder on <paramref name="threads"/> intra-op threads.</summary>
    /// <exception cref="GenAi.OnnxRuntimeGenAIException">GenAI cannot run the folder.</exception>
    public static GenAiPath Open(string folder, int threads)
    {
        var config = new GenAi.Config(folder);
        try
        {
            var overlay = new JsonObject
            {
                ["model"] = new JsonObject
                {
                    ["decoder"] = new JsonObject { ["session_options"] = new JsonObject { ["intra_op_num_threads"] = threads } },
                },
            };
            config.Overlay(overlay.ToJsonString());
            return new GenAiPath(config, new GenAi.Model(config));
        }
        catch
        {
            config.Dispose();
            throw;
        }
    }

    public GenerationResult Generate(long[] prompt, int newTokens, SearchOptions search, Action<GeneratedToken> onToken, CancellationToken cancellation)
    {
        int[] ids = prompt.Select(id => checked((int)id)).ToArray();
        var clock = Stopwatch.StartNew();
        using var parameters = new GenAi.GeneratorParams(_model);
        parameters.SetSearchOption("max_length", prompt.Length + newTokens);
        parameters.SetSearchOption("min_length", prompt.Length + newTokens);
        parameters.SetSearchOption("do_sample", search.DoSample);
        parameters.SetSearchOption("top_k", search.TopK);
        parameters.SetSearchOption("top_p", search.TopP);
        parameters.SetSearchOption("temperature", search.Temperature);
        parameters.SetSearchOption("repetition_penalty", search.RepetitionPenalty);
        if (search.RandomSeed is int seed) parameters.SetSearchOption("random_seed", seed);
        using var generator = new GenAi.Generator(_model, parameters);
        generator.AppendTokens(ids);
        var tokens = new List<long>(newTokens);
        TimeSpan firstToken = default;
        while (!generator.IsDone())
        {
            cancellation.ThrowIfCancellationRequested();
            generator.GenerateNextToken();
            long token = generator.GetNextTokens()[0];
            var elapsed = clock.Elapsed;
            if (tokens.Count == 0) firstToken = elapsed;
            onToken(new GeneratedToken(tokens.Count, token, elapsed));
            tokens.Add(token);
        }
        if (tokens.Count != newTokens)
            throw new InvalidOperationException($"ONNX Runtime GenAI made {tokens.Count} tokens where {newTokens} were asked for");
        return new GenerationResult(tokens, firstToken, clock.Elapsed - firstToken, GenerationStopReason.Length);
    }

    /// <summary>The GenAI package the command is built on (its assembly carries no version).</summary>
    public static string Version { get; } = typeof(GenAiPath).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
        .Single(a => a.Key == "OnnxRuntimeGenAIVersion").Value!;

    public void Dispose()
    {
        _model.Dispose();
        _config.Dispose();
    }
}

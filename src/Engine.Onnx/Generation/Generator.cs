using System.Diagnostics;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Engine.Onnx.Interop;
using Microsoft.ML.OnnxRuntime;
using OrtElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace Engine.Onnx;

/// <summary>Chooses the next token from the logits of the last position (the vocabulary's scores).</summary>
public delegate long TokenSampler(ReadOnlySpan<float> logits);

/// <summary>Called for every generated token with the logits it was chosen from (valid during the call only).</summary>
public delegate void TokenCallback(GeneratedToken token, ReadOnlySpan<float> logits);

/// <summary>A generated token: its index among the new tokens (0 is the one after the prompt), its id, and the time since generation began.</summary>
public readonly record struct GeneratedToken(int Index, long TokenId, TimeSpan Elapsed);

/// <summary>How <see cref="Generator.Generate"/> chooses and reports tokens, and when it stops.</summary>
public sealed record GenerationOptions
{
    /// <summary>
    /// Chooses each token, whatever <see cref="Search"/> says of sampling; null: the search's choice, greedy (the highest
    /// logit, the lowest id among equals) or, where it samples, its top-k / top-p / temperature sampler.
    /// </summary>
    public TokenSampler? Sampler { get; init; }

    /// <summary>
    /// The search options: the length limits, sampling and the repetition penalty. Null, the default, takes genai_config.json's
    /// (<see cref="Generator.Search"/>); to change some, start from those: <c>generator.Search with { DoSample = true }</c>.
    /// </summary>
    public SearchOptions? Search { get; init; }

    /// <summary>Called with each generated token as it is chosen, and the logits it was chosen from (valid during the call only); null: none.</summary>
    public TokenCallback? OnToken { get; init; }

    /// <summary>
    /// Tokens that end the generation before the number asked for: the first one chosen is the last token of the result
    /// (reported to <see cref="OnToken"/> like the others). Null, the default, takes genai_config.json's
    /// model.eos_token_id, or its pad_token_id where it gives none (<see cref="Generator.EosTokenIds"/>), as ONNX Runtime
    /// GenAI does; an empty list never stops early, so every generation makes the number of tokens asked for (what a
    /// benchmark times).
    /// </summary>
    public IReadOnlyCollection<long>? StopTokenIds { get; init; }
}

/// <summary>Why a generation ended.</summary>
public enum GenerationStopReason
{
    /// <summary>It made the number of new tokens asked for.</summary>
    Length,

    /// <summary>It chose one of the stop tokens (<see cref="GenerationOptions.StopTokenIds"/>), the result's last token.</summary>
    StopToken,

    /// <summary>The prompt and the new tokens reached the search's max_length (<see cref="SearchOptions.MaxLength"/>) before the number asked for.</summary>
    MaxLength,
}

/// <summary>The new tokens, the time to the first one (the prompt's prefill and its choice), the time of the rest, and why it ended.</summary>
public sealed record GenerationResult(IReadOnlyList<long> Tokens, TimeSpan TimeToFirstToken, TimeSpan DecodeTime, GenerationStopReason StopReason)
{
    /// <summary>Tokens after the first per second of decoding (NaN when only one token was generated).</summary>
    public double DecodeTokensPerSecond => Tokens.Count > 1 ? (Tokens.Count - 1) / DecodeTime.TotalSeconds : double.NaN;
}

/// <summary>
/// Generates tokens with a decoder written as an ONNX Runtime GenAI model folder (genai_config.json and the model it names):
/// the prompt's token ids in one run (prefill), then one token per run. Every state the model carries (KV caches,
/// linear-attention conv and recurrent states) goes from a run's present output to the next run's past input as the
/// ONNX Runtime value itself, never copied through managed memory. One sequence (batch 1); one generation at a time.
/// </summary>
public sealed class Generator : IDisposable
{
    private readonly ModelSession _session;
    private readonly GenAiConfig _config;
    private readonly CarriedState[] _carried;
    private readonly IndexInput _inputIds;
    private readonly IndexInput? _attentionMask;
    private readonly IndexInput? _positionIds;
    private readonly TensorElementType _logitsType;
    private int _busy;
    private int _disposed;

    private Generator(GenAiConfig config, ModelSession session)
    {
        _config = config;
        _session = session;
        var model = session.Model;
        string modelName = Path.GetFileName(config.ModelPath);
        var inputs = model.Inputs.Where(i => session.InputNames.Contains(i.Name)).ToDictionary(i => i.Name);
        var outputs = model.Outputs.ToDictionary(o => o.Name);

        // Named by the config, or GenAI's default name where the model takes that input.
        string? attentionMask = config.AttentionMask ?? (inputs.ContainsKey(GenAiConfig.DefaultAttentionMask) ? GenAiConfig.DefaultAttentionMask : null);
        string? positionIds = config.PositionIds ?? (inputs.ContainsKey(GenAiConfig.DefaultPositionIds) ? GenAiConfig.DefaultPositionIds : null);
        var roles = new Dictionary<string, string>();
        var fed = new Dictionary<string, IndexInput>();
        foreach (var (name, key) in new[] { (config.InputIds, "input_ids"), (attentionMask, "attention_mask"), (positionIds, "position_ids") })
        {
            if (name is null) continue;
            if (!roles.TryAdd(name, key))
                throw new InvalidDataException($"{config.ConfigPath}: model.decoder.inputs.{key} names '{name}', which model.decoder.inputs.{roles[name]} names too: each names its own input");
            if (!inputs.TryGetValue(name, out var input))
                throw new InvalidDataException($"{config.ConfigPath}: model.decoder.inputs.{key} names '{name}', which {modelName} does not take (inputs: {string.Join(", ", inputs.Keys)})");
            if (input.ElementType is not (TensorElementType.Int64 or TensorElementType.Int32))
                throw new InvalidDataException($"{config.ConfigPath}: model.decoder.inputs.{key} ('{name}') must be an int64 or int32 input of {modelName}, it is {input.ElementType}");
            // Fed as [1, tokens]: a multimodal model's 3-D position ids ([3, batch, sequence], Qwen VL's rotary) would fail at the first run.
            if (input.Dims is { Count: not 2 } rank)
                throw new InvalidDataException($"{config.ConfigPath}: model.decoder.inputs.{key} ('{name}') is [{string.Join(", ", rank)}] in {modelName}; " +
                    "the generator feeds it as [batch, sequence] and takes no other layout (such as the 3-D position ids of a multimodal model)");
            fed[key] = IndexInput.For(name, input.ElementType);
        }
        _inputIds = fed["input_ids"];
        _attentionMask = fed.GetValueOrDefault("attention_mask");
        _positionIds = fed.GetValueOrDefault("position_ids");
        if (!outputs.TryGetValue(config.Logits, out var logits))
            throw new InvalidDataException($"{config.ConfigPath}: model.decoder.outputs.logits names '{config.Logits}', which {modelName} does not give (outputs: {string.Join(", ", outputs.Keys)})");
        if (logits.ElementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new InvalidDataException($"{config.ConfigPath}: the logits output '{config.Logits}' must be float or float16, it is {logits.ElementType}");
        _logitsType = logits.ElementType;
        if (logits.Dims is { Count: not 3 } declared)
            throw new InvalidDataException($"{config.ConfigPath}: the logits output '{config.Logits}' must be [batch, tokens, vocabulary], {modelName} declares it [{string.Join(", ", declared)}]");
        VocabSize = logits.Dims is { Count: 3 } dims && long.TryParse(dims[2], out long vocab) ? checked((int)vocab) : config.VocabSize;
        if (config.VocabSize is int said && said != VocabSize)
            throw new InvalidDataException($"{config.ConfigPath}: model.vocab_size is {said}, but {modelName}'s logits '{config.Logits}' hold {VocabSize} tokens");
        if (VocabSize is int size && config.EosTokenIds.FirstOrDefault(id => id >= size) is var eos and > 0)
            throw new InvalidDataException($"{config.ConfigPath}: {config.EosKey} {eos} is not a token of the vocabulary ({size} tokens)");

        // Past → present pairs: the KV cache by its templates, the linear-attention states by the same templates with
        // another last part, LFM2's conv cache by its own.
        // WindowedRank: the rank of a state exported with a window of its last W states ahead of the batch (qwen.py's
        // state_window: [W, batch, ...]), by which GenAI tells it (recurrent_state.cpp); 0 where there is no such form.
        // A KV template with no '.' part after its %d (past_key_%d, which GenAI takes) names no linear-attention states.
        // Present: null where the present template has no such part while the past's has (no name to carry from).
        (string Past, string? Present, string Key, bool Cache, int WindowedRank)[] templates =
        [
            (config.PastKeyTemplate, config.PresentKeyTemplate, "present_key_names", true, 0),
            (config.PastValueTemplate, config.PresentValueTemplate, "present_value_names", true, 0),
            .. new[] { ("conv_state", 4), ("recurrent_state", 5) }
                .Where(s => GenAiConfig.WithLastPart(config.PastKeyTemplate, s.Item1) is not null)
                .Select(s => (GenAiConfig.WithLastPart(config.PastKeyTemplate, s.Item1)!, GenAiConfig.WithLastPart(config.PresentKeyTemplate, s.Item1), "present_key_names", false, s.Item2)),
            (config.PastConvTemplate, config.PresentConvTemplate, "present_conv_names", false, 0),
        ];
        var carried = new List<CarriedState>();
        var carriedFrom = new Dictionary<string, string>();
        foreach (var input in inputs.Values)
        {
            if (roles.ContainsKey(input.Name)) continue;
            var match = templates.Select(t => (t, Layer: GenAiConfig.LayerOf(t.Past, input.Name))).FirstOrDefault(m => m.Layer is not null);
            if (match.Layer is not int layer)
                throw new InvalidDataException($"{config.ConfigPath}: {modelName} takes the input '{input.Name}', which genai_config.json does not name: " +
                    $"it is not model.decoder.inputs' input_ids, attention_mask or position_ids, and no past template ({string.Join(", ", templates.Select(t => t.Past))}) matches it");
            if (match.t.Present is null)
                throw new InvalidDataException($"{config.ConfigPath}: {modelName} takes '{input.Name}', named by model.decoder.inputs.past_key_names with its last part replaced, " +
                    $"but model.decoder.outputs.present_key_names ('{config.PresentKeyTemplate}') has no '.' part after its %d to name the output carried into it");
            string present = GenAiConfig.Name(match.t.Present, layer);
            if (!outputs.TryGetValue(present, out var presentInfo))
                throw new InvalidDataException($"{config.ConfigPath}: {modelName} takes '{input.Name}' but does not give '{present}' to carry into it (model.decoder.outputs.{match.t.Key})");
            if (presentInfo.ElementType != input.ElementType)
                throw new InvalidDataException($"{modelName}: '{present}' is {presentInfo.ElementType} but '{input.Name}' takes {input.ElementType}");
            if (!carriedFrom.TryAdd(present, input.Name))
                throw new InvalidDataException($"{config.ConfigPath}: '{present}' would be carried into both '{carriedFrom[present]}' and '{input.Name}' (model.decoder.outputs.{match.t.Key}): each past takes its own present");
            int batchAxis = input.Dims?.Count == match.t.WindowedRank ? 1 : 0;
            carried.Add(new CarriedState(input.Name, present, input.ElementType, InitialShape(input, batchAxis, match.t.Cache, modelName), match.t.Cache));
        }
        _carried = [.. carried.OrderBy(c => c.Past, StringComparer.Ordinal)];
    }

    /// <summary>Opens the model folder: reads genai_config.json and opens the model it names with <paramref name="options"/> (the hand-over backend, the host).</summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist, or is a file.</exception>
    /// <exception cref="FileNotFoundException">genai_config.json or the model it names is missing.</exception>
    /// <exception cref="InvalidDataException">
    /// The config is not JSON, misses a key, or names inputs and outputs the model does not have or in a layout the
    /// generator does not feed (the message names the file and the key).
    /// </exception>
    public static Generator Open(string modelDirectory, ModelSessionOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(modelDirectory);
        var config = GenAiConfig.Read(modelDirectory);
        var session = ModelSession.Open(config.ModelPath, options);
        try
        {
            return new Generator(config, session);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>The model as rewritten for the hand-over and the nodes the engine runs.</summary>
    public HandoverPlan Handover => _session.Handover;

    public HandoverBackend Backend => _session.Backend;

    /// <summary>The vocabulary size: the logits' last dim when the model fixes it, else genai_config.json's model.vocab_size when it gives one.</summary>
    public int? VocabSize { get; }

    /// <summary>The longest generation (prompt and new tokens but the last) genai_config.json allows: its context_length, when it gives one.</summary>
    public int? ContextLength => _config.ContextLength;

    /// <summary>
    /// genai_config.json's model.eos_token_id (a token or a list of them), or, where it gives none or an empty list, its
    /// pad_token_id (0 when that is not given either), as GenAI reads them: where a generation stops unless
    /// <see cref="GenerationOptions.StopTokenIds"/> says otherwise.
    /// </summary>
    public IReadOnlyList<long> EosTokenIds => _config.EosTokenIds;

    /// <summary>genai_config.json's search options (its "search" section, GenAI's defaults where it leaves keys out): what a generation applies unless <see cref="GenerationOptions.Search"/> replaces them.</summary>
    public SearchOptions Search => _config.Search;

    /// <summary>The past inputs the generator carries from run to run, each with the present output it is fed from.</summary>
    public IReadOnlyList<(string Past, string Present)> CarriedStates => _carried.Select(c => (c.Past, c.Present)).ToArray();

    /// <summary>
    /// Prefills <paramref name="prompt"/> and generates <paramref name="newTokens"/> tokens, fewer where a stop token
    /// (<see cref="GenerationOptions.StopTokenIds"/>, by default the config's eos_token_id) is chosen first or the search's
    /// max_length is reached: <see cref="GenerationResult.StopReason"/> says which. Each token's logits go through the
    /// search's repetition penalty and min_length before the choice (and the callbacks see them so). Memory grows with the tokens generated, not those asked for, but for a KV cache the config shares (search.past_present_share_buffer): one buffer of the prompt and the tokens asked for.
    /// Cancelling stops the run in progress (ONNX Runtime's terminate flag) and throws <see cref="OperationCanceledException"/>.
    /// </summary>
    /// <exception cref="ArgumentException">
    /// What <see cref="Validate"/> refuses (an empty prompt, a token outside the vocabulary, fewer than one new token, more
    /// positions than context_length, a max_length past context_length, a prompt that reaches max_length, search options out
    /// of range or beam search), or a sampler's token outside the vocabulary.
    /// </exception>
    /// <exception cref="InvalidOperationException">Another generation is in progress on this generator.</exception>
    /// <exception cref="ModelRunException">ONNX Runtime failed to run the model.</exception>
    /// <exception cref="InvalidDataException">The model's logits are not [1, tokens, vocabulary] or hold a NaN or an infinity.</exception>
    /// <exception cref="ObjectDisposedException">The generator was disposed.</exception>
    public GenerationResult Generate(IReadOnlyList<long> prompt, int newTokens, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        var search = options?.Search ?? Search;
        Validate(prompt, newTokens, search);
        if (Interlocked.Exchange(ref _busy, 1) != 0) throw new InvalidOperationException("the generator is already generating (one generation at a time)");
        try
        {
            // The generation's values stay ORT's from run to run: the session stays open until it ends.
            using var run = EnterRun();
            return Run(prompt, newTokens, options ?? new GenerationOptions(), search, cancellationToken);
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>
    /// Refuses what <see cref="Generate"/> would refuse before running: an empty prompt, a token outside the vocabulary,
    /// fewer than one new token, more positions than the config's context_length, and what <see cref="ValidateLength"/>
    /// refuses of <paramref name="search"/> (null: <see cref="Search"/>).
    /// </summary>
    public void Validate(IReadOnlyList<long> prompt, int newTokens, SearchOptions? search = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (prompt.Count == 0) throw new ArgumentException("the prompt needs at least one token", nameof(prompt));
        ValidateLength(prompt.Count, newTokens, search);
        for (int i = 0; i < prompt.Count; i++)
        {
            CheckToken(prompt[i], VocabSize, nameof(prompt), $"prompt token {i}");
            // Where the model does not fix the vocabulary, an int32 input_ids still bounds the ids.
            if (prompt[i] > _inputIds.MaxValue)
                throw new ArgumentOutOfRangeException(nameof(prompt), prompt[i], $"prompt token {i} is {prompt[i]}, past the largest id the model's {_inputIds.Name} holds ({_inputIds.MaxValue})");
        }
    }

    /// <summary>
    /// Refuses a generation of <paramref name="promptTokens"/> and <paramref name="newTokens"/> that needs more positions than
    /// the config's context_length, or than one array holds, and <paramref name="search"/> options (null: <see cref="Search"/>)
    /// out of range, asking for beam search, whose max_length passes the context_length (as GenAI refuses it) or whose
    /// max_length the prompt already reaches: a check to make before the
    /// prompt is made. The new tokens count up to max_length only: generation stops there.
    /// </summary>
    public void ValidateLength(int promptTokens, int newTokens, SearchOptions? search = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(promptTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(newTokens, 1);
        search ??= Search;
        // The config's options were checked as it was read, naming its keys; the caller's are named as properties.
        foreach (var (_, property, problem) in search.Problems())
            throw new ArgumentException($"{nameof(SearchOptions)}.{property} {problem}", nameof(search));
        if (search.NumBeams > 1)
            throw new ArgumentException($"search.num_beams is {search.NumBeams}: beam search is not supported (greedy or sampling: num_beams 1)", nameof(search));
        // Before the context length: a prompt at max_length makes no token, however many are asked for.
        if (search.MaxLength is int maxLength && promptTokens >= maxLength)
            throw new ArgumentException($"the prompt's {promptTokens} tokens reach search.max_length {maxLength} (prompt and new tokens): no room for a new token", nameof(promptTokens));
        // The new tokens count up to max_length only, where generation stops.
        if (search.MaxLength is int cap) newTokens = Math.Min(newTokens, cap - promptTokens);
        long positions = (long)promptTokens + newTokens - 1;
        if (_config.ContextLength is int context && positions > context)
            throw new ArgumentException($"{promptTokens} prompt tokens and {newTokens} new ones need {positions} positions; the model's context_length is {context} ({_config.ConfigPath})", nameof(newTokens));
        // As GenAI, which refuses to start a generation whose max_length passes the context length, whatever it asks for.
        if (search.MaxLength is int longest && _config.ContextLength is int contextLength && longest > contextLength)
            throw new ArgumentException($"search.max_length {longest} passes the model's context_length {contextLength} ({_config.ConfigPath}): no sequence may be longer than the context", nameof(search));
        // The attention mask holds every position and one more.
        if (positions >= Array.MaxLength)
            throw new ArgumentException($"{promptTokens} prompt tokens and {newTokens} new ones need {positions} positions; a generation holds at most {Array.MaxLength - 1}", nameof(newTokens));
    }

    /// <summary>The session held open for a generation; a generator disposed meanwhile (its session with it) refused as the generator.</summary>
    private ModelSession.RunScope EnterRun()
    {
        try
        {
            return _session.EnterRun();
        }
        catch (ObjectDisposedException e)
        {
            throw new ObjectDisposedException($"{nameof(Generator)}: the generator was disposed", e);
        }
    }

    /// <summary>
    /// Releases the session, once a generation in progress has ended (not from inside one: its callbacks may not dispose it); a
    /// Dispose on another thread meanwhile returns once the session is released too.
    /// </summary>
    public void Dispose()
    {
        // Marked first, so a generation that starts from here on is refused before it reaches the session; unmarked when the
        // session refuses (a Dispose from inside a generation's callback). Every disposer goes on to the session, whose
        // Dispose returns once it is released.
        Volatile.Write(ref _disposed, 1);
        try
        {
            _session.Dispose();
        }
        catch
        {
            Volatile.Write(ref _disposed, 0);
            throw;
        }
    }

    private GenerationResult Run(IReadOnlyList<long> prompt, int newTokens, GenerationOptions options, SearchOptions search, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var tokens = new List<long>();
        var stopTokens = (options.StopTokenIds ?? _config.EosTokenIds).ToHashSet();
        var stopReason = GenerationStopReason.Length;
        if (search.MaxLength is int maxLength && maxLength - prompt.Count < newTokens)
        {
            newTokens = maxLength - prompt.Count;
            stopReason = GenerationStopReason.MaxLength;
        }
        TokenSampler choose = options.Sampler
            ?? (search.Samples ? new SearchSampler(search, search.RandomSeed is int seed ? new Random(seed) : new Random()).Sample : ArgMax);
        // The sequence's tokens so far, which the repetition penalty applies to.
        var seen = search.RepetitionPenalty != 1 ? prompt.ToHashSet() : null;
        TimeSpan firstToken = default;
        long[] promptIds = [.. prompt];
        float[] logits = new float[VocabSize ?? 0];
        var pasts = new OrtValue?[_carried.Length];
        // Each present's buffer where the generator owns it: a shared KV cache's is its past; a state of fixed shape (a conv or
        // recurrent state) has two, this one and its past, which take turns. Null: ONNX Runtime allocates the present (a KV
        // cache that grows each run).
        var presents = new OrtValue?[_carried.Length];
        // The decode steps' logits [1, 1, vocabulary], made once the prompt's run gave the vocabulary; the prompt's are ONNX Runtime's.
        OrtValue? stepLogits = null;
        // As GenAI with search.past_present_share_buffer (the builder's choice for GroupQueryAttention): each KV cache is one
        // buffer of every position the generation reaches, which the attention reads as past and writes as present in place,
        // rather than a new present each step holding a copy of the past.
        int shared = _config.PastPresentShareBuffer ? prompt.Count + newTokens : 0;
        // The decode steps take two bindings in turn: a fixed state's past in one is its present in the other, so each binding
        // keeps what its first run bound, and a step binds only the attention mask (longer each step) and a KV cache that grows.
        using var prefill = _session.Inference.CreateIoBinding();
        using var even = _session.Inference.CreateIoBinding();
        using var odd = _session.Inference.CreateIoBinding();
        using var stepIds = _inputIds.StepValue();
        using var stepPositions = _positionIds?.StepValue();
        using var runOptions = new RunOptions();
        using var cancellation = cancellationToken.Register(() => runOptions.Terminate = true);
        try
        {
            for (int i = 0; i < _carried.Length; i++)
            {
                pasts[i] = Zeros(_carried[i], shared);
                presents[i] = !_carried[i].Cache ? Zeros(_carried[i]) : shared > 0 ? pasts[i] : null;
            }
            int position = 0;
            for (int index = 0; index < newTokens; index++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (index == 0)
                {
                    using var ids = _inputIds.Ids(promptIds);
                    using var positions = _positionIds?.Positions(0, promptIds.Length);
                    logits = Step(runOptions, prefill, bindAll: true, swapped: false, ids, positions, promptIds.Length, pasts, presents, null, logits);
                    stepLogits = LogitsBuffer(logits.Length);
                    position = promptIds.Length;
                }
                else
                {
                    _inputIds.SetStep(tokens[^1]);
                    _positionIds?.SetStep(position);
                    bool swapped = index % 2 == 1;
                    // Bound whole on each binding's first run: the odd one's at step 1, the even one's at step 2.
                    logits = Step(runOptions, swapped ? odd : even, bindAll: index <= 2, swapped, stepIds, stepPositions, position + 1, pasts, presents, stepLogits, logits);
                    position++;
                }
                if (seen is not null) Penalize(logits, seen, search.RepetitionPenalty);
                // As GenAI's min_length: the length before this token, the prompt's counted.
                if (prompt.Count + index < search.MinLength)
                    foreach (long stop in stopTokens)
                        if (stop < logits.Length) logits[stop] = float.NegativeInfinity;
                long next = choose(logits);
                CheckToken(next, logits.Length, nameof(options), $"the sampler's token {index}");
                tokens.Add(next);
                seen?.Add(next);
                if (index == 0) firstToken = clock.Elapsed;
                options.OnToken?.Invoke(new GeneratedToken(index, next, clock.Elapsed), logits);
                if (stopTokens.Contains(next))
                {
                    stopReason = GenerationStopReason.StopToken;
                    break;
                }
            }
        }
        catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("generation was cancelled", cancellationToken);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelRunException($"{_config.ModelPath}: running the model failed: {e.Message}", e);
        }
        finally
        {
            for (int i = 0; i < _carried.Length; i++)
            {
                pasts[i]?.Dispose();
                if (!ReferenceEquals(presents[i], pasts[i])) presents[i]?.Dispose();
            }
            stepLogits?.Dispose();
        }
        return new GenerationResult(tokens, firstToken, clock.Elapsed - firstToken, stopReason);
    }

    /// <summary>
    /// One run of <paramref name="ids"/> over a sequence of <paramref name="length"/> tokens: each past bound as input and
    /// each present as output, swapped where <paramref name="swapped"/> (a fixed state's two buffers take turns), ONNX
    /// Runtime allocating a present that is null in <paramref name="presents"/> and the logits where
    /// <paramref name="logitsBuffer"/> is null. Unless <paramref name="bindAll"/>, only the mask and the presents ONNX Runtime
    /// allocates are bound: the rest is as the binding's last run left it. A present ONNX Runtime allocated is the next
    /// run's past as it is (the old past disposed). Returns the last position's logits.
    /// </summary>
    private float[] Step(RunOptions runOptions, OrtIoBinding binding, bool bindAll, bool swapped, OrtValue ids, OrtValue? positions, int length,
        OrtValue?[] pasts, OrtValue?[] presents, OrtValue? logitsBuffer, float[] logits)
    {
        using var mask = _attentionMask?.Ones(length);
        if (mask is not null) binding.BindInput(_attentionMask!.Name, mask);
        if (bindAll)
        {
            binding.BindInput(_inputIds.Name, ids);
            if (positions is not null) binding.BindInput(_positionIds!.Name, positions);
            if (logitsBuffer is null) binding.BindOutputToDevice(_config.Logits, OrtMemoryInfo.DefaultInstance);
            else binding.BindOutput(_config.Logits, logitsBuffer);
        }
        bool allocated = logitsBuffer is null;
        for (int i = 0; i < _carried.Length; i++)
        {
            var state = _carried[i];
            if (presents[i] is null)
            {
                binding.BindInput(state.Past, pasts[i]!);
                binding.BindOutputToDevice(state.Present, OrtMemoryInfo.DefaultInstance);
                allocated = true;
            }
            else if (bindAll)
            {
                var (past, present) = swapped ? (presents[i]!, pasts[i]!) : (pasts[i]!, presents[i]!);
                binding.BindInput(state.Past, past);
                binding.BindOutput(state.Present, present);
            }
        }

        _session.Inference.RunWithBinding(runOptions, binding);
        if (!allocated) return LastRow(logitsBuffer!, logits);
        // In the order the binding's first run bound them: the logits, then each present.
        var outputs = binding.GetOutputValues().ToArray();
        try
        {
            logits = LastRow(outputs[0], logits);
        }
        finally
        {
            outputs[0].Dispose();
            for (int i = 0; i < _carried.Length; i++)
            {
                if (presents[i] is null)
                {
                    pasts[i]?.Dispose();
                    pasts[i] = outputs[i + 1];
                }
                else outputs[i + 1].Dispose();
            }
        }
        return logits;
    }

    /// <summary>The logits of one position, [1, 1, <paramref name="vocab"/>], in the model's element type.</summary>
    private OrtValue LogitsBuffer(int vocab) =>
        OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (OrtElementType)_logitsType, [1, 1, vocab]);

    /// <summary>
    /// The logits of the last position, as floats, into <paramref name="row"/> (resized when the model does not fix the
    /// vocabulary). Only that row is read, by pointer: a prefill's logits [1, tokens, vocabulary] pass 2 GiB (151,936
    /// float32 logits a token reach it at 3,534 tokens), more than a span covers.
    /// </summary>
    private unsafe float[] LastRow(OrtValue value, float[] row)
    {
        var info = value.GetTensorTypeAndShape();
        long[] shape = info.Shape;
        if (shape.Length != 3 || shape[0] != 1 || shape[1] < 1 || shape[2] < 1)
            throw new InvalidDataException($"{_config.ModelPath}: logits '{_config.Logits}' must be [1, tokens, vocabulary], got {TensorData.Format(shape)}");
        int vocab = checked((int)shape[2]);
        if (row.Length != vocab) row = new float[vocab];
        long start = (shape[1] - 1) * vocab;
        void* data = OrtValueMemory.Data(value);
        if (info.ElementDataType == OrtElementType.Float16)
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>((Half*)data + start, vocab), row);
        else
            new ReadOnlySpan<float>((float*)data + start, vocab).CopyTo(row);
        foreach (float f in row)
            if (!float.IsFinite(f)) throw new InvalidDataException($"{_config.ModelPath}: the logits '{_config.Logits}' hold {f}");
        return row;
    }

    /// <summary>The repetition penalty as GenAI and Hugging Face apply it: each token seen has its logit divided by the penalty where positive, multiplied where negative.</summary>
    private static void Penalize(float[] logits, HashSet<long> seen, float penalty)
    {
        foreach (long id in seen)
            if (id < logits.Length) logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
    }

    private static long ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <param name="vocab">the vocabulary's size: the model's when it fixes it, else the logits' length once known.</param>
    private static void CheckToken(long token, int? vocab, string parameter, string what)
    {
        if (token < 0 || token >= vocab)
            throw new ArgumentOutOfRangeException(parameter, token, $"{what} is {token}, outside the vocabulary [0, {vocab?.ToString() ?? "?"})");
    }

    /// <summary>A past input's first value: zeros, batch 1 (at <paramref name="batchAxis"/>), an empty KV cache (its sequence dim 0).</summary>
    private static long[] InitialShape(ModelValueInfo input, int batchAxis, bool cache, string modelName)
    {
        if (input.Dims is null) throw new InvalidDataException($"{modelName}: input '{input.Name}' has no shape; the generator needs its dims to start it");
        var shape = new long[input.Dims.Count];
        for (int d = 0; d < shape.Length; d++)
        {
            string dim = input.Dims[d];
            shape[d] = long.TryParse(dim, out long n) ? n
                : d == batchAxis ? 1
                : cache ? 0
                : throw new InvalidDataException($"{modelName}: input '{input.Name}' has the symbolic dim '{dim}' at axis {d}; a carried state needs fixed dims " +
                    $"but for the batch (axis {batchAxis}{(batchAxis == 1 ? ", after its state window" : "")})");
        }
        return shape;
    }

    /// <summary>A past's first value: zeros of its initial shape, or of <paramref name="sequence"/> positions where the KV cache's sequence dims start at 0.</summary>
    private static unsafe OrtValue Zeros(CarriedState state, int sequence = 0)
    {
        long[] shape = [.. state.InitialShape.Select((d, axis) => state.Cache && d == 0 && axis > 0 ? sequence : d)];
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, (OrtElementType)state.ElementType, shape);
        // By pointer: a state may pass the 2 GiB a span covers.
        long bytes = shape.Aggregate(1L, (n, d) => n * d) * TensorData.ElementSize(state.ElementType);
        if (bytes > 0) NativeMemory.Clear(OrtValueMemory.Data(value), (nuint)bytes);
        return value;
    }

    /// <param name="Cache">A KV cache (its sequence dims start at 0): with search.past_present_share_buffer, one buffer for the whole generation.</param>
    private sealed record CarriedState(string Past, string Present, TensorElementType ElementType, long[] InitialShape, bool Cache);

    /// <summary>
    /// An input the generator makes (input_ids, attention_mask, position_ids) in the element type the model declares, int64
    /// or int32: written into a buffer kept from run to run (one generation at a time) and handed to ONNX Runtime where it lies.
    /// </summary>
    private abstract class IndexInput(string name)
    {
        public string Name { get; } = name;

        /// <summary>The largest value the input's element type holds.</summary>
        public abstract long MaxValue { get; }

        public static IndexInput For(string name, TensorElementType type) =>
            type == TensorElementType.Int32 ? new Typed<int>(name) : new Typed<long>(name);

        /// <summary>The token ids as [1, ids].</summary>
        public abstract OrtValue Ids(ReadOnlySpan<long> ids);

        /// <summary>An attention mask over <paramref name="count"/> positions, all ones, as [1, count].</summary>
        public abstract OrtValue Ones(int count);

        /// <summary>The positions <paramref name="start"/> to <paramref name="start"/> + <paramref name="count"/> − 1 as [1, count].</summary>
        public abstract OrtValue Positions(int start, int count);

        /// <summary>A decode step's id or position as [1, 1], over a buffer of its own: bound once, set each step by <see cref="SetStep"/>.</summary>
        public abstract OrtValue StepValue();

        /// <summary>Writes the value <see cref="StepValue"/> holds.</summary>
        public abstract void SetStep(long value);

        private sealed class Typed<T>(string name) : IndexInput(name) where T : unmanaged, IBinaryInteger<T>, IMinMaxValue<T>
        {
            private T[] _buffer = [];
            private readonly T[] _step = new T[1];

            public override long MaxValue => long.CreateTruncating(T.MaxValue);

            public override OrtValue Ids(ReadOnlySpan<long> ids)
            {
                var buffer = Buffer(ids.Length);
                // Ids past the type's range were refused before the generation (Validate, the vocabulary's size).
                for (int i = 0; i < ids.Length; i++) buffer[i] = T.CreateTruncating(ids[i]);
                return Tensor(ids.Length);
            }

            public override OrtValue Ones(int count)
            {
                if (_buffer.Length < count)
                {
                    // Grown as the generation goes (doubling), not sized for the tokens asked for: a generation meant to end
                    // at a stop token may ask for many more than it makes. Only the mask's buffer holds ones: filled once.
                    _buffer = new T[Math.Max(count, (int)Math.Min(2L * _buffer.Length, Array.MaxLength))];
                    Array.Fill(_buffer, T.One);
                }
                return Tensor(count);
            }

            public override OrtValue Positions(int start, int count)
            {
                var buffer = Buffer(count);
                for (int i = 0; i < count; i++) buffer[i] = T.CreateTruncating(start + i);
                return Tensor(count);
            }

            public override OrtValue StepValue() => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _step.AsMemory(), [1, 1]);

            public override void SetStep(long value) => _step[0] = T.CreateTruncating(value);

            private Span<T> Buffer(int count)
            {
                if (_buffer.Length < count) _buffer = new T[count];
                return _buffer.AsSpan(0, count);
            }

            private OrtValue Tensor(int count) => OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _buffer.AsMemory(0, count), [1, count]);
        }
    }
}

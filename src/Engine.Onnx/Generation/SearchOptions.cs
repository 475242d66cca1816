namespace Engine.Onnx;

/// <summary>
/// How <see cref="Generator"/> searches: genai_config.json's "search" section as ONNX Runtime GenAI reads it (its keys and
/// defaults, config.h), or the caller's choice through <see cref="GenerationOptions.Search"/>. Greedy unless
/// <see cref="DoSample"/>; a <see cref="GenerationOptions.Sampler"/> the caller gives chooses instead of either.
/// </summary>
public sealed record SearchOptions
{
    /// <summary>
    /// search.max_length: the longest sequence, prompt and new tokens; generation stops there
    /// (<see cref="GenerationStopReason.MaxLength"/>) and a prompt that already reaches it is refused. Where the config gives
    /// none (or 0), its model.context_length, as GenAI does, which it may not pass (refused when generating, as GenAI
    /// refuses it); null: no cap.
    /// </summary>
    public int? MaxLength { get; init; }

    /// <summary>search.min_length: until the sequence (prompt and new tokens) is this long, stop tokens get a logit of −∞ and are not chosen.</summary>
    public int MinLength { get; init; }

    /// <summary>
    /// search.do_sample: sample from <see cref="TopK"/>, <see cref="TopP"/> and <see cref="Temperature"/>; false: greedy. As in
    /// GenAI, a top_k of 1 or a temperature of 0 samples greedily too.
    /// </summary>
    public bool DoSample { get; init; }

    /// <summary>search.top_k: sampling keeps the k highest logits (0: all of them).</summary>
    public int TopK { get; init; } = 50;

    /// <summary>
    /// search.top_p, in [0, 1]: sampling keeps the most probable tokens until their probabilities reach p. As in GenAI, 0 with a
    /// top_k above 1 keeps the k tokens whole (no top-p), and 0 with top_k 0 keeps the best token only.
    /// </summary>
    public float TopP { get; init; } = 1;

    /// <summary>search.temperature: sampling divides the logits by it; 0 samples greedily, as in GenAI.</summary>
    public float Temperature { get; init; } = 1;

    /// <summary>search.repetition_penalty: every token of the sequence so far has its logit divided by it where positive, multiplied where negative (1: none).</summary>
    public float RepetitionPenalty { get; init; } = 1;

    /// <summary>search.num_beams: 1; beam search (more) is not supported and refused by <see cref="Generator.Generate"/>.</summary>
    public int NumBeams { get; init; } = 1;

    /// <summary>search.random_seed: the seed of each generation's sampling; null (the config's −1, GenAI's default): a new random seed each generation.</summary>
    public int? RandomSeed { get; init; }

    /// <summary>What is wrong with these options: each problem with its genai_config.json key and property name.</summary>
    internal IEnumerable<(string Key, string Property, string Problem)> Problems()
    {
        if (MaxLength is < 1) yield return ("max_length", nameof(MaxLength), $"must be a positive integer, got {MaxLength}");
        if (MinLength < 0) yield return ("min_length", nameof(MinLength), $"must not be negative, got {MinLength}");
        if (TopK < 0) yield return ("top_k", nameof(TopK), $"must not be negative (0 keeps every token), got {TopK}");
        if (!(TopP >= 0 && TopP <= 1)) yield return ("top_p", nameof(TopP), $"must be in [0, 1], got {TopP}");
        if (DoSample && !(Temperature >= 0 && float.IsFinite(Temperature)))
            yield return ("temperature", nameof(Temperature), $"must be finite and not negative when sampling (do_sample; 0 is greedy), got {Temperature}");
        if (!(RepetitionPenalty > 0 && float.IsFinite(RepetitionPenalty)))
            yield return ("repetition_penalty", nameof(RepetitionPenalty), $"must be positive and finite (1: none), got {RepetitionPenalty}");
        if (NumBeams < 1) yield return ("num_beams", nameof(NumBeams), $"must be at least 1, got {NumBeams}");
        if (RandomSeed is < 0) yield return ("random_seed", nameof(RandomSeed), $"must not be negative (-1 in genai_config.json: a random seed), got {RandomSeed}");
    }

    /// <summary>Whether a generation draws its tokens: GenAI searches greedily without do_sample, with top_k 1 or at temperature 0.</summary>
    internal bool Samples => DoSample && TopK != 1 && Temperature != 0;
}

/// <summary>
/// Sampling as ONNX Runtime GenAI's CPU search does it (SampleTopK, SampleTopP, SampleTopKTopP): the k highest logits
/// (all where top_k is 0), largest first (the lower id first among equals); their softmax at the temperature; then a
/// uniform draw u in [0, top_p) walks their cumulative probabilities and the first token that reaches u is chosen, so
/// top_p 1 samples from the k tokens' softmax. One <see cref="Random.NextDouble"/> a token; .NET's generator, not GenAI's
/// mt19937, so a seed does not repeat GenAI's tokens.
/// </summary>
internal sealed class SearchSampler(SearchOptions search, Random random)
{
    private float[] _logits = [];
    private int[] _candidates = [];
    private double[] _weights = [];

    public long Sample(ReadOnlySpan<float> logits)
    {
        int vocab = logits.Length;
        if (_logits.Length != vocab)
        {
            _logits = new float[vocab];
            _candidates = new int[vocab];
            _weights = new double[vocab];
        }
        logits.CopyTo(_logits);
        var scores = _logits;
        // Negative where a ranks before b: the higher logit, the lower id among equals.
        int Rank(int a, int b) => scores[a] != scores[b] ? scores[b].CompareTo(scores[a]) : a.CompareTo(b);
        int k = search.TopK == 0 ? vocab : Math.Min(search.TopK, vocab);
        if (k == vocab)
        {
            for (int id = 0; id < vocab; id++) _candidates[id] = id;
        }
        else
        {
            // The k best through a heap of k whose top is the worst kept: O(vocab · log k), not a sort of the vocabulary.
            var kept = new PriorityQueue<int, int>(k, Comparer<int>.Create((a, b) => Rank(b, a)));
            for (int id = 0; id < vocab; id++)
            {
                if (kept.Count < k) kept.Enqueue(id, id);
                else if (Rank(id, kept.Peek()) < 0) kept.DequeueEnqueue(id, id);
            }
            int n = 0;
            foreach (var (id, _) in kept.UnorderedItems) _candidates[n++] = id;
        }
        Array.Sort(_candidates, 0, k, Comparer<int>.Create(Rank));

        double top = scores[_candidates[0]], sum = 0;
        for (int i = 0; i < k; i++) sum += _weights[i] = Math.Exp((scores[_candidates[i]] - top) / search.Temperature);
        // GenAI applies top_p where it is below 1 and above 0, or where top_k is 0 (SampleTopP, where p = 0 takes the best).
        double p = search.TopP > 0 || search.TopK == 0 ? search.TopP : 1;
        double threshold = random.NextDouble() * p * sum;
        for (int i = 0; i < k; i++)
        {
            threshold -= _weights[i];
            if (threshold <= 0) return _candidates[i];
        }
        return _candidates[k - 1];
    }
}

using System.Text.Json;

namespace Engine.Onnx;

/// <summary>
/// What <see cref="Generator"/> reads of an ONNX Runtime GenAI model folder's genai_config.json: the decoder's file and
/// the names of its inputs and outputs. The KV cache is named by templates (past_key_values.%d.key); as GenAI does, the
/// conv and recurrent states of linear-attention layers are found by the same templates with conv_state and
/// recurrent_state for the last part, and LFM2's conv cache by its own (past_conv.%d → present_conv.%d). Every name but
/// the decoder's filename may be left out, as GenAI lets it be: its default is GenAI's (config.h). An attention mask
/// or position ids the config does not name are the model's attention_mask or position_ids input, when it takes one.
/// With no eos_token_id (or an empty list), generation stops at pad_token_id, 0 when that is not given either, as in GenAI.
/// The "search" section, every key optional with GenAI's default, gives <see cref="SearchOptions"/>.
/// </summary>
internal sealed record GenAiConfig(string ConfigPath, string ModelPath, string InputIds, string? AttentionMask, string? PositionIds, string Logits,
    string PastKeyTemplate, string PastValueTemplate, string PresentKeyTemplate, string PresentValueTemplate,
    string PastConvTemplate, string PresentConvTemplate, int? ContextLength, int? VocabSize, IReadOnlyList<long> EosTokenIds, string EosKey, SearchOptions Search,
    bool PastPresentShareBuffer)
{
    public const string FileName = "genai_config.json";

    /// <summary>The attention mask's and position ids' names where the config names none (GenAI's defaults).</summary>
    public const string DefaultAttentionMask = "attention_mask", DefaultPositionIds = "position_ids";

    public static GenAiConfig Read(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        if (File.Exists(directory)) throw new DirectoryNotFoundException($"{directory}: is a file; a model folder (genai_config.json and the model it names) is expected");
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"{directory}: no such model folder");
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: the model folder has no {FileName}", path);
        // As the model's file: a symbolic link that leads out of the folder (to another file, or a device such as /dev/zero) is not read.
        string realConfig = FilePaths.Real(path);
        if (!FilePaths.IsInside(FilePaths.Real(directory), realConfig))
            throw new InvalidDataException($"{path}: a symbolic link to '{realConfig}', outside the model folder");
        JsonElement root;
        try
        {
            // As text: a byte-order mark, which editors on Windows write, is skipped.
            using var document = JsonDocument.Parse(File.ReadAllText(path));
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
        if (root.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: must hold a JSON object, got {root.ValueKind}");
        var reader = new Reader(path);
        var decoder = reader.Object(reader.Object(root, "model"), "model", "decoder");
        string filename = reader.String(decoder, "model.decoder", "filename");
        var inputs = reader.OptionalObject(decoder, "model.decoder", "inputs");
        var outputs = reader.OptionalObject(decoder, "model.decoder", "outputs");
        // A NUL is no character of a path: .NET's own refusal ("Null character in path.") names neither the file nor the key.
        if (filename.Contains('\0')) throw new InvalidDataException($"{path}: model.decoder.filename contains a NUL character");
        if (Path.IsPathRooted(filename))
            throw new InvalidDataException($"{path}: model.decoder.filename must be a path relative to the model folder, got '{filename}'");
        // A subfolder is the user's folder too (onnx/model.onnx); '..' out of it is not.
        string folder = Path.GetFullPath(directory);
        string modelPath = Path.GetFullPath(Path.Combine(folder, filename));
        if (!FilePaths.IsInside(folder, modelPath))
            throw new InvalidDataException($"{path}: model.decoder.filename must name a file in the model folder, got '{filename}'");
        if (!File.Exists(modelPath)) throw new FileNotFoundException($"{path}: model.decoder.filename names '{filename}', which is not in the folder", modelPath);
        // The name is checked as text above; a symbolic link may still lead out, as external data's links are refused to.
        string realModel = FilePaths.Real(modelPath);
        if (!FilePaths.IsInside(FilePaths.Real(folder), realModel))
            throw new InvalidDataException($"{path}: model.decoder.filename names '{filename}', a symbolic link to '{realModel}', outside the model folder");
        int? context = root.GetProperty("model").TryGetProperty("context_length", out var c) ? reader.PositiveInt(c, "model.context_length") : null;
        var search = reader.OptionalObject(root, "", "search");
        int? vocab = root.GetProperty("model").TryGetProperty("vocab_size", out var v) ? reader.PositiveInt(v, "model.vocab_size") : null;
        // As GenAI's config.cpp: no eos_token_id (or an empty list) stops at pad_token_id, itself 0 when the config gives none.
        long[] eos = root.GetProperty("model").TryGetProperty("eos_token_id", out var eosIds) ? reader.TokenIds(eosIds, "model.eos_token_id") : [];
        string eosKey = "model.eos_token_id";
        if (eos.Length == 0)
        {
            eos = [root.GetProperty("model").TryGetProperty("pad_token_id", out var pad) ? reader.TokenId(pad, "model.pad_token_id") : 0];
            eosKey = "model.pad_token_id (the stop token where model.eos_token_id gives none)";
        }
        return new GenAiConfig(path, modelPath,
            reader.OptionalString(inputs, "model.decoder.inputs", "input_ids") ?? "input_ids",
            reader.OptionalString(inputs, "model.decoder.inputs", "attention_mask"),
            reader.OptionalString(inputs, "model.decoder.inputs", "position_ids"),
            reader.OptionalString(outputs, "model.decoder.outputs", "logits") ?? "logits",
            reader.Template(inputs, "model.decoder.inputs", "past_key_names", "past_key_values.%d.key"),
            reader.Template(inputs, "model.decoder.inputs", "past_value_names", "past_key_values.%d.value"),
            reader.Template(outputs, "model.decoder.outputs", "present_key_names", "present.%d.key"),
            reader.Template(outputs, "model.decoder.outputs", "present_value_names", "present.%d.value"),
            reader.Template(inputs, "model.decoder.inputs", "past_conv_names", "past_conv.%d"),
            reader.Template(outputs, "model.decoder.outputs", "present_conv_names", "present_conv.%d"),
            context, vocab, eos, eosKey, ReadSearch(reader, search, context),
            reader.OptionalBool(search, "search", "past_present_share_buffer") ?? false);
    }

    /// <summary>The search section's keys the generator applies, GenAI's defaults where left out; a value it refuses names its key.</summary>
    private static SearchOptions ReadSearch(Reader reader, JsonElement section, int? contextLength)
    {
        var defaults = new SearchOptions();
        // As GenAI: a max_length of 0, or none, is the context length.
        int? maxLength = reader.OptionalInt(section, "search", "max_length") is int max and not 0 ? max : contextLength;
        int seed = reader.OptionalInt(section, "search", "random_seed") ?? -1;
        var search = new SearchOptions
        {
            MaxLength = maxLength,
            MinLength = reader.OptionalInt(section, "search", "min_length") ?? defaults.MinLength,
            DoSample = reader.OptionalBool(section, "search", "do_sample") ?? defaults.DoSample,
            TopK = reader.OptionalInt(section, "search", "top_k") ?? defaults.TopK,
            TopP = reader.OptionalFloat(section, "search", "top_p") ?? defaults.TopP,
            Temperature = reader.OptionalFloat(section, "search", "temperature") ?? defaults.Temperature,
            RepetitionPenalty = reader.OptionalFloat(section, "search", "repetition_penalty") ?? defaults.RepetitionPenalty,
            NumBeams = reader.OptionalInt(section, "search", "num_beams") ?? defaults.NumBeams,
            RandomSeed = seed == -1 ? null : seed,
        };
        foreach (var (key, _, problem) in search.Problems())
            throw new InvalidDataException($"{reader.ConfigPath}: search.{key} {problem}");
        return search;
    }

    /// <summary>
    /// A template with its last part replaced (past_key_values.%d.key → past_key_values.%d.conv_state), as GenAI derives the
    /// state names; null where the template has no '.' after its %d (past_key_%d): no state name derives from it.
    /// </summary>
    public static string? WithLastPart(string template, string part)
    {
        int dot = template.LastIndexOf('.');
        return dot > template.IndexOf("%d", StringComparison.Ordinal) ? template[..(dot + 1)] + part : null;
    }

    /// <summary>The layer index a name matches the template at, or null.</summary>
    public static int? LayerOf(string template, string name)
    {
        int at = template.IndexOf("%d", StringComparison.Ordinal);
        string prefix = template[..at], suffix = template[(at + 2)..];
        if (name.Length <= prefix.Length + suffix.Length || !name.StartsWith(prefix, StringComparison.Ordinal) || !name.EndsWith(suffix, StringComparison.Ordinal))
            return null;
        return int.TryParse(name.AsSpan(prefix.Length, name.Length - prefix.Length - suffix.Length), System.Globalization.NumberStyles.None,
            System.Globalization.CultureInfo.InvariantCulture, out int layer) ? layer : null;
    }

    public static string Name(string template, int layer) => template.Replace("%d", layer.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);

    /// <summary>Reads keys of the config, naming the file and the key in every refusal.</summary>
    private sealed class Reader(string path)
    {
        public string ConfigPath => path;

        public JsonElement Object(JsonElement parent, string key) => Object(parent, "", key);

        public JsonElement Object(JsonElement parent, string where, string key)
        {
            var value = Property(parent, where, key);
            return value.ValueKind == JsonValueKind.Object ? value
                : throw new InvalidDataException($"{path}: {Key(where, key)} must be an object, got {value.ValueKind}");
        }

        public string String(JsonElement parent, string where, string key) =>
            OptionalString(parent, where, key) ?? throw new InvalidDataException($"{path}: {Key(where, key)} is missing");

        public string? OptionalString(JsonElement parent, string where, string key)
        {
            if (parent.ValueKind != JsonValueKind.Object || !parent.TryGetProperty(key, out var value)) return null;
            return value.ValueKind == JsonValueKind.String && value.GetString() is { Length: > 0 } text ? text
                : throw new InvalidDataException($"{path}: {Key(where, key)} must be a non-empty string, got {(value.ValueKind == JsonValueKind.String ? "an empty one" : value.ValueKind)}");
        }

        /// <summary>An object the config may leave out: default (no keys) when it does.</summary>
        public JsonElement OptionalObject(JsonElement parent, string where, string key) =>
            parent.TryGetProperty(key, out _) ? Object(parent, where, key) : default;

        /// <summary>A name template with one %d for the layer, or <paramref name="fallback"/> when the key is left out.</summary>
        public string Template(JsonElement parent, string where, string key, string fallback)
        {
            string template = OptionalString(parent, where, key) ?? fallback;
            int at = template.IndexOf("%d", StringComparison.Ordinal);
            if (at < 0 || template.IndexOf("%d", at + 2, StringComparison.Ordinal) >= 0)
                throw new InvalidDataException($"{path}: {Key(where, key)} must hold one %d (e.g. {fallback}), got '{template}'");
            return template;
        }

        public int? OptionalInt(JsonElement parent, string where, string key)
        {
            if (parent.ValueKind != JsonValueKind.Object || !parent.TryGetProperty(key, out var value)) return null;
            return value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) ? n
                : throw new InvalidDataException($"{path}: {Key(where, key)} must be an integer, got {Shown(value)}");
        }

        public float? OptionalFloat(JsonElement parent, string where, string key)
        {
            if (parent.ValueKind != JsonValueKind.Object || !parent.TryGetProperty(key, out var value)) return null;
            return value.ValueKind == JsonValueKind.Number && value.TryGetSingle(out float x) && float.IsFinite(x) ? x
                : throw new InvalidDataException($"{path}: {Key(where, key)} must be a number, got {Shown(value)}");
        }

        public bool? OptionalBool(JsonElement parent, string where, string key)
        {
            if (parent.ValueKind != JsonValueKind.Object || !parent.TryGetProperty(key, out var value)) return null;
            return value.ValueKind is JsonValueKind.True or JsonValueKind.False ? value.GetBoolean()
                : throw new InvalidDataException($"{path}: {Key(where, key)} must be true or false, got {Shown(value)}");
        }

        public int PositiveInt(JsonElement value, string key) =>
            value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int n) && n > 0 ? n
                : throw new InvalidDataException($"{path}: {key} must be a positive integer, got {Shown(value)}");

        /// <summary>One token id (a non-negative integer), as GenAI reads pad_token_id.</summary>
        public long TokenId(JsonElement value, string key) =>
            value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out long id) && id >= 0 ? id
                : throw new InvalidDataException($"{path}: {key} must be a token id (a non-negative integer), got {Shown(value)}");

        /// <summary>A token id or a list of them, as GenAI reads eos_token_id.</summary>
        public long[] TokenIds(JsonElement value, string key)
        {
            static bool IsId(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt64(out long id) && id >= 0;
            if (IsId(value)) return [value.GetInt64()];
            if (value.ValueKind == JsonValueKind.Array && value.EnumerateArray().All(IsId)) return [.. value.EnumerateArray().Select(e => e.GetInt64())];
            throw new InvalidDataException($"{path}: {key} must be a token id or a list of token ids (non-negative integers), got {Shown(value)}");
        }

        /// <summary>A value as the config writes it (null as null, a string in its quotes), cut after 80 characters.</summary>
        private static string Shown(JsonElement value)
        {
            string text = value.GetRawText();
            return text.Length <= 80 ? text : text[..80] + "...";
        }

        private JsonElement Property(JsonElement parent, string where, string key) =>
            parent.TryGetProperty(key, out var value) ? value : throw new InvalidDataException($"{path}: {Key(where, key)} is missing");

        private static string Key(string where, string key) => where.Length == 0 ? key : $"{where}.{key}";
    }
}

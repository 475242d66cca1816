using System.Globalization;

namespace Engine.Cli;

/// <summary>A wrong command line: printed as one line with a pointer to the usage, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// Options of one command: <c>--name value</c> pairs and <c>--flag</c>s (a flag is an option with no value
/// following it). Options the command does not declare are refused before it runs.
/// </summary>
public sealed class CommandLine
{
    private readonly Dictionary<string, List<string?>> _options = new(StringComparer.Ordinal);
    public CommandLine(IReadOnlyList<string> tokens, IReadOnlyCollection<string> known)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            string token = tokens[i];
            if (!token.StartsWith("--", StringComparison.Ordinal) || token.Length == 2)
                throw new UsageException($"unexpected argument '{token}' (options are --name value)");
            string name = token[2..];
            string? value = null;
            int eq = name.IndexOf('=');
            if (eq > 0)
            {
                value = name[(eq + 1)..];
                name = name[..eq];
            }
            else if (i + 1 < tokens.Count && !tokens[i + 1].StartsWith("--", StringComparison.Ordinal))
            {
                value = tokens[++i];
            }
            if (!known.Contains(name)) throw new UsageException($"unknown option --{name}");
            if (!_options.TryGetValue(name, out var list)) _options[name] = list = [];
            list.Add(value);
        }
    }

    public bool Has(string name) => _options.ContainsKey(name);

    public bool Flag(string name)
    {
        if (!_options.TryGetValue(name, out var values)) return false;
        if (values.Any(v => v is not null)) throw new UsageException($"--{name} takes no value");
        return true;
    }

    public string? Value(string name)
    {
        if (!_options.TryGetValue(name, out var values)) return null;
        if (values.Count > 1) throw new UsageException($"--{name} given {values.Count} times");
        return values[0] ?? throw new UsageException($"--{name} needs a value");
    }

    public IReadOnlyList<string> Values(string name)
    {
        if (!_options.TryGetValue(name, out var values)) return [];
        return values.Select(v => v ?? throw new UsageException($"--{name} needs a value")).ToList();
    }

    public string Require(string name) => Value(name) ?? throw new UsageException($"--{name} is required");

    public int Int(string name, int fallback, int min = int.MinValue)
    {
        string? text = Value(name);
        if (text is null) return fallback;
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out int value))
            throw new UsageException($"--{name} must be an integer, got '{text}'");
        if (value < min) throw new UsageException($"--{name} must be >= {min}, got {value}");
        return value;
    }

    public float? Float(string name)
    {
        string? text = Value(name);
        if (text is null) return null;
        if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float value) || !float.IsFinite(value))
            throw new UsageException($"--{name} must be a finite number, got '{text}'");
        return value;
    }

    public T Choice<T>(string name, T fallback) where T : struct, Enum
    {
        string? text = Value(name);
        if (text is null) return fallback;
        foreach (var v in Enum.GetValues<T>())
            if (string.Equals(Kebab(v.ToString()), text, StringComparison.OrdinalIgnoreCase)) return v;
        throw new UsageException($"--{name} must be one of {string.Join("|", Enum.GetValues<T>().Select(v => Kebab(v.ToString())))}, got '{text}'");
    }

    /// <summary>PerKey → per-key: how enum values are spelled on the command line.</summary>
    public static string Kebab(string name) =>
        string.Concat(name.Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));
}

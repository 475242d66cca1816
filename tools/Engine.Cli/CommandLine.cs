using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Numerics;

namespace Engine.Cli;

/// <summary>
/// A wrong command line found by a command (options that do not go together): one line, exit code 2, pointing to the help
/// of <see cref="Command"/> (by default the command that was run).
/// </summary>
public sealed class UsageException(string message, Command? command = null) : Exception(message)
{
    public Command? Command { get; } = command;
}

/// <summary>
/// One `engine` command: its options are declared in its constructor, <see cref="Run"/> reads them from the parse result.
/// The help shows the summary, the options and then the notes (shapes, formulas, what the command does in detail).
/// </summary>
internal abstract class EngineCommand : Command
{
    protected EngineCommand(string name, string summary, string notes = "") : base(name, summary)
    {
        Notes = notes;
        SetAction((result, cancellation) => Task.FromResult(Run(result, CliContext.Of(result, cancellation))));
    }

    public string Notes { get; }

    protected abstract int Run(ParseResult args, CliContext context);
}

/// <summary>
/// Typed options whose values are checked while the command line is parsed, each refusal a one-line message naming the
/// option (exit code 2); enum values are spelled in kebab case (PerKey → per-key) and offered to tab completion.
/// </summary>
internal static class Opt
{
    /// <summary>--json: the command's report as one JSON document on stdout.</summary>
    public static Option<bool> Json() => Flag("--json", "print the report as one JSON document on stdout");

    public static Option<bool> Flag(string name, string description) => new(name) { Description = description };

    /// <summary>Whether the command line gives the option (not its default).</summary>
    public static bool Given(ParseResult args, Option option) => args.GetResult(option) is { Implicit: false };

    /// <summary>A chunk (or block) size given with --mode recurrent, which runs token by token: refused, not ignored.</summary>
    public static void RequireChunked(ParseResult args, Option<AttentionMode> mode, Option<int> chunk)
    {
        if (args.GetValue(mode) == AttentionMode.Recurrent && Given(args, chunk))
            throw new UsageException($"{chunk.Name} applies to --mode chunked: the recurrent form runs token by token");
    }

    /// <summary>
    /// A path (a file or a folder); null when not given unless <paramref name="required"/>. An empty one is refused while
    /// parsing: .NET's own refusal ("The value cannot be an empty string.") names neither the option nor the path.
    /// </summary>
    public static Option<string> Text(string name, string description, string? helpName = null, bool required = false)
    {
        var option = new Option<string>(name) { Description = description, HelpName = helpName, Required = required };
        option.Validators.Add(r => RefuseEmptyPath(r, name));
        return option;
    }

    /// <summary>A path argument (a model file, a folder), refused while parsing where it is empty, as <see cref="Text"/> is.</summary>
    public static Argument<string> PathArgument(string name, string helpName, string description)
    {
        var argument = new Argument<string>(name) { HelpName = helpName, Description = description };
        argument.Validators.Add(r => RefuseEmptyPath(r, helpName));
        return argument;
    }

    private static void RefuseEmptyPath(SymbolResult r, string name)
    {
        if (r.Tokens.Any(t => t.Value.Length == 0)) r.AddError($"{name} is an empty path: give a file or folder name");
    }

    /// <summary>A text value that may be given several times (--input a=x.npy --input b=y.npy).</summary>
    public static Option<string[]> Repeated(string name, string description, string helpName) =>
        new(name) { Description = description, HelpName = helpName, Arity = ArgumentArity.OneOrMore, DefaultValueFactory = _ => [] };

    public static Option<int> Int(string name, int fallback, string description, int min = int.MinValue, int max = int.MaxValue) =>
        new(name) { Description = description, DefaultValueFactory = _ => fallback, CustomParser = r => ParseInt(r, min, max) };

    /// <summary>
    /// The sequence lengths a bench times: one or a comma-separated list, each >= 1 (a call over no token times nothing,
    /// and its tokens/s would be 0).
    /// </summary>
    public static Option<int[]> TimedLengths(string name, int fallback, string description) => new(name)
    {
        Description = description, HelpName = "T[,T...]", Arity = ArgumentArity.ExactlyOne, DefaultValueFactory = _ => [fallback],
        CustomParser = r =>
        {
            string text = r.Tokens[0].Value;
            var parts = text.Split(',');
            var lengths = new int[parts.Length];
            for (int i = 0; i < parts.Length; i++)
            {
                if (TryParseInteger(parts[i], out lengths[i]) && lengths[i] >= 1) continue;
                if (System.Numerics.BigInteger.TryParse(parts[i], NumberStyles.Integer, CultureInfo.InvariantCulture, out var large) && large > int.MaxValue)
                    r.AddError($"{NameOf(r)} must be <= {int.MaxValue}, got {parts[i].Trim()}");
                else
                    r.AddError($"{NameOf(r)} must be an integer >= 1 or a comma-separated list of them (T = 0 times nothing), got '{text}'");
                return [];
            }
            return lengths;
        },
    };

    /// <summary>An integer the command cannot run without: the help marks it (REQUIRED), and a command line without it is refused.</summary>
    public static Option<int> RequiredInt(string name, string description, int min = int.MinValue) =>
        new(name) { Description = description, Required = true, CustomParser = r => ParseInt(r, min, int.MaxValue) };

    /// <summary>An integer that has no default (null when not given).</summary>
    public static Option<int?> OptionalInt(string name, string description, int min = int.MinValue, int max = int.MaxValue) =>
        new(name) { Description = description, CustomParser = r => ParseInt(r, min, max) };

    /// <summary>An integer that must be one of <paramref name="values"/> (a chunk size, say): another is refused while parsing.</summary>
    public static Option<int> OneOf(string name, int fallback, IReadOnlyList<int> values, string description) =>
        new(name) { Description = description, HelpName = string.Join("|", values), DefaultValueFactory = _ => fallback, CustomParser = r => ParseOneOf(r, values) };

    /// <summary>One of <paramref name="values"/> with no default (null when not given).</summary>
    public static Option<int?> OptionalOneOf(string name, IReadOnlyList<int> values, string description) =>
        new(name) { Description = description, HelpName = string.Join("|", values), CustomParser = r => ParseOneOf(r, values) };

    public static Option<float?> Float(string name, string description) =>
        new(name) { Description = description, CustomParser = r => (float?)ParseFinite<float>(r, float.Parse) };

    /// <summary>A float64 value with no default (null when not given).</summary>
    public static Option<double?> OptionalDouble(string name, string description) =>
        new(name) { Description = description, CustomParser = r => (double?)ParseFinite<double>(r, double.Parse) };

    /// <summary>A float64 value (a range used in float64, where 1e-3 is not a float).</summary>
    public static Option<double> Double(string name, double fallback, string description) =>
        new(name) { Description = description, DefaultValueFactory = _ => fallback, CustomParser = r => ParseFinite<double>(r, double.Parse) };

    /// <summary>
    /// The most --threads takes: each thread past the cores only adds its start and its scratch, and a count far past
    /// them (a typo) would spend minutes and gigabytes starting threads.
    /// </summary>
    public const int MaxThreads = Engine.Onnx.KernelHost.MaxIntraOpThreads;

    /// <summary>
    /// --threads: CPU threads; null when not given, which the device and the kernel host take as the machine's cores. No
    /// default value, so the help states the default once, in words, not also as this machine's count.
    /// </summary>
    public static Option<int?> Threads() =>
        OptionalInt("--threads", $"CPU threads, 1..{MaxThreads} (default: the machine's cores)", min: 1, max: MaxThreads);

    /// <summary>One of an enum's values (those in <paramref name="only"/> where the command takes no others), spelled in kebab case.</summary>
    public static Option<T> Choice<T>(string name, T fallback, string description, params T[] only) where T : struct, Enum =>
        WithChoices(new Option<T>(name) { Description = description, DefaultValueFactory = _ => fallback, CustomParser = r => ParseChoice(r, Values(only)) }, Names(Values(only)));

    /// <summary>One of an enum's values (those in <paramref name="only"/> where given) with no default (null when not given).</summary>
    public static Option<T?> OptionalChoice<T>(string name, string description, params T[] only) where T : struct, Enum =>
        WithChoices(new Option<T?>(name) { Description = description, CustomParser = r => ParseChoice(r, Values(only)) }, Names(Values(only)));

    /// <summary>One of some words (a word given that is not among them is refused while parsing); null when not given and no fallback.</summary>
    public static Option<string> Choice(string name, string? fallback, IReadOnlyList<string> words, string description)
    {
        var option = new Option<string>(name) { Description = description, CustomParser = r => ParseWord(r, words) };
        if (fallback is not null) option.DefaultValueFactory = _ => fallback;
        return WithChoices(option, words);
    }

    /// <summary>PerKey → per-key: how enum values are spelled on the command line.</summary>
    public static string Kebab(string name) =>
        string.Concat(name.Select((c, i) => char.IsUpper(c) && i > 0 ? "-" + char.ToLowerInvariant(c) : char.ToLowerInvariant(c).ToString()));

    public static string Kebab<T>(T value) where T : struct, Enum => Kebab(value.ToString());

    private static T[] Values<T>(T[] only) where T : struct, Enum => only.Length > 0 ? only : Enum.GetValues<T>();

    private static string[] Names<T>(T[] values) where T : struct, Enum => values.Select(v => Kebab(v)).ToArray();

    private static Option<T> WithChoices<T>(Option<T> option, IReadOnlyList<string> words)
    {
        option.HelpName = string.Join("|", words);
        // In place of the enum's own names, which tab completion would offer as they are spelled in C#.
        option.CompletionSources.Clear();
        option.CompletionSources.Add(words.ToArray());
        return option;
    }

    private static string NameOf(ArgumentResult r) => ((OptionResult)r.Parent!).Option.Name;

    /// <summary>The one way an integer option is read: an optional sign and digits, whitespace around them allowed.</summary>
    private static bool TryParseInteger(string text, out int value) => int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out value);

    private static int ParseInt(ArgumentResult r, int min, int max)
    {
        string text = r.Tokens[0].Value;
        if (!TryParseInteger(text, out int value))
            r.AddError(System.Numerics.BigInteger.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var large)
                ? $"{NameOf(r)} must be {(large < min ? $">= {min}" : $"<= {max}")}, got {text.Trim()}"
                : $"{NameOf(r)} must be an integer, got '{text}'");
        else if (value < min)
            r.AddError($"{NameOf(r)} must be >= {min}, got {value}");
        else if (value > max)
            r.AddError($"{NameOf(r)} must be <= {max}, got {value}");
        return value;
    }

    private static int ParseOneOf(ArgumentResult r, IReadOnlyList<int> values)
    {
        string text = r.Tokens[0].Value;
        if (!TryParseInteger(text, out int value) || !values.Contains(value))
            r.AddError($"{NameOf(r)} must be one of {string.Join(", ", values)}, got '{text}'");
        return value;
    }

    private static T ParseFinite<T>(ArgumentResult r, Func<string, NumberStyles, IFormatProvider, T> parse) where T : struct, IFloatingPoint<T>
    {
        string text = r.Tokens[0].Value;
        try
        {
            T value = parse(text, NumberStyles.Float, CultureInfo.InvariantCulture);
            if (T.IsFinite(value)) return value;
        }
        catch (FormatException) { }
        r.AddError($"{NameOf(r)} must be a finite number, got '{text}'");
        return T.Zero;
    }

    private static T ParseChoice<T>(ArgumentResult r, T[] values) where T : struct, Enum
    {
        string text = r.Tokens[0].Value;
        foreach (var v in values)
            if (string.Equals(Kebab(v), text, StringComparison.OrdinalIgnoreCase)) return v;
        r.AddError($"{NameOf(r)} must be one of {string.Join("|", Names(values))}, got '{text}'");
        return default;
    }

    private static string ParseWord(ArgumentResult r, IReadOnlyList<string> words)
    {
        string text = r.Tokens[0].Value;
        if (!words.Contains(text)) r.AddError($"{NameOf(r)} must be one of {string.Join("|", words)}, got '{text}'");
        return text;
    }
}

/// <summary>The folder a command writes into, made if missing.</summary>
internal static class OutputFolder
{
    /// <summary>
    /// Makes <paramref name="path"/> (given as <paramref name="option"/>) and returns its full path; a file there is a usage
    /// error, a folder that cannot be made is named with the option (.NET's message names neither).
    /// </summary>
    public static string Create(string path, string option)
    {
        if (File.Exists(path)) throw new UsageException($"{option} {path}: is a file; give a folder (made if missing)");
        try
        {
            return Directory.CreateDirectory(path).FullName;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{option} {path}: the folder cannot be made ({e.Message})", e);
        }
    }

    /// <summary>
    /// Refuses, before anything is written, a folder where a file of <paramref name="files"/> goes and a file where a
    /// folder of <paramref name="folders"/> goes (.NET says "access denied" or "already exists").
    /// </summary>
    public static void RequireRoom(IEnumerable<string> files, IEnumerable<string> folders)
    {
        foreach (var file in files)
            if (Directory.Exists(file)) throw new IOException($"{file}: is a folder, not a file to write");
        foreach (var folder in folders)
            if (File.Exists(folder)) throw new IOException($"{folder}: is a file, where a folder is written");
    }
}

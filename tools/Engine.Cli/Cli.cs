using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using System.Reflection;
using Engine.Cli.Commands;
using Engine.Onnx;

namespace Engine.Cli;

/// <summary>
/// What a command writes to: its report on <see cref="Out"/>, errors and progress on <see cref="Error"/>; and
/// <see cref="Cancellation"/>, cancelled by Ctrl+C or SIGTERM (<see cref="Interruption"/>).
/// </summary>
public sealed class CliContext(TextWriter output, TextWriter error, CancellationToken cancellation = default)
{
    public TextWriter Out { get; } = output;
    public TextWriter Error { get; } = error;
    public CancellationToken Cancellation { get; } = cancellation;

    /// <summary>Progress bars on stderr where stderr is a terminal; nothing where it is redirected. Its steps stop a cancelled command.</summary>
    public CliProgress Progress { get; } = CliProgress.For(error, cancellation);

    internal static CliContext Of(ParseResult result, CancellationToken cancellation) =>
        new(result.InvocationConfiguration.Output, result.InvocationConfiguration.Error, cancellation);
}

/// <summary>
/// The `engine` command: the command tree, help, --version, and the error contract: a bad command line is one line on
/// stderr and exit code 2, bad input (files, shapes, values) one line and exit code 1, a command cancelled by Ctrl+C or
/// SIGTERM one line and exit code 130 or 143.
/// </summary>
public static class Cli
{
    /// <param name="interruption">the signals that cancel the command; none where not given (a run inside another program).</param>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, Interruption? interruption = null)
    {
        interruption ??= new Interruption();
        var result = Root().Parse(args, Parsing());
        if (result.Action is ParseErrorAction)
        {
            stderr.WriteLine(ErrorLine(result));
            return 2;
        }
        int code = Invoke(result, stdout, stderr, interruption);
        // Said after the command has unwound (its bars gone, the file it was writing deleted), also where it ended before it
        // reached a step that stops it.
        if (interruption.ExitCode is not int interrupted) return code;
        interruption.Report(stderr);
        return interrupted;
    }

    private static int Invoke(ParseResult result, TextWriter stdout, TextWriter stderr, Interruption interruption)
    {
        try
        {
            // ProcessTerminationTimeout null: the signals are the interruption's, not the parser's.
            return result.InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null },
                interruption.Token).GetAwaiter().GetResult();
        }
        // The parser hands the command a token linked to the interruption's: the interruption says whether it was the cause.
        catch (OperationCanceledException) when (interruption.ExitCode is int interrupted)
        {
            return interrupted;
        }
        catch (UsageException e)
        {
            stderr.WriteLine(Line(e.Message, e.Command ?? result.CommandResult.Command));
            return 2;
        }
        // Bad input, a model ONNX Runtime refuses to load or run (random inputs it cannot take included), a node the engine
        // refuses: one line and exit code 1.
        catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or NotSupportedException
                                     or InvalidOperationException or UnauthorizedAccessException or OverflowException
                                     or ModelRunException or ModelNodeException or OrtCallException)
        {
            stderr.WriteLine($"engine: error: {OneLine(e)}");
            return 1;
        }
        // An allocation the machine cannot hold: one line too. InsufficientMemoryException names what did not fit; .NET's
        // own messages ("Array dimensions exceeded supported range.") do not.
        catch (OutOfMemoryException e)
        {
            stderr.WriteLine(e is InsufficientMemoryException ? $"engine: error: out of memory: {OneLine(e)}"
                : $"engine: error: out of memory: what the command was asked to hold does not fit ({OneLine(e)})");
            return 1;
        }
    }

    /// <summary>
    /// How the command line is parsed: a response file (@FILE) that cannot be read is a parse error naming it. The parser's
    /// own reader reports one it fails to read (IOException) so, but lets a folder or a file it may not read
    /// (UnauthorizedAccessException) escape as a crash, and follows a file that names itself until the stack overflows:
    /// response files do not nest here.
    /// </summary>
    private static ParserConfiguration Parsing()
    {
        var configuration = new ParserConfiguration();
        var read = configuration.ResponseFileTokenReplacer!;
        configuration.ResponseFileTokenReplacer = (string token, out IReadOnlyList<string>? tokens, out string? error) =>
        {
            try
            {
                if (File.Exists(token) && NestedResponseFile(token) is { } nested)
                {
                    tokens = null;
                    error = $"response file '{token}' names another response file ('{nested}'): response files do not nest";
                    return false;
                }
                return read(token, out tokens, out error);
            }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException)
            {
                tokens = null;
                error = Directory.Exists(token) ? $"response file '{token}' is a folder, not a file" : $"response file '{token}' cannot be read ({e.Message})";
                return false;
            }
        };
        return configuration;
    }

    /// <summary>The first word of a response file's lines (comments, starting with #, aside) that names a response file.</summary>
    private static string? NestedResponseFile(string path) => File.ReadLines(path)
        .Select(line => line.Trim())
        .Where(line => !line.StartsWith('#'))
        .SelectMany(line => line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
        .FirstOrDefault(word => word.StartsWith('@') || word.StartsWith("\"@", StringComparison.Ordinal));

    /// <summary>
    /// The exception's message on one line, without what .NET appends to an ArgumentException's: " (Parameter 'name')",
    /// and for an ArgumentOutOfRangeException a line "Actual value was X." after it. The engine's messages name the
    /// tensor or option and the value themselves.
    /// </summary>
    internal static string OneLine(Exception e)
    {
        string message = e.Message;
        if (e is ArgumentOutOfRangeException { ActualValue: not null } && message.LastIndexOf(Environment.NewLine, StringComparison.Ordinal) is int line and >= 0)
            message = message[..line];
        if (e is ArgumentException { ParamName: { } name })
            message = message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal);
        return message.ReplaceLineEndings(" ").Trim();
    }

    /// <summary>Every command, each with its options; help on every one (-h, --help), --version, [suggest] completions, @response files.</summary>
    public static RootCommand Root()
    {
        var root = new RootCommand("engine: linear-time sequence kernels (GLA, DeltaNet, Lightning, LSSL) on CPU and GPU")
        {
            new DemoCommand(),
            new DevicesCommand(),
            new PtxCommand(),
            new LsslInitCommand(),
            new InputsCommand(),
            new RunModelCommand(),
            new InspectModelCommand(),
            new BenchModelCommand(),
            new SamplesCommand(),
            new GenerateCommand(),
            new Command("op", "run one op on .npy files: gla, lightning, delta, gated-delta, lssl")
            {
                new GlaOpCommand(), new LightningOpCommand(), new DeltaRuleOpCommand(gated: false), new DeltaRuleOpCommand(gated: true), new LsslOpCommand(),
            },
            new Command("bench", "time an op (median of repeats) and compare with the machine's FMA peak: peak, gla, lightning, delta, gated-delta, lssl")
            {
                new PeakBenchCommand(), new GlaBenchCommand(), new LightningBenchCommand(), new DeltaRuleBenchCommand(gated: false),
                new DeltaRuleBenchCommand(gated: true), new LsslBenchCommand(),
            },
        };
        root.HelpName = "engine";
        root.Options.OfType<VersionOption>().Single().Action = new VersionAction();
        var helpOption = root.Options.OfType<HelpOption>().Single();
        var help = new HelpWithNotes(helpOption.Action!);
        helpOption.Action = help;
        root.Add(new HelpCommand(root));
        root.SetAction(help.Invoke);
        return root;
    }

    /// <summary>The package version and the commit it was built from (0.1.0+a1b2c3…).</summary>
    private static string Version =>
        typeof(Cli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;

    private sealed class VersionAction : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine(Version);
            return 0;
        }
    }

    /// <summary>The default help, then the notes of an engine command (shapes, formulas, what the command does in detail).</summary>
    private sealed class HelpWithNotes(CommandLineAction help) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            var config = parseResult.InvocationConfiguration;
            var w = config.Output;
            var text = new StringWriter();
            config.Output = text;
            int code;
            try { code = ((SynchronousCommandLineAction)help).Invoke(parseResult); }
            finally { config.Output = w; }
            w.Write(SpelledDefaults(text.ToString(), parseResult.CommandResult.Command));
            if (parseResult.CommandResult.Command is EngineCommand { Notes.Length: > 0 } command)
            {
                w.WriteLine("Notes:");
                foreach (var line in command.Notes.TrimEnd().Split('\n')) w.WriteLine("  " + line.TrimEnd());
                w.WriteLine();
            }
            return code;
        }
    }

    /// <summary>
    /// The help shows a default as the value's ToString(): an enum default as C# spells it (PerKey), which the
    /// option refuses when typed back; it is shown as the option is spelled (per-key).
    /// </summary>
    private static string SpelledDefaults(string help, Command command)
    {
        foreach (var option in command.Options)
        {
            var type = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
            if (!type.IsEnum || !option.HasDefaultValue || option.GetDefaultValue() is not { } value) continue;
            help = help.Replace($"[default: {value}]", $"[default: {Opt.Kebab(value.ToString()!)}]");
        }
        return help;
    }

    /// <summary>engine help [command...]: the help of a command, as `engine command... --help` shows it.</summary>
    private sealed class HelpCommand : Command
    {
        public HelpCommand(RootCommand root) : base("help", "show the help of a command (engine help op gla)")
        {
            var words = new Argument<string[]>("command") { Arity = ArgumentArity.ZeroOrMore, Description = "the command and its member, e.g. op gla" };
            Add(words);
            SetAction(result =>
            {
                var target = root.Parse([.. result.GetValue(words)!, "--help"]);
                // A mistyped command is named as `engine` itself would name it.
                if (target.UnmatchedTokens.Count > 0) throw new UsageException(Message(target), target.CommandResult.Command);
                return target.Invoke(result.InvocationConfiguration);
            });
        }
    }

    /// <summary>The first parse error as one line, with a suggestion for a mistyped command or option and the help to read.</summary>
    private static string ErrorLine(ParseResult result) => Line(Message(result), result.CommandResult.Command);

    private static string Line(string message, Command command)
    {
        string path = string.Join(" ", Path(command).Skip(1).Select(c => c.Name).Append("--help"));
        return $"engine: {message} (see: engine {path})";
    }

    /// <summary>The commands from the root down to <paramref name="command"/>.</summary>
    private static IEnumerable<Command> Path(Command command)
    {
        var path = new List<Command> { command };
        while (path[0].Parents.OfType<Command>().FirstOrDefault() is { } parent) path.Insert(0, parent);
        return path;
    }

    private static string Message(ParseResult result)
    {
        var command = result.CommandResult.Command;
        if (result.UnmatchedTokens.Count > 0)
        {
            // The first token nothing took is the cause; what follows it (its value, say) was refused with it.
            string token = result.UnmatchedTokens[0];
            var optionNames = command.Options.Concat(Path(command).SelectMany(c => c.Options).Where(o => o.Recursive)).SelectMany(o => o.Aliases.Prepend(o.Name)).ToArray();
            // An option's own name left over was read as an argument: it came after "--", which ends the options.
            if (optionNames.Contains(token)) return $"unexpected argument '{token}' (after --, every word is an argument)";
            if (token.StartsWith('-')) return $"unknown option {token}" + Suggestion(token, optionNames);
            if (command.Subcommands.Count == 0) return $"unexpected argument '{token}'";
            var names = command.Subcommands.Select(c => c.Name).ToArray();
            string what = command is RootCommand ? $"unknown command '{token}'" : $"unknown {command.Name} '{token}': one of {string.Join(", ", names)}";
            return what + Suggestion(token, names);
        }
        var error = result.Errors[0];
        return error.SymbolResult switch
        {
            OptionResult { IdentifierToken: null } missing => $"{missing.Option.Name} is required",
            OptionResult given when given.Tokens.Count == 0 => $"{given.Option.Name} needs a value",
            OptionResult given when given.Tokens.Count > given.Option.Arity.MaximumNumberOfValues => $"{given.Option.Name} given {given.Tokens.Count} times",
            ArgumentResult { Tokens.Count: 0 } argument => $"give {argument.Argument.Description}",
            CommandResult { Command.Subcommands.Count: > 0 } group => $"{group.Command.Name} needs one of: {string.Join(", ", group.Command.Subcommands.Select(c => c.Name))}",
            _ => error.Message,
        };
    }

    /// <summary>"; did you mean 'demo'?" for the candidate nearest a mistyped word, if one is near enough to be meant.</summary>
    private static string Suggestion(string word, IEnumerable<string> candidates)
    {
        var best = candidates.Distinct().Select(c => (Candidate: c, Distance: EditDistance(word, c)))
            .Where(c => c.Distance <= Math.Max(1, c.Candidate.TrimStart('-').Length / 3)).OrderBy(c => c.Distance).FirstOrDefault();
        return best.Candidate is null ? "" : $"; did you mean '{best.Candidate}'?";
    }

    /// <summary>Edits (insert, delete, replace, swap two neighbours) that turn <paramref name="a"/> into <paramref name="b"/>.</summary>
    private static int EditDistance(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
            }
        return d[a.Length, b.Length];
    }
}

using System.Reflection;
using Engine.Cli.Commands;

namespace Engine.Cli;

/// <summary>What a command writes to.</summary>
public sealed record CliContext(TextWriter Out, TextWriter Error);

/// <summary>One `engine` command (or one member of a group such as `op gla`).</summary>
public interface ICommand
{
    string Name { get; }
    string Summary { get; }
    string Usage { get; }

    /// <summary>The option names (without --) the command accepts.</summary>
    IReadOnlyCollection<string> Options { get; }

    /// <summary>How many plain arguments may precede the options (e.g. a model file).</summary>
    int Positionals => 0;

    int Run(CommandLine args, CliContext context);
}

/// <summary>The `engine` command: dispatch, help and the error contract (one line on stderr, non-zero exit).</summary>
public static class Cli
{
    public static readonly IReadOnlyList<ICommand> OpCommands =
    [
        new GlaOpCommand(),
        new LightningOpCommand(),
        new DeltaRuleOpCommand(gated: false),
        new DeltaRuleOpCommand(gated: true),
        new LsslOpCommand(),
    ];

    public static readonly IReadOnlyList<ICommand> BenchCommands =
    [
        new PeakBenchCommand(),
        new GlaBenchCommand(),
        new LightningBenchCommand(),
        new DeltaRuleBenchCommand(gated: false),
        new DeltaRuleBenchCommand(gated: true),
        new LsslBenchCommand(),
    ];

    public static readonly IReadOnlyList<ICommand> TopCommands =
    [
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
    ];

    private static readonly Dictionary<string, (string summary, IReadOnlyList<ICommand> members)> Groups = new()
    {
        ["op"] = ("run one op on .npy files", OpCommands),
        ["bench"] = ("time an op (median of repeats) and compare with the machine's FMA peak", BenchCommands),
    };

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        var context = new CliContext(stdout, stderr);
        try
        {
            if (args.Length == 0 || args[0] is "help" or "--help" or "-h")
            {
                stdout.Write(Help(args.Skip(1).ToArray()));
                return 0;
            }
            if (args is ["--version"])
            {
                stdout.WriteLine(Version);
                return 0;
            }
            var (command, rest) = Find(args);
            if (rest.Contains("--help"))
            {
                stdout.WriteLine(command.Usage);
                return 0;
            }
            var line = new CommandLine(rest, command.Options, command.Positionals);
            return command.Run(line, context);
        }
        catch (UsageException e)
        {
            stderr.WriteLine($"engine: {e.Message} (see: {HelpHint(args)})");
            return 2;
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or IOException or NotSupportedException
                                     or InvalidOperationException or UnauthorizedAccessException or OverflowException)
        {
            stderr.WriteLine($"engine: error: {OneLine(e.Message)}");
            return 1;
        }
    }

    /// <summary>The help command for what the arguments name: a command, a group and its member, or the overview.</summary>
    private static string HelpHint(string[] args)
    {
        if (args.Length == 0 || args[0] == "help") return "engine help";
        if (Groups.TryGetValue(args[0], out var group))
            return args.Length > 1 && group.members.Any(m => m.Name == args[1]) ? $"engine help {args[0]} {args[1]}" : $"engine help {args[0]}";
        return TopCommands.Any(c => c.Name == args[0]) ? $"engine help {args[0]}" : "engine help";
    }

    /// <summary>The package version and the commit it was built from (0.1.0+a1b2c3…).</summary>
    private static string Version =>
        typeof(Cli).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()!.InformationalVersion;

    private static (ICommand command, string[] rest) Find(string[] args)
    {
        if (Groups.TryGetValue(args[0], out var group))
        {
            if (args.Length < 2) throw new UsageException($"{args[0]} needs one of: {string.Join(", ", group.members.Select(m => m.Name))}");
            var member = group.members.FirstOrDefault(m => m.Name == args[1])
                ?? throw new UsageException($"unknown {args[0]} '{args[1]}': one of {string.Join(", ", group.members.Select(m => m.Name))}");
            return (member, args[2..]);
        }
        var top = TopCommands.FirstOrDefault(c => c.Name == args[0])
            ?? throw new UsageException($"unknown command '{args[0]}'");
        return (top, args[1..]);
    }

    private static string Help(string[] topic)
    {
        if (topic.Length > 0)
        {
            try
            {
                var (command, _) = Find(topic);
                return command.Usage + Environment.NewLine;
            }
            catch (UsageException) when (Groups.TryGetValue(topic[0], out var group))
            {
                return string.Join(Environment.NewLine, group.members.Select(m => m.Usage)) + Environment.NewLine;
            }
        }
        var w = new StringWriter();
        w.WriteLine("engine: linear-time sequence kernels (GLA, DeltaNet, Lightning, LSSL) on CPU and GPU");
        w.WriteLine();
        w.WriteLine("commands:");
        foreach (var c in TopCommands) w.WriteLine($"  {c.Name,-22} {c.Summary}");
        foreach (var (name, (summary, members)) in Groups)
        {
            w.WriteLine($"  {name + " <" + string.Join("|", members.Select(m => m.Name)) + ">",-22} {summary}");
        }
        w.WriteLine();
        w.WriteLine("engine help <command> shows its options; errors go to stderr with a non-zero exit code.");
        w.WriteLine("engine --version prints the version and the commit it was built from.");
        return w.ToString();
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
}

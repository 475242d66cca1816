using System.CommandLine;

namespace Engine.Cli.Commands;

/// <summary>engine demo: every op on every backend, agreement with the reference, and speed.</summary>
internal sealed class DemoCommand : EngineCommand
{
    private readonly Option<bool> _quick = Opt.Flag("--quick", "shorter sequences (T = 512 instead of 2048)");
    private readonly Option<bool> _json = Opt.Json();

    public DemoCommand() : base("demo", "run each op on each backend: agreement with the float64 reference and speed")
    {
        Add(_quick);
        Add(_json);
    }

    protected override int Run(ParseResult args, CliContext context) => Demo.Run(context, args.GetValue(_quick), args.GetValue(_json));
}

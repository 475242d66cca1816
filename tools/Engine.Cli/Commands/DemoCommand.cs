namespace Engine.Cli.Commands;

/// <summary>engine demo: every op on every backend, agreement with the reference, and speed.</summary>
internal sealed class DemoCommand : ICommand
{
    public string Name => "demo";
    public string Summary => "run each op on each backend: agreement with the float64 reference and speed";
    public IReadOnlyCollection<string> Options { get; } = ["quick"];
    public string Usage => "engine demo [--quick]";

    public int Run(CommandLine args, CliContext context)
    {
        bool quick = args.Flag("quick");
        return Demo.Run(context.Out, quick);
    }
}

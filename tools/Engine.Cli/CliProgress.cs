using System.Runtime.InteropServices;
using Spectre.Console;

namespace Engine.Cli;

/// <summary>
/// Progress of a command that runs for more than a second, drawn on stderr by Spectre.Console where stderr is a
/// terminal and off elsewhere (redirected, in-process tests), so stdout carries the report (or the JSON) alone.
/// While bars are drawn, lines a command prints along the way wait until the bars are gone (<see cref="Steps.Print"/>):
/// stdout and stderr may be the same terminal. Each step added or advanced throws <see cref="OperationCanceledException"/>
/// once the command is cancelled (<see cref="Interruption"/>): the command stops there.
/// </summary>
public sealed class CliProgress
{
    private readonly IAnsiConsole? _console;
    private readonly CancellationToken _cancellation;

    internal CliProgress(IAnsiConsole? console, CancellationToken cancellation = default)
    {
        _console = console;
        _cancellation = cancellation;
    }

    /// <summary>Bars where <paramref name="error"/> is the process's own stderr and that is a terminal.</summary>
    public static CliProgress For(TextWriter error, CancellationToken cancellation) =>
        new(ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected
            ? AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error), Interactive = InteractionSupport.Yes })
            : null, cancellation);

    /// <summary>Runs <paramref name="work"/>, which adds its steps and advances them; then prints the lines it held back.</summary>
    public T Run<T>(TextWriter output, Func<Steps, T> work)
    {
        if (_console is null) return work(new Steps(null, output, _cancellation));
        var held = new StringWriter();
        // The bars hide the terminal's cursor until they end; a second Ctrl+C (SIGINT) or SIGTERM ends the process before they
        // do, and would leave the shell without a cursor: it is shown again, and the process then ends as the signal asks.
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, _ => Interrupted());
        using var terminate = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ => Interrupted());
        T result = _console.Progress().AutoClear(true).HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(context => work(new Steps(context, held, _cancellation)));
        output.Write(held.ToString());
        return result;
    }

    /// <summary>What a signal that ends the process does while bars are drawn: the cursor shown, the prompt on a line of its own.</summary>
    internal void Interrupted()
    {
        if (_console is null) return;
        _console.Cursor.Show();
        _console.WriteLine();
    }

    public void Run(TextWriter output, Action<Steps> work) => Run(output, steps => { work(steps); return 0; });

    /// <summary>The steps of one command's progress.</summary>
    public sealed class Steps(ProgressContext? context, TextWriter output, CancellationToken cancellation)
    {
        /// <summary>A bar of <paramref name="total"/> units (0: a step of unknown length, shown as running).</summary>
        public Step Add(string description, double total = 0)
        {
            cancellation.ThrowIfCancellationRequested();
            if (context is null) return new Step(null, cancellation);
            var task = context.AddTask(Markup.Escape(description), maxValue: Math.Max(total, 1));
            task.IsIndeterminate = total <= 0;
            return new Step(task, cancellation);
        }

        /// <summary>A line of the report printed along the way: now, or after the bars where they are drawn.</summary>
        public void Print(string line) => output.WriteLine(line);
    }

    /// <summary>One bar.</summary>
    public sealed class Step(ProgressTask? task, CancellationToken cancellation)
    {
        public void Advance(double units = 1)
        {
            cancellation.ThrowIfCancellationRequested();
            task?.Increment(units);
        }

        public void Describe(string description)
        {
            if (task is not null) task.Description = Markup.Escape(description);
        }

        public void Finish()
        {
            if (task is null) return;
            task.IsIndeterminate = false;
            task.Value = task.MaxValue;
            task.StopTask();
        }
    }
}

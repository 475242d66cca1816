using Engine.Cli;
using NUnit.Framework;
using Spectre.Console;

namespace Engine.Tests.Cli;

/// <summary>The progress bars on a terminal: what they leave behind when a signal ends the process under them.</summary>
[TestFixture]
public sealed class ProgressTests
{
    private const string HideCursor = "\u001b[?25l", ShowCursor = "\u001b[?25h";

    /// <summary>
    /// The bars hide the cursor until they end; Ctrl+C or SIGTERM ends the process before they do. What the signal's handler
    /// does (here called as the signal would call it, while the bars are drawn) shows the cursor again.
    /// </summary>
    [Test]
    public void ASignalUnderTheBarsShowsTheCursorAgain()
    {
        var terminal = new StringWriter();
        var progress = new CliProgress(AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(terminal), Ansi = AnsiSupport.Yes, Interactive = InteractionSupport.Yes, ColorSystem = ColorSystemSupport.Standard,
        }));
        string drawn = "";
        progress.Run(TextWriter.Null, steps =>
        {
            steps.Add("bench", 2).Advance();
            progress.Interrupted();
            drawn = terminal.ToString();
        });
        Assert.That(drawn, Does.Contain(HideCursor), "the bars hid the cursor");
        Assert.That(drawn.LastIndexOf(ShowCursor, StringComparison.Ordinal), Is.GreaterThan(drawn.LastIndexOf(HideCursor, StringComparison.Ordinal)),
            "shown again after it was last hidden, before the bars end");
    }
}

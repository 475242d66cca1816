using System.Runtime.InteropServices;
using Engine.Cli;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>
/// Ctrl+C and SIGTERM, as the signal's handler sees them (<see cref="Interruption.Interrupt"/>, here called without a
/// signal): every command stops at its next step, says so in one line on stderr and exits 130 or 143.
/// </summary>
[TestFixture]
public sealed class InterruptionTests : CliFixture
{
    private static (int code, string stdout, string stderr) Interrupted(Interruption interruption, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = global::Engine.Cli.Cli.Run(args, stdout, stderr, interruption);
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static Interruption After(PosixSignal signal)
    {
        var interruption = new Interruption();
        interruption.Interrupt(signal);
        return interruption;
    }

    /// <summary>A bench (stopped at its first progress step) and `ptx` (between files): no report, no file, the signal's code.</summary>
    [TestCase(PosixSignal.SIGINT, 130)]
    [TestCase(PosixSignal.SIGTERM, 143)]
    public void ACancelledCommandSaysSoWithTheSignalsExitCode(PosixSignal signal, int code)
    {
        foreach (var args in new[]
                 {
                     new[] { "bench", "gla", "--T", "16", "--H", "1", "--K", "16", "--V", "16", "--best-of", "1", "--json" },
                     ["bench-model", "--sample", "linear", "--T", "16", "--repeats", "1", "--threads", "1", "--json"],
                     ["ptx", PathOf("ptx")],
                 })
        {
            AssertOneLineError(Interrupted(After(signal), args), code, $"engine: cancelled by {signal}");
            Assert.That(System.IO.Directory.GetFiles(Directory, "*", SearchOption.AllDirectories), Is.Empty, string.Join(" ", args));
        }
    }

    /// <summary>
    /// A signal while a generation runs (here as its first token is printed): the generation stops at its next token, and
    /// the line is the same as every command's (it was generate's own "generation cancelled", exit code 1).
    /// </summary>
    [Test]
    public void ASignalDuringAGenerationStopsIt()
    {
        var (samples, _, samplesError) = Engine("samples", Directory, "--vocab", "64", "--hidden", "32", "--context", "256");
        Assert.That(samples, Is.Zero, samplesError);
        var interruption = new Interruption();
        var stdout = new InterruptingWriter(interruption, "first token after");
        var stderr = new StringWriter();
        int code = global::Engine.Cli.Cli.Run(["generate", PathOf("hybrid_decoder"), "--prompt-tokens", "4", "--new-tokens", "8", "--repeats", "2", "--threads", "1"],
            stdout, stderr, interruption);
        Assert.That(code, Is.EqualTo(130), stderr.ToString());
        Assert.That(stderr.ToString(), Is.EqualTo("engine: cancelled by SIGINT" + Environment.NewLine));
        Assert.That(stdout.ToString(), Does.Contain("first token after").And.Not.Contain("tokens, decode"), "stopped before the first generation ended");
    }

    /// <summary>A command that ends before it reaches a step that stops it still reports the signal, once.</summary>
    [Test]
    public void ACommandThatEndsWhileCancelledStillSaysSo()
    {
        var (code, stdout, stderr) = Interrupted(After(PosixSignal.SIGTERM), "devices");
        Assert.That(code, Is.EqualTo(143));
        Assert.That(stdout, Does.Contain("cpu"));
        Assert.That(stderr, Is.EqualTo("engine: cancelled by SIGTERM" + Environment.NewLine));
    }

    /// <summary>A second signal is not a second cancellation: it ends the process, with the first signal's line said once.</summary>
    [Test]
    public void OnlyTheFirstSignalCancels()
    {
        var interruption = new Interruption();
        Assert.That(interruption.ExitCode, Is.Null);
        Assert.That(interruption.Interrupt(PosixSignal.SIGINT), Is.True);
        Assert.That(interruption.Interrupt(PosixSignal.SIGTERM), Is.False);
        Assert.That(interruption.ExitCode, Is.EqualTo(130));
        Assert.That(interruption.Token.IsCancellationRequested, Is.True);
    }

    /// <summary>Writes through, and interrupts as soon as a line holding <paramref name="text"/> is written.</summary>
    private sealed class InterruptingWriter(Interruption interruption, string text) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value?.Contains(text, StringComparison.Ordinal) == true) interruption.Interrupt(PosixSignal.SIGINT);
        }
    }
}

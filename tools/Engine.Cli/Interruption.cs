using System.Runtime.InteropServices;

namespace Engine.Cli;

/// <summary>
/// Ctrl+C (SIGINT) and SIGTERM while a command runs. The first cancels <see cref="Token"/>: the command stops at its next
/// progress step (a generation at its next token) and unwinds as an error does, so a file being written is deleted and
/// the file it would replace kept; `engine` then says so in one line on stderr and exits 130 or 143, the codes a shell
/// gives a process the signal ends. A second signal ends the process at once, with the same line.
/// </summary>
public sealed class Interruption : IDisposable
{
    private readonly CancellationTokenSource _cancel = new();
    private readonly Lock _lock = new();
    private PosixSignalRegistration[] _registrations = [];
    private PosixSignal? _signal;
    private bool _reported;

    /// <summary>Cancelled by <see cref="Interrupt"/> alone: the signals stay the process's (a run inside another program).</summary>
    public Interruption() { }

    /// <summary>Cancelled by SIGINT and SIGTERM until disposed.</summary>
    public static Interruption OnSignals()
    {
        var interruption = new Interruption();
        interruption._registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, interruption.Handle),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, interruption.Handle)];
        return interruption;
    }

    /// <summary>Cancelled by the first signal.</summary>
    public CancellationToken Token => _cancel.Token;

    /// <summary>128 + the signal's number: 130 after SIGINT, 143 after SIGTERM; null while no signal came.</summary>
    public int? ExitCode
    {
        get
        {
            lock (_lock) return _signal switch { PosixSignal.SIGINT => 130, PosixSignal.SIGTERM => 143, _ => null };
        }
    }

    private void Handle(PosixSignalContext context)
    {
        // A second signal: the process ends as the signal asks, now; the bars' own handler shows the cursor again.
        if (!Interrupt(context.Signal))
        {
            Report(Console.Error);
            return;
        }
        context.Cancel = true;
    }

    /// <summary>What SIGINT or SIGTERM does: cancels the command; false where an earlier signal already did.</summary>
    public bool Interrupt(PosixSignal signal)
    {
        lock (_lock)
        {
            if (_signal is not null) return false;
            _signal = signal;
        }
        _cancel.Cancel();
        return true;
    }

    /// <summary>The line saying which signal cancelled the command, written once.</summary>
    internal void Report(TextWriter error)
    {
        PosixSignal signal;
        lock (_lock)
        {
            if (_reported || _signal is null) return;
            _reported = true;
            signal = _signal.Value;
        }
        error.WriteLine($"engine: cancelled by {signal}");
    }

    /// <summary>Gives the signals back. The token's source is not disposed: a handler already running may still cancel it.</summary>
    public void Dispose()
    {
        foreach (var registration in _registrations) registration.Dispose();
    }
}

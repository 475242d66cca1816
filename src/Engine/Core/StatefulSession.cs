using System.Numerics.Tensors;

namespace Engine;

/// <summary>
/// What every op's session shares: an fp32 state kept on the device between calls, and reading, writing and
/// clearing it. The op's own session adds Prefill (chunked) and Step (recurrent).
/// A session carries one state, so it serves one thread at a time: a call made while another is running on it
/// throws <see cref="InvalidOperationException"/>. Devices may be shared by any number of threads and sessions.
/// Dispose waits for a call running on another thread, then frees the state; later calls throw
/// <see cref="ObjectDisposedException"/>. Dispose may be called again, or by several threads at once. Calling it again from
/// inside one of its calls (its scheduler) throws <see cref="InvalidOperationException"/>, and so does disposing it from the
/// thread that made the call (a scheduler that runs items there). Do not dispose it from a scheduler item running on another
/// thread: that Dispose waits for the call it is part of, which never ends.
/// </summary>
public abstract class StatefulSession : IDisposable
{
    private readonly string _stateAxes;
    /// <summary>The state's shape the session was made with: the calls check against it, so callers get copies.</summary>
    private readonly nint[] _stateShape;
    /// <summary>The managed thread id of the running call's thread; 0 when none; -1 once disposed.</summary>
    private int _callThread;
    private volatile bool _disposed;
    private int _disposing;

    private protected StatefulSession(EngineDevice device, nint[] stateShape, string stateAxes)
    {
        ArgumentNullException.ThrowIfNull(device);
        ObjectDisposedException.ThrowIf(device.IsDisposed, device);
        if (stateShape[0] < 1) throw new ArgumentOutOfRangeException("sequences", stateShape[0], "at least one sequence");
        // Exact: heads and head dims of int size make a product past long's range.
        var floats = stateShape.Aggregate(System.Numerics.BigInteger.One, (a, d) => a * d);
        if (floats > Array.MaxLength)
            throw new ArgumentOutOfRangeException("sequences", stateShape[0],
                $"the state {stateAxes} = [{string.Join(", ", stateShape)}] would hold {floats} floats, more than one array holds ({Array.MaxLength}): fewer sequences or smaller heads");
        Device = device;
        _stateShape = stateShape;
        _stateAxes = stateAxes;
        States = new SessionState(device, (long)floats);
    }

    /// <summary>How many sequences the state holds (the batch, or the packed sequence count).</summary>
    public int Sequences => (int)_stateShape[0];

    /// <summary>The state's shape, sequences first: a copy of its own for each caller, who may change it.</summary>
    public nint[] StateShape => (nint[])_stateShape.Clone();

    private protected EngineDevice Device { get; }
    private protected SessionState States { get; }

    private protected DeviceState State => States.Current;

    /// <summary>
    /// Copies the state into <paramref name="destination"/> (fp32, of <see cref="StateShape"/>: [N, Hv, K, V], or
    /// [N, Hv, V, K] with a value-major <see cref="AttentionOptions.StateLayout"/>; LSSL [B, H, N]).
    /// </summary>
    /// <exception cref="ArgumentException">destination is not of <see cref="StateShape"/>.</exception>
    public void GetState(TensorSpan<float> destination)
    {
        using var use = Use();
        TensorArgs.RequireShape(destination.Lengths, "state", _stateAxes, _stateShape);
        State.Store(TensorArgs.DenseSpan(destination, "state"));
    }

    /// <summary>Replaces the state with <paramref name="source"/> (fp32, of <see cref="StateShape"/>), e.g. a state saved with <see cref="GetState"/>.</summary>
    /// <exception cref="ArgumentException">source is not of <see cref="StateShape"/>, or holds a NaN or an infinity (the state is then left as it was).</exception>
    public void SetState(ReadOnlyTensorSpan<float> source)
    {
        using var use = Use();
        TensorArgs.RequireShape(source.Lengths, "state", _stateAxes, _stateShape);
        using var input = FloatInput.From(source);
        TensorArgs.RequireFinite(input.Span, "state");
        State.Load(input.Span);
    }

    /// <summary>Sets the state to zeros, as a new session starts: the next call begins new sequences.</summary>
    public void ResetState()
    {
        using var use = Use();
        State.Clear();
    }

    /// <summary>Marks the session in use for one call: a second thread entering meanwhile is refused, not serialized.</summary>
    private protected UseScope Use()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Device.IsDisposed) throw new ObjectDisposedException(nameof(EngineDevice), $"{GetType().Name}: its device was disposed, and its state with it");
        int thread = Environment.CurrentManagedThreadId;
        int running = Interlocked.CompareExchange(ref _callThread, thread, 0);
        if (running != 0)
        {
            // A disposed session holds the flag for good.
            ObjectDisposedException.ThrowIf(_disposed, this);
            throw new InvalidOperationException(running == thread
                ? $"{GetType().Name} is already running a call on this thread (entered again from inside it: its scheduler or a callback); a session runs one call at a time"
                : $"{GetType().Name} is already running a call on another thread: a session carries one state and serves one thread at a time (use one session per thread; devices may be shared)");
        }
        if (_disposed)
        {
            Volatile.Write(ref _callThread, 0);
            throw new ObjectDisposedException(GetType().Name);
        }
        return new UseScope(this);
    }

    private protected readonly struct UseScope(StatefulSession session) : IDisposable
    {
        public void Dispose() => Volatile.Write(ref session._callThread, 0);
    }

    public void Dispose()
    {
        if (_disposed) return;
        // Waiting for its own thread's call would never end.
        if (Volatile.Read(ref _callThread) == Environment.CurrentManagedThreadId)
            throw new InvalidOperationException($"{GetType().Name} cannot be disposed from inside one of its calls (its scheduler or a callback): dispose it after the call");
        // One disposer frees the state; a second one racing it would wait for ever for the flag the first keeps.
        if (Interlocked.Exchange(ref _disposing, 1) != 0) return;
        _disposed = true;
        // Takes the flag a running call holds once that call is done, and keeps it: the state is freed under no call.
        var wait = new SpinWait();
        while (Interlocked.CompareExchange(ref _callThread, -1, 0) != 0) wait.SpinOnce();
        States.Dispose();
        GC.SuppressFinalize(this);
    }
}

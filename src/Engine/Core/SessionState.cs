namespace Engine;

/// <summary>
/// A session's state: the current one, and a spare the next call writes while reading the current one, swapped in
/// only when the call succeeds — so a call refused after its kernel ran (an output that overflowed, a value the device
/// checks found) leaves the session as it was. On the GPU the spare starts each call as a device copy of the current one.
/// </summary>
internal sealed class SessionState(EngineDevice device, long length) : IDisposable
{
    private DeviceState? _spare;

    public DeviceState Current { get; private set; } = DeviceState.Create(device, length);

    /// <summary>The buffer a call writes (made on first use).</summary>
    public DeviceState Spare => _spare ??= DeviceState.Create(device, length);

    /// <summary>The spare becomes the current state.</summary>
    public void Swap() => (Current, _spare) = (Spare, Current);

    public void Dispose()
    {
        Current.Dispose();
        _spare?.Dispose();
    }
}

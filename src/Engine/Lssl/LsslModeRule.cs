using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>
/// What <see cref="LsslMode.Auto"/> becomes. The rule (docs/lssl.md explains the measurements behind it):
/// - the Reference backend always runs the recurrence (it is the float64 oracle);
/// - a sequence shorter than one chunk (L &lt; Q) runs the recurrence: the scan would be all remainder;
/// - otherwise the scan.
/// An explicit mode is kept as asked, except on the Reference backend, which has only the recurrence.
/// </summary>
public static class LsslModeRule
{
    public static LsslMode Resolve(LsslMode mode, Backend backend, LsslConfig config, int batch, int length, bool stateIn, bool stateOut)
    {
        if (backend == Backend.Reference) return LsslMode.Recurrent;
        if (mode != LsslMode.Auto) return mode;
        if (length < config.ChunkLength) return LsslMode.Recurrent;
        return LsslMode.Scan;
    }
}

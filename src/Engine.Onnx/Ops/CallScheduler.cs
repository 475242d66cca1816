using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>How a hand-over call runs its CPU work: on ORT's intra-op pool of the call, or inline when it is small; and its form.</summary>
internal static class CallScheduler
{
    /// <summary>Chunk size when the model gives none the kernels take: measured fastest on the CPU for every rule at dk = dv = 128.</summary>
    public const int DefaultChunk = 32;

    /// <summary>Calls this short or shorter run token by token (the decode path).</summary>
    public const int RecurrentUpTo = 8;

    /// <summary>
    /// Calls with at most this many state multiply-adds per token step run on the calling thread: waking ORT's pool costs more.
    /// 8 heads of 128 × 128 stay inline; a decode step over 16 such heads (1 MB of state in and out) ran 14 % faster on the
    /// pool (Zen 5, 2 cores: five of six paired runs of the hybrid decoder's step).
    /// </summary>
    private const long InlineWork = 1 << 17;

    /// <summary>Element-wise calls (gates, norms) with at most this many elements run on the calling thread.</summary>
    public const long InlineElements = 1 << 14;

    /// <param name="stateWork">tokens × heads × dk × dv of the call.</param>
    public static IWorkScheduler For(KernelContext context, EngineDevice device, long stateWork) => For(context, device, stateWork <= InlineWork);

    /// <summary>The calling thread when <paramref name="inline"/> (the op's own measure of a small call), else ORT's pool for the call.</summary>
    public static IWorkScheduler For(KernelContext context, EngineDevice device, bool inline) =>
        inline ? ThreadPoolScheduler.CallingThread : new OrtParallelScheduler(context.Handle, device.Threads);
}

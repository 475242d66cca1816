using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>How a hand-over call runs its CPU work: on ORT's intra-op pool of the call, or inline when it is small; and its form.</summary>
internal static class CallScheduler
{
    /// <summary>Chunk size when the model gives none the kernels take: measured fastest on the CPU for every rule at dk = dv = 128.</summary>
    public const int DefaultChunk = 32;

    /// <summary>Calls this short or shorter run token by token (the decode path).</summary>
    public const int RecurrentUpTo = 8;

    /// <summary>Calls with at most this many state multiply-adds per token step run on the calling thread: waking ORT's pool costs more.</summary>
    private const long InlineWork = 1 << 20;

    /// <summary>Runs a call's work items one after another on the calling thread.</summary>
    public static readonly IWorkScheduler CallingThread = new ThreadPoolScheduler(1);

    /// <param name="stateWork">tokens × heads × dk × dv of the call.</param>
    public static IWorkScheduler For(KernelContext context, EngineDevice device, long stateWork) =>
        stateWork <= InlineWork ? CallingThread : new OrtParallelScheduler(context.Handle, device.Threads);
}

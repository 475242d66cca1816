using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Engine.Kernels.Common;

namespace Engine.Onnx.Interop;

/// <summary>
/// Runs a kernel's work items on ONNX Runtime's intra-op thread pool (KernelContext_ParallelFor), so the
/// engine's threads never compete with ORT's spinning workers. The kernel context is per call and per
/// thread: the compute callback enters it (<see cref="Enter"/>) before running the op; outside a
/// compute callback items run on the calling thread.
/// </summary>
internal sealed unsafe class OrtParallelScheduler : IWorkScheduler
{
    [ThreadStatic] private static nint t_context;

    public OrtParallelScheduler(int workers)
    {
        if (workers < 1) throw new ArgumentOutOfRangeException(nameof(workers), workers, "at least one worker");
        Workers = workers;
    }

    public int Workers { get; }

    /// <summary>Makes <paramref name="context"/> the pool the current thread's work runs on until the scope ends.</summary>
    public static Scope Enter(nint context)
    {
        var previous = t_context;
        t_context = context;
        return new Scope(previous, active: true);
    }

    /// <summary>Runs the current thread's work inline until the scope ends: for calls too small to be worth waking the pool.</summary>
    public static Scope Inline() => Enter(0);

    /// <summary>Restores the previous context when disposed; the default scope does nothing.</summary>
    public readonly struct Scope(nint previous, bool active) : IDisposable
    {
        public void Dispose()
        {
            if (active) t_context = previous;
        }
    }

    public void Run(int count, Action<int, int> body)
    {
        int workers = Math.Min(Workers, count);
        nint context = t_context;
        if (workers <= 1 || context == 0)
        {
            for (int i = 0; i < count; i++) body(i, 0);
            return;
        }
        // One pool task per worker slot: each pulls items from a shared counter, so a slot's scratch is
        // only ever used by the thread running that slot.
        var job = new Job(count, body);
        var handle = GCHandle.Alloc(job);
        try
        {
            Ort.Check(Ort.KernelContextParallelFor(context, &RunSlot, (nuint)workers, 0, (void*)GCHandle.ToIntPtr(handle)));
        }
        finally
        {
            handle.Free();
        }
        job.Rethrow();
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void RunSlot(void* state, nuint slot)
    {
        var job = (Job)GCHandle.FromIntPtr((nint)state).Target!;
        try
        {
            int item;
            while (job.Error is null && (item = Interlocked.Increment(ref job.Next)) < job.Count) job.Body(item, (int)slot);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref job.Error, e, null);
        }
    }

    private sealed class Job(int count, Action<int, int> body)
    {
        public readonly int Count = count;
        public readonly Action<int, int> Body = body;
        public int Next = -1;
        public Exception? Error;

        public void Rethrow()
        {
            if (Error is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(Error);
        }
    }
}

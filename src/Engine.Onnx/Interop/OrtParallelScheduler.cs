using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Engine.Onnx.Interop;

/// <summary>
/// Runs a kernel's work items on ONNX Runtime's intra-op thread pool (KernelContext_ParallelFor) for one compute
/// call, so the engine's threads never compete with ORT's spinning workers. Made per call from the call's kernel
/// context and handed to the engine through the call's options; valid only while that callback runs.
/// </summary>
internal sealed unsafe class OrtParallelScheduler : IWorkScheduler
{
    private readonly nint _context;

    public OrtParallelScheduler(nint context, int workers)
    {
        if (workers < 1) throw new ArgumentOutOfRangeException(nameof(workers), workers, "at least one worker");
        _context = context;
        Workers = workers;
    }

    public int Workers { get; }

    public void Run(int count, Action<int, int> body)
    {
        int workers = Math.Min(Workers, count);
        if (workers <= 1)
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
            Ort.Check(Ort.KernelContextParallelFor(_context, &RunSlot, (nuint)workers, 0, (void*)GCHandle.ToIntPtr(handle)));
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

using System.Runtime.InteropServices;

namespace Engine.Kernels.Common;

/// <summary>
/// One worker's scratch: a single 64-byte aligned native block, carved into named regions once when
/// a kernel plan is made, so the hot loops allocate nothing and every region starts on a cache line.
/// </summary>
public sealed unsafe class NativeScratch : IDisposable
{
    private float* _base;

    public NativeScratch(long floats)
    {
        Length = Math.Max(floats, 16);
        _base = (float*)NativeMemory.AlignedAlloc((nuint)(Length * sizeof(float)), 64);
    }

    public long Length { get; }

    public float* Base => _base != null ? _base : throw new ObjectDisposedException(nameof(NativeScratch));

    public void Dispose()
    {
        if (_base != null)
        {
            NativeMemory.AlignedFree(_base);
            _base = null;
        }
        GC.SuppressFinalize(this);
    }

    ~NativeScratch() => Dispose();
}

/// <summary>
/// One scratch block per worker, all the same size: what a CPU kernel owns. Blocks are made for as many workers as
/// the schedulers a kernel is called with have had (<see cref="Reserve"/>), so one kernel serves any scheduler.
/// </summary>
public sealed unsafe class WorkerScratch(long floats) : IDisposable
{
    private NativeScratch[] _blocks = [];

    /// <summary>Makes sure workers [0, <paramref name="workers"/>) have a block. Not thread-safe: call it before the work starts.</summary>
    public void Reserve(int workers)
    {
        if (workers <= _blocks.Length) return;
        var blocks = new NativeScratch[workers];
        _blocks.CopyTo(blocks, 0);
        for (int w = _blocks.Length; w < workers; w++) blocks[w] = new NativeScratch(floats);
        _blocks = blocks;
    }

    /// <summary>The start of worker <paramref name="worker"/>'s block.</summary>
    public float* this[int worker] => _blocks[worker].Base;

    public void Dispose()
    {
        foreach (var b in _blocks) b.Dispose();
    }
}

/// <summary>Hands out consecutive cache-line aligned regions of a scratch block.</summary>
public unsafe struct ScratchCarver
{
    private readonly float* _base;
    private long _used;

    public ScratchCarver(float* baseAddress) { _base = baseAddress; _used = 0; }

    /// <summary>Floats handed out so far, rounded to cache lines: the size a scratch block needs.</summary>
    public readonly long Used => _used;

    public float* Take(long floats)
    {
        float* p = _base == null ? null : _base + _used;
        _used += (floats + 15) & ~15L;
        return p;
    }
}

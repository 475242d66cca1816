using System.Buffers;
using System.Runtime.InteropServices;

namespace Engine.Tests.Harness;

/// <summary>
/// Memory with an inaccessible page right before and right after it (Linux mmap / mprotect): a kernel that reads one
/// byte outside it stops the process, so a test over it fails on any out-of-bounds read, not only on the ones that
/// happen to meet unmapped memory. Elsewhere <see cref="Supported"/> is false.
/// </summary>
public sealed unsafe class GuardedMemory : IDisposable
{
    private const int ProtNone = 0, ProtReadWrite = 3, MapPrivateAnonymous = 0x22;
    private readonly byte* _base;
    private readonly nuint _length;

    public static bool Supported => OperatingSystem.IsLinux();

    /// <param name="byteCount">bytes; they end right at the back guard page when <paramref name="flushEnd"/>, else start right after the front one.</param>
    public GuardedMemory(long byteCount, bool flushEnd = false)
    {
        nuint page = (nuint)Environment.SystemPageSize, bytes = (nuint)byteCount;
        nuint dataPages = (bytes + page - 1) / page;
        _length = (dataPages + 2) * page;
        _base = (byte*)Mmap(null, _length, ProtReadWrite, MapPrivateAnonymous, -1, 0);
        if (_base == (byte*)-1) throw new InvalidOperationException($"mmap failed: {Marshal.GetLastPInvokeError()}");
        Mprotect(_base, page, ProtNone);
        Mprotect(_base + (dataPages + 1) * page, page, ProtNone);
        Start = flushEnd ? _base + (dataPages + 1) * page - bytes : _base + page;
        ByteCount = checked((int)byteCount);
    }

    /// <summary>A guarded copy of <paramref name="values"/>.</summary>
    public static GuardedMemory Of(ReadOnlySpan<float> values, bool flushEnd) => Of(MemoryMarshal.AsBytes(values), flushEnd);

    /// <summary>A guarded copy of <paramref name="bytes"/>.</summary>
    public static GuardedMemory Of(ReadOnlySpan<byte> bytes, bool flushEnd)
    {
        var memory = new GuardedMemory(bytes.Length, flushEnd);
        bytes.CopyTo(new Span<byte>(memory.Start, memory.ByteCount));
        return memory;
    }

    public byte* Start { get; }
    public int ByteCount { get; }
    public float* Pointer => (float*)Start;
    public int Length => ByteCount / sizeof(float);
    public Span<float> Span => new(Start, Length);

    /// <summary>The bytes as a <see cref="Memory{T}"/> (for a tensor that wraps memory it does not own); valid until disposed.</summary>
    public Memory<byte> Memory => new Manager(this).Memory;

    public void Dispose() => Munmap(_base, _length);

    private sealed class Manager(GuardedMemory owner) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(owner.Start, owner.ByteCount);

        public override MemoryHandle Pin(int elementIndex = 0) => new(owner.Start + elementIndex);

        public override void Unpin() { }

        protected override void Dispose(bool disposing) { }
    }

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static extern int Mprotect(void* address, nuint length, int protection);

    [DllImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static extern int Munmap(void* address, nuint length);
}

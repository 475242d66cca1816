using System.Runtime.InteropServices;

namespace Engine.Tests.Harness;

/// <summary>
/// Floats with an inaccessible page right before and right after them (Linux mmap / mprotect): a kernel that reads one
/// float outside them stops the process, so a test over them fails on any out-of-bounds read, not only on the ones that
/// happen to meet unmapped memory. Elsewhere <see cref="Supported"/> is false.
/// </summary>
public sealed unsafe class GuardedMemory : IDisposable
{
    private const int ProtNone = 0, ProtReadWrite = 3, MapPrivateAnonymous = 0x22;
    private readonly byte* _base;
    private readonly nuint _length;

    public static bool Supported => OperatingSystem.IsLinux();

    /// <param name="count">floats; they end right at the back guard page when <paramref name="flushEnd"/>, else start right after the front one.</param>
    public GuardedMemory(int count, bool flushEnd = false)
    {
        nuint page = (nuint)Environment.SystemPageSize, bytes = (nuint)count * sizeof(float);
        nuint dataPages = (bytes + page - 1) / page;
        _length = (dataPages + 2) * page;
        _base = (byte*)Mmap(null, _length, ProtReadWrite, MapPrivateAnonymous, -1, 0);
        if (_base == (byte*)-1) throw new InvalidOperationException($"mmap failed: {Marshal.GetLastPInvokeError()}");
        Mprotect(_base, page, ProtNone);
        Mprotect(_base + (dataPages + 1) * page, page, ProtNone);
        Pointer = (float*)(flushEnd ? _base + (dataPages + 1) * page - bytes : _base + page);
        Length = count;
    }

    /// <summary>A guarded copy of <paramref name="values"/>.</summary>
    public static GuardedMemory Of(ReadOnlySpan<float> values, bool flushEnd)
    {
        var memory = new GuardedMemory(values.Length, flushEnd);
        values.CopyTo(memory.Span);
        return memory;
    }

    public float* Pointer { get; }
    public int Length { get; }
    public Span<float> Span => new(Pointer, Length);

    public void Dispose() => Munmap(_base, _length);

    [DllImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static extern void* Mmap(void* address, nuint length, int protection, int flags, int fd, nint offset);

    [DllImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static extern int Mprotect(void* address, nuint length, int protection);

    [DllImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static extern int Munmap(void* address, nuint length);
}

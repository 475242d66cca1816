using System.Runtime.InteropServices;

namespace Engine.IO;

/// <summary>What an output path names before it is written: nothing, a regular file, or something to write through.</summary>
internal static unsafe partial class OutputPath
{
    private const int AtCurrentDirectory = -100, AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 1;
    private const int TypeMask = 0xF000, RegularFile = 0x8000;

    /// <summary>
    /// Whether <paramref name="fullPath"/> exists and is not a regular file: a symbolic link, a device such as /dev/null, a
    /// FIFO. Such a path is written through, as a shell's redirection writes it, not replaced by a file moved over it.
    /// </summary>
    public static bool IsWrittenThrough(string fullPath)
    {
        if (new FileInfo(fullPath).LinkTarget is not null) return true;
        if (!OperatingSystem.IsLinux()) return false;
        // statx's buffer has one layout on every Linux architecture: stx_mode is the 16 bits at byte 28.
        byte* buffer = stackalloc byte[256];
        try
        {
            return Statx(AtCurrentDirectory, fullPath, AtSymlinkNoFollow, StatxType, buffer) == 0 && (*(ushort*)(buffer + 28) & TypeMask) != RegularFile;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Statx(int directory, string path, int flags, uint mask, byte* buffer);
}

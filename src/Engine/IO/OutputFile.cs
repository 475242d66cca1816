using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Engine.IO;

/// <summary>
/// How every output file is written (.npy arrays, ONNX models and their data, charts, PTX): into a file beside its path,
/// then moved over it. A reader sees the old file or the whole new one, never one cut short by a failed or interrupted
/// write; whatever maps the old file (a hard link of it, the very data written) keeps its contents.
/// </summary>
internal static unsafe partial class OutputFile
{
    /// <summary>Writes <paramref name="path"/> with what <paramref name="write"/> writes to the stream it is given.</summary>
    public static void Write(string path, Action<Stream> write) => Write(path, write, static (stream, write) => write(stream));

    /// <summary>
    /// Writes <paramref name="path"/> with what <paramref name="write"/> writes of <paramref name="content"/> (a span, say)
    /// to the stream it is given. Where <paramref name="write"/> throws, the file at the path stays as it was and the file
    /// beside it is deleted; a file replaced keeps its permissions. A path that is not a regular file (a symbolic link, a
    /// device such as /dev/null, a FIFO) or is a file mounted there is written through instead, as a shell's redirection
    /// would: the link, the device, the mount stay. A file that cannot be written is named as given, not by the file beside it.
    /// </summary>
    public static void Write<TContent>(string path, TContent content, Action<Stream, TContent> write) where TContent : allows ref struct
    {
        string full = Path.GetFullPath(path), folder = Path.GetDirectoryName(full)!;
        if (Path.EndsInDirectorySeparator(path) || Directory.Exists(full)) throw new IOException($"{path}: is a folder, not a file to write");
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{path}: the folder {folder} does not exist");
        if (IsWrittenThrough(full))
        {
            try
            {
                using var through = new FileStream(full, FileMode.Create, FileAccess.Write, FileShare.ReadWrite);
                write(through, content);
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new IOException($"{path}: cannot be written ({e.Message})", e);
            }
        }
        string temporary = Path.Combine(folder, $".{TemporaryStem(Path.GetFileName(full))}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = File.Create(temporary))
            {
                KeepPermissions(full, stream.SafeFileHandle);
                write(stream, content);
            }
            File.Move(temporary, full, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{path}: cannot be written ({e.Message.Replace(temporary, full)})", e);
        }
        finally
        {
            DeleteLeftover(temporary);
        }
    }

    /// <summary>
    /// Gives the file beside <paramref name="full"/> the permissions of the file it will replace, as a write in place keeps
    /// them, before a byte is written: a private file's new contents are never readable by others, an executable stays so.
    /// </summary>
    private static void KeepPermissions(string full, SafeFileHandle beside)
    {
        if (OperatingSystem.IsWindows() || !File.Exists(full)) return;
        File.SetUnixFileMode(beside, File.GetUnixFileMode(full));
    }

    /// <summary>
    /// The start of the name of the file beside <paramref name="name"/>: at most 64 characters of it (192 bytes in UTF-8), so
    /// that with its 38 more it fits a folder entry (255 bytes) wherever the name itself does.
    /// </summary>
    private static string TemporaryStem(string name)
    {
        const int Longest = 64;
        if (name.Length <= Longest) return name;
        // Not half of a surrogate pair.
        return name[..(char.IsHighSurrogate(name[Longest - 1]) ? Longest - 1 : Longest)];
    }

    /// <summary>
    /// Deletes the file beside the path (already gone where it was moved over it). Where that fails too, the folder removed
    /// meanwhile say, the error of the write or the move is the one reported, not this one naming the file beside it.
    /// </summary>
    private static void DeleteLeftover(string temporary)
    {
        try
        {
            File.Delete(temporary);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    private const int AtCurrentDirectory = -100, AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 1;
    private const int TypeMask = 0xF000, RegularFile = 0x8000;
    private const ulong MountRoot = 0x2000;

    /// <summary>
    /// Whether <paramref name="fullPath"/> exists and is not a regular file (a symbolic link, a device such as /dev/null, a
    /// FIFO) or is a file mounted over the path (a bind mount, as a container is given files), which a move cannot replace.
    /// Such a path is written through, as a shell's redirection writes it, not replaced by a file moved over it.
    /// </summary>
    private static bool IsWrittenThrough(string fullPath)
    {
        if (new FileInfo(fullPath).LinkTarget is not null) return true;
        if (!OperatingSystem.IsLinux()) return false;
        // statx's buffer has one layout on every Linux architecture: stx_attributes is the 64 bits at byte 8 (the mount root's
        // bit from Linux 5.8), stx_mode the 16 bits at byte 28.
        byte* buffer = stackalloc byte[256];
        try
        {
            return Statx(AtCurrentDirectory, fullPath, AtSymlinkNoFollow, StatxType, buffer) == 0
                && ((*(ushort*)(buffer + 28) & TypeMask) != RegularFile || (*(ulong*)(buffer + 8) & MountRoot) != 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false;
        }
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Statx(int directory, string path, int flags, uint mask, byte* buffer);
}

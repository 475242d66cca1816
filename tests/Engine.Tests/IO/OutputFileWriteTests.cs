using System.Text;
using Engine.IO;
using NUnit.Framework;

namespace Engine.Tests.IO;

/// <summary>
/// Every output file is written beside its path and moved over it: a write that fails midway leaves the file that was
/// there (or none) and nothing beside it; one that succeeds leaves exactly the bytes written.
/// </summary>
[TestFixture]
public sealed class OutputFileWriteTests
{
    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = Directory.CreateTempSubdirectory("engine-output-file-").FullName;

    [TearDown]
    public void RemoveDirectory() => Directory.Delete(_dir, recursive: true);

    private string PathOf(string name) => Path.Combine(_dir, name);

    private static readonly byte[] Previous = Encoding.ASCII.GetBytes("the file a previous run wrote");

    /// <summary>The content writer throws after writing part of the file (an exception, or a cancelled command).</summary>
    [TestCase(typeof(InvalidOperationException))]
    [TestCase(typeof(OperationCanceledException))]
    public void AWriteThatFailsMidwayLeavesThePreviousFileAndNothingBesideIt(Type exception)
    {
        string path = PathOf("out.bin");
        File.WriteAllBytes(path, Previous);
        Assert.Throws(exception, () => OutputFile.Write(path, stream =>
        {
            stream.Write(new byte[4096]);
            throw (Exception)Activator.CreateInstance(exception, "failed midway")!;
        }));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(Previous), "the previous file as it was");
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.EqualTo(new[] { path }), "no temporary file left");
    }

    [Test]
    public void AWriteThatFailsWhereNoFileWasLeavesNone()
    {
        Assert.Throws<InvalidOperationException>(() => OutputFile.Write(PathOf("out.bin"), stream =>
        {
            stream.Write(Previous);
            throw new InvalidOperationException("failed midway");
        }));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.Empty);
    }

    /// <summary>
    /// The folder removed while the file is written (by another process): the writer's own exception, or the path named
    /// as given, not the file beside it, which went with the folder.
    /// </summary>
    [Test]
    public void AFolderRemovedDuringTheWriteIsReportedAsThePathNotTheFileBesideIt()
    {
        string folder = PathOf("removed");
        string path = Path.Combine(folder, "out.bin");
        Directory.CreateDirectory(folder);
        var e = Assert.Throws<IOException>(() => OutputFile.Write(path, stream =>
        {
            stream.Write(Previous);
            Directory.Delete(folder, recursive: true);
        }));
        Assert.That(e!.Message, Does.StartWith($"{path}: cannot be written").And.Not.Contain(".tmp"));

        Directory.CreateDirectory(folder);
        var own = Assert.Throws<InvalidOperationException>(() => OutputFile.Write(path, _ =>
        {
            Directory.Delete(folder, recursive: true);
            throw new InvalidOperationException("failed midway");
        }));
        Assert.That(own!.Message, Is.EqualTo("failed midway"));
    }

    /// <summary>A name as long as a folder entry may be (255 bytes): the file beside it, longer by its suffix, must still fit.</summary>
    [Test]
    public void ANameOfTheLongestLengthIsWritten()
    {
        string path = PathOf(new string('n', 251) + ".npy");
        OutputFile.Write(path, stream => stream.Write(Previous));
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(Previous));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.EqualTo(new[] { path }));
    }

    /// <summary>The file replaced keeps its permissions, as a write in place keeps them: an executable or private file stays so.</summary>
    [Test]
    public void TheFileReplacedKeepsItsPermissions()
    {
        if (OperatingSystem.IsWindows())
        {
            Assert.Ignore("no Unix permissions");
            return;
        }
        string path = PathOf("run.sh");
        File.WriteAllBytes(path, Previous);
        // Execute: a file is never created with it, whatever the umask.
        const UnixFileMode Kept = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        File.SetUnixFileMode(path, Kept);
        OutputFile.Write(path, stream => stream.Write(Previous));
        Assert.That(File.GetUnixFileMode(path), Is.EqualTo(Kept));
    }

    /// <summary>
    /// A file mounted over the path (a bind mount, as a container is given files) cannot be replaced by a move: it is
    /// written through, as a shell's redirection writes it, where it failed as "Device or resource busy".
    /// </summary>
    [Test]
    public void AFileMountedOverThePathIsWrittenThrough()
    {
        string mounted = PathOf("mounted.bin"), source = PathOf("source.bin");
        File.WriteAllBytes(mounted, []);
        File.WriteAllBytes(source, Previous);
        Assume.That(Run("mount", "--bind", source, mounted), Is.Zero, "bind mounts need Linux and the right to mount");
        try
        {
            OutputFile.Write(mounted, stream => stream.Write("written through"u8));
            Assert.That(File.ReadAllText(source), Is.EqualTo("written through"));
        }
        finally
        {
            Assert.That(Run("umount", mounted), Is.Zero, "umount");
        }
        Assert.That(Directory.GetFileSystemEntries(_dir).Order(), Is.EqualTo(new[] { mounted, source }));
    }

    private static int Run(string program, params string[] arguments)
    {
        try
        {
            using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments) { RedirectStandardError = true });
            process!.WaitForExit();
            return process.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }

    /// <summary>A target that cannot be written (under /proc) is named as given, not by the file beside it.</summary>
    [Test]
    public void AnUnwritableTargetIsNamedAsGiven()
    {
        var e = Assert.Throws<IOException>(() => OutputFile.Write("/proc/engine-output.bin", stream => stream.Write(Previous)));
        Assert.That(e!.Message, Does.StartWith("/proc/engine-output.bin: cannot be written").And.Not.Contain(".tmp"));
    }

    /// <summary>The file holds exactly what the writer wrote, as a write in place would leave it.</summary>
    [Test]
    public void ASuccessfulWriteLeavesTheBytesWritten()
    {
        string path = PathOf("out.npy");
        File.WriteAllBytes(path, Previous);
        var array = NpyArray.From([1f, 2f, 3f, 4f, 5f, 6f], [2, 3]);
        var expected = new MemoryStream();
        Npy.Write(expected, array);
        Npy.Write(path, array);
        Assert.That(File.ReadAllBytes(path), Is.EqualTo(expected.ToArray()));
        Assert.That(Directory.GetFileSystemEntries(_dir), Is.EqualTo(new[] { path }));
    }
}

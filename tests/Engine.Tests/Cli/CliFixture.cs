using Engine.IO;
using Engine.Workloads;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>What command-line tests share: a fresh directory per test, .npy files in it, and `engine` run in-process.</summary>
public abstract class CliFixture
{
    private string _dir = "";

    [SetUp]
    public void MakeDirectory() => _dir = System.IO.Directory.CreateTempSubdirectory("engine-cli-").FullName;

    [TearDown]
    public void RemoveDirectory() => System.IO.Directory.Delete(_dir, recursive: true);

    /// <summary>This test's own directory.</summary>
    protected string Directory => _dir;

    protected string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>A model <paramref name="build"/> writes, saved in this test's directory.</summary>
    private protected string SaveModel(string name, Action<ModelBuilder> build)
    {
        var builder = new ModelBuilder();
        build(builder);
        string path = PathOf(name);
        builder.Build().Save(path);
        return path;
    }

    protected string Save(string name, NpyArray array)
    {
        string path = PathOf(name);
        Npy.Write(path, array);
        return path;
    }

    /// <summary>The command line's error contract: exit code, nothing on stdout, one line on stderr starting with "engine: " and containing the message.</summary>
    public static void AssertOneLineError((int code, string stdout, string stderr) run, int code, string message)
    {
        Assert.That(run.code, Is.EqualTo(code), run.stderr);
        Assert.That(run.stdout, Is.Empty);
        Assert.That(run.stderr.TrimEnd().Split('\n'), Has.Length.EqualTo(1), run.stderr);
        Assert.That(run.stderr, Does.StartWith("engine: ").And.Contain(message));
    }

    /// <summary>Runs `engine args…` and returns its exit code and what it wrote.</summary>
    public static (int code, string stdout, string stderr) Engine(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = global::Engine.Cli.Cli.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}

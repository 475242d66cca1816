namespace Engine.Tests.Harness;

/// <summary>The checkout the tests run from.</summary>
public static class Repository
{
    private static readonly Lazy<string> RootDirectory = new(() =>
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Engine.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException($"no Engine.sln above {AppContext.BaseDirectory}");
    });

    /// <summary>The directory holding Engine.sln, above the test directory.</summary>
    public static string Root => RootDirectory.Value;
}

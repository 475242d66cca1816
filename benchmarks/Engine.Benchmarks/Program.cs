using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

// Runs the suite: dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*'
// BenchmarkDotNet builds each run from this project's file, which it looks for below the folder (with a solution or
// global.json) above the working directory: run from anywhere else, it found none and every case came out NA. The
// suite runs from the project's folder and writes its artifacts where it was started (unless --artifacts says).
// It exits 1 when a case failed, so a script or CI sees it.
string startedIn = Directory.GetCurrentDirectory();
if (SuiteExit.ProjectDirectory(AppContext.BaseDirectory) is { } project) Directory.SetCurrentDirectory(project);
var config = DefaultConfig.Instance.WithArtifactsPath(Path.Combine(startedIn, "BenchmarkDotNet.Artifacts"));
return SuiteExit.Code(BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config));

/// <summary>The suite's exit code and where its project lies.</summary>
internal static class SuiteExit
{
    /// <summary>1 when a case failed (refused by validation, failed to build, threw, or gave no result), else 0.</summary>
    public static int Code(IEnumerable<Summary> summaries) =>
        summaries.Any(summary => summary.HasCriticalValidationErrors || summary.Reports.Any(report => !report.Success || report.ResultStatistics is null))
            ? 1 : 0;

    /// <summary>The folder above <paramref name="binary"/> holding Engine.Benchmarks.csproj, if any.</summary>
    public static string? ProjectDirectory(string binary)
    {
        for (var dir = new DirectoryInfo(binary); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Engine.Benchmarks.csproj"))) return dir.FullName;
        return null;
    }
}

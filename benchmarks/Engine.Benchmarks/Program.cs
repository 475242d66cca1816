using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Running;

// Runs the suite: dotnet run -c Release --project benchmarks/Engine.Benchmarks -- --filter '*'
// BenchmarkDotNet builds each run from this project's file, which it looks for below the folder (with a solution or
// global.json) above the working directory: run from anywhere else, it found none and every case came out NA. The
// suite runs from the project's folder and writes its artifacts where it was started (unless --artifacts says).
string startedIn = Directory.GetCurrentDirectory();
if (ProjectDirectory(AppContext.BaseDirectory) is { } project) Directory.SetCurrentDirectory(project);
var config = DefaultConfig.Instance.WithArtifactsPath(Path.Combine(startedIn, "BenchmarkDotNet.Artifacts"));
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, config);

// The folder above the binary holding Engine.Benchmarks.csproj, if any.
static string? ProjectDirectory(string binary)
{
    for (var dir = new DirectoryInfo(binary); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "Engine.Benchmarks.csproj"))) return dir.FullName;
    return null;
}

using System.Diagnostics;
using System.Text.Json;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Packaging;

/// <summary>How the packable projects build when `dotnet pack` builds them (it sets the global property _IsPacking).</summary>
[TestFixture]
public sealed class PackTests
{
    [TestCase("kernels/Engine.Kernels/Engine.Kernels.csproj")]
    [TestCase("src/Engine/Engine.csproj")]
    [TestCase("src/Engine.Onnx/Engine.Onnx.csproj")]
    [TestCase("tools/Engine.Cli/Engine.Cli.csproj")]
    public void APackMapsTheSourcePaths(string project)
    {
        // Outside CI too: a package packed from any checkout names /_/ in its assemblies and PDBs, not the folder it was packed in.
        var packing = Properties(project, "-p:_IsPacking=true", "IsPackable", "DeterministicSourcePaths");
        Assert.Multiple(() =>
        {
            Assert.That(packing["IsPackable"], Is.EqualTo("true"), project);
            Assert.That(packing["DeterministicSourcePaths"], Is.EqualTo("true"), $"{project} packed");
        });
    }

    /// <summary>The project's properties as MSBuild evaluates them (no build), without CI's environment variable.</summary>
    private static Dictionary<string, string> Properties(string project, string property, params string[] names)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = Repository.Root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var argument in new[] { "msbuild", project, "-nologo", property }.Concat(names.Select(n => $"-getProperty:{n}")))
            start.ArgumentList.Add(argument);
        start.Environment.Remove("CI");
        start.Environment.Remove("ContinuousIntegrationBuild");
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.Zero, $"dotnet msbuild {project}: {output}{error.Result}");
        using var json = JsonDocument.Parse(output);
        return json.RootElement.GetProperty("Properties").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString() ?? "");
    }
}

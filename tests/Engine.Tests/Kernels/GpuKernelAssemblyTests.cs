using System.Diagnostics;
using System.Text.RegularExpressions;
using Engine.Kernels.Common;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// Every GPU kernel of the catalog compiles to PTX without a CUDA device, with no local memory, and NVIDIA's assembler
/// (ptxas from CUDA 11.8, path in ENGINE_PTXAS; tools/ptxas/fetch-ptxas.sh fetches it, CI sets it) turns it into
/// machine code for sm_80 and sm_90 without spills, in at most 64 registers a thread: with 128 threads a group that
/// keeps at least half of an SM's 2,048 threads resident (65,536 registers).
/// </summary>
[TestFixture]
public sealed class GpuKernelAssemblyTests
{
    private const int RegisterBudget = 64;

    /// <summary>Spills ptxas 11.8 makes today, in bytes: any other spill, or a change in these, fails.</summary>
    private static readonly Dictionary<(string Kernel, string Arch), int> KnownSpills = new() { [("gla.ChunkStates", "sm_90")] = 8 };

    private readonly Dictionary<string, string> _ptx = [];

    [OneTimeSetUp]
    public void Compile()
    {
        using var compiler = new PtxCompiler(CudaArchitecture.SM_90);
        foreach (var kernel in GpuKernelCatalog.All) _ptx[kernel.Name] = compiler.Compile(kernel);
    }

    private static IEnumerable<string> Kernels() => GpuKernelCatalog.All.Select(k => k.Name);

    private static IEnumerable<TestCaseData> KernelsByArchitecture() =>
        from kernel in Kernels()
        from arch in PtxCompiler.Architectures.Keys
        select new TestCaseData(kernel, arch);

    [Test]
    public void TheCatalogHoldsEveryKernel() =>
        Assert.That(Kernels(), Is.EquivalentTo(new[]
        {
            "gla.CumulativeGates", "gla.ChunkStates", "gla.ScanChunkStates", "gla.IntraScores", "gla.Output", "gla.Recurrent",
            "delta-rule.Prepare", "delta-rule.StatePass", "delta-rule.Output", "delta-rule.Recurrent",
            "lssl.Recurrent", "lssl.Carry", "lssl.LocalOutput", "lssl.ChunkState", "lssl.FixUp", "lssl.ConvDirect",
        }));

    [TestCaseSource(nameof(Kernels))]
    public void CompilesToPtxWithoutLocalMemory(string kernel)
    {
        Assert.That(_ptx[kernel], Does.Contain(".entry"));
        Assert.That(_ptx[kernel], Does.Contain(".version 7.8"), "PTX ISA 7.8, the newest ptxas 11.8 takes");
        Assert.That(_ptx[kernel], Does.Not.Contain(".local"), "local memory");
    }

    [TestCaseSource(nameof(KernelsByArchitecture))]
    public void AssemblesWithoutSpillsWithinTheRegisterBudget(string kernel, string arch)
    {
        string ptxas = Environment.GetEnvironmentVariable("ENGINE_PTXAS") ?? "";
        if (ptxas.Length == 0) Assert.Ignore("ENGINE_PTXAS is not set (tools/ptxas/fetch-ptxas.sh prints the path to set it to)");
        string file = Path.Combine(Path.GetTempPath(), $"engine-{Environment.ProcessId}-{kernel}-{arch}.ptx");
        File.WriteAllText(file, _ptx[kernel]);
        try
        {
            var report = Assemble(ptxas, arch, file);
            int registers = int.Parse(Regex.Match(report, @"Used (\d+) registers").Groups[1].Value);
            var spill = Regex.Match(report, @"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads");
            Assert.That(spill.Success, report);
            int expected = KnownSpills.GetValueOrDefault((kernel, arch));
            Assert.Multiple(() =>
            {
                Assert.That(int.Parse(spill.Groups[2].Value), Is.EqualTo(expected), $"spill stores\n{report}");
                Assert.That(int.Parse(spill.Groups[3].Value), Is.EqualTo(expected), $"spill loads\n{report}");
                Assert.That(registers, Is.LessThanOrEqualTo(RegisterBudget), $"registers\n{report}");
            });
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>ptxas -v's report (it writes it to stderr); a failed assembly fails the test with ptxas's message.</summary>
    private static string Assemble(string ptxas, string arch, string file)
    {
        var start = new ProcessStartInfo(ptxas, ["-arch=" + arch, "-v", file, "-o", "/dev/null"])
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        string report = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.That(process.ExitCode, Is.EqualTo(0), $"ptxas failed:\n{report}{stdout.Result}");
        return report;
    }
}

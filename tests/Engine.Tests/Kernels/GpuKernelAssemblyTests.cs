using Engine.Kernels.Common;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// Every GPU kernel of the catalog compiles to PTX without a CUDA device, and NVIDIA's assembler (ptxas from CUDA 11.8, path in
/// ENGINE_PTXAS; tools/ptxas/fetch-ptxas.sh fetches it, CI sets it) turns it into machine code for sm_80 and sm_90 with no
/// local memory (no stack frame, no spills) in a register budget that keeps at least half of an SM's 2,048 threads resident
/// at the launch's group size (65,536 registers an SM). The kernels that multiply on tensor cores hold HMMA instructions in
/// nvdisasm's listing.
/// </summary>
[TestFixture]
public sealed class GpuKernelAssemblyTests
{
    /// <summary>Registers a thread may use: half an SM's threads resident in whole groups of <see cref="GpuRuntime.CudaGroupSize"/>.</summary>
    private static readonly int RegisterBudget = 65536 / (int.Max(1, 1024 / GpuRuntime.CudaGroupSize) * GpuRuntime.CudaGroupSize);

    /// <summary>nvdisasm's names of the tensor-core instructions: mma.m16n8k8 tf32 (<see cref="MmaTf32"/>) and mma.m16n8k16 f16 (<see cref="MmaF16"/>).</summary>
    private const string Tf32Hmma = "HMMA.1688.F32.TF32", F16Hmma = "HMMA.16816.F32";

    /// <summary>The kernels whose chunk products can run on tensor cores, and the instructions their SASS must hold.</summary>
    private static readonly Dictionary<string, string[]> TensorCoreKernels = new()
    {
        ["gla.ChunkDeltas"] = [Tf32Hmma],
        ["gla.Output"] = [Tf32Hmma, F16Hmma],
        ["delta-rule.Prepare"] = [Tf32Hmma],
        ["delta-rule.Output"] = [Tf32Hmma],
    };

    private readonly Dictionary<string, string> _ptx = [];

    /// <summary>
    /// Each kernel's assembly per architecture, made once for the register and the instruction checks: all started by the first
    /// check and run side by side (ptxas keeps one core busy), each check waiting for its own.
    /// </summary>
    private Dictionary<(string Kernel, string Arch), Task<PtxAssembly>>? _assemblies;

    [OneTimeSetUp]
    public void Compile()
    {
        using var compiler = new PtxCompiler(CudaArchitecture.SM_90);
        foreach (var kernel in GpuKernelCatalog.All) _ptx[kernel.Name] = compiler.Compile(kernel);
    }

    /// <summary>A filtered run starts every assembly too: they finish (and remove their folders) before the fixture ends. Each failure is its own check's.</summary>
    [OneTimeTearDown]
    public async Task AwaitAssemblies()
    {
        if (_assemblies is not null) await Task.WhenAll(_assemblies.Values.Cast<Task>()).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
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
            "gla.ChunkDeltas", "gla.StateScan", "gla.Output", "gla.Recurrent",
            "delta-rule.Prepare", "delta-rule.StatePass", "delta-rule.Output", "delta-rule.Recurrent",
            "lssl.Recurrent", "lssl.Carry", "lssl.LocalOutput", "lssl.ChunkState", "lssl.FixUp", "lssl.ConvDirect",
            "tensor.Check", "tensor.HalfToFloat", "tensor.FloatToHalf",
        }));

    [TestCaseSource(nameof(Kernels))]
    public void CompilesToPtx(string kernel)
    {
        Assert.That(_ptx[kernel], Does.Contain(".entry"));
        Assert.That(_ptx[kernel], Does.Contain(".version 7.8"), "PTX ISA 7.8, the newest ptxas 11.8 takes");
    }

    [TestCaseSource(nameof(KernelsByArchitecture))]
    public void AssemblesWithoutLocalMemoryWithinTheRegisterBudget(string kernel, string arch)
    {
        var assembly = Assembly(kernel, arch);
        Assert.Multiple(() =>
        {
            Assert.That(assembly.StackFrameBytes, Is.Zero, $"local memory\n{assembly.Report}");
            Assert.That(assembly.SpillStoreBytes, Is.Zero, $"spill stores\n{assembly.Report}");
            Assert.That(assembly.SpillLoadBytes, Is.Zero, $"spill loads\n{assembly.Report}");
            Assert.That(assembly.Registers, Is.LessThanOrEqualTo(RegisterBudget), $"registers\n{assembly.Report}");
        });
        TestContext.Out.WriteLine($"{kernel} {arch}: {assembly.Registers} registers, {assembly.SharedBytes} bytes static shared memory");
    }

    [TestCaseSource(nameof(TensorCoreKernelsByArchitecture))]
    public void TensorCoreKernelsHoldHmmaInstructions(string kernel, string arch, string instruction) =>
        Assert.That(Assembly(kernel, arch).Sass, Does.Contain(instruction), "nvdisasm's listing");

    private static IEnumerable<TestCaseData> TensorCoreKernelsByArchitecture() =>
        from kernel in TensorCoreKernels
        from instruction in kernel.Value
        from arch in PtxCompiler.Architectures.Keys
        select new TestCaseData(kernel.Key, arch, instruction);

    private PtxAssembly Assembly(string kernel, string arch)
    {
        var assembler = Assembler();
        _assemblies ??= (from k in Kernels() from a in PtxCompiler.Architectures.Keys select (k, a))
            .ToDictionary(key => key, key => Task.Run(() => assembler.Assemble(_ptx[key.k], key.a)));
        return _assemblies[(kernel, arch)].GetAwaiter().GetResult();
    }

    private static PtxAssembler Assembler()
    {
        string ptxas = Environment.GetEnvironmentVariable("ENGINE_PTXAS") ?? "";
        if (ptxas.Length == 0) Assert.Ignore("ENGINE_PTXAS is not set (tools/ptxas/fetch-ptxas.sh prints the path to set it to)");
        return new PtxAssembler(ptxas);
    }
}

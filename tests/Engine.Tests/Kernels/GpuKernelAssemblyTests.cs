using Engine.Kernels.Common;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// Every GPU kernel of the catalog, under each configuration of <see cref="GpuKernelCatalog.Launches"/>, compiles to PTX as a launch
/// compiles it (the shape a constant) without a CUDA device, and NVIDIA's assembler (ptxas from CUDA 11.8, path in ENGINE_PTXAS;
/// tools/ptxas/fetch-ptxas.sh fetches it, CI sets it) turns it into machine code for sm_80 and sm_90 with no local memory (no
/// stack frame, no spills) in a register budget that keeps at least half of an SM's 2,048 threads resident at the launch's group
/// size (65,536 registers an SM). The launches that multiply on tensor cores hold HMMA instructions in nvdisasm's listing, and the state pass its L1 prefetch.
/// </summary>
[TestFixture]
public sealed class GpuKernelAssemblyTests
{
    /// <summary>Registers a thread may use: half an SM's threads resident in whole groups of <see cref="GpuRuntime.CudaGroupSize"/>.</summary>
    private static readonly int RegisterBudget = 65536 / (int.Max(1, 1024 / GpuRuntime.CudaGroupSize) * GpuRuntime.CudaGroupSize);

    /// <summary>nvdisasm's names of the tensor-core instructions: mma.m16n8k8 tf32 (<see cref="MmaTf32"/>) and mma.m16n8k16 f16 (<see cref="MmaF16"/>).</summary>
    private const string Tf32Hmma = "HMMA.1688.F32.TF32", F16Hmma = "HMMA.16816.F32";

    /// <summary>nvdisasm's name of <c>prefetch.global.L1</c>, with which the state pass asks for the next chunk's operands.</summary>
    private const string L1Prefetch = "CCTL.E.PF1";

    /// <summary>The launches whose chunk products run on tensor cores or that prefetch, and the instructions their SASS must hold.</summary>
    private static readonly Dictionary<string, string[]> InstructionsHeld = new()
    {
        ["gla.ChunkDeltas.per-head-tf32"] = [Tf32Hmma],
        ["gla.Output.per-head-tf32"] = [Tf32Hmma],
        ["gla.ChunkDeltas.per-key-fp16"] = [Tf32Hmma],
        ["gla.Output.per-key-fp16"] = [Tf32Hmma, F16Hmma],
        ["delta-rule.Prepare.qwen-tf32"] = [Tf32Hmma],
        ["delta-rule.Output.qwen-tf32"] = [Tf32Hmma],
        ["delta-rule.Prepare.per-head-fp16"] = [F16Hmma],
        ["delta-rule.Output.per-head-fp16"] = [Tf32Hmma, F16Hmma],
        ["delta-rule.StatePass.per-key"] = [L1Prefetch],
        ["delta-rule.StatePass.qwen-tf32"] = [L1Prefetch],
    };

    /// <summary>Each launch's PTX per architecture, as `engine ptx --arch` writes it.</summary>
    private readonly Dictionary<(string Launch, string Arch), string> _ptx = [];

    /// <summary>
    /// Each kernel's assembly per architecture, made once for the register and the instruction checks: all started by the first
    /// check and run side by side (ptxas keeps one core busy), each check waiting for its own.
    /// </summary>
    private Dictionary<(string Kernel, string Arch), Task<PtxAssembly>>? _assemblies;

    [OneTimeSetUp]
    public void Compile()
    {
        foreach (var (arch, architecture) in PtxCompiler.Architectures)
        {
            using var compiler = new PtxCompiler(architecture);
            foreach (var launch in GpuKernelCatalog.Launches) _ptx[(launch.Name, arch)] = compiler.Compile(launch);
        }
    }

    /// <summary>A filtered run starts every assembly too: they finish (and remove their folders) before the fixture ends. Each failure is its own check's.</summary>
    [OneTimeTearDown]
    public async Task AwaitAssemblies()
    {
        if (_assemblies is not null) await Task.WhenAll(_assemblies.Values.Cast<Task>()).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    private static IEnumerable<string> Launches() => GpuKernelCatalog.Launches.Select(l => l.Name);

    private static IEnumerable<TestCaseData> LaunchesByArchitecture() =>
        from launch in Launches()
        from arch in PtxCompiler.Architectures.Keys
        select new TestCaseData(launch, arch);

    [Test]
    public void TheCatalogHoldsEveryKernel() =>
        Assert.That(GpuKernelCatalog.All.Select(k => k.Name), Is.EquivalentTo(new[]
        {
            "gla.ChunkDeltas", "gla.StateScan", "gla.Output", "gla.Recurrent",
            "delta-rule.Prepare", "delta-rule.StatePass", "delta-rule.Output", "delta-rule.Recurrent",
            "lssl.Recurrent", "lssl.Carry", "lssl.LocalOutput", "lssl.ChunkState", "lssl.FixUp", "lssl.ConvDirect",
            "tensor.Check", "tensor.HalfToFloat", "tensor.FloatToHalf",
        }));

    [Test]
    public void EveryConfigurationOfAnOpLaunchesEveryKernelOfIt()
    {
        foreach (var configuration in GpuKernelCatalog.Launches.GroupBy(l => (l.Kernel.Op, l.Variant)))
            Assert.That(configuration.Select(l => l.Kernel), Is.EquivalentTo(GpuKernelCatalog.All.Where(k => k.Op == configuration.Key.Op)), configuration.Key.ToString());
        Assert.That(GpuKernelCatalog.All, Is.SubsetOf(GpuKernelCatalog.Launches.Select(l => l.Kernel)));
    }

    [TestCaseSource(nameof(LaunchesByArchitecture))]
    public void CompilesToPtxForTheArchitectureAsked(string launch, string arch)
    {
        Assert.That(_ptx[(launch, arch)], Does.Contain(".entry"));
        Assert.That(_ptx[(launch, arch)], Does.Contain(".version 7.8"), "PTX ISA 7.8, the newest ptxas 11.8 takes");
        Assert.That(_ptx[(launch, arch)].Split('\n').Where(line => line.StartsWith(".target ", StringComparison.Ordinal)), Is.EqualTo(new[] { $".target {arch}" }));
    }

    [TestCaseSource(nameof(LaunchesByArchitecture))]
    public void AssemblesWithoutLocalMemoryWithinTheRegisterBudget(string launch, string arch)
    {
        var assembly = Assembly(launch, arch);
        Assert.Multiple(() =>
        {
            Assert.That(assembly.StackFrameBytes, Is.Zero, $"local memory\n{assembly.Report}");
            Assert.That(assembly.SpillStoreBytes, Is.Zero, $"spill stores\n{assembly.Report}");
            Assert.That(assembly.SpillLoadBytes, Is.Zero, $"spill loads\n{assembly.Report}");
            Assert.That(assembly.Registers, Is.LessThanOrEqualTo(RegisterBudget), $"registers\n{assembly.Report}");
        });
        TestContext.Out.WriteLine($"{launch} {arch}: {assembly.Registers} registers, {assembly.SharedBytes} bytes static shared memory");
    }

    [TestCaseSource(nameof(InstructionsHeldByArchitecture))]
    public void LaunchesHoldTheirTensorCoreAndPrefetchInstructions(string launch, string arch, string instruction) =>
        Assert.That(Assembly(launch, arch).Sass, Does.Contain(instruction), "nvdisasm's listing");

    [TestCaseSource(nameof(Fp32LaunchesByArchitecture))]
    public void Fp32LaunchesHoldNoHmmaInstruction(string launch, string arch) =>
        Assert.That(Assembly(launch, arch).Sass, Does.Not.Contain("HMMA"), "nvdisasm's listing: the fp32 precision multiplies on the CUDA cores");

    private static IEnumerable<TestCaseData> InstructionsHeldByArchitecture() =>
        from launch in InstructionsHeld
        from instruction in launch.Value
        from arch in PtxCompiler.Architectures.Keys
        select new TestCaseData(launch.Key, arch, instruction);

    /// <summary>Launches without a tensor-core precision: their tensor-core branches must be gone once the shape is a constant.</summary>
    private static IEnumerable<TestCaseData> Fp32LaunchesByArchitecture() =>
        from launch in Launches()
        where !launch.Contains("tf32") && !launch.Contains("fp16")
        from arch in PtxCompiler.Architectures.Keys
        select new TestCaseData(launch, arch);

    private PtxAssembly Assembly(string launch, string arch)
    {
        var assembler = Assembler();
        _assemblies ??= (from l in Launches() from a in PtxCompiler.Architectures.Keys select (l, a))
            .ToDictionary(key => key, key => Task.Run(() => assembler.Assemble(_ptx[key], key.a)));
        return _assemblies[(launch, arch)].GetAwaiter().GetResult();
    }

    private static PtxAssembler Assembler()
    {
        string ptxas = Environment.GetEnvironmentVariable("ENGINE_PTXAS") ?? "";
        if (ptxas.Length == 0) Assert.Ignore("ENGINE_PTXAS is not set (tools/ptxas/fetch-ptxas.sh prints the path to set it to)");
        return new PtxAssembler(ptxas);
    }
}

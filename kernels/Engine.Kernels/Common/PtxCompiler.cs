using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>
/// Compiles the GPU kernels to PTX without a CUDA device, as ILGPU compiles them for a launch (O2, algorithms, the
/// CUDA group size). PTX ISA 7.8: the newest NVIDIA's CUDA 11.8 assembler takes, and enough for sm_90. Shapes are
/// kernel parameters here; a launch specializes them to constants.
/// </summary>
public sealed class PtxCompiler : IDisposable
{
    private readonly Context _context;
    private readonly PTXBackend _backend;

    public PtxCompiler(CudaArchitecture architecture)
    {
        Architecture = architecture;
        _context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2).EnableAlgorithms());
        _backend = new PTXBackend(_context, new CudaCapabilityContext(architecture), architecture, CudaInstructionSet.ISA_78, null);
    }

    public CudaArchitecture Architecture { get; }

    /// <summary>The architectures `engine ptx --arch` takes, by their ptxas names.</summary>
    public static IReadOnlyDictionary<string, CudaArchitecture> Architectures { get; } =
        new Dictionary<string, CudaArchitecture> { ["sm_80"] = CudaArchitecture.SM_80, ["sm_90"] = CudaArchitecture.SM_90 };

    public string Compile(GpuKernel kernel) =>
        ((PTXCompiledKernel)_backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Method),
            new KernelSpecialization(GpuRuntime.CudaGroupSize, null))).PTXAssembly;

    public void Dispose()
    {
        _backend.Dispose();
        _context.Dispose();
    }
}

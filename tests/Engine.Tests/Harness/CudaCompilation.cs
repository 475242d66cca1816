using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using NUnit.Framework;

namespace Engine.Tests.Harness;

/// <summary>No CUDA device is needed to compile for one: an op's GPU kernels become PTX for the H100 (sm_90).</summary>
internal static class CudaCompilation
{
    /// <summary>
    /// The public static methods of <paramref name="kernels"/> are exactly the named kernels, and each compiles
    /// (with 128 threads per group, as on CUDA) to PTX that uses no local memory.
    /// </summary>
    public static void AssertKernelsCompileWithoutLocalMemory(Type kernels, params string[] names)
    {
        using var context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2).EnableAlgorithms());
        var architecture = CudaArchitecture.SM_90;
        using var backend = new PTXBackend(context, new CudaCapabilityContext(architecture), architecture, CudaInstructionSet.ISA_80, null);
        var methods = kernels.GetMethods(BindingFlags.Public | BindingFlags.Static);
        Assert.That(methods.Select(m => m.Name), Is.EquivalentTo(names), $"the kernels of {kernels.Name}");
        foreach (var kernel in methods)
        {
            var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), new KernelSpecialization(128, null));
            Assert.That(compiled.PTXAssembly, Does.Contain(".entry"), kernel.Name);
            Assert.That(compiled.PTXAssembly, Does.Not.Contain(".local"), $"{kernel.Name} spills to local memory");
        }
    }
}

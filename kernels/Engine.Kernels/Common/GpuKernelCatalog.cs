using System.Reflection;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Kernels.Lssl;

namespace Engine.Kernels.Common;

/// <summary>A GPU kernel of an op: the method its launcher loads and <see cref="PtxCompiler"/> compiles.</summary>
public sealed record GpuKernel(string Op, MethodInfo Method)
{
    /// <summary>op.kernel, e.g. gla.Output.</summary>
    public string Name => $"{Op}.{Method.Name}";
}

/// <summary>Every GPU kernel in one place: an op's kernels are the public static methods of its kernel class.</summary>
public static class GpuKernelCatalog
{
    public static IReadOnlyList<GpuKernel> All { get; } =
        [.. Of("gla", typeof(GlaGpuKernels)), .. Of("delta-rule", typeof(DeltaRuleGpuKernels)), .. Of("lssl", typeof(LsslGpuKernels)), .. Of("tensor", typeof(TensorGpuKernels))];

    /// <summary>The catalog's name of a kernel method (op.kernel), or the method's own name for one outside the catalog.</summary>
    public static string NameOf(MethodInfo method) => All.FirstOrDefault(k => k.Method == method)?.Name ?? method.Name;

    private static IEnumerable<GpuKernel> Of(string op, Type kernels) =>
        kernels.GetMethods(BindingFlags.Public | BindingFlags.Static).OrderBy(m => m.MetadataToken).Select(m => new GpuKernel(op, m));
}

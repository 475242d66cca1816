using System.Reflection;
using ILGPU.Runtime;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Kernels.Lssl;

namespace Engine.Kernels.Common;

/// <summary>A GPU kernel of an op: the method its launcher loads.</summary>
public sealed record GpuKernel(string Op, MethodInfo Method)
{
    /// <summary>op.kernel, e.g. gla.Output.</summary>
    public string Name => $"{Op}.{Method.Name}";
}

/// <summary>
/// A kernel as a CUDA launch compiles it: its <see cref="SpecializedValue{T}"/> shape bound to one configuration of its op, so
/// every dim, gate form and precision is a constant in the code (<see cref="PtxCompiler"/>).
/// </summary>
public sealed record GpuKernelLaunch(GpuKernel Kernel, string Variant, object SpecializedShape)
{
    /// <summary>op.kernel.variant, e.g. gla.Output.per-head-tf32.</summary>
    public string Name => $"{Kernel.Name}.{Variant}";
}

/// <summary>Every GPU kernel in one place: an op's kernels are the public static methods of its kernel class.</summary>
public static class GpuKernelCatalog
{
    public static IReadOnlyList<GpuKernel> All { get; } =
        [.. Of("gla", typeof(GlaGpuKernels)), .. Of("delta-rule", typeof(DeltaRuleGpuKernels)), .. Of("lssl", typeof(LsslGpuKernels)), .. Of("tensor", typeof(TensorGpuKernels))];

    /// <summary>
    /// Every kernel of an op under each configuration the machine-code checks cover, shaped as a CUDA launch shapes it (groups of
    /// <see cref="GpuRuntime.CudaGroupSize"/>, <see cref="GpuRuntime.MaxSharedMemoryPerGroup"/>): the attention ops at H = 8,
    /// K = V = 128 with their default chunk sizes, each gate form's code and each precision's products.
    /// </summary>
    public static IReadOnlyList<GpuKernelLaunch> Launches { get; } = BuildLaunches();

    /// <summary>The catalog's name of a kernel method (op.kernel), or the method's own name for one outside the catalog.</summary>
    public static string NameOf(MethodInfo method) => All.FirstOrDefault(k => k.Method == method)?.Name ?? method.Name;

    private static IEnumerable<GpuKernel> Of(string op, Type kernels) =>
        kernels.GetMethods(BindingFlags.Public | BindingFlags.Static).OrderBy(m => m.MetadataToken).Select(m => new GpuKernel(op, m));

    private static List<GpuKernelLaunch> BuildLaunches()
    {
        const int group = GpuRuntime.CudaGroupSize;
        var heads = new HeadLayout(8, 8, 8, 128, 128);
        float scale = 1f / MathF.Sqrt(heads.KeyDim);
        var launches = new List<GpuKernelLaunch>();
        void Add<TShape>(string op, string variant, TShape shape) where TShape : unmanaged, IEquatable<TShape> =>
            launches.AddRange(All.Where(k => k.Op == op).Select(k => new GpuKernelLaunch(k, variant, SpecializedValue.New(shape))));

        GlaGpuShape Gla(GateKind gate, GpuPrecision precision) =>
            GlaGpu.Shape(new GlaConfig(heads, gate, scale, 64, gpuPrecision: precision), group, GpuRuntime.MaxSharedMemoryPerGroup);
        Add("gla", "per-key", Gla(GateKind.PerKey, GpuPrecision.Fp32));
        Add("gla", "per-head-tf32", Gla(GateKind.PerHead, GpuPrecision.Tf32));
        Add("gla", "per-key-fp16", Gla(GateKind.PerKey, GpuPrecision.Fp16));

        Add("delta-rule", "per-key", new DeltaRuleGpuShape(new DeltaRuleConfig(heads, GateKind.PerKey, scale, 32, false), group));
        // ONNX Runtime's GatedDeltaNet as Qwen3.5 exports it: a per-head gate, q and k normalized in the kernel, the state value-major.
        Add("delta-rule", "qwen-tf32", new DeltaRuleGpuShape(new DeltaRuleConfig(heads, GateKind.PerHead, scale, 32, true,
            stateLayout: StateLayout.ValueMajor, gpuPrecision: GpuPrecision.Tf32), group));
        Add("delta-rule", "per-head-fp16", new DeltaRuleGpuShape(new DeltaRuleConfig(heads, GateKind.PerHead, scale, 32, false, gpuPrecision: GpuPrecision.Fp16), group));

        Add("lssl", "diagonal", new LsslGpuShape(new LsslConfig(1024, 64, LsslStateMatrix.Diagonal, 64), group));
        Add("lssl", "dense", new LsslGpuShape(new LsslConfig(1024, 64, LsslStateMatrix.DensePerChannel, 64), group));

        Add("tensor", "finite", new TensorGpuShape(ValueRule.Finite));
        Add("tensor", "log-gate", new TensorGpuShape(ValueRule.LogGate));
        Add("tensor", "half-range", new TensorGpuShape(ValueRule.HalfRange));
        return launches;
    }
}

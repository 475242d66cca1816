using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using IlgpuHalf = ILGPU.Half;

namespace Engine.Kernels.Common;

/// <summary>What <see cref="TensorGpuKernels.Check"/> requires of every value.</summary>
public enum ValueRule
{
    /// <summary>Finite.</summary>
    Finite,
    /// <summary>A log gate: finite and &lt;= 0.</summary>
    LogGate,
    /// <summary>Finite and inside float16's range (magnitude below <see cref="HalfRange.Overflow"/>).</summary>
    HalfRange,
}

/// <summary>Compile-time parameters of the tensor kernels: the rule a check applies.</summary>
public readonly record struct TensorGpuShape(ValueRule Rule);

/// <summary>
/// Run-time parameters of the tensor kernels: a tensor's fp32 view (and its float16 one for the conversions), its
/// element count, and the check word a check writes: <see cref="FirstBad"/>[<see cref="Slot"/>] becomes the smallest
/// flat index whose value breaks the rule (the word starts at <see cref="GpuChecks.None"/>).
/// </summary>
public struct TensorGpuArgs
{
    public ArrayView<float> Floats;
    public ArrayView<IlgpuHalf> Halves;
    public ArrayView<uint> FirstBad;
    public int Slot;
    public int Count;
}

/// <summary>Element-wise kernels over one tensor on the device, one thread per element: value checks and float16 conversions.</summary>
public static class TensorGpuKernels
{
    /// <summary>Records the first flat index whose value breaks <see cref="TensorGpuShape.Rule"/>.</summary>
    public static void Check(TensorGpuArgs args, SpecializedValue<TensorGpuShape> shape)
    {
        int i = Grid.GlobalIndex.X;
        if (i >= args.Count) return;
        float x = args.Floats[i];
        bool ok = shape.Value.Rule switch
        {
            ValueRule.LogGate => x <= 0f && x > float.NegativeInfinity,
            ValueRule.HalfRange => XMath.Abs(x) < HalfRange.Overflow,
            _ => x - x == 0f,
        };
        if (!ok) Atomic.Min(ref args.FirstBad[args.Slot], (uint)i);
    }

    /// <summary>Floats[i] = Halves[i].</summary>
    public static void HalfToFloat(TensorGpuArgs args, SpecializedValue<TensorGpuShape> shape)
    {
        int i = Grid.GlobalIndex.X;
        if (i < args.Count) args.Floats[i] = args.Halves[i];
    }

    /// <summary>Halves[i] = Floats[i] (rounded to nearest; checked against float16's range first).</summary>
    public static void FloatToHalf(TensorGpuArgs args, SpecializedValue<TensorGpuShape> shape)
    {
        int i = Grid.GlobalIndex.X;
        if (i < args.Count) args.Halves[i] = (IlgpuHalf)args.Floats[i];
    }
}

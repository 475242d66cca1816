using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Engine.Kernels.Common;

/// <summary>
/// The vector width a CPU kernel is written for. <see cref="Native"/> is AVX-512 where the machine has it and
/// 256-bit vectors otherwise: Vector512 code on a machine without AVX-512 runs as emulated pairs of halves and
/// spills the register tiles, so the products choose their tiling by width. Both widths run on any machine
/// (the other one more slowly), which lets the tests cover both everywhere.
/// </summary>
public enum SimdWidth
{
    Native,
    W256,
    W512,
}

public static class SimdWidths
{
    /// <summary>The width the machine runs natively: W512 with AVX-512, else W256.</summary>
    public static SimdWidth Machine => Wide ? SimdWidth.W512 : SimdWidth.W256;

    /// <summary>Whether the machine has AVX-512: a constant to the JIT, so a branch on it costs nothing.</summary>
    public static bool Wide
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => Vector512.IsHardwareAccelerated;
    }

    /// <summary>Native resolved to the machine's width; the others as they are.</summary>
    public static SimdWidth Resolve(this SimdWidth width) => width == SimdWidth.Native ? Machine : width;
}

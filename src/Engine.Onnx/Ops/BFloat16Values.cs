using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine.Onnx.Ops;

/// <summary>
/// bfloat16 tensors of a node as the kernels take them: a bfloat16 is the upper half of a float32's bits, so widening is
/// exact; narrowing rounds to nearest even. bfloat16 has float32's range, except that values within half a unit of its
/// largest finite value (0x7F7F) or past it round to infinity: such results are refused, never written.
/// </summary>
internal static class BFloat16Values
{
    /// <summary>Smallest float32 bits (magnitude) that round to infinity in bfloat16.</summary>
    private const uint OverflowBits = 0x7F7F_8000;

    public static void ToSingle(ReadOnlySpan<ushort> bits, Span<float> values)
    {
        var wide = MemoryMarshal.Cast<float, uint>(values);
        int i = 0;
        for (; i + Vector256<ushort>.Count <= bits.Length; i += Vector256<ushort>.Count)
        {
            var (lower, upper) = Vector256.Widen(Vector256.Create(bits.Slice(i, Vector256<ushort>.Count)));
            (lower << 16).CopyTo(wide.Slice(i));
            (upper << 16).CopyTo(wide.Slice(i + Vector256<uint>.Count));
        }
        for (; i < bits.Length; i++) wide[i] = (uint)bits[i] << 16;
    }

    /// <summary>Rounds each value to bfloat16; <paramref name="name"/> names the tensor when one is not finite or too large.</summary>
    public static void FromSingle(ReadOnlySpan<float> values, Span<ushort> bits, string name)
    {
        var words = MemoryMarshal.Cast<float, uint>(values);
        var magnitude = Vector256.Create(0x7FFF_FFFFu);
        var overflow = Vector256.Create(OverflowBits);
        var half = Vector256.Create(0x7FFFu);
        int i = 0, n = Vector256<uint>.Count;
        for (; i + 2 * n <= words.Length; i += 2 * n)
        {
            var a = Vector256.Create(words.Slice(i, n));
            var b = Vector256.Create(words.Slice(i + n, n));
            if (Vector256.GreaterThanOrEqualAny(a & magnitude, overflow) || Vector256.GreaterThanOrEqualAny(b & magnitude, overflow)) break;
            var ra = (a + half + ((a >> 16) & Vector256<uint>.One)) >> 16;
            var rb = (b + half + ((b >> 16) & Vector256<uint>.One)) >> 16;
            Vector256.Narrow(ra, rb).CopyTo(bits.Slice(i));
        }
        for (; i < words.Length; i++)
        {
            uint w = words[i];
            if ((w & 0x7FFF_FFFFu) >= OverflowBits)
                throw new ArgumentException(float.IsFinite(values[i])
                    ? $"{name}: value {values[i]} at flat index {i} is outside bfloat16's range: it would be written as infinity"
                    : $"{name}: value {values[i]} at flat index {i} is not finite", name);
            bits[i] = (ushort)((w + 0x7FFFu + ((w >> 16) & 1u)) >> 16);
        }
    }
}

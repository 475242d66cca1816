using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Conv;

/// <summary>
/// The short convolution the delta rule's CPU kernels apply as they load rows (<see cref="ShortConvRows"/>), over rows that lie
/// flush against inaccessible pages: sequences shorter than the kernel's reach into the initial state (decode, a one- or
/// two-token prompt) read no row outside their own, checked against the formula act(bias + Σ_j taps[j] · x[p − (K − 1) + j])
/// with the positions before a sequence read from its initial state.
/// </summary>
[TestFixture]
public sealed unsafe class ShortConvRowsTests
{
    private const int Channels = 32, Width = 4;

    [TestCase(new[] { 0, 1 }, false)]
    [TestCase(new[] { 0, 1 }, true)]
    [TestCase(new[] { 0, 2, 3 }, false)]
    [TestCase(new[] { 0, 2, 3 }, true)]
    [TestCase(new[] { 0, 1, 6 }, true)]
    public void ShortSequencesReadOnlyTheirOwnRows(int[] offsets, bool flushEnd)
    {
        Assume.That(GuardedMemory.Supported, "guard pages need Linux");
        var sequences = SequenceLayout.Packed(offsets, offsets[^1]);
        int tokens = offsets[^1], carry = Width - 1;
        var data = new TestData(offsets.Length + (flushEnd ? 10 : 0));
        var weights = data.Normal(Channels * Width, 0.5);
        var taps = new float[Width * Channels];
        for (int c = 0; c < Channels; c++)
            for (int j = 0; j < Width; j++) taps[j * Channels + c] = weights[c * Width + j];
        var bias = data.Normal(Channels, 0.5);
        var initial = data.Normal((long)sequences.Count * Channels * carry);
        using var x = GuardedMemory.Of(data.Normal(tokens * Channels), flushEnd);
        var output = Numerics.NaNs(tokens * Channels);
        fixed (float* pw = weights, pt = taps, pb = bias, pi = initial, po = output)
        {
            // No tap-major taps where no sequence reaches past the initial state, as the delta rule's call gives none.
            var rows = new ShortConvRows(pw, sequences.MaxLength > carry ? pt : null, pb, pi, Channels, Width, silu: true, sequences);
            // Each sequence's rows of each 16-channel head, as the kernels load them.
            for (int n = 0; n < sequences.Count; n++)
                for (int h = 0; h < Channels / 16; h++)
                    rows.Load(po + (long)sequences.Start(n) * Channels + h * 16, Channels, 16, new HeadRows(x.Pointer, Channels, 16, h, sequences.Start(n)),
                        h * 16, sequences.Start(n), sequences.Length(n));
        }
        for (int n = 0; n < sequences.Count; n++)
            for (int p = 0; p < sequences.Length(n); p++)
                for (int c = 0; c < Channels; c++)
                {
                    double sum = bias[c];
                    for (int j = 0; j < Width; j++)
                    {
                        int at = p - carry + j;
                        double value = at >= 0 ? x.Span[(sequences.Start(n) + at) * Channels + c] : initial[(n * Channels + c) * carry + carry + at];
                        sum += weights[c * Width + j] * value;
                    }
                    double expected = sum / (1 + Math.Exp(-sum));
                    Assert.That(output[(sequences.Start(n) + p) * Channels + c], Is.EqualTo(expected).Within(1e-5 * (1 + Math.Abs(expected))), $"sequence {n}, position {p}, channel {c}");
                }
    }
}

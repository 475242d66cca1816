using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Every CPU attention kernel over inputs that lie flush against inaccessible pages, at their start and at their end, each
/// tensor in its own region: a kernel that reads one float outside the tensors it was given stops the process. Ragged
/// sequences (an empty one, one token, fewer tokens than a short convolution's reach, more than a chunk), head dims on
/// and off the 16-float padding, both modes; the results against the float64 reference on ordinary arrays.
/// </summary>
[TestFixture]
public sealed unsafe class GuardedInputsTests
{
    private const int Hq = 2, Hv = 4, ConvWidth = 4;
    private static readonly int[] Offsets = [0, 0, 1, 3, 40];

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var op in new[] { "DeltaRule", "DeltaRule+conv", "Gla", "Lightning" })
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                foreach (var (k, v) in new[] { (16, 16), (20, 12) })
                    foreach (bool flushEnd in new[] { false, true })
                        yield return new TestCaseData(op, mode, k, v, flushEnd).SetName($"GuardedInputs {op} {mode} K{k} V{v} {(flushEnd ? "flush end" : "flush start")}");
    }

    [TestCaseSource(nameof(Cases))]
    public void KernelsReadOnlyTheirInputs(string op, AttentionMode mode, int k, int v, bool flushEnd)
    {
        Assume.That(GuardedMemory.Supported, "guard pages need Linux");
        int n = Offsets[^1], sequences = Offsets.Length - 1;
        var data = new TestData(k + v + op.Length);
        bool conv = op.EndsWith("+conv");
        var q = data.Normal((long)n * Hq * k);
        var key = data.UnitRows((long)n * Hq, k);
        var value = data.Normal((long)n * Hv * v);
        var beta = data.Uniform((long)n * Hv, 0.1, 0.9);
        var g = data.LogGates((long)n * Hv * k, 0.5);
        var headGates = data.LogGates((long)n * Hv, 0.5);
        var initial = data.Normal((long)sequences * Hv * k * v, 0.5);
        int channels = 2 * Hq * k + Hv * v;
        var weight = data.Normal(channels * ConvWidth, 0.5);
        var convInitial = data.Normal((long)sequences * channels * (ConvWidth - 1), 0.5);

        float[] Run(EngineDevice device, Func<float[], ReadOnlySpan<float>> place)
        {
            var output = Numerics.NaNs((long)n * Hv * v);
            var final = Numerics.NaNs(initial.Length);
            var qs = new ReadOnlyTensorSpan<float>(place(q), [1, n, Hq, k], []);
            var ks = new ReadOnlyTensorSpan<float>(place(key), [1, n, Hq, k], []);
            var vs = new ReadOnlyTensorSpan<float>(place(value), [1, n, Hv, v], []);
            var gs = new ReadOnlyTensorSpan<float>(place(g), [1, n, Hv, k], []);
            var os = new TensorSpan<float>(output, [1, n, Hv, v], []);
            var init = new ReadOnlyTensorSpan<float>(place(initial), [sequences, Hv, k, v], []);
            var fin = new TensorSpan<float>(final, [sequences, Hv, k, v], []);
            switch (op)
            {
                case "Gla":
                    Engine.Gla.Forward<float>(device, qs, ks, vs, gs, os, init, fin, Offsets, new GlaOptions { Mode = mode, ChunkSize = 16 });
                    break;
                case "Lightning":
                    Engine.Lightning.Forward<float>(device, qs, ks, vs, os, init, fin, Offsets, new LightningOptions { Mode = mode, BlockSize = 16 });
                    break;
                default:
                    var options = new DeltaRuleOptions { Mode = mode, ChunkSize = 16, QkL2Norm = true };
                    if (conv) options = options with
                    {
                        Convolution = new ShortConvolution { Weight = weight, Width = ConvWidth, InitialState = convInitial, Silu = true },
                    };
                    Engine.DeltaRule.Forward<float>(device, qs, ks, vs, new ReadOnlyTensorSpan<float>(place(beta), [1, n, Hv], []),
                        new ReadOnlyTensorSpan<float>(place(headGates), [1, n, Hv], []), os, init, fin, Offsets, options);
                    break;
            }
            return [.. output, .. final];
        }

        var expected = Run(TestDevices.Reference, x => x);
        var regions = new List<GuardedMemory>();
        try
        {
            var actual = Run(TestDevices.Get(TestBackend.Cpu), x =>
            {
                var region = GuardedMemory.Of(x, flushEnd);
                regions.Add(region);
                return region.Span;
            });
            Assert.That(Numerics.RelativeRms(actual, TestData.ToDouble(expected)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
        }
        finally
        {
            foreach (var region in regions) region.Dispose();
        }
    }
}

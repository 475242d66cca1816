using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// The intra-chunk scores of both decay forms against plain float64 loops: A_ij = Σ_c x_ic k_jc exp(b_ic − b_jc) for
/// j <= i, zero right of the diagonal to the end of the row's 16-row block (or of the chunk); and a key that is not
/// finite reaches no score of an earlier row (the later keys' products are masked, never multiplied by zero).
/// </summary>
[TestFixture]
public sealed unsafe class ChunkDecayScoresTests
{
    private const int KeyDim = 20, KeyDimPadded = 32;

    private static IEnumerable<TestCaseData> Cases() =>
        from perKey in new[] { false, true }
        from shape in new[] { (16, 16), (32, 7), (64, 40), (64, 64) }
        select new TestCaseData(perKey, shape.Item1, shape.Item2).SetArgDisplayNames(perKey ? "per key" : "per head", $"C{shape.Item1}", $"len {shape.Item2}");

    [TestCaseSource(nameof(Cases))]
    public void ScoresMatchPlainLoopsAndIgnoreLaterKeys(bool perKey, int chunk, int len)
    {
        var data = new TestData(chunk * 100 + len + (perKey ? 1 : 0));
        int gatesPerRow = perKey ? KeyDim : 1, lda = KeyDimPadded + chunk, blocks = HeadLayout.RoundUp16(len) / 16;
        var x = Padded(data.Normal(len * KeyDim), chunk);
        var keys = Padded(data.Normal(len * KeyDim), chunk);
        var g = data.LogGates(len * gatesPerRow, 1);
        var expected = Expected(x, keys, g, gatesPerRow, len);

        using var scratch = new NativeScratch(1 << 20);
        var carver = new ScratchCarver(scratch.Base);
        var keyDecay = perKey ? new PerKeyChunkDecay(ref carver, KeyDimPadded, chunk) : default;
        var headDecay = perKey ? default : new ScalarChunkDecay(ref carver, KeyDimPadded, chunk, gated: true);

        float[] Scores(float[] k)
        {
            var a = Numerics.NaNs(chunk * lda);
            fixed (float* px = x, pk = k, pg = g, pa = a)
            {
                if (perKey) Assert.That(keyDecay.Prepare(pg, KeyDim, KeyDim, pk, len));
                else
                {
                    headDecay.TransposeKeys(pk, len);
                    Assert.That(headDecay.Prepare(pg, 1, pk, len));
                }
                for (int s = 0; s < blocks; s++)
                    if (perKey) keyDecay.Scores(px, pk, s, len, pa, lda);
                    else headDecay.Scores(px, s, len, pa + KeyDimPadded, lda);
            }
            return a;
        }

        var clean = Scores(keys);
        var lower = new List<float>();
        var lowerExpected = new List<double>();
        for (int i = 0; i < len; i++)
        {
            int blockEnd = Math.Min((i / 16 + 1) * 16, len);
            for (int j = 0; j <= i; j++)
            {
                lower.Add(clean[i * lda + KeyDimPadded + j]);
                lowerExpected.Add(expected[i * len + j]);
            }
            for (int j = i + 1; j < blockEnd; j++)
                Assert.That(clean[i * lda + KeyDimPadded + j], Is.Zero, $"A[{i}, {j}], right of the diagonal");
        }
        Assert.That(Numerics.RelativeRms(lower.ToArray(), lowerExpected.ToArray()), Is.LessThanOrEqualTo(1e-6));

        foreach (int fault in new[] { 0, len / 2, len - 1 }.Distinct())
        {
            var faulted = (float[])keys.Clone();
            faulted[fault * KeyDimPadded + 3] = float.NaN;
            var a = Scores(faulted);
            for (int i = 0; i < fault; i++)
            {
                int blockEnd = Math.Min((i / 16 + 1) * 16, len);
                for (int j = 0; j < blockEnd; j++)
                    Assert.That(a[i * lda + KeyDimPadded + j], Is.EqualTo(clean[i * lda + KeyDimPadded + j]),
                        $"A[{i}, {j}] with key {fault} not finite");
            }
        }
    }

    /// <summary>Rows of KeyDim floats as [chunk × KeyDimPadded], zero padded (rows up to the chunk's end too).</summary>
    private static float[] Padded(float[] rows, int chunk)
    {
        var p = new float[chunk * KeyDimPadded];
        for (int i = 0; i < rows.Length / KeyDim; i++) Array.Copy(rows, i * KeyDim, p, i * KeyDimPadded, KeyDim);
        return p;
    }

    private static double[] Expected(float[] x, float[] keys, float[] g, int gatesPerRow, int len)
    {
        var b = new double[len * KeyDim];
        for (int i = 0; i < len; i++)
            for (int c = 0; c < KeyDim; c++)
                b[i * KeyDim + c] = (i > 0 ? b[(i - 1) * KeyDim + c] : 0) + g[i * gatesPerRow + (gatesPerRow == 1 ? 0 : c)];
        var a = new double[len * len];
        for (int i = 0; i < len; i++)
            for (int j = 0; j <= i; j++)
                for (int c = 0; c < KeyDim; c++)
                    a[i * len + j] += (double)x[i * KeyDimPadded + c] * keys[j * KeyDimPadded + c] * Math.Exp(b[i * KeyDim + c] - b[j * KeyDim + c]);
        return a;
    }
}

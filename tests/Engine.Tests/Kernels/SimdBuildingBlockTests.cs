using System.Runtime.Intrinsics;
using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>The CPU building blocks against plain loops.</summary>
[TestFixture]
public sealed unsafe class SimdBuildingBlockTests
{
    /// <summary>Both tilings run on any machine (the one the machine lacks emulated), so both are checked everywhere.</summary>
    private static readonly SimdWidth[] Widths = [SimdWidth.W256, SimdWidth.W512];

    // m covers each way the 256-bit tiling splits rows (6-row, 4-row and single-row tiles).
    [TestCase(1, 1, 16, false)]
    [TestCase(2, 9, 16, true)]
    [TestCase(4, 5, 32, false)]
    [TestCase(5, 3, 16, true)]
    [TestCase(8, 128, 32, false)]
    [TestCase(10, 16, 64, true)]
    [TestCase(13, 7, 48, true)]
    [TestCase(14, 33, 16, false)]
    [TestCase(16, 128, 128, true)]
    [TestCase(32, 128, 128, false)]
    [TestCase(64, 64, 128, true)]
    [TestCase(3, 0, 16, true)]
    public void ProductsMatchPlainLoops(int m, int kd, int n, bool accumulate)
    {
        foreach (var width in Widths) ProductsMatchPlainLoops(m, kd, n, accumulate, width);
    }

    private static void ProductsMatchPlainLoops(int m, int kd, int n, bool accumulate, SimdWidth width)
    {
        var data = new TestData(m * 1000 + kd * 10 + n);
        var a = data.Normal(m * kd + 1);
        var at = new float[kd * m + 1];
        for (int i = 0; i < m; i++) for (int p = 0; p < kd; p++) at[p * m + i] = a[i * kd + p];
        var b = data.Normal(kd * n + 1);
        var c0 = data.Normal(m * n);
        var expected = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = accumulate ? c0[i * n + j] : 0;
                for (int p = 0; p < kd; p++) sum += (double)a[i * kd + p] * b[p * n + j];
                expected[i * n + j] = sum;
            }
        var nn = accumulate ? (float[])c0.Clone() : Numerics.NaNs(m * n);
        var tn = accumulate ? (float[])c0.Clone() : Numerics.NaNs(m * n);
        fixed (float* pa = a, pat = at, pb = b, pnn = nn, ptn = tn)
        {
            SimdGemm.Multiply(pa, kd, pb, n, pnn, n, m, kd, n, accumulate, width);
            SimdGemm.MultiplyTransposedA(pat, m, pb, n, ptn, n, m, kd, n, accumulate, width);
        }
        Assert.That(Numerics.RelativeRms(nn, expected), Is.LessThanOrEqualTo(1e-6), $"{width}");
        Assert.That(Numerics.RelativeRms(tn, expected), Is.LessThanOrEqualTo(1e-6), $"{width} transposed");
    }

    [TestCase(1, 0, 16, false)]
    [TestCase(13, 5, 32, true)]
    [TestCase(16, 128, 128, false)]
    [TestCase(32, 128, 128, true)]
    [TestCase(64, 128, 128, false)]
    [TestCase(37, 128, 48, true)]
    public void CausalProductReadsEachRowUpToItsEndOnly(int m, int kd0, int n, bool accumulate)
    {
        foreach (var width in Widths) CausalProductReadsEachRowUpToItsEndOnly(m, kd0, n, accumulate, width);
    }

    /// <summary>
    /// Row i of A ends at column kd0 + i and what lies beyond is NaN; with the rows of B beyond row r's end NaN too
    /// (r = m − 1: none), rows 0..r of C must still be the dense product of the rows up to their ends.
    /// </summary>
    private static void CausalProductReadsEachRowUpToItsEndOnly(int m, int kd0, int n, bool accumulate, SimdWidth width)
    {
        var data = new TestData(m * 100 + kd0 + n);
        int kd = kd0 + m;
        var a = data.Normal(m * kd);
        for (int i = 0; i < m; i++) for (int p = kd0 + i + 1; p < kd; p++) a[i * kd + p] = float.NaN;
        var b = data.Normal(kd * n);
        var c0 = data.Normal(m * n);
        var expected = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = accumulate ? c0[i * n + j] : 0;
                for (int p = 0; p <= kd0 + i; p++) sum += (double)a[i * kd + p] * b[p * n + j];
                expected[i * n + j] = sum;
            }
        for (int r = 0; r < m; r++)
        {
            var poisoned = (float[])b.Clone();
            Array.Fill(poisoned, float.NaN, (kd0 + r + 1) * n, (m - 1 - r) * n);
            var c = accumulate ? (float[])c0.Clone() : Numerics.NaNs(m * n);
            fixed (float* pa = a, pb = poisoned, pc = c) SimdGemm.MultiplyCausal(pa, kd, pb, n, pc, n, m, kd0, n, accumulate, width);
            Assert.That(Numerics.RelativeRms(c.AsSpan(0, (r + 1) * n), expected.AsSpan(0, (r + 1) * n)), Is.LessThanOrEqualTo(1e-6),
                $"{width}: rows 0..{r}, rows of B from {kd0 + r + 1} on not finite");
        }
    }

    [Test]
    public void ProductWidthMustBeWholeVectors()
    {
        var x = new float[64];
        Assert.Throws<ArgumentException>(() => { fixed (float* p = x) SimdGemm.Multiply(p, 1, p, 1, p, 1, 1, 1, 8, false); });
    }

    [TestCase(16, 16)]
    [TestCase(48, 128)]
    [TestCase(64, 32)]
    public void TransposeMovesEveryElement(int rows, int cols)
    {
        var src = Enumerable.Range(0, rows * (cols + 16)).Select(i => (float)i).ToArray();
        var dst = Numerics.NaNs(cols * (rows + 16));
        fixed (float* ps = src, pd = dst) SimdOps.Transpose(ps, cols + 16, pd, rows + 16, rows, cols);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                Assert.That(dst[c * (rows + 16) + r], Is.EqualTo(src[r * (cols + 16) + c]), $"({r}, {c})");
    }

    [Test]
    public void ExpOfNonPositiveArgumentsIsAccurateAndFlushesBelowTheNormalRange()
    {
        var x = Enumerable.Range(0, 4096).Select(i => -i * (100f / 4096)).Append(0f).Append(-1e-30f).Append(-87.3f).Append(-88f).Append(-1e6f).ToArray();
        Array.Resize(ref x, (x.Length + 15) / 16 * 16);
        var y = new float[x.Length];
        fixed (float* px = x, py = y)
            for (int i = 0; i < x.Length; i += 16) SimdMath.ExpNonPositive(Vector512.Load(px + i)).Store(py + i);
        for (int i = 0; i < x.Length; i++)
        {
            double e = Math.Exp(x[i]);
            if (x[i] < -87.3f) Assert.That(y[i], Is.Zero, $"exp({x[i]})");
            else Assert.That(Math.Abs(y[i] - e), Is.LessThanOrEqualTo(5e-7 * e), $"exp({x[i]})");
        }
    }

    /// <summary>
    /// The decay's two parts against the double formula, both forms: near 1 the near part keeps e^x − 1's digits (where
    /// exp(x) − 1 in fp32 loses them all) and the far part is 0; below 1/2 the near part is −1 and the far part keeps e^x's
    /// relative precision down to the smallest values (where e^x − 1 alone rounds to −1).
    /// </summary>
    [Test]
    public void DecayPartsKeepTheirDigitsAtBothEnds()
    {
        var x = Enumerable.Range(0, 4096).Select(i => -i * (100f / 4096))
            .Concat([0f, -1e-30f, -1e-10f, -3e-8f, -1e-5f, -0.3499f, -0.35f, -0.3501f, -0.6931471f, -0.6931472f, -16.7f, -17.4f, -19f, -80f,
                -87.3f, -88f, -1e6f, -3.4e38f]).ToArray();
        Array.Resize(ref x, (x.Length + 15) / 16 * 16);
        float[] near = new float[x.Length], far = new float[x.Length];
        fixed (float* px = x, pn = near, pf = far)
            for (int i = 0; i < x.Length; i += 16)
            {
                SimdMath.DecayParts(Vector512.Load(px + i), out var f).Store(pn + i);
                f.Store(pf + i);
            }
        for (int i = 0; i < x.Length; i++)
        {
            double e = Math.Exp(x[i]);
            foreach (var (n, f, form) in new[] { (near[i], far[i], "vector"), (SimdMath.DecayNear(x[i]), SimdMath.DecayFar(x[i]), "scalar") })
            {
                if (e >= 0.5000001)
                {
                    double m = Math.Abs(x[i]) < 1e-3 ? x[i] * (1 + x[i] / 2.0 * (1 + x[i] / 3.0)) : e - 1;
                    Assert.That(Math.Abs(n - m), Is.LessThanOrEqualTo(3 * Math.Max(Math.Abs(m), 1e-7) * 6e-8), $"{form} near part of e^{x[i]}");
                    Assert.That(f, Is.Zero, $"{form} far part of e^{x[i]}");
                }
                else if (e <= 0.4999999)
                {
                    Assert.That(n, Is.EqualTo(-1f), $"{form} near part of e^{x[i]}");
                    // Zero past exp's floor, -87.3 (the vector form) or fp32's smallest subnormal (the scalar one).
                    Assert.That(Math.Abs(f - e), Is.LessThanOrEqualTo(x[i] < -87.3f ? Math.Exp(-87.3) : 5e-7 * e), $"{form} far part of e^{x[i]}");
                }
                Assert.That(Math.Abs(1.0 + n + f - e), Is.LessThanOrEqualTo(1.2e-7), $"{form} 1 + near + far against e^{x[i]}");
            }
        }
    }

    // Counts cover the four-vector steps, single vectors after them and scalar tails.
    [TestCase(0)]
    [TestCase(5)]
    [TestCase(16)]
    [TestCase(64)]
    [TestCase(93)]
    [TestCase(200)]
    public void RowSigmoidAndSiluMatchTheFormulaAndTheVectorForm(int count)
    {
        var data = new TestData(count + 7);
        var x = data.Normal(count).Select(v => v * 12f).ToArray();
        if (count >= 5) (x[0], x[1], x[2], x[3], x[4]) = (0f, -90f, 90f, -1e6f, 1e6f);
        foreach (bool silu in new[] { false, true })
        {
            var y = Numerics.NaNs(count);
            var inPlace = (float[])x.Clone();
            fixed (float* px = x, py = y, pi = inPlace)
            {
                SimdMath.Sigmoid(px, py, count, silu);
                SimdMath.Sigmoid(pi, pi, count, silu);
                for (int i = 0; i + 16 <= count; i += 16)
                {
                    var v = Vector512.Load(px + i);
                    var one = silu ? SimdMath.Silu(v) : SimdMath.Sigmoid(v);
                    for (int l = 0; l < 16; l++) Assert.That(py[i + l], Is.EqualTo(one[l]), $"silu {silu}, element {i + l}: the vector form");
                }
            }
            for (int i = 0; i < count; i++)
            {
                double s = 1 / (1 + Math.Exp(-(double)x[i])), expected = silu ? x[i] * s : s;
                Assert.That(y[i], Is.EqualTo(expected).Within(1e-6 * Math.Max(1, Math.Abs(expected))), $"silu {silu}, act({x[i]})");
                Assert.That(inPlace[i], Is.EqualTo(y[i]), $"silu {silu}, element {i} in place");
            }
        }
    }

    /// <summary>Every position of the four-vector blocks, the single vectors after them and the scalar tail is read.</summary>
    [Test]
    public void LogGateCheckFindsAnInvalidGateAtEveryPosition()
    {
        foreach (float bad in new[] { 1e-30f, float.NaN, float.NegativeInfinity, float.PositiveInfinity })
            for (int n = 1; n <= 150; n++)
            {
                var gates = Enumerable.Range(0, n).Select(i => i % 3 == 0 ? 0f : -0.1f * i).ToArray();
                Assert.That(LogGates.AllValid(gates), Is.True, $"{n} valid gates, zeros among them");
                for (int i = 0; i < n; i++)
                {
                    var x = (float[])gates.Clone();
                    x[i] = bad;
                    if (LogGates.AllValid(x)) Assert.Fail($"{bad} at {i} of {n} passed");
                }
            }
    }

    // vp = 48: single-vector slices only at 512 bits, one four-vector slice and two single ones at 256 bits.
    [TestCase(128, 128, 1)]
    [TestCase(7, 48, 0)]
    [TestCase(33, 80, 1)]
    public void RecurrentStepMatchesPlainLoopsAtBothWidths(int kd, int vp, int decayStride)
    {
        RecurrentStep<Lanes256>(kd, vp, decayStride);
        RecurrentStep<Lanes512>(kd, vp, decayStride);
    }

    private static void RecurrentStep<TV>(int kd, int vp, int decayStride) where TV : unmanaged, ILanes<TV>
    {
        var data = new TestData(kd * 1000 + vp + decayStride);
        var src = data.Normal(kd * vp);
        var x = data.Normal(vp);
        // Gates on both sides of the parts' split at e^g = 1/2, some decays far below fp32's spacing near 1.
        var gates = data.Uniform(kd, -30.0, 0.0);
        float[] near = Array.ConvertAll(gates, SimdMath.DecayNear), far = Array.ConvertAll(gates, SimdMath.DecayFar);
        var k = data.Normal(kd);
        var q = data.Normal(kd);
        var s = Numerics.NaNs(kd * vp);
        var acc = Numerics.NaNs(vp);
        var read = Numerics.NaNs(vp);
        var expectedS = new double[kd * vp];
        var expectedAcc = new double[vp];
        for (int c = 0; c < kd; c++)
            for (int j = 0; j < vp; j++)
            {
                expectedS[c * vp + j] = Math.Exp(gates[c * decayStride]) * src[c * vp + j] + (double)k[c] * x[j];
                expectedAcc[j] += q[c] * expectedS[c * vp + j];
            }
        fixed (float* ps = src, px = x, pn = near, pf = far, pk = k, pq = q, pst = s, pa = acc, pr = read)
        {
            RecurrentRows.UpdateAndRead<TV>(ps, pst, vp, kd, px, pn, pf, decayStride, pk, pq, pa);
            RecurrentRows.Read<TV>(pst, vp, kd, pq, pr);
        }
        Assert.That(Numerics.RelativeRms(s, expectedS), Is.LessThanOrEqualTo(1e-6), $"{typeof(TV).Name} state");
        Assert.That(Numerics.RelativeRms(acc, expectedAcc), Is.LessThanOrEqualTo(1e-6), $"{typeof(TV).Name} readout");
        Assert.That(Numerics.RelativeRms(read, expectedAcc), Is.LessThanOrEqualTo(1e-6), $"{typeof(TV).Name} read");
    }

    /// <summary>Column j of Count rows of n floats, moved into lanes by shuffles, at both widths: lane i holds row i's float j.</summary>
    [TestCase(1)]
    [TestCase(3)]
    [TestCase(4)]
    [TestCase(7)]
    [TestCase(16)]
    [TestCase(19)]
    public void ColumnsPutEachRowsFloatInItsLane(int n)
    {
        Columns<Lanes256>(n);
        Columns<Lanes512>(n);
    }

    private static void Columns<TV>(int n) where TV : unmanaged, ILanes<TV>
    {
        var rows = new float[TV.Count * n];
        for (int i = 0; i < TV.Count; i++) for (int j = 0; j < n; j++) rows[i * n + j] = 1000 * i + j + 0.5f;
        var lanes = Numerics.NaNs(TV.Count);
        for (int j = 0; j < n; j++)
        {
            fixed (float* pr = rows, pl = lanes) TV.Column(pr, n, j).Store(pl);
            Assert.That(lanes, Is.EqualTo(Enumerable.Range(0, TV.Count).Select(i => 1000f * i + j + 0.5f)), $"{typeof(TV).Name}, column {j} of {n}");
        }
    }

    /// <summary>
    /// A convolution row within the carried state's reach: taps on activation rows, on a column of a channels-first state
    /// and on no state, channels past the last whole vector, at both widths, against sums in double; both widths sum in
    /// one order, so they agree to the bit.
    /// </summary>
    [TestCase(37, 4)]
    [TestCase(16, 3)]
    [TestCase(5, 2)]
    public void ReachRowsMatchPlainSums(int width, int k)
    {
        var data = new TestData(width * 10 + k);
        const int Carry = 3;
        float[] weights = data.Normal(width * k), bias = data.Normal(width), state = data.Normal(width * Carry);
        float[][] rows = [data.Normal(width), data.Normal(width)];
        var expected = new double[width];
        var outputs = new[] { Numerics.NaNs(width), Numerics.NaNs(width) };
        fixed (float* pw = weights, pb = bias, ps = state, r0 = rows[0], r1 = rows[1], o256 = outputs[0], o512 = outputs[1])
        {
            // Tap 0 reads no state, tap 1 the state's column 2, the last two the rows (fewer taps: the last ones of these).
            var all = new[] { default, new ReachRows.Tap(ps, Carry, 2), ReachRows.Tap.Row(r0), ReachRows.Tap.Row(r1) }[(4 - k)..];
            var taps = stackalloc ReachRows.Tap[k];
            for (int j = 0; j < k; j++) taps[j] = all[j];
            for (int c = 0; c < width; c++)
            {
                expected[c] = bias[c];
                for (int j = 0; j < k; j++)
                    if (all[j].At != null) expected[c] += (double)weights[c * k + j] * all[j].At[c * all[j].Stride + all[j].Column];
            }
            ReachRows.Compute(o256, width, pb, pw, k, taps, SimdWidth.W256);
            ReachRows.Compute(o512, width, pb, pw, k, taps, SimdWidth.W512);
        }
        Assert.That(Numerics.RelativeRms(outputs[1], expected), Is.LessThanOrEqualTo(1e-6));
        Assert.That(outputs[0], Is.EqualTo(outputs[1]), "the two widths");
    }

    /// <summary>
    /// A row of the longest kernel taken, its weights' columns (rows of K floats, far longer than a vector) read lane by lane:
    /// they were moved into lanes by a shuffle of every vector between a column's first and last float (O(K²) per row).
    /// </summary>
    [Test]
    public void ARowOfTheLongestKernelMatchesItsSums()
    {
        const int Width = 48, K = CausalConvConfig.MaxKernelSize;
        var data = new TestData(Width * K);
        float[] weights = data.Normal(Width * K), row = data.Normal(Width), y = Numerics.NaNs(Width);
        var expected = new double[Width];
        for (int c = 0; c < Width; c++)
            for (int j = 0; j < K; j++) expected[c] += (double)weights[c * K + j] * row[c];
        fixed (float* pw = weights, pr = row, py = y)
        {
            var taps = stackalloc ReachRows.Tap[K];
            for (int j = 0; j < K; j++) taps[j] = ReachRows.Tap.Row(pr);
            ReachRows.Compute(py, Width, null, pw, K, taps);
        }
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }
}

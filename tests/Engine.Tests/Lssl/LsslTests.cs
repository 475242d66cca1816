using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;
using Engine.Tests.Harness;
using MathNet.Numerics.LinearAlgebra;
using NUnit.Framework;

namespace Engine.Tests.Lssl;

/// <summary>Builders and discretizations against independent float64 formulas, rejected inputs, decode, long sequences.</summary>
[TestFixture]
public sealed class LsslTests
{
    // ---- HiPPO and Δ builders ----------------------------------------------------------------------------

    /// <summary>LegS the way the HiPPO paper derives it: A = T M T⁻¹ with M_nk = −(2k+1) (n >= k) + n δ_nk, T = diag(√(2n+1)).</summary>
    private static Matrix<double> LegSFromDerivation(int n)
    {
        var m = Matrix<double>.Build.Dense(n, n, (i, k) => (i >= k ? -(2.0 * k + 1) : 0.0) + (i == k ? i : 0.0));
        var t = Matrix<double>.Build.DiagonalOfDiagonalArray(Enumerable.Range(0, n).Select(i => Math.Sqrt(2.0 * i + 1)).ToArray());
        return t * m * t.Inverse();
    }

    [TestCase(1)]
    [TestCase(4)]
    [TestCase(64)]
    public void HippoLegSMatchesItsDerivation(int n)
    {
        var (a, b) = Engine.Lssl.HippoLegS(n);
        Assert.That(a.Lengths.ToArray(), Is.EqualTo(new nint[] { n, n }));
        Assert.That(b.Lengths.ToArray(), Is.EqualTo(new nint[] { n }));
        var expected = LegSFromDerivation(n);
        for (int i = 0; i < n; i++)
        {
            Assert.That(b[i], Is.EqualTo((float)Math.Sqrt(2.0 * i + 1)), $"B[{i}]");
            for (int k = 0; k < n; k++)
                Assert.That((double)a[i, k], Is.EqualTo(expected[i, k]).Within(1e-6 * (1 + Math.Abs(expected[i, k]))), $"A[{i}, {k}]");
        }
        Assert.That(a[0, 0], Is.EqualTo(-1f));
    }

    [TestCase(1)]
    [TestCase(4)]
    [TestCase(64)]
    public void HippoLegTMatchesItsFormula(int n)
    {
        var (a, b) = Engine.Lssl.HippoLegT(n);
        for (int i = 0; i < n; i++)
        {
            Assert.That(b[i], Is.EqualTo((float)(0.5 * Math.Sqrt(2.0 * i + 1))), $"B[{i}]");
            for (int k = 0; k < n; k++)
            {
                // −½ √(2n+1) √(2k+1) · (1 on and below the diagonal, (−1)^(n−k) above it)
                double sign = i >= k ? 1 : Math.Pow(-1, i - k);
                double expected = -0.5 * Math.Sqrt(2.0 * i + 1) * Math.Sqrt(2.0 * k + 1) * sign;
                Assert.That((double)a[i, k], Is.EqualTo(expected).Within(1e-6 * (1 + Math.Abs(expected))), $"A[{i}, {k}]");
            }
        }
        if (n >= 2)
        {
            Assert.That(a[0, 1], Is.EqualTo((float)(0.5 * Math.Sqrt(3))), "above the diagonal, odd distance: positive");
            Assert.That(a[1, 0], Is.EqualTo((float)(-0.5 * Math.Sqrt(3))), "below the diagonal: negative");
        }
    }

    [Test]
    public void LogUniformDtIsSeededAndInRange()
    {
        var dt = Engine.Lssl.LogUniformDt(4000, seed: 7);
        var again = Engine.Lssl.LogUniformDt(4000, seed: 7);
        var other = Engine.Lssl.LogUniformDt(4000, seed: 8);
        Assert.That(dt.ToArray(), Is.EqualTo(again.ToArray()), "same seed, same values");
        Assert.That(dt.ToArray(), Is.Not.EqualTo(other.ToArray()));
        var logs = dt.ToArray().Select(x => Math.Log(x)).ToArray();
        Assert.That(dt.ToArray().Min(), Is.GreaterThanOrEqualTo(1e-3f * (1 - 1e-6f)));
        Assert.That(dt.ToArray().Max(), Is.LessThanOrEqualTo(1e-1f * (1 + 1e-6f)));
        // Uniform in log space: the mean and the quartiles of log Δ sit where a uniform law puts them.
        double lo = Math.Log(1e-3), hi = Math.Log(1e-1);
        Assert.That(logs.Average(), Is.EqualTo((lo + hi) / 2).Within(0.05 * (hi - lo)));
        Assert.That(logs.Count(x => x < lo + (hi - lo) / 4) / 4000.0, Is.EqualTo(0.25).Within(0.03));
        var narrow = Engine.Lssl.LogUniformDt(100, seed: 1, dtMin: 0.01, dtMax: 0.02).ToArray();
        Assert.That(narrow.Min(), Is.GreaterThanOrEqualTo(0.01f * (1 - 1e-6f)));
        Assert.That(narrow.Max(), Is.LessThanOrEqualTo(0.02f * (1 + 1e-6f)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Lssl.LogUniformDt(4, 0, dtMin: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Lssl.LogUniformDt(4, 0, dtMin: 0.1, dtMax: 0.01));
    }

    // ---- Discretizations against float64 formulas written another way ---------------------------------------

    private static Matrix<double> M(int n, double[] rowMajor) => Matrix<double>.Build.DenseOfRowMajor(n, n, rowMajor);

    private static double RelativeError(Matrix<double> actual, Matrix<double> expected) =>
        (actual - expected).FrobeniusNorm() / Math.Max(expected.FrobeniusNorm(), 1e-300);

    private static double RelativeError(Vector<double> actual, Vector<double> expected) =>
        (actual - expected).L2Norm() / Math.Max(expected.L2Norm(), 1e-300);

    private static (Matrix<double> Abar, Vector<double> Bbar) Discretized(double[] a, double[] b, int n, double dt, LsslDiscretization method)
    {
        var (amI, bbar) = LsslDiscretizer.Dense(a, b, n, dt, method);
        return (M(n, amI) + Matrix<double>.Build.DenseIdentity(n), Vector<double>.Build.DenseOfArray(bbar));
    }

    [TestCase(0.0, 1e-3)]
    [TestCase(0.0, 0.05)]
    [TestCase(0.5, 1e-3)]
    [TestCase(0.5, 0.1)]
    [TestCase(1.0, 1e-3)]
    [TestCase(1.0, 0.1)]
    public void BilinearFamilyMatchesTheMatrixFormula(double alpha, double dt)
    {
        foreach (var (a, b, n) in new[] { Hippo(LsslInit.HippoLegS(16), 16), Hippo(LsslInit.HippoLegT(16), 16), Hippo(LsslInit.HippoLegS(64), 64) })
        {
            var method = LsslDiscretization.Gbt(alpha);
            var (abar, bbar) = Discretized(a, b, n, dt, method);
            var id = Matrix<double>.Build.DenseIdentity(n);
            var am = M(n, a);
            var inverse = (id - alpha * dt * am).Inverse();
            var expectedA = inverse * (id + (1 - alpha) * dt * am);
            var expectedB = dt * (inverse * Vector<double>.Build.DenseOfArray(b));
            Assert.That(RelativeError(abar, expectedA), Is.LessThan(1e-12), $"Ā, N = {n}");
            Assert.That(RelativeError(bbar, expectedB), Is.LessThan(1e-12), $"B̄, N = {n}");
        }
        Assert.That(LsslDiscretization.Gbt(0.5), Is.EqualTo(LsslDiscretization.Bilinear));
        Assert.That(LsslDiscretization.Gbt(0.0), Is.EqualTo(LsslDiscretization.ForwardEuler));
        Assert.That(LsslDiscretization.Gbt(1.0), Is.EqualTo(LsslDiscretization.BackwardEuler));
    }

    [Test]
    public void TheZeroDiscretizationIsTheBilinearTransform()
    {
        // default(LsslDiscretization), a field never set, was GBT with α = 0: forward Euler, not the documented bilinear default.
        var unset = default(LsslDiscretization);
        Assert.That(unset, Is.EqualTo(LsslDiscretization.Bilinear));
        Assert.That((unset.Method, unset.Alpha, unset.ToString()), Is.EqualTo((LsslMethod.Gbt, 0.5, "gbt(alpha=0.5)")));
        Assert.That(new LsslOptions().Discretization, Is.EqualTo(unset));
        Assert.That(LsslDiscretization.Gbt(0.5), Is.EqualTo(unset));
        // The named and explicit rules keep their values.
        Assert.That((LsslDiscretization.ForwardEuler.Method, LsslDiscretization.ForwardEuler.Alpha), Is.EqualTo((LsslMethod.Gbt, 0.0)));
        Assert.That(LsslDiscretization.ForwardEuler, Is.Not.EqualTo(unset));
        Assert.That((LsslDiscretization.BackwardEuler.Method, LsslDiscretization.BackwardEuler.Alpha), Is.EqualTo((LsslMethod.Gbt, 1.0)));
        Assert.That((LsslDiscretization.ZeroOrderHold.Method, LsslDiscretization.ZeroOrderHold.Alpha), Is.EqualTo((LsslMethod.Zoh, 0.0)));
        Assert.That((LsslDiscretization.Gbt(0.3).Alpha, LsslDiscretization.Gbt(0.3).ToString()), Is.EqualTo((0.3, "gbt(alpha=0.3)")));
        Assert.That(LsslDiscretization.Gbt(0.3), Is.Not.EqualTo(unset).And.Not.EqualTo(LsslDiscretization.ZeroOrderHold));

        // A layer built with it runs the bilinear system. One state, a = −2, b = c = 1, d = 0, Δ = 0.1: ā = (1 + Δa/2)/(1 − Δa/2)
        // = 0.9/1.1, b̄ = Δb/(1 − Δa/2) = 0.1/1.1 (forward Euler: 0.8 and 0.1), against that recurrence in float64 (fp32 tolerance).
        using var layer = new LsslLayer(new ReadOnlyTensorSpan<float>([-2f], [1, 1]), new ReadOnlyTensorSpan<float>([1f], [1, 1]),
            new ReadOnlyTensorSpan<float>([1f], [1, 1]), new ReadOnlyTensorSpan<float>([0f], [1]), new ReadOnlyTensorSpan<float>([0.1f], [1]),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal, Discretization = unset });
        const int length = 64;
        var u = new TestData(3).Normal(length);
        double dt = 0.1f, abar = (1 - dt) / (1 + dt), bbar = dt / (1 + dt), x = 0;
        var expected = new double[length];
        for (int t = 0; t < length; t++) expected[t] = x = abar * x + bbar * u[t];
        var y = Numerics.NaNs(length);
        layer.Forward<float>(TestDevices.Get(TestBackend.Cpu), new ReadOnlyTensorSpan<float>(u, [1, length, 1]), new TensorSpan<float>(y, [1, length, 1]),
            mode: LsslMode.Recurrent);
        Assert.That(Numerics.RelativeRms(y, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance));
    }

    [Test]
    public void ForwardEulerIsIPlusDtA()
    {
        var (a, b, n) = Hippo(LsslInit.HippoLegT(8), 8);
        var (abar, bbar) = Discretized(a, b, n, 0.01, LsslDiscretization.ForwardEuler);
        Assert.That(RelativeError(abar, Matrix<double>.Build.DenseIdentity(n) + 0.01 * M(n, a)), Is.LessThan(1e-15));
        Assert.That(RelativeError(bbar, 0.01 * Vector<double>.Build.DenseOfArray(b)), Is.LessThan(1e-15));
    }

    /// <summary>exp(ΔA) and ∫₀^Δ exp(sA) ds B by their Taylor series (‖ΔA‖ kept small enough to converge to full precision).</summary>
    private static (Matrix<double> Abar, Vector<double> Bbar) ZohBySeries(Matrix<double> a, Vector<double> b, double dt)
    {
        int n = a.RowCount;
        var term = Matrix<double>.Build.DenseIdentity(n);     // (ΔA)^k / k!
        var exp = Matrix<double>.Build.DenseIdentity(n);
        var phi = Matrix<double>.Build.DenseIdentity(n);      // Σ (ΔA)^k / (k+1)!
        for (int k = 1; k < 80; k++)
        {
            term = term * (dt * a) / k;
            exp += term;
            phi += term / (k + 1);
        }
        return (exp, dt * (phi * b));
    }

    [TestCase(1e-3)]
    [TestCase(0.02)]
    [TestCase(0.1)]
    public void ZeroOrderHoldMatchesTheExponentialSeries(double dt)
    {
        foreach (var (a, b, n) in new[] { Hippo(LsslInit.HippoLegS(4), 4), Hippo(LsslInit.HippoLegT(8), 8), Hippo(LsslInit.HippoLegS(16), 16) })
        {
            var (abar, bbar) = Discretized(a, b, n, dt, LsslDiscretization.ZeroOrderHold);
            var (expectedA, expectedB) = ZohBySeries(M(n, a), Vector<double>.Build.DenseOfArray(b), dt);
            Assert.That(RelativeError(abar, expectedA), Is.LessThan(1e-12), $"Ā, N = {n}");
            Assert.That(RelativeError(bbar, expectedB), Is.LessThan(1e-12), $"B̄, N = {n}");
        }
    }

    [Test]
    public void ZeroOrderHoldOfLargeStepsUsesScaling()
    {
        // ‖ΔA‖₁ ≈ 190: the Padé approximant needs several squarings. exp of a triangular matrix with distinct
        // eigenvalues is V exp(Λ) V⁻¹; for LegS with N = 6 the eigenvectors are well conditioned.
        var (a, b, n) = Hippo(LsslInit.HippoLegS(6), 6);
        double dt = 8.0;
        var evd = M(n, a).Evd();
        var v = evd.EigenVectors;
        var expLambda = Matrix<double>.Build.DiagonalOfDiagonalArray(evd.EigenValues.Select(z => Math.Exp(dt * z.Real)).ToArray());
        var expected = v * expLambda * v.Inverse();
        var (abar, bbar) = Discretized(a, b, n, dt, LsslDiscretization.ZeroOrderHold);
        Assert.That(RelativeError(abar, expected), Is.LessThan(1e-9));
        // B̄ = A⁻¹(e^{ΔA} − I) B: A is invertible here, so the textbook formula applies.
        var expectedB = M(n, a).Inverse() * (expected - Matrix<double>.Build.DenseIdentity(n)) * Vector<double>.Build.DenseOfArray(b);
        Assert.That(RelativeError(bbar, expectedB), Is.LessThan(1e-9));
    }

    [Test]
    public void ZeroOrderHoldNeedsNoInverseOfA()
    {
        // A = 0: Ā = I, B̄ = ΔB. A nilpotent [[0, 1], [0, 0]]: Ā = I + ΔA, B̄ = (ΔI + Δ²A/2) B.
        var (abar0, bbar0) = Discretized([0, 0, 0, 0], [1, 2], 2, 0.3, LsslDiscretization.ZeroOrderHold);
        Assert.That(RelativeError(abar0, Matrix<double>.Build.DenseIdentity(2)), Is.LessThan(1e-15));
        Assert.That(RelativeError(bbar0, Vector<double>.Build.DenseOfArray([0.3, 0.6])), Is.LessThan(1e-15));
        var (abar, bbar) = Discretized([0, 1, 0, 0], [1, 2], 2, 0.3, LsslDiscretization.ZeroOrderHold);
        Assert.That(RelativeError(abar, M(2, [1, 0.3, 0, 1])), Is.LessThan(1e-15));
        Assert.That(RelativeError(bbar, Vector<double>.Build.DenseOfArray([0.3 * 1 + 0.045 * 2, 0.3 * 2])), Is.LessThan(1e-15));
    }

    [Test]
    public void DiagonalDiscretizationsMatchClosedForms()
    {
        double[] a = [-1, -10, -0.5, 0, -1e-9], b = [1, -2, 0.5, 3, 1];
        double dt = 0.07;
        var amI = new double[a.Length];
        var bbar = new double[a.Length];
        LsslDiscretizer.Diagonal(a, b, dt, LsslDiscretization.ZeroOrderHold, amI, bbar);
        for (int i = 0; i < a.Length; i++)
        {
            double expectedA = Math.Exp(dt * a[i]);
            double expectedB = a[i] == 0 ? dt * b[i] : (Math.Exp(dt * a[i]) - 1) / a[i] * b[i];
            Assert.That(1 + amI[i], Is.EqualTo(expectedA).Within(1e-15), $"ā[{i}]");
            Assert.That(bbar[i], Is.EqualTo(expectedB).Within(1e-7 * Math.Abs(expectedB)), $"b̄[{i}]");
        }
        // ā − 1 keeps its relative precision for tiny Δa (the reason it is stored that way): e^x − 1 = x + x²/2 + …
        double x = dt * a[4];
        Assert.That(amI[4], Is.EqualTo(x + x * x / 2).Within(1e-14 * Math.Abs(x)));
        foreach (double alpha in new[] { 0.0, 0.5, 1.0 })
        {
            LsslDiscretizer.Diagonal(a, b, dt, LsslDiscretization.Gbt(alpha), amI, bbar);
            for (int i = 0; i < a.Length; i++)
            {
                double den = 1 - alpha * dt * a[i];
                Assert.That(1 + amI[i], Is.EqualTo((1 + (1 - alpha) * dt * a[i]) / den).Within(1e-15), $"α {alpha}, ā[{i}]");
                Assert.That(bbar[i], Is.EqualTo(dt * b[i] / den).Within(1e-15 * Math.Abs(dt * b[i] / den)), $"α {alpha}, b̄[{i}]");
            }
        }
    }

    [Test]
    public void KrylovDoublingMatchesRepeatedProducts()
    {
        var (a, _, n) = Hippo(LsslInit.HippoLegT(8), 8);
        var (amI, _) = LsslDiscretizer.Dense(a, new double[n], n, 0.05, LsslDiscretization.Bilinear);
        var abar = M(n, amI) + Matrix<double>.Build.DenseIdentity(n);
        var v = Vector<double>.Build.Dense(n, i => i + 1.0);
        var expected = Enumerable.Range(0, 37).Select(j => abar.Power(j) * v).ToArray();
        var abarT = abar.Transpose().ToRowMajorArray();
        foreach (var rows in new[] { Krylov.Doubling(abarT, n, v.ToArray(), 37), Krylov.Sequential(abarT, n, v.ToArray(), 37) })
            for (int j = 0; j < 37; j++)
                Assert.That(RelativeError(Vector<double>.Build.DenseOfArray(rows.AsSpan(j * n, n).ToArray()), expected[j]), Is.LessThan(1e-13), $"row {j}");
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(8)]
    [TestCase(1024)]
    public void Radix2FftMatchesTheDft(int n)
    {
        var data = new TestData(n);
        var re = data.Normal(n);
        var im = data.Normal(n);
        var z = Enumerable.Range(0, n).Select(t => new System.Numerics.Complex(re[t], im[t])).ToArray();
        var expected = Enumerable.Range(0, n).Select(k => Enumerable.Range(0, n).Aggregate(System.Numerics.Complex.Zero,
            (sum, t) => sum + z[t] * System.Numerics.Complex.FromPolarCoordinates(1, -2 * Math.PI * ((long)k * t % n) / n))).ToArray();
        var fft = new Radix2Fft(n);
        var spectrum = (System.Numerics.Complex[])z.Clone();
        fft.Forward(spectrum);
        double norm = Math.Sqrt(expected.Sum(x => x.Magnitude * x.Magnitude));
        Assert.That(Math.Sqrt(spectrum.Zip(expected, (a, e) => (a - e).Magnitude * (a - e).Magnitude).Sum()) / norm, Is.LessThan(1e-13), "forward");
        fft.Inverse(spectrum);
        for (int t = 0; t < n; t++)
            Assert.That((spectrum[t] / n - z[t]).Magnitude, Is.LessThan(1e-13 * (1 + z[t].Magnitude)), $"inverse of forward, t = {t}");
    }

    [Test]
    public void Radix2FftRejectsOtherSizes()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new Radix2Fft(12));
        Assert.Throws<ArgumentOutOfRangeException>(() => new Radix2Fft(0));
        Assert.Throws<ArgumentException>(() => new Radix2Fft(8).Forward(new System.Numerics.Complex[16]));
    }

    [Test]
    public void ConvolutionKernelIsCPowersB()
    {
        var p = LsslProblem.Make(2, 12, LsslStateMatrix.DensePerChannel, seed: 3);
        using var system = p.System(LsslDiscretization.Bilinear, 16);
        var (kernel, stride) = system.ConvKernel(100, new ThreadPoolScheduler(3));
        Assert.That(stride, Is.GreaterThanOrEqualTo(100));
        for (int ch = 0; ch < 2; ch++)
        {
            var abar = M(12, system.AbarMinusI64.Slice(ch * 144, 144).ToArray()) + Matrix<double>.Build.DenseIdentity(12);
            var c = Vector<double>.Build.DenseOfArray(system.C64.Slice(ch * 12, 12).ToArray());
            var x = Vector<double>.Build.DenseOfArray(system.Bbar64.Slice(ch * 12, 12).ToArray());
            for (int l = 0; l < 100; l++)
            {
                double expected = c * x;
                Assert.That(kernel[ch * stride + l], Is.EqualTo(expected).Within(1e-12 * (1 + Math.Abs(expected))), $"channel {ch}, tap {l}");
                x = abar * x;
            }
        }
    }

    private static (double[] A, double[] B, int N) Hippo((double[] A, double[] B) m, int n) => (m.A, m.B, n);

    // ---- Rejected inputs ------------------------------------------------------------------------------------

    private static ArgumentException Rejects(TestDelegate call, string paramName, string fragment)
    {
        var e = Assert.Throws(Is.InstanceOf<ArgumentException>(), call) as ArgumentException;
        Assert.That(e!.ParamName, Is.EqualTo(paramName), e.Message);
        Assert.That(e.Message, Does.Contain(fragment));
        return e;
    }

    private static LsslLayer Layer(LsslProblem p, float[]? a = null, float[]? dt = null, nint[]? aShape = null, LsslOptions? options = null) =>
        new(new ReadOnlyTensorSpan<float>(a ?? p.A, aShape ?? p.AShape), new ReadOnlyTensorSpan<float>(p.B, p.BShared ? [p.N] : [p.H, p.N]),
            new ReadOnlyTensorSpan<float>(p.C, [p.H, p.N]), new ReadOnlyTensorSpan<float>(p.D, [p.H]),
            new ReadOnlyTensorSpan<float>(dt ?? p.Dt, [p.H]), options);

    [Test]
    public void BadStepsAreRejected()
    {
        var p = LsslProblem.Make(3, 4, LsslStateMatrix.DenseShared, seed: 1);
        Rejects(() => Layer(p, dt: [0.01f, 0f, 0.01f]), "dt", "got 0 for channel 1");
        Rejects(() => Layer(p, dt: [0.01f, -0.5f, 0.01f]), "dt", "> 0");
        Rejects(() => Layer(p, dt: [float.NaN, 0.01f, 0.01f]), "dt", "NaN");
        Rejects(() => Layer(p, dt: [float.PositiveInfinity, 0.01f, 0.01f]), "dt", "finite");
        Rejects(() => Layer(p, dt: [-3f, float.NaN, -2f], options: new LsslOptions { LogDt = true }), "dt", "NaN");
        Rejects(() => Layer(p, dt: [-3f, 800f, -2f], options: new LsslOptions { LogDt = true }), "dt", "log dt = 800");
        // log Δ may be negative: Δ = e^(−3).
        using var logLayer = Layer(p, dt: [-3f, -4f, -2f], options: new LsslOptions { LogDt = true });
    }

    [Test]
    public void BadParameterShapesAndValuesAreRejected()
    {
        var p = LsslProblem.Make(3, 4, LsslStateMatrix.DenseShared, seed: 1);
        Rejects(() => Layer(p, aShape: [4, 5], a: new float[20]), "A", "expected shape");
        Rejects(() => Layer(p, aShape: [2, 4, 4], a: new float[32]), "A", "got [2, 4, 4]");
        var nanA = (float[])p.A.Clone();
        nanA[5] = float.NaN;
        Rejects(() => Layer(p, a: nanA), "A", "finite");
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(new float[5], [5]),
            new ReadOnlyTensorSpan<float>(p.C, [3, 4]), new ReadOnlyTensorSpan<float>(p.D, [3]), new ReadOnlyTensorSpan<float>(p.Dt, [3])), "B", "expected shape [4]");
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(p.B, [4]),
            new ReadOnlyTensorSpan<float>(p.C, [12]), new ReadOnlyTensorSpan<float>(p.D, [3]), new ReadOnlyTensorSpan<float>(p.Dt, [3])), "C", "rank 2");
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(p.B, [4]),
            new ReadOnlyTensorSpan<float>(p.C, [3, 4]), new ReadOnlyTensorSpan<float>(new float[4], [4]), new ReadOnlyTensorSpan<float>(p.Dt, [3])), "D", "expected shape [3]");
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(p.B, [4]),
            new ReadOnlyTensorSpan<float>(p.C, [3, 4]), new ReadOnlyTensorSpan<float>(p.D, [3]), new ReadOnlyTensorSpan<float>(p.Dt, [1, 3])), "dt", "expected shape [3]");
        // A mistaken C is refused as C, not the others against it: H and N are what most of the tensors give.
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(p.B, [4]),
            new ReadOnlyTensorSpan<float>(new float[15], [3, 5]), new ReadOnlyTensorSpan<float>(p.D, [3]), new ReadOnlyTensorSpan<float>(p.Dt, [3])), "C", "expected shape [3, 4] (H, N), got [3, 5]");
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(p.A, [4, 4]), new ReadOnlyTensorSpan<float>(p.B, [4]),
            new ReadOnlyTensorSpan<float>(new float[16], [4, 4]), new ReadOnlyTensorSpan<float>(p.D, [3]), new ReadOnlyTensorSpan<float>(p.Dt, [3])), "C", "expected shape [3, 4] (H, N), got [4, 4]");
        Rejects(() => Layer(p, options: new LsslOptions { ChunkLength = 48 }), "options", "chunk length");
        // H = N: [N, N] could be shared or diagonal.
        var square = LsslProblem.Make(4, 4, LsslStateMatrix.DenseShared, seed: 1);
        Rejects(() => Layer(square, options: new LsslOptions()), "A", "LsslOptions.StateMatrix");
        using var inferred = Layer(square, options: new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        Assert.That(inferred.StateMatrix, Is.EqualTo(LsslStateMatrix.Diagonal));
        using var shared = Layer(p, options: new LsslOptions());
        Assert.That(shared.StateMatrix, Is.EqualTo(LsslStateMatrix.DenseShared));
    }

    [TestCase(LsslStateMatrix.DenseShared, 1024, 1500)]
    [TestCase(LsslStateMatrix.Diagonal, 9000, 1000)]
    public void TablesOfMoreElementsThanAnArrayHoldsAreRefusedAsC(LsslStateMatrix form, int h, int n)
    {
        // The tables [H, Np, Np] (1024 · 1504²) and [H, Np + Q, Q] (9000 · 1264 · 256) pass 2^31 from inputs of a few
        // million elements: the build threw an OverflowException from inside.
        var a = new float[form == LsslStateMatrix.DenseShared ? (long)n * n : (long)h * n];
        if (form == LsslStateMatrix.Diagonal) Array.Fill(a, -1f);
        else for (int i = 0; i < n; i++) a[(long)i * n + i] = -1f;
        var b = Enumerable.Repeat(1f, n).ToArray();
        var dt = Enumerable.Repeat(0.01f, h).ToArray();
        Rejects(() => new LsslLayer(new ReadOnlyTensorSpan<float>(a, form == LsslStateMatrix.DenseShared ? [n, n] : [h, n]),
            new ReadOnlyTensorSpan<float>(b, [n]), new ReadOnlyTensorSpan<float>(new float[(long)h * n], [h, n]),
            new ReadOnlyTensorSpan<float>(new float[h], [h]), new ReadOnlyTensorSpan<float>(dt, [h]), new LsslOptions { StateMatrix = form }),
            "C", $"{h} channels of state size {n}");
    }

    [Test]
    public void UndefinedInitKindIsRejected()
    {
        // It made S4D-real's diagonal A [H, N] labelled DenseShared: with H = N the layer ran it as a dense [N, N] A.
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Lssl.Parameters((LsslInitKind)7, 4, 4, seed: 1));
        Assert.That(e!.ParamName, Is.EqualTo("kind"));
    }

    [Test]
    public void UndefinedStateMatrixFormIsRejected()
    {
        // An undefined form reached the kernels as "dense" with a diagonal-sized A: an IndexOutOfRangeException for N > 1,
        // a silently run layer for N = 1.
        foreach (int n in new[] { 1, 4 })
        {
            var p = LsslProblem.Make(2, n, LsslStateMatrix.Diagonal, seed: 1);
            Rejects(() => Layer(p, options: new LsslOptions { StateMatrix = (LsslStateMatrix)5 }), "options", "StateMatrix");
        }
    }

    [Test]
    public void SingularDiscretizationIsRejected()
    {
        // Backward Euler with A = I/Δ makes I − ΔA = 0.
        var p = LsslProblem.Make(2, 3, LsslStateMatrix.DenseShared, seed: 1);
        float[] dt = [0.5f, 0.5f];
        var a = new float[9];
        for (int i = 0; i < 3; i++) a[i * 3 + i] = 2f;
        Rejects(() => Layer(p, a: a, dt: dt, options: new LsslOptions { Discretization = LsslDiscretization.BackwardEuler }), "A", "singular");
        var diagonal = LsslProblem.Make(2, 3, LsslStateMatrix.Diagonal, seed: 1);
        Rejects(() => Layer(diagonal, a: [-1, -3, -4, 1, 2, 6], dt: [0.5f, 0.5f], options: new LsslOptions { Discretization = LsslDiscretization.BackwardEuler }),
            "A", "channel 1 is singular");
        // Under ZOH (no inverse is formed) the same matrix is not singular, only unstable (ā = e^1).
        Rejects(() => Layer(p, a: a, dt: dt, options: new LsslOptions { Discretization = LsslDiscretization.ZeroOrderHold }), "A", "unstable");
    }

    [Test]
    public void BadCallsAreRejected()
    {
        var device = TestDevices.Get(TestBackend.Cpu);
        var p = LsslProblem.Make(3, 4, LsslStateMatrix.DenseShared, seed: 1);
        using var layer = Layer(p);
        var u = new float[2 * 5 * 3];
        var y = new float[2 * 5 * 3];
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 5, 3]), new TensorSpan<float>(new float[30], [2, 3, 5])), "y", "expected shape [2, 5, 3]");
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 3, 5]), new TensorSpan<float>(y, [2, 3, 5])), "u", "H = 3");
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [30]), new TensorSpan<float>(y, [30])), "u", "rank 3");
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 5, 3]), new TensorSpan<float>(y, [2, 5, 3]),
            new ReadOnlyTensorSpan<float>(new float[12], [1, 3, 4])), "initial_state", "expected shape [2, 3, 4]");
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 5, 3]), new TensorSpan<float>(y, [2, 5, 3]),
            default, new TensorSpan<float>(new float[24], [2, 4, 3])), "final_state", "expected shape [2, 3, 4]");
        // The final state is stored after y is written: in y's memory it overwrote y.
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 5, 3]), new TensorSpan<float>(y, [2, 5, 3]),
            default, new TensorSpan<float>(y.AsSpan(0, 24), [2, 3, 4], [])), "final_state", "shares memory with y");
        var nanState = new float[24];
        nanState[3] = float.NaN;
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [2, 5, 3]), new TensorSpan<float>(y, [2, 5, 3]),
            new ReadOnlyTensorSpan<float>(nanState, [2, 3, 4])), "initial_state", "finite");
        var nanU = new float[30];
        nanU[7] = float.NaN;
        Rejects(() => layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(nanU, [2, 5, 3]), new TensorSpan<float>(y, [2, 5, 3])), "u", "finite");
        // A session over no sequence names the argument given, batch (it named the attention sessions' "sequences").
        Rejects(() => layer.CreateSession(device, 0), "batch", "'1'");
        using var session = layer.CreateSession(device, 2);
        Rejects(() => session.Step<float>(new ReadOnlyTensorSpan<float>(new float[3], [1, 1, 3]), new TensorSpan<float>(new float[3], [1, 1, 3])), "u", "session holds 2");
        Rejects(() => session.SetState(new ReadOnlyTensorSpan<float>(new float[12], [1, 3, 4])), "state", "expected shape [2, 3, 4]");
    }

    [Test]
    public void UnstableSystemsAreRefusedWhenTheLayerIsBuilt()
    {
        // Ā with an eigenvalue outside the unit circle: the state grows without bound (to infinity over a long sequence).
        // Forward Euler with Δ·|λ| > 2 (ā = 1 − 3 for a = −3, Δ = 1):
        var p = LsslProblem.Make(1, 2, LsslStateMatrix.Diagonal, seed: 1);
        Rejects(() => Layer(p, a: [-1f, -3f], dt: [1f], options: new LsslOptions { Discretization = LsslDiscretization.ForwardEuler }), "A",
            "gbt(alpha=0) discretization of channel 0 (dt = 1) is unstable: Ā has an eigenvalue of modulus 2 > 1");
        // A shared dense A is decomposed once and its eigenvalues (−1, −3) mapped through each channel's Δ: only the second
        // channel's is outside.
        var shared = LsslProblem.Make(3, 2, LsslStateMatrix.DenseShared, seed: 1);
        Rejects(() => Layer(shared, a: [-1f, 0f, 5f, -3f], dt: [0.66f, 1f, 0.5f], options: new LsslOptions { Discretization = LsslDiscretization.ForwardEuler }),
            "A", "gbt(alpha=0) discretization of channel 1 (dt = 1) is unstable");
        // An eigenvalue of A with positive real part, in the second channel, under every discretization (bilinear, ZOH,
        // backward Euler at a step too small to map it inside): A lower triangular with eigenvalues −1 and 0.1.
        var dense = LsslProblem.Make(2, 2, LsslStateMatrix.DensePerChannel, seed: 1);
        float[] a = [-1f, 0f, 0f, -2f, -1f, 0f, 0.5f, 0.1f];
        foreach (var method in new[] { LsslDiscretization.Bilinear, LsslDiscretization.ZeroOrderHold, LsslDiscretization.BackwardEuler })
            Rejects(() => Layer(dense, a: a, dt: [0.1f, 0.1f], options: new LsslOptions { Discretization = method }), "A", "channel 1 (dt = 0.1");
        var diagonal = LsslProblem.Make(2, 2, LsslStateMatrix.Diagonal, seed: 1);
        Rejects(() => Layer(diagonal, a: [-1f, -2f, -1f, 1e-3f], dt: [0.1f, 0.1f], options: new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal }),
            "A", "channel 1");
        // On the unit circle is kept: A = 0 (ā = 1, ZOH needs no inverse), a rotation under the bilinear transform (|ā| = 1),
        // and forward Euler just inside its bound.
        using var integrator = Layer(diagonal, a: [0f, 0f, 0f, 0f], dt: [0.1f, 0.1f],
            options: new LsslOptions { Discretization = LsslDiscretization.ZeroOrderHold, StateMatrix = LsslStateMatrix.Diagonal });
        using var rotation = Layer(LsslProblem.Make(1, 2, LsslStateMatrix.DenseShared, seed: 1), a: [0f, 1f, -1f, 0f], dt: [0.1f]);
        using var euler = Layer(p, a: [-1f, -3f], dt: [0.66f], options: new LsslOptions { Discretization = LsslDiscretization.ForwardEuler });
    }

    // ---- Modes, decode and long sequences ---------------------------------------------------------------------

    /// <summary>A negative batch or length, which no call has, was resolved to a mode (the recurrence), estimated a negative time, or given a state shape.</summary>
    [Test]
    public void ANegativeBatchOrLengthIsRefused()
    {
        var cpu = TestDevices.Get(TestBackend.Cpu);
        using var layer = Layer(LsslProblem.Make(2, 16, LsslStateMatrix.DenseShared, seed: 1));
        Assert.Multiple(() =>
        {
            Assert.That(() => layer.ResolveMode(cpu, -1, 64), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("batch"));
            Assert.That(() => layer.ResolveMode(cpu, 1, -64), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("length"));
            Assert.That(() => layer.ResolveMode(TestDevices.Reference, 1, -1), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("length"));
            Assert.That(() => LsslModeRule.EstimateCpuSeconds(LsslMode.Scan, new LsslConfig(2, 16, LsslStateMatrix.DenseShared, 16), 1, -4096, false, false),
                Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("length"));
            Assert.That(() => layer.StateShape(-2), Throws.InstanceOf<ArgumentOutOfRangeException>().With.Property("ParamName").EqualTo("batch"));
        });
        Assert.That(layer.ResolveMode(cpu, 0, 0), Is.EqualTo(LsslMode.Recurrent), "an empty call");
    }

    [Test]
    public void AutoPicksByTheRuleAndReportsIt()
    {
        var cpu = TestDevices.Get(TestBackend.Cpu);
        var p = LsslProblem.Make(2, 16, LsslStateMatrix.DenseShared, seed: 1);
        using var layer = Layer(p);
        Assert.That(layer.ChunkLength, Is.EqualTo(16));
        Assert.That(layer.ResolveMode(cpu, 1, 8), Is.EqualTo(LsslMode.Recurrent), "shorter than a chunk");
        Assert.That(layer.ResolveMode(cpu, 1, 4096), Is.EqualTo(LsslMode.Scan));
        Assert.That(layer.ResolveMode(cpu, 1, 4096, LsslMode.Conv), Is.EqualTo(LsslMode.Conv), "an explicit mode is kept");
        Assert.That(layer.ResolveMode(TestDevices.Reference, 1, 4096, LsslMode.Scan), Is.EqualTo(LsslMode.Recurrent), "the reference has only the recurrence");
        var u = new float[2 * 64];
        var ran = layer.Forward<float>(cpu, new ReadOnlyTensorSpan<float>(u, [1, 64, 2]), new TensorSpan<float>(new float[128], [1, 64, 2]));
        Assert.That(ran, Is.EqualTo(LsslMode.Scan), "Forward reports the mode Auto picked");

        // The benchmark shape runs the scan on both backends; a very large state tips the CPU to the FFT.
        var benchmark = new LsslConfig(256, 64, LsslStateMatrix.DenseShared, 64);
        foreach (int l in new[] { 1024, 4096, 16384 })
        {
            Assert.That(LsslModeRule.Resolve(LsslMode.Auto, Backend.Cpu, benchmark, 1, l, false, false), Is.EqualTo(LsslMode.Scan), $"cpu L = {l}");
            Assert.That(LsslModeRule.Resolve(LsslMode.Auto, Backend.Gpu, benchmark, 1, l, false, false), Is.EqualTo(LsslMode.Scan), $"gpu L = {l}");
        }
        var wide = new LsslConfig(8, 2048, LsslStateMatrix.DenseShared, 256);
        Assert.That(LsslModeRule.Resolve(LsslMode.Auto, Backend.Cpu, wide, 1, 16384, false, false), Is.EqualTo(LsslMode.Conv));
        Assert.That(LsslModeRule.Resolve(LsslMode.Auto, Backend.Gpu, wide, 1, 16384, false, false), Is.EqualTo(LsslMode.Scan));
        Assert.That(LsslModeRule.EstimateCpuSeconds(LsslMode.Scan, benchmark, 1, 16384, false, false),
            Is.LessThan(LsslModeRule.EstimateCpuSeconds(LsslMode.Recurrent, benchmark, 1, 16384, false, false)));
    }

    /// <summary>
    /// Sequences longer than the CPU's FFT convolution takes (2^29 steps: its transform of 2^30 is the largest power of two
    /// one array holds): Auto never picks the conv mode for them, and an explicit conv mode is refused naming the mode.
    /// Before, the FFT size's doubling wrapped: the rule never returned for a length above 2^29, and above 2^30 it
    /// estimated a transform of size 1 and picked the conv mode, whose run then indexed past its buffer.
    /// </summary>
    [Test]
    public void SequencesLongerThanTheFftTakesAreNotGivenTheConvMode()
    {
        var wide = new LsslConfig(8, 2048, LsslStateMatrix.DenseShared, 256);
        var rule = Task.Run(() => new[] { LsslCpu.MaxConvLength, LsslCpu.MaxConvLength + 1, (1 << 30) + 1, int.MaxValue }
            .Select(l => LsslModeRule.Resolve(LsslMode.Auto, Backend.Cpu, wide, 1, l, false, false)).ToArray());
        Assert.That(rule.Wait(TimeSpan.FromSeconds(30)), Is.True, "the rule returned");
        Assert.That(rule.Result, Is.EqualTo(new[] { LsslMode.Conv, LsslMode.Scan, LsslMode.Scan, LsslMode.Scan }));
        Assert.That(LsslModeRule.EstimateCpuSeconds(LsslMode.Conv, wide, 1, LsslCpu.MaxConvLength + 1, false, false), Is.EqualTo(double.PositiveInfinity));

        var e = Assert.Throws<ArgumentException>(() => LsslModeRule.Resolve(LsslMode.Conv, Backend.Cpu, wide, 1, LsslCpu.MaxConvLength + 1, false, false))!;
        Assert.That(e.ParamName, Is.EqualTo("mode"));
        Assert.That(e.Message, Does.StartWith($"mode: the CPU's conv mode takes at most {LsslCpu.MaxConvLength} steps"));
        Assert.That(LsslModeRule.Resolve(LsslMode.Conv, Backend.Cpu, wide, 1, LsslCpu.MaxConvLength, false, false), Is.EqualTo(LsslMode.Conv));
        Assert.That(LsslCpu.FftSize(LsslCpu.MaxConvLength), Is.EqualTo(1 << 30));
        Assert.That(() => LsslCpu.FftSize(LsslCpu.MaxConvLength + 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
    }

    [Test]
    public void DecodeStepByStepMatchesTheWholeSequence()
    {
        var device = TestDevices.Get(TestBackend.Cpu);
        foreach (var form in new[] { LsslStateMatrix.DenseShared, LsslStateMatrix.DensePerChannel, LsslStateMatrix.Diagonal })
        {
            int b = 2, l = 90, h = 3, n = 20;
            var p = LsslProblem.Make(h, n, form, seed: 11);
            using var layer = Layer(p);
            using var system = p.System(LsslDiscretization.Bilinear, layer.ChunkLength);
            var u = new TestData(12).Normal(b * l * h);
            var x0 = new TestData(13).Normal(b * h * n, 0.5);
            var expectedY = new double[b * l * h];
            var expectedState = TestData.ToDouble(x0);
            LsslReference.Forward(system, b, l, u, expectedY, expectedState);

            // Prefill 40 steps (scan), then decode one step at a time, then 7 steps in one Step call.
            using var session = layer.CreateSession(device, b);
            session.SetState(new ReadOnlyTensorSpan<float>(x0, [b, h, n]));
            var y = Numerics.NaNs(b * l * h);
            Assert.That(session.Prefill<float>(Slice(u, b, l, h, 0, 40), SliceOut(b, h, 40, out var y0), LsslMode.Scan), Is.EqualTo(LsslMode.Scan));
            Scatter(y0, y, b, l, h, 0, 40);
            for (int t = 40; t < 83; t++)
            {
                session.Step<float>(Slice(u, b, l, h, t, 1), SliceOut(b, h, 1, out var yt));
                Scatter(yt, y, b, l, h, t, 1);
            }
            session.Step<float>(Slice(u, b, l, h, 83, 7), SliceOut(b, h, 7, out var yLast));
            Scatter(yLast, y, b, l, h, 83, 7);
            var state = Numerics.NaNs(b * h * n);
            session.GetState(new TensorSpan<float>(state, [b, h, n]));
            Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{form}: y");
            Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{form}: state");

            // The whole sequence in one call, and in two calls carrying the state through final → initial.
            foreach (var mode in new[] { LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv })
            {
                var mid = Numerics.NaNs(b * h * n);
                var end = Numerics.NaNs(b * h * n);
                var y1 = Numerics.NaNs(b * 50 * h);
                var y2 = Numerics.NaNs(b * 40 * h);
                layer.Forward<float>(device, Slice(u, b, l, h, 0, 50), new TensorSpan<float>(y1, [b, 50, h]),
                    new ReadOnlyTensorSpan<float>(x0, [b, h, n]), new TensorSpan<float>(mid, [b, h, n]), mode);
                layer.Forward<float>(device, Slice(u, b, l, h, 50, 40), new TensorSpan<float>(y2, [b, 40, h]),
                    new ReadOnlyTensorSpan<float>(mid, [b, h, n]), new TensorSpan<float>(end, [b, h, n]), mode);
                var joined = Numerics.NaNs(b * l * h);
                Scatter(y1, joined, b, l, h, 0, 50);
                Scatter(y2, joined, b, l, h, 50, 40);
                Assert.That(Numerics.RelativeRms(joined, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{form} {mode}: y in two calls");
                Assert.That(Numerics.RelativeRms(end, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{form} {mode}: state carried");
            }
        }
    }

    [TestCase(TestBackend.Cpu)]
    [TestCase(TestBackend.GpuOnCpuAccelerator)]
    public void SmallInputTermSurvivesAStateThatDecaysAway(TestBackend backend)
    {
        // A large initial state that Ā (dt = 16: ā = e^-32) or Ā^Q (dt = 1, Q = 16: e^-32) all but erases, and a small B̄ u:
        // x + B̄ u (or x + Z) rounded before the (Ā − I) x that cancels x lost B̄ u to fp32's rounding of x (4.6% of the final state).
        foreach (var (dt, length) in new[] { (16f, 3), (1f, 16), (1f, 40) })
            AssertOneStateMatchesReference(TestDevices.Get(backend), a: -2f, b: 1e-6f, dt, Enumerable.Repeat(1f, length).ToArray(),
                [LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv]);
    }

    [TestCase(TestBackend.Cpu)]
    [TestCase(TestBackend.GpuOnCpuAccelerator)]
    public void ChunkCarryOfADecayedStateKeepsItsPrecision(TestBackend backend)
    {
        // u = 0 and x₀ = 1 through a = −1, dt = 0.72, Q = 16: each step keeps ā = 0.49 of the state, each chunk ā^Q = 1e-5.
        // The carry's table held ā^Q − 1 = −0.99999 in fp32, whose rounding (3e-8) is 0.3% of ā^Q: the final state was off by
        // 0.5% (scan, and conv's state pass).
        foreach (int length in new[] { 32, 40 })
            AssertOneStateMatchesReference(TestDevices.Get(backend), a: -1f, b: 1f, dt: 0.72f, new float[length], [LsslMode.Scan, LsslMode.Conv]);
    }

    [TestCase(TestBackend.Cpu)]
    [TestCase(TestBackend.GpuOnCpuAccelerator)]
    public void StepOfADecayedStateKeepsItsPrecision(TestBackend backend)
    {
        // u = 0 and x₀ = 1 through a = −1, dt = 11.5 (ZOH): each step keeps ā = 1e-5 of the state. The step's table held
        // ā − 1 = −0.99999 in fp32, whose rounding (3e-8) is 0.3% of ā: the final state was off by 8e-4 to 1.3e-3 (the
        // recurrence, and the scan's partial last chunk).
        AssertOneStateMatchesReference(TestDevices.Get(backend), a: -1f, b: 1f, dt: 11.5f, new float[3], [LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv]);
    }

    /// <summary>
    /// One channel with one state element (a, b, C = 1, D = 0, ZOH, chunks of 16), diagonal and dense, from x₀ = 1 through u in
    /// each mode: y and the final state within the fp32 tolerance (1e-5 relative RMS) of the float64 recurrence.
    /// </summary>
    private static void AssertOneStateMatchesReference(EngineDevice device, float a, float b, float dt, float[] u, LsslMode[] modes)
    {
        int length = u.Length;
        foreach (var form in new[] { LsslStateMatrix.Diagonal, LsslStateMatrix.DenseShared })
        {
            var options = new LsslOptions { StateMatrix = form, Discretization = LsslDiscretization.ZeroOrderHold, ChunkLength = 16 };
            using var layer = new LsslLayer(new ReadOnlyTensorSpan<float>([a], [1, 1]),
                new ReadOnlyTensorSpan<float>([b], form == LsslStateMatrix.Diagonal ? [1, 1] : [1]), new ReadOnlyTensorSpan<float>([1f], [1, 1]),
                new ReadOnlyTensorSpan<float>([0f], [1]), new ReadOnlyTensorSpan<float>([dt], [1]), options);
            using var system = new LsslSystem(new LsslConfig(1, 1, form, 16), LsslDiscretization.ZeroOrderHold, [a], [b], [1.0], [0.0], [dt],
                ThreadPoolScheduler.CallingThread);
            var expectedY = new double[length];
            var expectedState = new double[] { 1.0 };
            LsslReference.Forward(system, 1, length, u, expectedY, expectedState);
            foreach (var mode in modes)
            {
                var y = Numerics.NaNs(length);
                var state = Numerics.NaNs(1);
                layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [1, length, 1]), new TensorSpan<float>(y, [1, length, 1]),
                    new ReadOnlyTensorSpan<float>([1f], [1, 1, 1]), new TensorSpan<float>(state, [1, 1, 1]), mode);
                string label = $"{form} a {a} dt {dt} L {length} {mode}";
                Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{label}: y");
                Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{label}: state");
            }
        }
    }

    [Test]
    public void ChunkPowerMinusIdentityKeepsASmallPower()
    {
        // (I + M)^Q − I for ‖M‖ = 1e-12: formed as a power, then minus I, it cancels to ~1e-4 relative; squaring on the parts minus I
        // keeps float64 precision. Against the binomial series Q M + C(Q, 2) M² (M³ terms below 1e-30).
        int n = 3, q = 64;
        double[] m = [-1e-12, 2e-13, 0, 0, -3e-12, 1e-13, 5e-13, 0, -2e-12];
        var expected = Matrix<double>.Build.DenseOfRowMajor(n, n, m) * q
            + Matrix<double>.Build.DenseOfRowMajor(n, n, m).Power(2) * (q * (q - 1) / 2.0);
        Assert.That(RelativeError(M(n, Float64Matrix.PowerMinusIdentity(m, n, q)), expected), Is.LessThan(1e-13));
        Assert.That(Float64Matrix.PowerMinusIdentity(-1e-12, q), Is.EqualTo(q * -1e-12 + q * (q - 1) / 2.0 * 1e-24).Within(1e-13 * q * 1e-12));
    }

    [Test]
    public void LegSLayerAtLength16384StaysFiniteAndMatches()
    {
        var device = TestDevices.Get(TestBackend.Cpu);
        int l = 16384, h = 2, n = 64;
        var p = LsslProblem.Make(h, n, LsslStateMatrix.DenseShared, seed: 5);
        using var layer = Layer(p);
        using var system = p.System(LsslDiscretization.Bilinear, layer.ChunkLength);
        var u = new TestData(6).Normal(l * h);
        // A carried-in state too: its response decays over the sequence, across the CPU's 8192-step segments.
        var x0 = new TestData(7).Normal(h * n, 0.5);
        var expectedY = new double[l * h];
        var expectedState = TestData.ToDouble(x0);
        LsslReference.Forward(system, 1, l, u, expectedY, expectedState);
        foreach (var mode in new[] { LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv })
        {
            var y = Numerics.NaNs(l * h);
            var state = Numerics.NaNs(h * n);
            layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, [1, l, h]), new TensorSpan<float>(y, [1, l, h]),
                new ReadOnlyTensorSpan<float>(x0, [1, h, n]), new TensorSpan<float>(state, [1, h, n]), mode);
            Assert.That(Numerics.AllFinite(y), Is.True, $"{mode}: y finite");
            Assert.That(Numerics.RelativeRms(y, expectedY), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode}: y");
            Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode}: state");
        }
    }

    [Test]
    public void InitialStateResponseCarriesAcrossSegments()
    {
        // u = 0 and a slowly decaying system: y is x₀'s response alone, still large past the CPU's first 8192-step
        // segment; compared over the steps after it so a broken hand-over between segments cannot hide. The scan
        // and conv modes hand over carried states between segments; the recurrence only its x (and at steps this
        // small its fp32 state rounds ~20000 times: docs/lssl.md, numerics).
        int l = 20000, h = 2, n = 16, tail = 8192;
        var p = LsslProblem.Make(h, n, LsslStateMatrix.DensePerChannel, seed: 8, dtMin: 1e-4, dtMax: 2e-4);
        using var layer = Layer(p);
        using var system = p.System(LsslDiscretization.Bilinear, layer.ChunkLength);
        var u = new float[l * h];
        var x0 = new TestData(9).Normal(h * n);
        var expectedY = new double[l * h];
        var expectedState = TestData.ToDouble(x0);
        LsslReference.Forward(system, 1, l, u, expectedY, expectedState);
        foreach (var mode in new[] { LsslMode.Scan, LsslMode.Conv })
        {
            var y = Numerics.NaNs(l * h);
            var state = Numerics.NaNs(h * n);
            layer.Forward<float>(TestDevices.Get(TestBackend.Cpu), new ReadOnlyTensorSpan<float>(u, [1, l, h]), new TensorSpan<float>(y, [1, l, h]),
                new ReadOnlyTensorSpan<float>(x0, [1, h, n]), new TensorSpan<float>(state, [1, h, n]), mode);
            Assert.That(Numerics.RelativeRms(y.AsSpan(tail * h), expectedY.AsSpan(tail * h)), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode}: y after the first segment");
            Assert.That(Numerics.RelativeRms(state, expectedState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), $"{mode}: state");
        }
    }

    private static ReadOnlyTensorSpan<float> Slice(float[] u, int b, int l, int h, int start, int count)
    {
        var part = new float[b * count * h];
        for (int s = 0; s < b; s++) Array.Copy(u, (s * l + start) * h, part, s * count * h, count * h);
        return new ReadOnlyTensorSpan<float>(part, [b, count, h]);
    }

    private static TensorSpan<float> SliceOut(int b, int h, int count, out float[] part)
    {
        part = Numerics.NaNs(b * count * h);
        return new TensorSpan<float>(part, [b, count, h]);
    }

    private static void Scatter(float[] part, float[] y, int b, int l, int h, int start, int count)
    {
        for (int s = 0; s < b; s++) Array.Copy(part, s * count * h, y, (s * l + start) * h, count * h);
    }
}

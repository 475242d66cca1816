using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;
using Engine.Tests.Harness;

namespace Engine.Tests.Lssl;

/// <summary>LSSL parameters of one test problem, fp32 as a model holds them (the reference reads the same values).</summary>
public sealed record LsslProblem(int H, int N, LsslStateMatrix Form, float[] A, float[] B, bool BShared, float[] C, float[] D, float[] Dt)
{
    /// <summary>
    /// Stable structured parameters: dense shared = HiPPO-LegS; dense per channel = LegS and LegT alternating,
    /// B per channel; diagonal = S4D-real (a_n = −(n+1)·s_h). C ~ N(0, 1/N), D ~ N(0, 1), Δ log-uniform in [dtMin, dtMax].
    /// </summary>
    public static LsslProblem Make(int h, int n, LsslStateMatrix form, int seed, double dtMin = 1e-3, double dtMax = 1e-1)
    {
        var data = new TestData(seed);
        float[] a, b;
        bool bShared = false;
        switch (form)
        {
            case LsslStateMatrix.DenseShared:
            {
                var (a64, b64) = LsslInit.HippoLegS(n);
                a = ToFloat(a64); b = ToFloat(b64); bShared = true;
                break;
            }
            case LsslStateMatrix.DensePerChannel:
            {
                var (legS, _) = LsslInit.HippoLegS(n);
                var (legT, _) = LsslInit.HippoLegT(n);
                a = new float[h * n * n];
                for (int ch = 0; ch < h; ch++) ToFloat(ch % 2 == 0 ? legS : legT).CopyTo(a, ch * n * n);
                b = data.Normal((long)h * n);
                break;
            }
            default:
            {
                var scale = data.Uniform(h, 0.5, 1.5);
                a = new float[h * n];
                for (int ch = 0; ch < h; ch++)
                    for (int i = 0; i < n; i++) a[ch * n + i] = -(i + 1) * scale[ch];
                b = data.Normal((long)h * n);
                break;
            }
        }
        var c = data.Normal((long)h * n, 1.0 / Math.Sqrt(n));
        var d = data.Normal(h);
        var dt = ToFloat(LsslInit.LogUniformDt(h, seed, dtMin, dtMax));
        return new LsslProblem(h, n, form, a, b, bShared, c, d, dt);
    }

    public nint[] AShape => Form switch
    {
        LsslStateMatrix.DenseShared => [N, N],
        LsslStateMatrix.DensePerChannel => [H, N, N],
        _ => [H, N],
    };

    public LsslLayer Layer(LsslDiscretization method, int? chunk = null) =>
        new(new ReadOnlyTensorSpan<float>(A, AShape), new ReadOnlyTensorSpan<float>(B, BShared ? [N] : [H, N]),
            new ReadOnlyTensorSpan<float>(C, [H, N]), new ReadOnlyTensorSpan<float>(D, [H]), new ReadOnlyTensorSpan<float>(Dt, [H]),
            new LsslOptions { Discretization = method, StateMatrix = Form, ChunkLength = chunk });

    /// <summary>The float64 system the reference runs (the discretization itself is checked in LsslTests), built on
    /// <paramref name="scheduler"/> (default: all cores).</summary>
    public LsslSystem System(LsslDiscretization method, int chunk, IWorkScheduler? scheduler = null) =>
        new(new LsslConfig(H, N, Form, chunk), method, TestData.ToDouble(A), TestData.ToDouble(B), TestData.ToDouble(C),
            TestData.ToDouble(D), TestData.ToDouble(Dt), scheduler ?? AllCores);

    private static readonly IWorkScheduler AllCores = new ThreadPoolScheduler(Environment.ProcessorCount);

    private static float[] ToFloat(double[] x) => x.Select(v => (float)v).ToArray();
}

/// <summary>An LSSL call: shape, form of A, discretization, mode, element type and state.</summary>
public sealed class LsslCase : OpCase
{
    // The float64 reference of a problem is shared by the cases that differ only in mode or chunk length, and
    // so is the layer (its discretization is device- and mode-independent): built once per test run.
    private static readonly Dictionary<string, IReadOnlyDictionary<string, double[]>> References = new();
    private static readonly Dictionary<string, LsslLayer> Layers = new();

    public int B { get; init; } = 1;
    public int L { get; init; }
    public int H { get; init; } = 1;
    public int N { get; init; }
    public LsslStateMatrix Form { get; init; } = LsslStateMatrix.DenseShared;
    public LsslDiscretization Method { get; init; } = LsslDiscretization.Bilinear;
    public LsslMode Mode { get; init; } = LsslMode.Scan;
    public int? Chunk { get; init; }
    public bool Fp16 { get; init; }
    public bool WithInitialState { get; init; }
    public double DtMin { get; init; } = 1e-3;
    public double DtMax { get; init; } = 1e-1;
    public bool? SmallOverride { get; init; }

    public override bool Half => Fp16;

    // The simulated GPU runs one OS thread per GPU thread and a barrier per step of every (sequence, channel): keep it tiny.
    public override bool Small => SmallOverride ?? ((long)B * L * H <= 1000 && N <= 32);

    private string Problem =>
        $"lssl {Form} B{B} L{L} H{H} N{N} {Method} dt[{DtMin},{DtMax}]" + (Fp16 ? " fp16" : "") + (WithInitialState ? " x0" : "");

    public override string Name => $"{Problem} {Mode}" + (Chunk is null ? "" : $" Q{Chunk}");

    private LsslProblem Parameters() => LsslProblem.Make(H, N, Form, AttentionCase.StableSeed(Problem), DtMin, DtMax);

    private (float[] u, float[] x0) Inputs()
    {
        var data = new TestData(AttentionCase.StableSeed(Problem) + 1);
        var u = data.Normal((long)B * L * H);
        var x0 = WithInitialState ? data.Normal((long)B * H * N, 0.5) : new float[B * H * N];
        if (Fp16) u = TestData.RoundToHalf(u);
        return (u, x0);
    }

    public override IReadOnlyDictionary<string, double[]> Reference()
    {
        lock (References)
        {
            if (References.TryGetValue(Problem, out var cached)) return cached;
            var (u, x0) = Inputs();
            var p = Parameters();
            using var system = p.System(Method, LsslConfig.DefaultChunkLength(N));
            var y = new double[(long)B * L * H];
            var state = TestData.ToDouble(x0);
            LsslReference.Forward(system, B, L, u, y, state);
            var result = new Dictionary<string, double[]> { ["y"] = y, ["final_state"] = state };
            References[Problem] = result;
            return result;
        }
    }

    public override IReadOnlyDictionary<string, float[]> Run(EngineDevice device)
    {
        var (u, x0) = Inputs();
        LsslLayer layer;
        lock (Layers)
        {
            string key = $"{Problem} Q{Chunk}";
            if (!Layers.TryGetValue(key, out layer!)) Layers[key] = layer = Parameters().Layer(Method, Chunk);
        }
        nint[] shape = [B, L, H], stateShape = [B, H, N];
        var finalState = Numerics.NaNs((long)B * H * N);
        var init = WithInitialState ? new ReadOnlyTensorSpan<float>(x0, stateShape) : default;
        float[] y;
        if (Fp16)
        {
            var yh = Enumerable.Repeat(System.Half.NaN, B * L * H).ToArray();
            layer.Forward<System.Half>(device, new ReadOnlyTensorSpan<System.Half>(TestData.ToHalf(u), shape),
                new TensorSpan<System.Half>(yh, shape), init, new TensorSpan<float>(finalState, stateShape), Mode);
            y = TestData.FromHalf(yh);
        }
        else
        {
            y = Numerics.NaNs((long)B * L * H);
            layer.Forward<float>(device, new ReadOnlyTensorSpan<float>(u, shape), new TensorSpan<float>(y, shape),
                init, new TensorSpan<float>(finalState, stateShape), Mode);
        }
        return new Dictionary<string, float[]> { ["y"] = y, ["final_state"] = finalState };
    }
}

public static class LsslCases
{
    private static readonly LsslStateMatrix[] Forms = [LsslStateMatrix.DenseShared, LsslStateMatrix.DensePerChannel, LsslStateMatrix.Diagonal];
    private static readonly LsslMode[] Modes = [LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv];

    public static IEnumerable<OpCase> All
    {
        get
        {
            // The shapes, every form of A, every mode.
            foreach (var (b, l, h, n) in new[] { (1, 1, 1, 4), (2, 100, 8, 64), (1, 1000, 16, 64), (1, 4096, 4, 256) })
                foreach (var form in Forms)
                    foreach (var mode in Modes)
                        yield return new LsslCase { B = b, L = l, H = h, N = n, Form = form, Mode = mode, SmallOverride = l == 1 ? true : null };
            // Discretizations, a carried initial state, Auto, chunk lengths and remainders, odd H (a lone channel in conv's pairs).
            foreach (var method in new[] { LsslDiscretization.ForwardEuler, LsslDiscretization.BackwardEuler, LsslDiscretization.ZeroOrderHold })
                foreach (var form in Forms)
                    foreach (var mode in Modes)
                        yield return new LsslCase { B = 2, L = 150, H = 3, N = 16, Form = form, Method = method, Mode = mode, WithInitialState = true };
            foreach (var form in Forms)
                foreach (var mode in Modes.Append(LsslMode.Auto))
                    yield return new LsslCase { B = 2, L = 300, H = 5, N = 24, Form = form, Mode = mode, WithInitialState = true };
            foreach (var chunk in new[] { 16, 32, 128 })
                foreach (var mode in new[] { LsslMode.Scan, LsslMode.Conv })
                    yield return new LsslCase { B = 1, L = 777, H = 4, N = 40, Mode = mode, Chunk = chunk, WithInitialState = true };
            // Full 16-channel blocks (the SIMD tile transposes) next to a partial one.
            foreach (var mode in Modes)
                yield return new LsslCase { B = 2, L = 333, H = 40, N = 16, Mode = mode, WithInitialState = true };
            // Lengths around the chunk and the 8192-step segment of a CPU work item, on the scan.
            foreach (var l in new[] { 0, 15, 16, 17, 8191, 8192, 8193 })
                yield return new LsslCase { B = 1, L = l, H = 2, N = 16, Mode = LsslMode.Scan, WithInitialState = true };
            // fp16 in and out.
            foreach (var mode in Modes)
                yield return new LsslCase { B = 2, L = 200, H = 4, N = 32, Mode = mode, Fp16 = true, WithInitialState = true };
            // Small shapes the simulated GPU runs too.
            foreach (var form in Forms)
                foreach (var mode in Modes)
                    yield return new LsslCase { B = 2, L = 37, H = 3, N = 8, Form = form, Mode = mode, WithInitialState = true };
        }
    }
}

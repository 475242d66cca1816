using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gating;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// A seeded sweep of the delta rule's options in combination: every gate form, beta in (0, 1] or 1, query or value heads
/// grouped by 1, 2 or 4, L2 norm, explicit scale, both state layouts, the short convolution (widths 2 to 4, with or without
/// bias, carried state in and out) and the output norm, initial and final states, dense or packed sequences (empty ones and
/// lengths around the chunk), fp16, both modes, every chunk size, an output that is q's, k's or v's own tensor. Expected: q, k and v
/// convolved by the formula, the float64 kernel reference, the norm by its reference. The reference backend and the CPU run
/// every case, the GPU kernels on ILGPU's CPU accelerator at 16 threads per group and at CUDA's 128 in 32-lane warps run a few
/// (host or device tensors), and a session fed the same tokens in Prefill and Step calls (with its state read back and set again)
/// runs every case without a convolution or norm.
/// </summary>
[TestFixture]
public sealed class DeltaRuleCombinationTests
{
    private const int Seed = 1, Cases = 120, GpuEvery = 40;

    private EngineDevice _cudaGeometry = null!;

    [OneTimeSetUp]
    public void CreateDevice() => _cudaGeometry = EngineDevice.Create(Backend.Gpu,
        new EngineDeviceOptions { Gpu = GpuPreference.CpuAccelerator, CpuAcceleratorGroupSize = 128, CpuAcceleratorWarpSize = 32 });

    [OneTimeTearDown]
    public void DisposeDevice() => _cudaGeometry.Dispose();

    private sealed record ConvSpec(int Width, bool Bias, bool InitialState, bool FinalState, bool Silu);

    private sealed record NormSpec(GateActivation Activation, float Epsilon);

    private sealed record Spec(int B, int T, int[]? SeqLens, int Hq, int Hk, int Hv, int K, int V, GateKind Gate, bool BetaOne, bool L2, float? Scale,
        StateLayout Layout, ConvSpec? Conv, NormSpec? Norm, bool Init, bool Final, bool Fp16, AttentionMode Mode, int Chunk, string OutputIn = "-")
    {
        public int Sequences => SeqLens?.Length ?? B;
        public int TotalT => SeqLens?.Sum() ?? T;
        public int BatchDim => SeqLens is null ? B : 1;
        public int Tokens => BatchDim * TotalT;
        public int Ho => Math.Max(Hq, Hv);
        public int Channels => (Hq + Hk) * K + Hv * V;
        public int[]? Cu => SeqLens is null ? null : [0, .. SeqLens.Select((_, i) => SeqLens.Take(i + 1).Sum())];
        public SequenceLayout Packing => SeqLens is null ? SequenceLayout.Dense(B, T) : SequenceLayout.Packed(Cu!, TotalT);
        public HeadLayout Heads => new(Hq, Hk, Hv, K, V);
        public nint[] StateShape => Layout == StateLayout.ValueMajor ? [Sequences, Hv, V, K] : [Sequences, Hv, K, V];
        public long StateLength => (long)Sequences * Hv * K * V;

        public override string ToString() =>
            $"delta {(SeqLens is null ? $"B{B} T{T}" : $"varlen[{string.Join(",", SeqLens)}]")} H{Hq}/{Hk}/{Hv} K{K} V{V} {Gate} β{(BetaOne ? "1" : "open")} " +
            $"l2={L2} scale={Scale?.ToString() ?? "-"} {Layout} conv={(Conv is null ? "-" : Conv.ToString())} norm={(Norm is null ? "-" : Norm.ToString())} " +
            $"init={Init} final={Final} {(Fp16 ? "fp16" : "fp32")} {Mode} chunk{Chunk} output={OutputIn}";
    }

    private static Spec Draw(Random r)
    {
        int chunk = new[] { 16, 32, 64 }[r.Next(3)];
        int Len() => r.Next(7) switch { 0 => 0, 1 => 1, 2 => chunk - 1, 3 => chunk, 4 => chunk + 1, 5 => Math.Min(3 * chunk + 5, 70), _ => r.Next(2, 40) };
        int[]? seqLens = null;
        int b = 1, t = 0;
        if (r.Next(3) == 0)
        {
            seqLens = new int[r.Next(1, 5)];
            for (int i = 0; i < seqLens.Length; i++) seqLens[i] = Len();
        }
        else
        {
            b = r.Next(1, 3);
            t = Len();
        }
        int hk = r.Next(1, 3), m = new[] { 1, 2, 4 }[r.Next(3)];
        bool groupedValues = r.Next(2) == 0;
        int hq = groupedValues ? hk : hk * m, hv = groupedValues ? hk * m : hk;
        int[] dims = [4, 8, 16, 17, 5, 32, 12];
        int k = dims[r.Next(dims.Length)], v = r.Next(3) == 0 ? k : dims[r.Next(dims.Length)];
        var conv = r.Next(2) == 0 ? new ConvSpec(r.Next(2, 5), r.Next(2) == 0, r.Next(2) == 0, r.Next(2) == 0, r.Next(3) != 0) : null;
        var norm = r.Next(2) == 0 ? new NormSpec(r.Next(2) == 0 ? GateActivation.Silu : GateActivation.Sigmoid, r.Next(2) == 0 ? 1e-6f : 0f) : null;
        return new Spec(b, t, seqLens, hq, hk, hv, k, v, (GateKind)new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey }[r.Next(3)], r.Next(3) == 0,
            r.Next(2) == 0, r.Next(3) == 0 ? (float)(0.1 + r.NextDouble()) : null, r.Next(2) == 0 ? StateLayout.KeyMajor : StateLayout.ValueMajor,
            conv, norm, r.Next(2) == 0, r.Next(4) != 0, r.Next(4) == 0, r.Next(3) == 0 ? AttentionMode.Recurrent : AttentionMode.Chunked, chunk, new[] { "-", "q", "k", "v" }[r.Next(4)]);
    }

    private sealed record Inputs(float[] Q, float[] K, float[] V, float[] Beta, float[] G, float[] S0, float[] Weight, float[] Bias, float[] ConvState, float[] Z, float[] NormScale);

    private static Inputs Make(Spec s, int seed)
    {
        var data = new TestData(seed);
        float[] Round(float[] a) => s.Fp16 ? TestData.RoundToHalf(a) : a;
        int n = s.Tokens;
        var q = Round(data.Normal((long)n * s.Hq * s.K));
        var k = Round(s.L2 ? data.Normal((long)n * s.Hk * s.K) : s.Conv is null ? data.UnitRows((long)n * s.Hk, s.K) : data.Normal((long)n * s.Hk * s.K, 1.5 / Math.Sqrt(s.K)));
        var v = Round(data.Normal((long)n * s.Hv * s.V));
        var beta = Round(s.BetaOne ? Enumerable.Repeat(1f, n * s.Hv).ToArray() : data.Uniform(n * s.Hv, 0.05, 1.0));
        var g = Round(s.Gate switch
        {
            GateKind.PerHead => data.LogGates((long)n * s.Hv, 1.0),
            GateKind.PerKey => data.LogGates((long)n * s.Hv * s.K, 1.0),
            _ => [],
        });
        var s0 = s.Init ? data.Normal(s.StateLength, 0.5) : [];
        int w = s.Conv?.Width ?? 1;
        var weight = s.Conv is null ? [] : data.Normal(s.Channels * w, 0.6);
        var bias = s.Conv is { Bias: true } ? data.Normal(s.Channels, 0.1) : [];
        var convState = s.Conv is { InitialState: true } ? data.Normal(s.Sequences * s.Channels * (w - 1), 0.3) : [];
        var z = s.Norm is null ? [] : data.Normal((long)n * s.Ho * s.V);
        var normScale = s.Norm is null ? [] : data.Uniform(s.V, 0.5, 1.5);
        return new Inputs(q, k, v, beta, g, s0, weight, bias, convState, z, normScale);
    }

    /// <summary>The float64 oracle: q, k, v convolved by the formula, the kernel reference, the norm by the formula.</summary>
    private static (double[] Output, double[] State, float[]? ConvState) Expected(Spec s, Inputs x)
    {
        float[] q = x.Q, k = x.K, v = x.V;
        float[]? convFinal = null;
        var seq = s.Packing;
        if (s.Conv is { } c)
        {
            int C = s.Channels, w = c.Width, carry = w - 1;
            (float[] Rows, int Offset, int Width)[] parts = [(x.Q, 0, s.Hq * s.K), (x.K, s.Hq * s.K, s.Hk * s.K), (x.V, (s.Hq + s.Hk) * s.K, s.Hv * s.V)];
            var outs = parts.Select(p => new float[p.Rows.Length]).ToArray();
            convFinal = c.FinalState ? new float[s.Sequences * C * carry] : null;
            for (int n = 0; n < seq.Count; n++)
                for (int pi = 0; pi < 3; pi++)
                {
                    var (rows, offset, width) = parts[pi];
                    double Raw(int p, int ch) => p >= 0 ? rows[(seq.Start(n) + p) * width + ch - offset]
                        : x.ConvState.Length == 0 ? 0 : x.ConvState[(n * C + ch) * carry + carry + p];
                    for (int ch = offset; ch < offset + width; ch++)
                    {
                        for (int p = 0; p < seq.Length(n); p++)
                        {
                            double sum = x.Bias.Length == 0 ? 0 : x.Bias[ch];
                            for (int j = 0; j < w; j++) sum += x.Weight[ch * w + j] * Raw(p - carry + j, ch);
                            outs[pi][(seq.Start(n) + p) * width + ch - offset] = (float)(c.Silu ? sum / (1 + Math.Exp(-sum)) : sum);
                        }
                        if (convFinal is not null)
                            for (int j = 0; j < carry; j++) convFinal[(n * C + ch) * carry + j] = (float)Raw(seq.Length(n) - carry + j, ch);
                    }
                }
            (q, k, v) = (outs[0], outs[1], outs[2]);
        }
        var config = new DeltaRuleConfig(s.Heads, s.Gate, s.Scale ?? 1f / MathF.Sqrt(s.K), s.Chunk, s.L2, stateLayout: s.Layout);
        var o = new double[(long)s.Tokens * s.Ho * s.V];
        var st = s.Init ? TestData.ToDouble(x.S0) : new double[s.StateLength];
        DeltaRuleReference.Forward(config, seq, q, k, v, x.Beta, x.G, o, st);
        if (s.Norm is { } norm)
        {
            var of = o.Select(d => (float)d).ToArray();
            GatedRmsNormReference.Forward(of, x.Z, x.NormScale, norm.Epsilon, norm.Activation, o);
        }
        return (o, st, convFinal);
    }

    private static T[] As<T>(float[] a) where T : unmanaged =>
        typeof(T) == typeof(Half) ? (T[])(object)TestData.ToHalf(a) : (T[])(object)a.Clone();

    private static float[] Back<T>(T[] a) where T : unmanaged => a is Half[] h ? TestData.FromHalf(h) : (float[])(object)a;

    private static DeltaRuleOptions Options(Spec s, Inputs x, float[]? convFinal) => new()
    {
        Scale = s.Scale,
        ChunkSize = s.Chunk,
        Mode = s.Mode,
        StateLayout = s.Layout,
        QkL2Norm = s.L2,
        Convolution = s.Conv is { } c ? new ShortConvolution
        {
            Weight = x.Weight, Width = c.Width, Bias = x.Bias, Silu = c.Silu, InitialState = x.ConvState, FinalState = convFinal,
        } : null,
        OutputNorm = s.Norm is { } n ? new GatedOutputNorm { Scale = x.NormScale, Gate = x.Z, Epsilon = n.Epsilon, Activation = n.Activation } : null,
    };

    private static (float[] Output, float[]? State, float[]? ConvState) Call<T>(EngineDevice device, Spec s, Inputs x, bool onDevice) where T : unmanaged
    {
        int bd = s.BatchDim, tt = s.TotalT;
        nint[] qs = [bd, tt, s.Hq, s.K], ks = [bd, tt, s.Hk, s.K], vs = [bd, tt, s.Hv, s.V], bs = [bd, tt, s.Hv], os = [bd, tt, s.Ho, s.V];
        nint[] gs = s.Gate == GateKind.PerKey ? [bd, tt, s.Hv, s.K] : [bd, tt, s.Hv];
        var q = As<T>(x.Q);
        var k = As<T>(x.K);
        var v = As<T>(x.V);
        var o = As<T>(Numerics.NaNs((long)s.Tokens * s.Ho * s.V));
        if (!onDevice && s.Conv is null)
            o = s.OutputIn switch { "q" when s.Hq == s.Ho && s.K == s.V => q, "k" when s.Hk == s.Ho && s.K == s.V => k, "v" when s.Hv == s.Ho => v, _ => o };
        var st = s.Final ? Numerics.NaNs(s.StateLength) : null;
        var convFinal = s.Conv is { FinalState: true } ? Numerics.NaNs(s.Sequences * s.Channels * (s.Conv.Width - 1)) : null;
        var options = Options(s, x, convFinal);
        bool gated = s.Gate != GateKind.None;
        if (onDevice)
        {
            using var dq = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.Q), qs));
            using var dk = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.K), ks));
            using var dv = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.V), vs));
            using var db = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.Beta), bs));
            using var dg = gated ? device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.G), gs)) : null;
            using var dout = device.Upload(new ReadOnlyTensorSpan<T>(o, os));
            using var dinit = s.Init ? device.Upload(new ReadOnlyTensorSpan<float>(x.S0, s.StateShape)) : null;
            using var dfin = s.Final ? device.Allocate<float>(s.StateShape) : null;
            Engine.DeltaRule.Forward(device, dq, dk, dv, db, dg, dout, dinit, dfin, s.Cu, options);
            dout.Download(o.AsSpan());
            dfin?.Download(st!.AsSpan());
            return (Back(o), st, convFinal);
        }
        Engine.DeltaRule.Forward(device, new ReadOnlyTensorSpan<T>(q, qs), new ReadOnlyTensorSpan<T>(k, ks), new ReadOnlyTensorSpan<T>(v, vs),
            new ReadOnlyTensorSpan<T>(As<T>(x.Beta), bs), gated ? new ReadOnlyTensorSpan<T>(As<T>(x.G), gs) : default, new TensorSpan<T>(o, os),
            s.Init ? new ReadOnlyTensorSpan<float>(x.S0, s.StateShape) : default, s.Final ? new TensorSpan<float>(st, s.StateShape) : default, s.Cu, options);
        return (Back(o), st, convFinal);
    }

    private static float[] Rows(float[] a, int total, List<int> rows)
    {
        if (a.Length == 0) return a;
        int row = a.Length / total;
        var r = new float[rows.Count * row];
        for (int i = 0; i < rows.Count; i++) Array.Copy(a, (long)rows[i] * row, r, (long)i * row, row);
        return r;
    }

    /// <summary>A session fed a few tokens of every sequence per call (packed with cu_seqlens, or a dense batch), by Prefill or Step.</summary>
    private static (float[] Output, float[] State) Session<T>(EngineDevice device, Spec s, Inputs x, bool onDevice, Random r) where T : unmanaged
    {
        using var session = new DeltaRuleSession(device, s.Sequences, s.Heads, s.Gate, Options(s, x, null) with { Convolution = null, OutputNorm = null });
        if (s.Init) session.SetState(new ReadOnlyTensorSpan<float>(x.S0, s.StateShape));
        var seq = s.Packing;
        var output = new float[(long)s.Tokens * s.Ho * s.V];
        var done = new int[s.Sequences];
        bool packed = s.SeqLens is not null;
        for (int call = 0; call == 0 || Enumerable.Range(0, s.Sequences).Any(n => done[n] < seq.Length(n)); call++)
        {
            var rows = new List<int>();
            var cu = new List<int> { 0 };
            bool step = r.Next(2) == 0;
            // A dense batch takes the same count from every sequence.
            int same = Math.Min(seq.Length(0) - done[0], step ? 1 : r.Next(1, s.Chunk + 3));
            for (int n = 0; n < s.Sequences; n++)
            {
                int left = seq.Length(n) - done[n];
                int take = packed ? (call >= 6 ? left : Math.Min(left, r.Next(3) == 0 ? 0 : r.Next(1, s.Chunk + 3))) : same;
                for (int j = 0; j < take; j++) rows.Add(seq.Start(n) + done[n] + j);
                done[n] += take;
                cu.Add(cu[^1] + take);
            }
            int total = s.Tokens, count = rows.Count;
            int bd = packed ? 1 : s.B, tt = packed ? count : same;
            if (!packed && same == 0) break;
            nint[] qs = [bd, tt, s.Hq, s.K], ks = [bd, tt, s.Hk, s.K], vs = [bd, tt, s.Hv, s.V], bs = [bd, tt, s.Hv], os = [bd, tt, s.Ho, s.V];
            nint[] gs = s.Gate == GateKind.PerKey ? [bd, tt, s.Hv, s.K] : [bd, tt, s.Hv];
            var o = As<T>(Numerics.NaNs((long)count * s.Ho * s.V));
            int[]? callCu = packed ? [.. cu] : null;
            bool gated = s.Gate != GateKind.None;
            if (onDevice)
            {
                using var dq = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(Rows(x.Q, total, rows)), qs));
                using var dk = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(Rows(x.K, total, rows)), ks));
                using var dv = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(Rows(x.V, total, rows)), vs));
                using var db = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(Rows(x.Beta, total, rows)), bs));
                using var dg = gated ? device.Upload(new ReadOnlyTensorSpan<T>(As<T>(Rows(x.G, total, rows)), gs)) : null;
                using var dout = device.Upload(new ReadOnlyTensorSpan<T>(o, os));
                if (step) session.Step(dq, dk, dv, db, dg, dout, callCu);
                else session.Prefill(dq, dk, dv, db, dg, dout, callCu);
                dout.Download(o.AsSpan());
            }
            else
            {
                var qa = As<T>(Rows(x.Q, total, rows));
                var ka = As<T>(Rows(x.K, total, rows));
                var va = As<T>(Rows(x.V, total, rows));
                o = s.OutputIn switch { "q" when s.Hq == s.Ho && s.K == s.V => qa, "k" when s.Hk == s.Ho && s.K == s.V => ka, "v" when s.Hv == s.Ho => va, _ => o };
                var q = new ReadOnlyTensorSpan<T>(qa, qs);
                var k = new ReadOnlyTensorSpan<T>(ka, ks);
                var v = new ReadOnlyTensorSpan<T>(va, vs);
                var b = new ReadOnlyTensorSpan<T>(As<T>(Rows(x.Beta, total, rows)), bs);
                var g = gated ? new ReadOnlyTensorSpan<T>(As<T>(Rows(x.G, total, rows)), gs) : default;
                if (step) session.Step(q, k, v, b, g, new TensorSpan<T>(o, os), callCu);
                else session.Prefill(q, k, v, b, g, new TensorSpan<T>(o, os), callCu);
            }
            var of = Back(o);
            int row = s.Ho * s.V;
            // Dense batch rows come back [B, same]: row i of the call is sequence i / same's token.
            for (int i = 0; i < count; i++) Array.Copy(of, (long)i * row, output, (long)rows[i] * row, row);
        }
        var state = Numerics.NaNs(s.StateLength);
        session.GetState(new TensorSpan<float>(state, s.StateShape));
        // The state read back and written again is the same state.
        session.SetState(new ReadOnlyTensorSpan<float>(state, s.StateShape));
        var again = Numerics.NaNs(s.StateLength);
        session.GetState(new TensorSpan<float>(again, s.StateShape));
        if (!state.SequenceEqual(again)) throw new InvalidOperationException("the state read back after SetState of the state GetState gave differs from it");
        return (output, state);
    }

    /// <summary>Runs case <paramref name="i"/>: the problems found, each naming the case and the backend (empty: all agree).</summary>
    private List<string> RunCase(int i)
    {
        var problems = new List<string>();
        var r = new Random(Seed * 1000 + i);
        var s = Draw(r);
        var x = Make(s, Seed * 1000 + i);
        double tol = s.Fp16 ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        var (eo, es, ec) = Expected(s, x);
        var backends = new List<(string, EngineDevice, bool)> { ("reference", TestDevices.Reference, false), ("cpu", TestDevices.Of(Backend.Cpu), false) };
        long work = (long)Math.Max(s.Tokens, 1) * s.Ho * s.K * s.V;
        if (i % GpuEvery == 0 && work < 60_000)
        {
            bool hostOnly = s.Conv is not null || s.Norm is not null;
            backends.Add(("gpu16", TestDevices.Of(Backend.Gpu), !hostOnly && r.Next(2) == 0));
            backends.Add(("gpu128", _cudaGeometry, !hostOnly && r.Next(2) == 0));
        }
        foreach (var (name, device, onDevice) in backends)
        {
            string where = $"{s} on {name}{(onDevice ? " (device tensors)" : "")}";
            try
            {
                var (o, st, cs) = s.Fp16 ? Call<Half>(device, s, x, onDevice) : Call<float>(device, s, x, onDevice);
                double e1 = Numerics.RelativeRms(o, eo);
                if (!(e1 <= tol)) problems.Add($"{where}: output relative RMS {e1:E2}");
                if (st is not null && !(Numerics.RelativeRms(st, es) <= tol)) problems.Add($"{where}: final state relative RMS {Numerics.RelativeRms(st, es):E2}");
                if (cs is not null && !(Numerics.RelativeRms(cs, ec!) <= 1e-6)) problems.Add($"{where}: convolution state relative RMS {Numerics.RelativeRms(cs, ec!):E2}");
            }
            catch (Exception e) { problems.Add($"{where}: threw {e.GetType().Name}: {e.Message}"); }
            if (s.Conv is not null || s.Norm is not null || s.Tokens == 0) continue;
            try
            {
                var (o, st) = s.Fp16 ? Session<Half>(device, s, x, onDevice, new Random(i)) : Session<float>(device, s, x, onDevice, new Random(i));
                double e1 = Numerics.RelativeRms(o, eo), e2 = Numerics.RelativeRms(st, es);
                if (!(e1 <= tol)) problems.Add($"{where}: session output relative RMS {e1:E2}");
                if (!(e2 <= tol)) problems.Add($"{where}: session state relative RMS {e2:E2}");
            }
            catch (Exception e) { problems.Add($"{where}: session threw {e.GetType().Name}: {e.Message}"); }
        }
        return problems;
    }

    [Test]
    public void EveryBackendAndSessionsMatchTheReferenceOverDrawnCombinations()
    {
        var problems = new List<string>();
        for (int i = 0; i < Cases; i++) problems.AddRange(RunCase(i).Select(p => $"case {i}: {p}"));
        foreach (var p in problems) TestContext.Out.WriteLine(p);
        Assert.That(problems, Is.Empty);
    }
}

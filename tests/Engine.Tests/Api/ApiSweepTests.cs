using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// A seeded sweep of the attention facades and sessions over drawn combinations (batch or packed sequences with empty and
/// one-token ones, lengths around the chunk, grouped query or value heads, K and V off multiples of 16, every gate form,
/// scale, L2 norm, state layout, initial and final states, fp16, chunked and recurrent, host and device tensors, a session
/// fed in pieces, dense or packed with cu_seqlens of its own per call), and LSSL's layers, modes and sessions: the CPU and the GPU
/// kernels on ILGPU's CPU accelerator against the float64 reference. Fixed seed, a few seconds; API_SWEEP_SEED, API_SWEEP_CASES,
/// API_SWEEP_GPU_CASES and API_SWEEP_LSSL_CASES run a longer sweep by hand.
/// </summary>
[TestFixture]
public sealed class ApiSweepTests
{
    internal enum OpKind { Gla, DeltaRule, Lightning }

    internal sealed record Spec(OpKind Op, int B, int T, int[]? SeqLens, int Hq, int Hk, int Hv, int K, int V, GateKind Gate, bool Fp16,
        AttentionMode Mode, int Chunk, StateLayout Layout, bool Init, bool Final, float? Scale, bool L2, float[]? Slopes, int[] Pieces, float? Extreme = null)
    {
        public int Sequences => SeqLens?.Length ?? B;
        public int TotalT => SeqLens?.Sum() ?? T;
        public int BatchDim => SeqLens is null ? B : 1;
        public int Ho => Math.Max(Hq, Hv);
        public int[]? Cu => SeqLens is null ? null : [0, .. SeqLens.Select((_, i) => SeqLens.Take(i + 1).Sum())];
        public HeadLayout Heads => new(Hq, Hk, Hv, K, V);
        public nint[] StateShape => Layout == StateLayout.ValueMajor ? [Sequences, Hv, V, K] : [Sequences, Hv, K, V];
        public long StateLength => (long)Sequences * Hv * K * V;
        public long Work => (long)Math.Max(TotalT, 1) * Ho * K * V;

        public override string ToString() =>
            $"{Op} {(SeqLens is null ? $"B{B} T{T}" : $"varlen[{string.Join(",", SeqLens)}]")} H{Hq}/{Hk}/{Hv} K{K} V{V} {Gate} " +
            $"{(Fp16 ? "fp16" : "fp32")} {Mode} chunk{Chunk} {Layout} init={Init} final={Final} scale={Scale?.ToString() ?? "-"} l2={L2} " +
            $"slopes={(Slopes is null ? "-" : string.Join(",", Slopes))} pieces=[{string.Join(",", Pieces)}] extreme={Extreme?.ToString() ?? "-"}";

        /// <summary>Resets and decays past fp32's sums: exact only to the running sum's ulp (as the harness allows).</summary>
        public bool Extremes => Extreme is not null || (Slopes?.Any(x => x >= 1e30f) ?? false);
    }

    internal sealed record Inputs(float[] Q, float[] K, float[] V, float[] G, float[] Beta, float[] S0);

    private static readonly int[] Dims = [4, 8, 16, 17, 40, 5, 72, 32];

    internal static Spec Draw(Random r)
    {
        var op = (OpKind)r.Next(3);
        int chunk = op switch
        {
            OpKind.DeltaRule => DeltaRuleConfigChunks[r.Next(DeltaRuleConfigChunks.Length)],
            _ => GlaChunks[r.Next(GlaChunks.Length)],
        };
        int Len() => r.Next(6) switch { 0 => 0, 1 => 1, 2 => chunk - 1, 3 => chunk + 1, _ => r.Next(2, 40) };
        int[]? seqLens = null;
        int b = 1, t = 0;
        if (r.Next(3) == 0)
        {
            seqLens = new int[r.Next(1, 5)];
            for (int i = 0; i < seqLens.Length; i++) seqLens[i] = Len();
        }
        else
        {
            b = r.Next(1, 4);
            t = Len();
        }
        int hk = r.Next(1, 3), ratio = r.Next(1, 5);
        bool groupedValues = r.Next(2) == 0;
        int hq = groupedValues ? hk : hk * ratio, hv = groupedValues ? hk * ratio : hk;
        int k = Dims[r.Next(Dims.Length)], v = Dims[r.Next(Dims.Length)];
        var gate = op == OpKind.Lightning ? GateKind.Constant : (GateKind)new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey }[r.Next(3)];
        float? scale = r.Next(3) == 0 ? (float)(r.NextDouble() * 2) : null;
        float[]? slopes = op == OpKind.Lightning && r.Next(2) == 0 ? Enumerable.Range(0, hv).Select(_ => r.Next(10) switch
        {
            0 => 0f,
            1 => 1e-6f,
            2 => 30f,
            3 => 1e30f,
            4 => float.MaxValue,
            5 => (float)(r.NextDouble() * 1e-4),
            _ => (float)r.NextDouble(),
        }).ToArray() : null;
        float? extreme = gate is GateKind.PerHead or GateKind.PerKey && r.Next(6) == 0 ? new[] { -1e30f, -float.MaxValue, -1e37f, -40f }[r.Next(4)] : null;
        int total = seqLens?.Sum() ?? t;
        var pieces = new List<int>();
        if (seqLens is null)
        {
            int left = t;
            while (left > 0)
            {
                int p = r.Next(3) == 0 ? 1 : Math.Min(left, r.Next(1, chunk + 3));
                pieces.Add(p);
                left -= p;
            }
        }
        var spec = new Spec(op, b, t, seqLens, hq, hk, hv, k, v, gate, r.Next(4) == 0, r.Next(3) == 0 ? AttentionMode.Recurrent : AttentionMode.Chunked, chunk,
            r.Next(2) == 0 ? StateLayout.KeyMajor : StateLayout.ValueMajor, r.Next(2) == 0, r.Next(4) != 0, scale, op == OpKind.DeltaRule && r.Next(2) == 0,
            slopes, [.. pieces], extreme);
        return spec.Fp16 ? spec with { Extreme = null } : spec;
    }

    private static readonly int[] GlaChunks = [16, 32, 64, 128, 256];
    private static readonly int[] DeltaRuleConfigChunks = [16, 32, 64];

    internal static Inputs Make(Spec s, int seed)
    {
        var data = new TestData(seed);
        long rows = (long)s.BatchDim * s.TotalT;
        float[] Round(float[] a) => s.Fp16 ? TestData.RoundToHalf(a) : a;
        var q = Round(data.Normal(rows * s.Hq * s.K));
        var k = Round(s.Op == OpKind.DeltaRule && !s.L2 ? data.UnitRows(rows * s.Hk, s.K) : data.Normal(rows * s.Hk * s.K, s.Op == OpKind.Lightning ? 0.3 : 1));
        var v = Round(data.Normal(rows * s.Hv * s.V));
        var g = s.Gate switch
        {
            GateKind.PerHead => Round(data.LogGates(rows * s.Hv, 1.0)),
            GateKind.PerKey => Round(data.LogGates(rows * s.Hv * s.K, 1.0)),
            _ => [],
        };
        if (s.Extreme is float x0)
            for (int i = 0; i < g.Length; i += 5) g[i] = x0;
        var beta = s.Op == OpKind.DeltaRule ? Round(data.Uniform(rows * s.Hv, 0.05, 1.0)) : [];
        var s0 = s.Init ? data.Normal(s.StateLength, 0.5) : [];
        return new Inputs(q, k, v, g, beta, s0);
    }

    private static T[] As<T>(float[] a) where T : unmanaged =>
        typeof(T) == typeof(Half) ? (T[])(object)TestData.ToHalf(a) : (T[])(object)a.Clone();

    private static float[] Back<T>(T[] a) where T : unmanaged => a is Half[] h ? TestData.FromHalf(h) : (float[])(object)a;

    /// <summary>One whole-sequence call: the output and the final state (null when not asked for).</summary>
    internal static (float[] Output, float[]? State) Call<T>(EngineDevice device, Spec s, Inputs x, bool onDevice) where T : unmanaged
    {
        var shapes = CallShapes.Of(s, s.BatchDim, s.TotalT);
        var o = As<T>(Numerics.NaNs(shapes.Output.Aggregate(1L, (a, d) => a * d)));
        var st = s.Final ? Numerics.NaNs(s.StateLength) : null;
        var cu = s.Cu;
        if (onDevice)
        {
            using var d = new DeviceInputs<T>(device, s, shapes, x, o);
            using var dinit = s.Init ? device.Upload(new ReadOnlyTensorSpan<float>(x.S0, s.StateShape)) : null;
            using var dfin = s.Final ? device.Allocate<float>(s.StateShape) : null;
            switch (s.Op)
            {
                case OpKind.Gla: Engine.Gla.Forward(device, d.Q, d.K, d.V, d.G, d.Output, dinit, dfin, cu, GlaOpts(s)); break;
                case OpKind.DeltaRule: Engine.DeltaRule.Forward(device, d.Q, d.K, d.V, d.Beta!, d.G, d.Output, dinit, dfin, cu, DeltaOpts(s)); break;
                default: Engine.Lightning.Forward(device, d.Q, d.K, d.V, d.Output, dinit, dfin, cu, LightningOpts(s)); break;
            }
            d.Output.Download(o.AsSpan());
            dfin?.Download(st!.AsSpan());
            return (Back(o), st);
        }
        var h = HostInputs<T>.Of(s, shapes, x);
        var O = new TensorSpan<T>(o, shapes.Output);
        var init = s.Init ? new ReadOnlyTensorSpan<float>(x.S0, s.StateShape) : default;
        var fin = s.Final ? new TensorSpan<float>(st, s.StateShape) : default;
        switch (s.Op)
        {
            case OpKind.Gla: Engine.Gla.Forward(device, h.Q, h.K, h.V, h.G, O, init, fin, cu, GlaOpts(s)); break;
            case OpKind.DeltaRule: Engine.DeltaRule.Forward(device, h.Q, h.K, h.V, h.Beta, h.G, O, init, fin, cu, DeltaOpts(s)); break;
            default: Engine.Lightning.Forward(device, h.Q, h.K, h.V, O, init, fin, cu, LightningOpts(s)); break;
        }
        return (Back(o), st);
    }

    /// <summary>The shapes of a call's q, k, v, g, beta and output over <paramref name="batch"/> × <paramref name="tokens"/>.</summary>
    private sealed record CallShapes(nint[] Q, nint[] K, nint[] V, nint[] G, nint[] Beta, nint[] Output)
    {
        public static CallShapes Of(Spec s, nint batch, nint tokens) =>
            new([batch, tokens, s.Hq, s.K], [batch, tokens, s.Hk, s.K], [batch, tokens, s.Hv, s.V],
                s.Gate == GateKind.PerKey ? [batch, tokens, s.Hv, s.K] : [batch, tokens, s.Hv], [batch, tokens, s.Hv], [batch, tokens, s.Ho, s.V]);
    }

    /// <summary>A call's inputs as host tensors; g where the gate form has one, beta for the delta rule (else empty).</summary>
    private readonly ref struct HostInputs<T> where T : unmanaged
    {
        public ReadOnlyTensorSpan<T> Q { get; init; }
        public ReadOnlyTensorSpan<T> K { get; init; }
        public ReadOnlyTensorSpan<T> V { get; init; }
        public ReadOnlyTensorSpan<T> G { get; init; }
        public ReadOnlyTensorSpan<T> Beta { get; init; }

        public static HostInputs<T> Of(Spec s, CallShapes shapes, Inputs x) => new()
        {
            Q = new(As<T>(x.Q), shapes.Q), K = new(As<T>(x.K), shapes.K), V = new(As<T>(x.V), shapes.V),
            G = HasGate(s) ? new(As<T>(x.G), shapes.G) : default,
            Beta = s.Op == OpKind.DeltaRule ? new(As<T>(x.Beta), shapes.Beta) : default,
        };
    }

    /// <summary>A call's inputs and its NaN-filled output uploaded; g and beta as <see cref="HostInputs{T}"/> has them (else null).</summary>
    private sealed class DeviceInputs<T> : IDisposable where T : unmanaged
    {
        public DeviceInputs(EngineDevice device, Spec s, CallShapes shapes, Inputs x, T[] output)
        {
            Q = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.Q), shapes.Q));
            K = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.K), shapes.K));
            V = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.V), shapes.V));
            G = HasGate(s) ? device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.G), shapes.G)) : null;
            Beta = s.Op == OpKind.DeltaRule ? device.Upload(new ReadOnlyTensorSpan<T>(As<T>(x.Beta), shapes.Beta)) : null;
            Output = device.Upload(new ReadOnlyTensorSpan<T>(output, shapes.Output));
        }

        public DeviceTensor<T> Q { get; }
        public DeviceTensor<T> K { get; }
        public DeviceTensor<T> V { get; }
        public DeviceTensor<T>? G { get; }
        public DeviceTensor<T>? Beta { get; }
        public DeviceTensor<T> Output { get; }

        public void Dispose()
        {
            foreach (var tensor in new[] { Q, K, V, G, Beta, Output }) tensor?.Dispose();
        }
    }

    private static bool HasGate(Spec s) => s.Gate is GateKind.PerHead or GateKind.PerKey;

    internal static GlaOptions GlaOpts(Spec s) => new() { Scale = s.Scale, ChunkSize = s.Chunk, Mode = s.Mode, StateLayout = s.Layout };

    internal static DeltaRuleOptions DeltaOpts(Spec s) =>
        new() { Scale = s.Scale, ChunkSize = s.Chunk, Mode = s.Mode, StateLayout = s.Layout, QkL2Norm = s.L2 };

    internal static LightningOptions LightningOpts(Spec s) =>
        new() { Slopes = s.Slopes, Scale = s.Scale ?? 1f, BlockSize = s.Chunk, Mode = s.Mode, StateLayout = s.Layout };

    /// <summary>Tokens [t0, t0 + n) of every batch row of a dense [B, T, row] array.</summary>
    private static float[] Slice(float[] a, int b, int t, int t0, int n)
    {
        if (a.Length == 0) return a;
        int row = a.Length / Math.Max(b * t, 1);
        var r = new float[b * n * row];
        for (int i = 0; i < b; i++) Array.Copy(a, ((long)i * t + t0) * row, r, (long)i * n * row, (long)n * row);
        return r;
    }

    private static void Place(float[] whole, float[] part, int b, int t, int t0, int n)
    {
        int row = part.Length / Math.Max(b * n, 1);
        for (int i = 0; i < b; i++) Array.Copy(part, (long)i * n * row, whole, ((long)i * t + t0) * row, (long)n * row);
    }

    /// <summary>A session (dense batch) fed the pieces: those longer than one token by Prefill, one-token ones by Step.</summary>
    internal static (float[] Output, float[] State) InPieces<T>(EngineDevice device, Spec s, Inputs x, bool onDevice) where T : unmanaged
    {
        using AttentionSession session = s.Op switch
        {
            OpKind.Gla => new GlaSession(device, s.B, s.Heads, s.Gate, GlaOpts(s)),
            OpKind.DeltaRule => new DeltaRuleSession(device, s.B, s.Heads, s.Gate, DeltaOpts(s)),
            _ => new LightningSession(device, s.B, s.Heads, LightningOpts(s)),
        };
        if (s.Init) session.SetState(new ReadOnlyTensorSpan<float>(x.S0, s.StateShape));
        var output = new float[(long)s.B * s.T * s.Ho * s.V];
        int t0 = 0;
        foreach (int n in s.Pieces)
        {
            var part = new Inputs(Slice(x.Q, s.B, s.T, t0, n), Slice(x.K, s.B, s.T, t0, n), Slice(x.V, s.B, s.T, t0, n),
                Slice(x.G, s.B, s.T, t0, n), Slice(x.Beta, s.B, s.T, t0, n), x.S0);
            Place(output, Piece<T>(device, session, s, part, n, step: n == 1, onDevice), s.B, s.T, t0, n);
            t0 += n;
        }
        var state = Numerics.NaNs(s.StateLength);
        session.GetState(new TensorSpan<float>(state, s.StateShape));
        return (output, state);
    }

    private static float[] Rows(float[] a, int total, List<int> rows)
    {
        if (a.Length == 0) return a;
        int row = a.Length / total;
        var r = new float[rows.Count * row];
        for (int i = 0; i < rows.Count; i++) Array.Copy(a, (long)rows[i] * row, r, (long)i * row, row);
        return r;
    }

    /// <summary>
    /// A session over packed sequences fed in calls of their own cu_seqlens: each call takes the next few tokens of every
    /// sequence (none for some), by Prefill or by Step.
    /// </summary>
    internal static (float[] Output, float[] State) PackedInPieces<T>(EngineDevice device, Spec s, Inputs x, bool onDevice, Random r) where T : unmanaged
    {
        var lens = s.SeqLens!;
        var cu = s.Cu!;
        using AttentionSession session = s.Op switch
        {
            OpKind.Gla => new GlaSession(device, lens.Length, s.Heads, s.Gate, GlaOpts(s)),
            OpKind.DeltaRule => new DeltaRuleSession(device, lens.Length, s.Heads, s.Gate, DeltaOpts(s)),
            _ => new LightningSession(device, lens.Length, s.Heads, LightningOpts(s)),
        };
        if (s.Init) session.SetState(new ReadOnlyTensorSpan<float>(x.S0, s.StateShape));
        int total = s.TotalT;
        var output = new float[(long)total * s.Ho * s.V];
        var done = new int[lens.Length];
        for (int call = 0; call < 8 && done.Where((d, n) => d < lens[n]).Any() || call == 0; call++)
        {
            bool last = call == 7;
            var rows = new List<int>();
            var callCu = new List<int> { 0 };
            for (int n = 0; n < lens.Length; n++)
            {
                int left = lens[n] - done[n];
                int take = last ? left : Math.Min(left, r.Next(3) == 0 ? 0 : r.Next(1, s.Chunk + 3));
                for (int j = 0; j < take; j++) rows.Add(cu[n] + done[n] + j);
                done[n] += take;
                callCu.Add(callCu[^1] + take);
            }
            var part = new Inputs(Rows(x.Q, total, rows), Rows(x.K, total, rows), Rows(x.V, total, rows), Rows(x.G, total, rows), Rows(x.Beta, total, rows), x.S0);
            var o = Piece<T>(device, session, s with { B = 1 }, part, rows.Count, step: r.Next(2) == 0, onDevice, [.. callCu]);
            int row = s.Ho * s.V;
            for (int i = 0; i < rows.Count; i++) Array.Copy(o, (long)i * row, output, (long)rows[i] * row, row);
        }
        var state = Numerics.NaNs(s.StateLength);
        session.GetState(new TensorSpan<float>(state, s.StateShape));
        return (output, state);
    }

    private static float[] Piece<T>(EngineDevice device, AttentionSession session, Spec s, Inputs x, int n, bool step, bool onDevice, int[]? cu = null) where T : unmanaged
    {
        var shapes = CallShapes.Of(s, s.B, n);
        var o = As<T>(Numerics.NaNs((long)s.B * n * s.Ho * s.V));
        if (onDevice)
        {
            using var d = new DeviceInputs<T>(device, s, shapes, x, o);
            switch (session)
            {
                case GlaSession gla when step: gla.Step(d.Q, d.K, d.V, d.G, d.Output, cu); break;
                case GlaSession gla: gla.Prefill(d.Q, d.K, d.V, d.G, d.Output, cu); break;
                case DeltaRuleSession delta when step: delta.Step(d.Q, d.K, d.V, d.Beta!, d.G, d.Output, cu); break;
                case DeltaRuleSession delta: delta.Prefill(d.Q, d.K, d.V, d.Beta!, d.G, d.Output, cu); break;
                case LightningSession l when step: l.Step(d.Q, d.K, d.V, d.Output, cu); break;
                case LightningSession l: l.Prefill(d.Q, d.K, d.V, d.Output, cu); break;
            }
            d.Output.Download(o.AsSpan());
            return Back(o);
        }
        var h = HostInputs<T>.Of(s, shapes, x);
        var O = new TensorSpan<T>(o, shapes.Output);
        switch (session)
        {
            case GlaSession gla when step: gla.Step(h.Q, h.K, h.V, h.G, O, cu); break;
            case GlaSession gla: gla.Prefill(h.Q, h.K, h.V, h.G, O, cu); break;
            case DeltaRuleSession delta when step: delta.Step(h.Q, h.K, h.V, h.Beta, h.G, O, cu); break;
            case DeltaRuleSession delta: delta.Prefill(h.Q, h.K, h.V, h.Beta, h.G, O, cu); break;
            case LightningSession l when step: l.Step(h.Q, h.K, h.V, O, cu); break;
            case LightningSession l: l.Prefill(h.Q, h.K, h.V, O, cu); break;
        }
        return Back(o);
    }

    private static string? Compare(string what, float[] actual, float[] expected, double tolerance)
    {
        double err = Numerics.RelativeRms(actual, expected);
        return err <= tolerance ? null : $"{what}: relative RMS {err:E2} > {tolerance:E0}";
    }

    /// <summary>Runs case <paramref name="i"/> of the sweep; the problems found (empty: all agree).</summary>
    internal static List<string> RunCase(int seed, int i, bool withGpu)
    {
        var problems = new List<string>();
        var r = new Random(seed * 1000 + i);
        var s = Draw(r);
        var x = Make(s, seed * 1000 + i);
        double tol = s.Fp16 ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        (float[] Output, float[]? State) expected;
        try { expected = Call<float>(TestDevices.Reference, s with { Final = true, Fp16 = false }, x, false); }
        catch (Exception e) { problems.Add($"{s}: reference threw {e.GetType().Name}: {e.Message}"); return problems; }

        var backends = new List<(string Name, EngineDevice Device, bool OnDevice)> { ("cpu", TestDevices.Of(Backend.Cpu), false) };
        bool small = s.Work * Math.Max(1, s.BatchDim) <= 40_000;
        if (withGpu && small) backends.Add(("gpu", TestDevices.Of(Backend.Gpu), r.Next(2) == 0));
        foreach (var (name, device, onDevice) in backends)
        {
            string where = $"{s} on {name}{(onDevice ? " (device tensors)" : "")}";
            try
            {
                var (o, st) = s.Fp16 ? Call<Half>(device, s, x, onDevice) : Call<float>(device, s, x, onDevice);
                if (Compare("output", o, expected.Output, tol) is { } p) problems.Add($"{where}: {p}");
                if (st is not null && Compare("final state", st, expected.State!, tol) is { } ps) problems.Add($"{where}: {ps}");
            }
            catch (Exception e) { problems.Add($"{where}: threw {e.GetType().Name}: {e.Message}"); }
            if (s.SeqLens is null && s.T == 0) continue;
            try
            {
                var pieces = new Random(seed * 31 + i);
                var (o, st) = s.SeqLens is not null
                    ? (s.Fp16 ? PackedInPieces<Half>(device, s, x, onDevice, pieces) : PackedInPieces<float>(device, s, x, onDevice, pieces))
                    : s.Fp16 ? InPieces<Half>(device, s, x, onDevice) : InPieces<float>(device, s, x, onDevice);
                if (Compare("session output", o, expected.Output, tol) is { } p) problems.Add($"{where}: {p}");
                if (Compare("session state", st, expected.State!, tol) is { } ps) problems.Add($"{where}: {ps}");
            }
            catch (Exception e) { problems.Add($"{where}: session threw {e.GetType().Name}: {e.Message}"); }
        }
        return problems;
    }

    [Test]
    public void CpuAndSimulatedGpuMatchTheReferenceOverDrawnCombinations()
    {
        // The simulated GPU compiles its kernels per head layout and options (seconds each): only the first few cases run there
        // unless API_SWEEP_GPU_CASES says more.
        int gpuCases = Setting("API_SWEEP_GPU_CASES", 4);
        Sweep(Setting("API_SWEEP_CASES", 30), (seed, i) => RunCase(seed, i, withGpu: i < gpuCases));
    }

    /// <summary>Runs cases 0..count of the seed (API_SWEEP_SEED, default 1) and asserts none found a problem, listing them all.</summary>
    private static void Sweep(int count, Func<int, int, IEnumerable<string>> runCase)
    {
        int seed = Setting("API_SWEEP_SEED", 1);
        var problems = new List<string>();
        for (int i = 0; i < count; i++) problems.AddRange(runCase(seed, i).Select(p => $"case {i}: {p}"));
        foreach (var p in problems) TestContext.Out.WriteLine(p);
        Assert.That(problems, Is.Empty);
    }

    private static int Setting(string variable, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(variable), out int value) ? value : fallback;

    internal sealed record LsslSpec(LsslInitKind Kind, bool PerChannel, int H, int N, int B, int L, LsslDiscretization Method, int? Chunk, LsslMode Mode,
        bool Init, bool Final, bool Fp16, int[] Pieces)
    {
        public override string ToString() =>
            $"LSSL {Kind}{(PerChannel ? " per channel" : "")} H{H} N{N} B{B} L{L} {Method} chunk={Chunk?.ToString() ?? "-"} {Mode} init={Init} final={Final} " +
            $"{(Fp16 ? "fp16" : "fp32")} pieces=[{string.Join(",", Pieces)}]";
    }

    internal static LsslSpec DrawLssl(Random r)
    {
        var kind = (LsslInitKind)new[] { LsslInitKind.Legs, LsslInitKind.Legt, LsslInitKind.Diagonal }[r.Next(3)];
        int? chunk = r.Next(2) == 0 ? null : new[] { 16, 32 }[r.Next(2)];
        int n = new[] { 1, 3, 4, 8, 17 }[r.Next(5)];
        int l = r.Next(6) switch { 0 => 0, 1 => 1, 2 => 15, 3 => 17, _ => r.Next(2, 50) };
        var pieces = new List<int>();
        for (int left = l; left > 0;)
        {
            int p = r.Next(3) == 0 ? 1 : Math.Min(left, r.Next(1, 20));
            pieces.Add(p);
            left -= p;
        }
        // α >= ½ only: stable at every drawn step (α < ½ is unstable past Δ|λ| = 2/(1 − 2α), which the layer refuses).
        var methods = new[] { LsslDiscretization.Bilinear, LsslDiscretization.ZeroOrderHold, LsslDiscretization.BackwardEuler, LsslDiscretization.Gbt(0.7) };
        return new LsslSpec(kind, kind != LsslInitKind.Diagonal && r.Next(3) == 0, r.Next(1, 6), n, r.Next(1, 4), l, methods[r.Next(methods.Length)], chunk,
            (LsslMode)r.Next(4), r.Next(2) == 0, r.Next(4) != 0, r.Next(4) == 0, [.. pieces]);
    }

    internal static LsslLayer LsslLayerOf(LsslSpec s, int seed)
    {
        var p = Engine.Lssl.Parameters(s.Kind, s.H, s.N, seed, 1e-2, 0.5);
        var a = p.A;
        var b = p.B;
        if (s.PerChannel)
        {
            // Each channel its own A: the shared one scaled per channel; B per channel too.
            var shared = p.A.ToArray();
            var per = new float[s.H * s.N * s.N];
            for (int h = 0; h < s.H; h++)
                for (int i = 0; i < shared.Length; i++) per[h * shared.Length + i] = shared[i] * (1f + 0.25f * h);
            a = Tensor.Create(per, [s.H, s.N, s.N]);
            var bb = p.B.ToArray();
            b = Tensor.Create(Enumerable.Range(0, s.H * s.N).Select(i => bb[i % s.N]).ToArray(), [s.H, s.N]);
        }
        return new LsslLayer(a, b, p.C, p.D, p.Dt, new LsslOptions
        {
            Discretization = s.Method,
            ChunkLength = s.Chunk,
            StateMatrix = s.PerChannel ? LsslStateMatrix.DensePerChannel : p.StateMatrix,
        });
    }

    internal static (float[] Y, float[]? State) LsslCall<T>(EngineDevice device, LsslLayer layer, LsslSpec s, float[] u, float[] s0, bool onDevice) where T : unmanaged
    {
        nint[] shape = [s.B, s.L, s.H], stateShape = [s.B, s.H, s.N];
        var y = As<T>(Numerics.NaNs(u.Length));
        var st = s.Final ? Numerics.NaNs(s.B * s.H * s.N) : null;
        if (onDevice)
        {
            using var du = device.Upload(new ReadOnlyTensorSpan<T>(As<T>(u), shape));
            using var dy = device.Upload(new ReadOnlyTensorSpan<T>(y, shape));
            using var di = s.Init ? device.Upload(new ReadOnlyTensorSpan<float>(s0, stateShape)) : null;
            using var df = s.Final ? device.Allocate<float>(stateShape) : null;
            layer.Forward(device, du, dy, di, df, s.Mode);
            dy.Download(y.AsSpan());
            df?.Download(st!.AsSpan());
            return (Back(y), st);
        }
        layer.Forward(device, new ReadOnlyTensorSpan<T>(As<T>(u), shape), new TensorSpan<T>(y, shape),
            s.Init ? new ReadOnlyTensorSpan<float>(s0, stateShape) : default, s.Final ? new TensorSpan<float>(st, stateShape) : default, s.Mode);
        return (Back(y), st);
    }

    internal static (float[] Y, float[] State) LsslInPieces<T>(EngineDevice device, LsslLayer layer, LsslSpec s, float[] u, float[] s0) where T : unmanaged
    {
        using var session = layer.CreateSession(device, s.B);
        if (s.Init) session.SetState(new ReadOnlyTensorSpan<float>(s0, [s.B, s.H, s.N]));
        var y = new float[u.Length];
        int t0 = 0;
        foreach (int n in s.Pieces)
        {
            var part = As<T>(Slice(u, s.B, s.L, t0, n));
            var o = As<T>(Numerics.NaNs(part.Length));
            nint[] shape = [s.B, n, s.H];
            if (n == 1) session.Step(new ReadOnlyTensorSpan<T>(part, shape), new TensorSpan<T>(o, shape));
            else session.Prefill(new ReadOnlyTensorSpan<T>(part, shape), new TensorSpan<T>(o, shape), s.Mode);
            Place(y, Back(o), s.B, s.L, t0, n);
            t0 += n;
        }
        var state = Numerics.NaNs(s.B * s.H * s.N);
        session.GetState(new TensorSpan<float>(state, [s.B, s.H, s.N]));
        return (y, state);
    }

    internal static List<string> RunLsslCase(int seed, int i, bool withGpu)
    {
        var problems = new List<string>();
        var r = new Random(seed * 7919 + i);
        var s = DrawLssl(r);
        var data = new TestData(seed * 7919 + i);
        var u = data.Normal((long)s.B * s.L * s.H);
        if (s.Fp16) u = TestData.RoundToHalf(u);
        var s0 = s.Init ? data.Normal(s.B * s.H * s.N, 0.5) : [];
        double tol = s.Fp16 ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;
        using var layer = LsslLayerOf(s, seed + i);
        (float[] Y, float[]? State) expected;
        try { expected = LsslCall<float>(TestDevices.Reference, layer, s with { Final = true, Fp16 = false }, u, s0, false); }
        catch (Exception e) { problems.Add($"{s}: reference threw {e.GetType().Name}: {e.Message}"); return problems; }
        var backends = new List<(string Name, EngineDevice Device, bool OnDevice)> { ("cpu", TestDevices.Of(Backend.Cpu), false) };
        if (withGpu) backends.Add(("gpu", TestDevices.Of(Backend.Gpu), r.Next(2) == 0));
        foreach (var (name, device, onDevice) in backends)
        {
            string where = $"{s} on {name}{(onDevice ? " (device tensors)" : "")}";
            try
            {
                var (y, st) = s.Fp16 ? LsslCall<Half>(device, layer, s, u, s0, onDevice) : LsslCall<float>(device, layer, s, u, s0, onDevice);
                if (Compare("y", y, expected.Y, tol) is { } p) problems.Add($"{where}: {p}");
                if (st is not null && Compare("final state", st, expected.State!, tol) is { } ps) problems.Add($"{where}: {ps}");
            }
            catch (Exception e) { problems.Add($"{where}: threw {e.GetType().Name}: {e.Message}"); }
            if (s.L == 0) continue;
            try
            {
                var (y, st) = s.Fp16 ? LsslInPieces<Half>(device, layer, s, u, s0) : LsslInPieces<float>(device, layer, s, u, s0);
                if (Compare("session y", y, expected.Y, tol) is { } p) problems.Add($"{where}: {p}");
                if (Compare("session state", st, expected.State!, tol) is { } ps) problems.Add($"{where}: {ps}");
            }
            catch (Exception e) { problems.Add($"{where}: session threw {e.GetType().Name}: {e.Message}"); }
        }
        return problems;
    }

    [Test]
    public void LsslOnCpuAndSimulatedGpuMatchesTheReferenceOverDrawnCombinations() =>
        Sweep(Setting("API_SWEEP_LSSL_CASES", 24), (seed, i) => RunLsslCase(seed, i, withGpu: true));
}

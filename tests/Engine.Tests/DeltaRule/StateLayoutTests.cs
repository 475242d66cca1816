using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

/// <summary>
/// A value-major state ([N, Hv, V, K], ONNX Runtime's GatedDeltaNet) read and written where it lies: the CPU kernels
/// (chunked and token by token, head dims on and off the 16-float padding) and the float64 reference against the
/// float64 reference run on the key-major transpose of the same state, and the GPU kernels (on ILGPU's CPU accelerator),
/// which index it transposed where they load and store it.
/// </summary>
[TestFixture]
public sealed class StateLayoutTests
{
    private const int B = 2, T = 21, Hq = 2, Hv = 4;

    public static IEnumerable<TestCaseData> Cases()
    {
        foreach (var backend in new[] { "Cpu", "Reference", "Gpu" })
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                foreach (var gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey })
                    foreach (var (k, v) in new[] { (16, 12), (32, 48) })
                        yield return new TestCaseData(backend, mode, gate, k, v).SetName($"ValueMajorState {backend} {mode} {gate} K{k} V{v}");
    }

    /// <summary>[N, Hv, a, b] → [N, Hv, b, a].</summary>
    internal static float[] TransposeHeads(float[] state, int a, int b)
    {
        var result = new float[state.Length];
        for (int head = 0; head < state.Length / (a * b); head++)
            for (int i = 0; i < a; i++)
                for (int j = 0; j < b; j++) result[head * a * b + j * a + i] = state[head * a * b + i * b + j];
        return result;
    }

    [TestCaseSource(nameof(Cases))]
    public void MatchesTheKeyMajorReference(string backend, AttentionMode mode, GateKind gate, int k, int v)
    {
        var data = new TestData(31 + k + (int)gate);
        var q = data.Normal((long)B * T * Hq * k);
        var key = data.UnitRows((long)B * T * Hq, k);
        var value = data.Normal((long)B * T * Hv * v);
        var beta = data.Uniform((long)B * T * Hv, 0.1, 0.9);
        long gates = gate == GateKind.PerKey ? (long)B * T * Hv * k : (long)B * T * Hv;
        float[]? g = gate == GateKind.None ? null : data.LogGates(gates, 1.0);
        nint[] gShape = gate == GateKind.PerKey ? [B, T, Hv, k] : [B, T, Hv];
        var keyMajorInitial = data.Normal((long)B * Hv * k * v, 0.5);

        (float[] Output, float[] State) Run(EngineDevice device, StateLayout layout, float[] initial)
        {
            var output = Numerics.NaNs((long)B * T * Hv * v);
            var final = Numerics.NaNs(initial.Length);
            nint[] stateShape = layout == StateLayout.ValueMajor ? [B, Hv, v, k] : [B, Hv, k, v];
            Engine.DeltaRule.Forward<float>(device,
                new ReadOnlyTensorSpan<float>(q, [B, T, Hq, k]), new ReadOnlyTensorSpan<float>(key, [B, T, Hq, k]),
                new ReadOnlyTensorSpan<float>(value, [B, T, Hv, v]), new ReadOnlyTensorSpan<float>(beta, [B, T, Hv]),
                g is null ? default : new ReadOnlyTensorSpan<float>(g, gShape), new TensorSpan<float>(output, [B, T, Hv, v]),
                new ReadOnlyTensorSpan<float>(initial, stateShape), new TensorSpan<float>(final, stateShape),
                options: new DeltaRuleOptions { Mode = mode, ChunkSize = 16, StateLayout = layout });
            return (output, final);
        }

        var expected = Run(TestDevices.Reference, StateLayout.KeyMajor, keyMajorInitial);
        var device = backend switch
        {
            "Cpu" => TestDevices.Get(TestBackend.Cpu),
            "Gpu" => TestDevices.Get(TestBackend.GpuOnCpuAccelerator),
            _ => TestDevices.Reference,
        };
        var actual = Run(device, StateLayout.ValueMajor, TransposeHeads(keyMajorInitial, k, v));
        Assert.Multiple(() =>
        {
            Assert.That(Numerics.RelativeRms(actual.Output, expected.Output), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "output");
            Assert.That(Numerics.RelativeRms(TransposeHeads(actual.State, v, k), expected.State), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "final state, transposed back");
        });
    }

    [Test]
    public void InPlaceValueMajorStateCarriesAcrossSteps()
    {
        // initial_state and final_state the same tensor, one token at a time: the run reads every head before writing it.
        const int k = 16, v = 16;
        var data = new TestData(5);
        var q = data.Normal((long)T * k);
        var key = data.UnitRows(T, k);
        var value = data.Normal((long)T * v);
        var beta = data.Uniform(T, 0.1, 0.9);
        var g = data.LogGates(T, 1.0);
        var whole = Numerics.NaNs((long)T * v);
        var wholeState = new float[k * v];
        var options = new DeltaRuleOptions { StateLayout = StateLayout.ValueMajor, Mode = AttentionMode.Recurrent };
        var cpu = TestDevices.Get(TestBackend.Cpu);
        Engine.DeltaRule.Forward<float>(cpu, new ReadOnlyTensorSpan<float>(q, [1, T, 1, k]), new ReadOnlyTensorSpan<float>(key, [1, T, 1, k]),
            new ReadOnlyTensorSpan<float>(value, [1, T, 1, v]), new ReadOnlyTensorSpan<float>(beta, [1, T, 1]), new ReadOnlyTensorSpan<float>(g, [1, T, 1]),
            new TensorSpan<float>(whole, [1, T, 1, v]), finalState: new TensorSpan<float>(wholeState, [1, 1, v, k]), options: options);
        var state = new float[k * v];
        var steps = Numerics.NaNs((long)T * v);
        for (int t = 0; t < T; t++)
            Engine.DeltaRule.Forward<float>(cpu, new ReadOnlyTensorSpan<float>(q.AsSpan(t * k, k), [1, 1, 1, k]), new ReadOnlyTensorSpan<float>(key.AsSpan(t * k, k), [1, 1, 1, k]),
                new ReadOnlyTensorSpan<float>(value.AsSpan(t * v, v), [1, 1, 1, v]), new ReadOnlyTensorSpan<float>(beta.AsSpan(t, 1), [1, 1, 1]),
                new ReadOnlyTensorSpan<float>(g.AsSpan(t, 1), [1, 1, 1]), new TensorSpan<float>(steps.AsSpan(t * v, v), [1, 1, 1, v]),
                new ReadOnlyTensorSpan<float>(state, [1, 1, v, k]), new TensorSpan<float>(state, [1, 1, v, k]), options: options);
        Assert.That(Numerics.RelativeRms(steps, whole), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "outputs");
        Assert.That(Numerics.RelativeRms(state, wholeState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "state");
    }

    [Test]
    public void ValueMajorStateOfTheKeyMajorShapeIsRefused()
    {
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.Forward<float>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<float>(new float[16], [1, 1, 1, 16]), new ReadOnlyTensorSpan<float>(new float[16], [1, 1, 1, 16]),
            new ReadOnlyTensorSpan<float>(new float[8], [1, 1, 1, 8]), new ReadOnlyTensorSpan<float>(new float[1], [1, 1, 1]), default,
            new TensorSpan<float>(new float[8], [1, 1, 1, 8]), new ReadOnlyTensorSpan<float>(new float[128], [1, 1, 16, 8]),
            options: new DeltaRuleOptions { StateLayout = StateLayout.ValueMajor }))!;
        Assert.That(e.ParamName, Is.EqualTo("initial_state"));
        Assert.That(e.Message, Does.Contain("expected shape [1, 1, 8, 16] (N, Hv, V, K)"));
    }
}

/// <summary>
/// <see cref="Engine.DeltaRule.CaptureTransitions{T}"/> against an independent statement of what the transitions are:
/// replayed onto the initial state (S ← diag(decay) S + key deltaᵀ per token) they give the state the float64
/// reference reaches after the same tokens.
/// </summary>
[TestFixture]
public sealed class CaptureTransitionsTests
{
    [TestCase(GateKind.PerHead, StateLayout.ValueMajor, true)]
    [TestCase(GateKind.PerKey, StateLayout.ValueMajor, false)]
    [TestCase(GateKind.None, StateLayout.KeyMajor, true)]
    public void ReplayedTransitionsReachTheReferenceState(GateKind gate, StateLayout layout, bool l2Norm)
    {
        const int hk = 2, hv = 4, k = 16, v = 8, capacity = 5;
        int[] cu = [0, 3, 11];
        int[] counts = [2, 7];
        int n = cu[^1], sequences = cu.Length - 1;
        var data = new TestData(17 + (int)gate);
        var key = data.Normal((long)n * hk * k);
        var value = data.Normal((long)n * hv * v);
        var beta = data.Uniform((long)n * hv, 0.1, 0.9);
        int gateWidth = gate == GateKind.PerKey ? hv * k : hv;
        var g = gate == GateKind.None ? null : data.LogGates((long)n * gateWidth, 1.0);
        nint[] stateShape = layout == StateLayout.ValueMajor ? [sequences, hv, v, k] : [sequences, hv, k, v];
        var initial = data.Normal((long)sequences * hv * k * v, 0.5);
        var options = new DeltaRuleOptions { QkL2Norm = l2Norm, StateLayout = layout };
        nint[] decayShape = gate == GateKind.PerKey ? [sequences, capacity, hv, k] : [sequences, capacity, hv];
        var decay = Numerics.NaNs(decayShape.Aggregate(1L, (a, d) => a * d));
        var keys = Numerics.NaNs((long)sequences * capacity * hk * k);
        var deltas = Numerics.NaNs((long)sequences * capacity * hv * v);
        nint[] gShape = gate == GateKind.PerKey ? [1, n, hv, k] : [1, n, hv];
        Engine.DeltaRule.CaptureTransitions<float>(new ReadOnlyTensorSpan<float>(key, [1, n, hk, k]), new ReadOnlyTensorSpan<float>(value, [1, n, hv, v]),
            new ReadOnlyTensorSpan<float>(beta, [1, n, hv]), g is null ? default : new ReadOnlyTensorSpan<float>(g, gShape),
            new ReadOnlyTensorSpan<float>(initial, stateShape), counts, new TensorSpan<float>(decay, decayShape),
            new TensorSpan<float>(keys, [sequences, capacity, hk, k]), new TensorSpan<float>(deltas, [sequences, capacity, hv, v]), cu, options);

        // The reference over each sequence's captured prefix: min(count, capacity, length) tokens.
        int[] taken = [.. Enumerable.Range(0, sequences).Select(s => Math.Min(Math.Min(counts[s], capacity), cu[s + 1] - cu[s]))];
        int[] prefixCu = [0, taken[0], taken[0] + taken[1]];
        int m = prefixCu[^1];
        float[] Prefix(float[] x, int width) =>
            [.. Enumerable.Range(0, sequences).SelectMany(s => x.Skip(cu[s] * width).Take(taken[s] * width))];
        var expected = Numerics.NaNs(initial.Length);
        Engine.DeltaRule.Forward<float>(TestDevices.Reference,
            new ReadOnlyTensorSpan<float>(Prefix(key, hk * k), [1, m, hk, k]), new ReadOnlyTensorSpan<float>(Prefix(key, hk * k), [1, m, hk, k]),
            new ReadOnlyTensorSpan<float>(Prefix(value, hv * v), [1, m, hv, v]), new ReadOnlyTensorSpan<float>(Prefix(beta, hv), [1, m, hv]),
            g is null ? default : new ReadOnlyTensorSpan<float>(Prefix(g, gateWidth), gate == GateKind.PerKey ? [1, m, hv, k] : [1, m, hv]),
            new TensorSpan<float>(new float[m * hv * v], [1, m, hv, v]), new ReadOnlyTensorSpan<float>(initial, stateShape),
            new TensorSpan<float>(expected, stateShape), prefixCu, options with { Mode = AttentionMode.Recurrent });

        var replayed = (float[])initial.Clone();
        for (int s = 0; s < sequences; s++)
            for (int h = 0; h < hv; h++)
                for (int j = 0; j < capacity; j++)
                    for (int c = 0; c < k; c++)
                        for (int d = 0; d < v; d++)
                        {
                            int at = layout == StateLayout.ValueMajor ? ((s * hv + h) * v + d) * k + c : ((s * hv + h) * k + c) * v + d;
                            float factor = gate == GateKind.PerKey ? decay[((s * capacity + j) * hv + h) * k + c] : decay[(s * capacity + j) * hv + h];
                            if (j >= taken[s])
                            {
                                Assert.That(factor, Is.Zero, "past the captured count");
                                continue;
                            }
                            replayed[at] = factor * replayed[at] + keys[((s * capacity + j) * hk + h / (hv / hk)) * k + c] * deltas[((s * capacity + j) * hv + h) * v + d];
                        }
        Assert.That(Numerics.RelativeRms(replayed, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "replayed state");
        Assert.That(deltas.Skip(capacity * hv * v * 0).Where((_, i) => i / (hv * v) % capacity >= taken[i / (capacity * hv * v)]), Is.All.Zero, "deltas past the count");
    }

    [Test]
    public void DestinationsOfOtherShapesAreRefused()
    {
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.CaptureTransitions<float>(
            new ReadOnlyTensorSpan<float>(new float[32], [1, 2, 1, 16]), new ReadOnlyTensorSpan<float>(new float[16], [1, 2, 1, 8]),
            new ReadOnlyTensorSpan<float>(new float[2], [1, 2, 1]), default, default, [2],
            new TensorSpan<float>(new float[3], [1, 3, 1]), new TensorSpan<float>(new float[48], [1, 3, 1, 16]),
            new TensorSpan<float>(new float[16], [1, 2, 1, 8])))!;
        Assert.That(e.ParamName, Is.EqualTo("deltas"));
        Assert.That(e.Message, Does.Contain("expected shape [1, 3, 1, 8] (N, C, Hv, V)"));
    }
}

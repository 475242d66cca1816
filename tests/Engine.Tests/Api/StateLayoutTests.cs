using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// A value-major state ([N, Hv, V, K], ONNX Runtime's GatedDeltaNet) read and written where it lies, for every op that
/// carries a [K, V] state (the delta rule, GLA, Lightning): the CPU kernels (chunked and token by token, head dims on
/// and off the 16-float padding), the float64 reference and the GPU kernels (on ILGPU's CPU accelerator, which index it
/// transposed where they load and store it) against the float64 reference run on the key-major transpose of the same state.
/// </summary>
[TestFixture]
public sealed class StateLayoutTests
{
    private const int B = 2, T = 21, Hq = 2, Hv = 4;

    public static IEnumerable<TestCaseData> Cases()
    {
        (string Op, GateKind Gate)[] ops =
        [
            ("DeltaRule", GateKind.None), ("DeltaRule", GateKind.PerHead), ("DeltaRule", GateKind.PerKey),
            ("Gla", GateKind.None), ("Gla", GateKind.PerHead), ("Gla", GateKind.PerKey), ("Lightning", GateKind.Constant),
        ];
        foreach (var backend in new[] { "Cpu", "Reference", "Gpu" })
            foreach (var mode in new[] { AttentionMode.Chunked, AttentionMode.Recurrent })
                foreach (var (op, gate) in ops)
                    foreach (var (k, v) in new[] { (16, 12), (32, 48) })
                        yield return new TestCaseData(op, backend, mode, gate, k, v).SetName($"ValueMajorState {op} {backend} {mode} {gate} K{k} V{v}");
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
    public void MatchesTheKeyMajorReference(string op, string backend, AttentionMode mode, GateKind gate, int k, int v)
    {
        var data = new TestData(31 + k + (int)gate + op.Length);
        var q = data.Normal((long)B * T * Hq * k);
        var key = data.UnitRows((long)B * T * Hq, k);
        var value = data.Normal((long)B * T * Hv * v);
        var beta = data.Uniform((long)B * T * Hv, 0.1, 0.9);
        long gates = gate == GateKind.PerKey ? (long)B * T * Hv * k : (long)B * T * Hv;
        float[]? g = gate is GateKind.None or GateKind.Constant ? null : data.LogGates(gates, 1.0);
        nint[] gShape = gate == GateKind.PerKey ? [B, T, Hv, k] : [B, T, Hv];
        var keyMajorInitial = data.Normal((long)B * Hv * k * v, 0.5);

        (float[] Output, float[] State) Run(EngineDevice device, StateLayout layout, float[] initial)
        {
            var output = Numerics.NaNs((long)B * T * Hv * v);
            var final = Numerics.NaNs(initial.Length);
            nint[] stateShape = layout == StateLayout.ValueMajor ? [B, Hv, v, k] : [B, Hv, k, v];
            var qs = new ReadOnlyTensorSpan<float>(q, [B, T, Hq, k]);
            var ks = new ReadOnlyTensorSpan<float>(key, [B, T, Hq, k]);
            var vs = new ReadOnlyTensorSpan<float>(value, [B, T, Hv, v]);
            var gs = g is null ? default : new ReadOnlyTensorSpan<float>(g, gShape);
            var os = new TensorSpan<float>(output, [B, T, Hv, v]);
            var init = new ReadOnlyTensorSpan<float>(initial, stateShape);
            var fin = new TensorSpan<float>(final, stateShape);
            switch (op)
            {
                case "DeltaRule":
                    Engine.DeltaRule.Forward<float>(device, qs, ks, vs, new ReadOnlyTensorSpan<float>(beta, [B, T, Hv]), gs, os, init, fin,
                        options: new DeltaRuleOptions { Mode = mode, ChunkSize = 16, StateLayout = layout });
                    break;
                case "Gla":
                    Engine.Gla.Forward<float>(device, qs, ks, vs, gs, os, init, fin, options: new GlaOptions { Mode = mode, ChunkSize = 16, StateLayout = layout });
                    break;
                default:
                    Engine.Lightning.Forward<float>(device, qs, ks, vs, os, init, fin, options: new LightningOptions { Mode = mode, BlockSize = 16, StateLayout = layout });
                    break;
            }
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

    [TestCase("DeltaRule")]
    [TestCase("Gla")]
    public void InPlaceValueMajorStateCarriesAcrossSteps(string op)
    {
        // initial_state and final_state the same tensor, one token at a time: the run reads every head before writing it.
        const int k = 16, v = 16;
        var data = new TestData(5);
        var q = data.Normal((long)T * k);
        var key = data.UnitRows(T, k);
        var value = data.Normal((long)T * v);
        var beta = data.Uniform(T, 0.1, 0.9);
        var g = data.LogGates(T, 1.0);
        var cpu = TestDevices.Get(TestBackend.Cpu);
        void Run(int t0, int count, float[] output, ReadOnlyTensorSpan<float> initial, TensorSpan<float> final)
        {
            var qs = new ReadOnlyTensorSpan<float>(q.AsSpan(t0 * k, count * k), [1, count, 1, k]);
            var ks = new ReadOnlyTensorSpan<float>(key.AsSpan(t0 * k, count * k), [1, count, 1, k]);
            var vs = new ReadOnlyTensorSpan<float>(value.AsSpan(t0 * v, count * v), [1, count, 1, v]);
            var gs = new ReadOnlyTensorSpan<float>(g.AsSpan(t0, count), [1, count, 1]);
            var os = new TensorSpan<float>(output.AsSpan(t0 * v, count * v), [1, count, 1, v]);
            if (op == "DeltaRule")
                Engine.DeltaRule.Forward<float>(cpu, qs, ks, vs, new ReadOnlyTensorSpan<float>(beta.AsSpan(t0, count), [1, count, 1]), gs, os, initial, final,
                    options: new DeltaRuleOptions { StateLayout = StateLayout.ValueMajor, Mode = AttentionMode.Recurrent });
            else Engine.Gla.Forward<float>(cpu, qs, ks, vs, gs, os, initial, final, options: new GlaOptions { StateLayout = StateLayout.ValueMajor, Mode = AttentionMode.Recurrent });
        }
        var whole = Numerics.NaNs((long)T * v);
        var wholeState = new float[k * v];
        Run(0, T, whole, default, new TensorSpan<float>(wholeState, [1, 1, v, k]));
        var state = new float[k * v];
        var steps = Numerics.NaNs((long)T * v);
        for (int t = 0; t < T; t++) Run(t, 1, steps, new ReadOnlyTensorSpan<float>(state, [1, 1, v, k]), new TensorSpan<float>(state, [1, 1, v, k]));
        Assert.That(Numerics.RelativeRms(steps, whole), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "outputs");
        Assert.That(Numerics.RelativeRms(state, wholeState), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "state");
    }

    [Test]
    public void ValueMajorStateOfTheKeyMajorShapeIsRefused()
    {
        var e = Assert.Catch<ArgumentException>(() => Engine.Gla.Forward<float>(TestDevices.Get(TestBackend.Cpu),
            new ReadOnlyTensorSpan<float>(new float[16], [1, 1, 1, 16]), new ReadOnlyTensorSpan<float>(new float[16], [1, 1, 1, 16]),
            new ReadOnlyTensorSpan<float>(new float[8], [1, 1, 1, 8]), default,
            new TensorSpan<float>(new float[8], [1, 1, 1, 8]), new ReadOnlyTensorSpan<float>(new float[128], [1, 1, 16, 8]),
            options: new GlaOptions { StateLayout = StateLayout.ValueMajor }))!;
        Assert.That(e.ParamName, Is.EqualTo("initial_state"));
        Assert.That(e.Message, Does.Contain("expected shape [1, 1, 8, 16] (N, Hv, V, K)"));
    }

    /// <summary>The convenience forms allocate the final state in the layout asked for, also where K ≠ V tells the two apart.</summary>
    [TestCase("Gla")]
    [TestCase("Lightning")]
    [TestCase("DeltaRule")]
    public void TheConvenienceFormsAllocateAValueMajorState(string op)
    {
        const int t = 5, k = 4, v = 8;
        var data = new TestData(4);
        var (q, keys, values) = (Tensor.Create(data.Normal(t * k), [1, t, 1, k]), Tensor.Create(data.UnitRows(t, k), [1, t, 1, k]), Tensor.Create(data.Normal(t * v), [1, t, 1, v]));
        var beta = Tensor.Create(data.Uniform(t, 0.1, 0.9), [1, t, 1]);
        var device = TestDevices.Get(TestBackend.Cpu);
        AttentionResult<float> Run(StateLayout layout) => op switch
        {
            "Gla" => Engine.Gla.Forward(device, q, keys, values, null, new GlaOptions { StateLayout = layout }),
            "Lightning" => Engine.Lightning.Forward(device, q, keys, values, new LightningOptions { StateLayout = layout }),
            _ => Engine.DeltaRule.Forward(device, q, keys, values, beta, null, new DeltaRuleOptions { StateLayout = layout }),
        };
        var keyMajor = Run(StateLayout.KeyMajor);
        var valueMajor = Run(StateLayout.ValueMajor);
        Assert.That(valueMajor.FinalState.Lengths.ToArray(), Is.EqualTo(new nint[] { 1, 1, v, k }));
        var expected = new float[k * v];
        keyMajor.FinalState.FlattenTo(expected);
        var actual = new float[k * v];
        valueMajor.FinalState.FlattenTo(actual);
        Assert.That(actual, Is.EqualTo(TransposeHeads(expected, k, v)));
    }
}

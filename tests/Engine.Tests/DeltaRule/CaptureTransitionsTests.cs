using System.Numerics.Tensors;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.DeltaRule;

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

    /// <summary>
    /// Keys past about 1.8e19, whose sum of squares overflows fp32, are normalized under QkL2Norm as the kernels normalize
    /// them (they were zeroed, and the deltas were then β v): the keys against k / ‖k‖ in float64, the replayed state against
    /// the reference's.
    /// </summary>
    [Test]
    public void KeysWhoseSquaresOverflowFp32AreNormalized()
    {
        const int k = 16, v = 8, n = 3;
        var data = new TestData(41);
        var key = data.Normal(n * k).Select(x => x * 1e20f).ToArray();
        var value = data.Normal(n * v);
        var beta = data.Uniform(n, 0.1, 0.9);
        var options = new DeltaRuleOptions { QkL2Norm = true };
        var keys = Numerics.NaNs(n * k);
        var deltas = Numerics.NaNs(n * v);
        Engine.DeltaRule.CaptureTransitions<float>(new ReadOnlyTensorSpan<float>(key, [1, n, 1, k]), new ReadOnlyTensorSpan<float>(value, [1, n, 1, v]),
            new ReadOnlyTensorSpan<float>(beta, [1, n, 1]), default, default, [n], new TensorSpan<float>(Numerics.NaNs(n), [1, n, 1]),
            new TensorSpan<float>(keys, [1, n, 1, k]), new TensorSpan<float>(deltas, [1, n, 1, v]), options: options);

        var unitKeys = new double[n * k];
        for (int t = 0; t < n; t++)
        {
            double norm = Math.Sqrt(Enumerable.Range(0, k).Sum(c => (double)key[t * k + c] * key[t * k + c]));
            for (int c = 0; c < k; c++) unitKeys[t * k + c] = key[t * k + c] / norm;
        }
        Assert.That(Numerics.RelativeRms(keys, unitKeys), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "keys");

        var expected = Numerics.NaNs(k * v);
        Engine.DeltaRule.Forward<float>(TestDevices.Reference, new ReadOnlyTensorSpan<float>(key, [1, n, 1, k]), new ReadOnlyTensorSpan<float>(key, [1, n, 1, k]),
            new ReadOnlyTensorSpan<float>(value, [1, n, 1, v]), new ReadOnlyTensorSpan<float>(beta, [1, n, 1]), default,
            new TensorSpan<float>(new float[n * v], [1, n, 1, v]), finalState: new TensorSpan<float>(expected, [1, 1, k, v]), options: options);
        var replayed = new float[k * v];
        for (int t = 0; t < n; t++)
            for (int c = 0; c < k; c++)
                for (int d = 0; d < v; d++) replayed[c * v + d] += keys[t * k + c] * deltas[t * v + d];
        Assert.That(Numerics.RelativeRms(replayed, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "replayed state");
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

    /// <summary>
    /// Destinations laid as GatedDeltaNet's state_update lays them, each sequence's row [decay | keys | deltas] of one buffer:
    /// their first-to-last byte ranges meet, their elements do not. They are taken and get exactly what separate tensors get
    /// (the same computation, tolerance 0).
    /// </summary>
    [Test]
    public void InterleavedDestinationsGetWhatSeparateOnesGet()
    {
        const int hk = 1, hv = 2, k = 16, v = 8, capacity = 3;
        int[] cu = [0, 4, 9];
        int[] counts = [3, 2];
        int n = cu[^1], sequences = cu.Length - 1;
        var data = new TestData(29);
        var key = new ReadOnlyTensorSpan<float>(data.Normal((long)n * hk * k), [1, n, hk, k]);
        var value = new ReadOnlyTensorSpan<float>(data.Normal((long)n * hv * v), [1, n, hv, v]);
        var beta = new ReadOnlyTensorSpan<float>(data.Uniform((long)n * hv, 0.1, 0.9), [1, n, hv]);
        var g = new ReadOnlyTensorSpan<float>(data.LogGates((long)n * hv, 1.0), [1, n, hv]);
        var initial = new ReadOnlyTensorSpan<float>(data.Normal((long)sequences * hv * k * v, 0.5), [sequences, hv, k, v]);
        float[] decay = Numerics.NaNs(sequences * capacity * hv), keys = Numerics.NaNs(sequences * capacity * hk * k),
            deltas = Numerics.NaNs(sequences * capacity * hv * v);
        Engine.DeltaRule.CaptureTransitions(key, value, beta, g, initial, counts, new TensorSpan<float>(decay, [sequences, capacity, hv]),
            new TensorSpan<float>(keys, [sequences, capacity, hk, k]), new TensorSpan<float>(deltas, [sequences, capacity, hv, v]), cu);

        const int decayWidth = capacity * hv, keysWidth = capacity * hk * k, row = decayWidth + keysWidth + capacity * hv * v;
        var memory = Numerics.NaNs(sequences * row);
        Engine.DeltaRule.CaptureTransitions(key, value, beta, g, initial, counts,
            new TensorSpan<float>(memory, [sequences, capacity, hv], [row, hv, 1]),
            // hk = 1: System.Numerics.Tensors takes a stride of 0 for an axis of length 1.
            new TensorSpan<float>(memory.AsSpan(decayWidth), [sequences, capacity, hk, k], [row, hk * k, 0, 1]),
            new TensorSpan<float>(memory.AsSpan(decayWidth + keysWidth), [sequences, capacity, hv, v], [row, hv * v, v, 1]), cu);
        for (int s = 0; s < sequences; s++)
        {
            Assert.That(memory.AsSpan(s * row, decayWidth).ToArray(), Is.EqualTo(decay.AsSpan(s * decayWidth, decayWidth).ToArray()), $"sequence {s}: decay");
            Assert.That(memory.AsSpan(s * row + decayWidth, keysWidth).ToArray(), Is.EqualTo(keys.AsSpan(s * keysWidth, keysWidth).ToArray()), $"sequence {s}: keys");
            int deltasWidth = row - decayWidth - keysWidth;
            Assert.That(memory.AsSpan(s * row + decayWidth + keysWidth, deltasWidth).ToArray(), Is.EqualTo(deltas.AsSpan(s * deltasWidth, deltasWidth).ToArray()),
                $"sequence {s}: deltas");
        }
    }

    /// <summary>
    /// A destination sharing an element with another or with an input: each destination is written whole after the others,
    /// so one written over another's last element left it wrong, without an error. Refused, naming both tensors. The second
    /// tensor starts on the first's last element; "strided" lays keys and deltas as interleaved rows, deltas one element early.
    /// </summary>
    [TestCase("decay", "keys")]
    [TestCase("decay", "deltas")]
    [TestCase("keys", "deltas")]
    [TestCase("keys", "k")]
    [TestCase("deltas", "v")]
    [TestCase("decay", "beta")]
    [TestCase("deltas", "initial_state")]
    [TestCase("keys", "deltas", true)]
    public void DestinationsSharingAnElementAreRefused(string first, string second, bool strided = false)
    {
        var sizes = new Dictionary<string, int> { ["decay"] = 2, ["keys"] = 32, ["deltas"] = 16, ["k"] = 32, ["v"] = 16, ["beta"] = 2, ["initial_state"] = 128 };
        var shapes = new Dictionary<string, nint[]>
        {
            ["decay"] = [1, 2, 1], ["keys"] = [1, 2, 1, 16], ["deltas"] = [1, 2, 1, 8], ["k"] = [1, 2, 1, 16], ["v"] = [1, 2, 1, 8], ["beta"] = [1, 2, 1],
            ["initial_state"] = [1, 1, 16, 8],
        };
        var memory = new TestData(31).Uniform(sizes[first] + sizes[second], 0.1, 0.9);
        int[] offsets = new int[2];
        offsets[1] = sizes[first] - 1;
        var strides = new Dictionary<string, nint[]>();
        if (strided)
        {
            // Token rows 24 floats apart: keys' 16 then deltas' 8, deltas moved one float into keys.
            strides["keys"] = [0, 24, 0, 1];
            strides["deltas"] = [0, 24, 0, 1];
            offsets[1] = 15;
        }
        float[] Memory(string name) => name == first || name == second ? memory : new TestData(37).Uniform(sizes[name], 0.1, 0.9);
        int Offset(string name) => name == first ? offsets[0] : name == second ? offsets[1] : 0;
        nint[] Strides(string name) => strides.TryGetValue(name, out var s) ? s : [];
        TensorSpan<float> View(string name)
        {
            var m = Memory(name);
            int length = strides.ContainsKey(name) ? m.Length - Offset(name) : sizes[name];
            return new TensorSpan<float>(m.AsSpan(Offset(name), length), shapes[name], Strides(name));
        }
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.CaptureTransitions<float>(View("k"), View("v"), View("beta"), default,
            View("initial_state"), [2], View("decay"), View("keys"), View("deltas")))!;
        Assert.That(e.ParamName, Is.EqualTo(first), e.Message);
        Assert.That(e.Message, Does.StartWith($"{first}: shares memory with {second}"));
    }

    /// <summary>A count above the capacity or the length takes what there is; a negative one is bad input (it was taken as 0).</summary>
    [Test]
    public void ANegativeCountIsRefused()
    {
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.CaptureTransitions<float>(
            new ReadOnlyTensorSpan<float>(new float[32], [1, 2, 1, 16]), new ReadOnlyTensorSpan<float>(new float[16], [1, 2, 1, 8]),
            new ReadOnlyTensorSpan<float>(new float[2], [1, 2, 1]), default, default, [-5],
            new TensorSpan<float>(new float[2], [1, 2, 1]), new TensorSpan<float>(new float[32], [1, 2, 1, 16]),
            new TensorSpan<float>(new float[16], [1, 2, 1, 8])))!;
        Assert.That(e.ParamName, Is.EqualTo("counts"));
        Assert.That(e.Message, Does.Contain("sequence 0's count must be >= 0"));
    }

    /// <summary>A NaN or infinity of k or v is named there; it was named as the deltas it reached.</summary>
    [TestCase("k")]
    [TestCase("v")]
    public void ANonFiniteKeyOrValueIsNamed(string tensor)
    {
        float[] k = new float[32], v = new float[16];
        (tensor == "k" ? k : v)[11] = tensor == "k" ? float.NaN : float.PositiveInfinity;
        var e = Assert.Catch<ArgumentException>(() => Engine.DeltaRule.CaptureTransitions<float>(
            new ReadOnlyTensorSpan<float>(k, [1, 2, 1, 16]), new ReadOnlyTensorSpan<float>(v, [1, 2, 1, 8]),
            new ReadOnlyTensorSpan<float>(new float[2], [1, 2, 1]), default, default, [2],
            new TensorSpan<float>(new float[2], [1, 2, 1]), new TensorSpan<float>(new float[32], [1, 2, 1, 16]),
            new TensorSpan<float>(new float[16], [1, 2, 1, 8])))!;
        Assert.That(e.ParamName, Is.EqualTo(tensor), e.Message);
        Assert.That(e.Message, Does.Contain("at flat index 11"));
    }
}

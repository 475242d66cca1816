using System.Runtime.InteropServices;
using Engine.Kernels.Common;
using Engine.Kernels.DeltaRule;
using Engine.Kernels.Gla;
using Engine.Tests.Harness;
using ILGPU.Runtime;
using NUnit.Framework;

namespace Engine.Tests.Kernels;

/// <summary>
/// A causal op's output at a token never depends on later tokens, faults included: a NaN or an infinity in one
/// row of q, k, v (or β) leaves every earlier output as it was. The chunked CPU kernels are called directly (the
/// public facades refuse non-finite inputs). Outputs before the fault must be finite and bitwise those of the run
/// without the fault, whose outputs match the float64 reference (recurrent, hence causal) to 1e-5 relative RMS.
/// Faults fall on the first, a middle and the last row of a chunk, inside a 16-row sub-chunk and in a partial
/// last chunk, of the second of two packed sequences (the first ends mid-chunk). The GPU kernels (called directly on
/// ILGPU's CPU accelerator, small shapes) are held to the same contract.
/// </summary>
[TestFixture]
public sealed class CausalityUnderFaultsTests
{
    private static readonly IWorkScheduler TwoWorkers = new ThreadPoolScheduler(2);
    private GpuRuntime _gpu = null!;

    [OneTimeSetUp]
    public void CreateGpuRuntime() => _gpu = GpuRuntime.Create(GpuRuntime.Choice.CpuAccelerator);

    [OneTimeTearDown]
    public void DisposeGpuRuntime() => _gpu.Dispose();

    private const int FirstSequence = 11;
    private static readonly float[] Faults = [float.NaN, float.PositiveInfinity];

    /// <summary>Query heads over key/value heads, grouped: two pairs on the CPU, one on the GPU kernels (the CPU accelerator is slow).</summary>
    private static (int Q, int Kv) Heads(bool gpu) => gpu ? (2, 1) : (4, 2);

    /// <summary>The constant gate's log decay of each key/value head.</summary>
    private static readonly float[] ConstantLogDecays = [-0.05f, -0.4f];

    private static IEnumerable<TestCaseData> GlaCases() =>
        from gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey, GateKind.Constant }
        from chunk in new[] { 16, 32, 64, 128 }
        from dims in new[] { (32, 32), (20, 24) }
        select new TestCaseData(gate, chunk, dims.Item1, dims.Item2).SetArgDisplayNames($"{gate}", $"C{chunk}", $"K{dims.Item1} V{dims.Item2}");

    private static IEnumerable<TestCaseData> GlaGpuCases() =>
        from gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey, GateKind.Constant }
        select new TestCaseData(gate, 16, 16, 16).SetArgDisplayNames($"{gate}", "C16", "K16 V16");

    private static IEnumerable<TestCaseData> DeltaRuleGpuCases() =>
        from gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey }
        from chunk in new[] { 16, 32 }
        select new TestCaseData(gate, chunk, 16, 16).SetArgDisplayNames($"{gate}", $"C{chunk}", "K16 V16");

    private static IEnumerable<TestCaseData> DeltaRuleCases() =>
        from gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey }
        from chunk in DeltaRuleConfig.ChunkSizes
        from dims in new[] { (32, 32), (20, 24) }
        select new TestCaseData(gate, chunk, dims.Item1, dims.Item2).SetArgDisplayNames($"{gate}", $"C{chunk}", $"K{dims.Item1} V{dims.Item2}");

    [TestCaseSource(nameof(GlaCases))]
    public void GlaOutputsBeforeAFaultAreThoseOfTheRunWithoutIt(GateKind gate, int chunk, int kd, int vd) => GlaIsCausal(gate, chunk, kd, vd, gpu: false);

    [TestCaseSource(nameof(GlaGpuCases))]
    public void GlaGpuOutputsBeforeAFaultAreThoseOfTheRunWithoutIt(GateKind gate, int chunk, int kd, int vd) => GlaIsCausal(gate, chunk, kd, vd, gpu: true);

    [TestCaseSource(nameof(DeltaRuleCases))]
    public void DeltaRuleOutputsBeforeAFaultAreThoseOfTheRunWithoutIt(GateKind gate, int chunk, int kd, int vd) => DeltaRuleIsCausal(gate, chunk, kd, vd, gpu: false);

    [TestCaseSource(nameof(DeltaRuleGpuCases))]
    public void DeltaRuleGpuOutputsBeforeAFaultAreThoseOfTheRunWithoutIt(GateKind gate, int chunk, int kd, int vd) => DeltaRuleIsCausal(gate, chunk, kd, vd, gpu: true);

    private void GlaIsCausal(GateKind gate, int chunk, int kd, int vd, bool gpu)
    {
        var (qHeads, kvHeads) = Heads(gpu);
        var heads = new HeadLayout(qHeads, kvHeads, kd, vd);
        var config = new GlaConfig(heads, gate, 1f / MathF.Sqrt(kd), chunk, gate == GateKind.Constant ? ConstantLogDecays[..kvHeads] : null);
        using var cpuKernel = gpu ? null : new GlaCpu(config);
        using var gpuKernel = gpu ? new GlaGpu(config, _gpu) : null;
        using var gpuState = _gpu.Accelerator.Allocate1D<float>(2 * kvHeads * kd * vd);
        var (sequences, tokens) = Layout(chunk);
        var data = new TestData(chunk * 1000 + kd * 10 + (int)gate);
        var inputs = new Dictionary<string, (float[] Values, int PerToken)>
        {
            ["q"] = (data.Normal(tokens * qHeads * kd), qHeads * kd),
            ["k"] = (data.UnitRows(tokens * kvHeads, kd), kvHeads * kd),
            ["v"] = (data.Normal(tokens * kvHeads * vd), kvHeads * vd),
        };
        var g = data.LogGates(tokens * config.GatePerToken, 1);

        float[] Run()
        {
            var output = Numerics.NaNs(tokens * qHeads * vd);
            if (gpuKernel is null)
            {
                cpuKernel!.Chunked(TwoWorkers, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, g, output, new float[2 * kvHeads * kd * vd]);
                return output;
            }
            gpuState.MemSetToZero();
            gpuKernel.Run(chunked: true, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, g, output, gpuState.View);
            return output;
        }

        var expected = new double[tokens * qHeads * vd];
        GlaReference.Forward(config, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, g, expected, new double[2 * kvHeads * kd * vd]);
        AssertCausal(chunk, qHeads * vd, inputs, Run, expected);
    }

    private void DeltaRuleIsCausal(GateKind gate, int chunk, int kd, int vd, bool gpu)
    {
        var (qHeads, kvHeads) = Heads(gpu);
        var heads = new HeadLayout(qHeads, kvHeads, kd, vd);
        var config = new DeltaRuleConfig(heads, gate, 1f / MathF.Sqrt(kd), chunk, qkL2Norm: true);
        using var cpuKernel = gpu ? null : new DeltaRuleCpu(config);
        using var gpuKernel = gpu ? new DeltaRuleGpu(config, _gpu) : null;
        using var gpuState = _gpu.Accelerator.Allocate1D<float>(2 * kvHeads * kd * vd);
        var (sequences, tokens) = Layout(chunk);
        var data = new TestData(chunk * 1000 + kd * 10 + (int)gate + 500);
        var inputs = new Dictionary<string, (float[] Values, int PerToken)>
        {
            ["q"] = (data.Normal(tokens * qHeads * kd), qHeads * kd),
            ["k"] = (data.Normal(tokens * kvHeads * kd), kvHeads * kd),
            ["v"] = (data.Normal(tokens * kvHeads * vd), kvHeads * vd),
            ["beta"] = (data.Uniform(tokens * kvHeads, 0.05, 0.95), kvHeads),
        };
        var g = data.LogGates(tokens * config.GatePerToken, 1);

        float[] Run()
        {
            var output = Numerics.NaNs(tokens * qHeads * vd);
            if (gpuKernel is null)
            {
                cpuKernel!.Chunked(TwoWorkers, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, inputs["beta"].Values, g, output,
                    new float[2 * kvHeads * kd * vd]);
                return output;
            }
            gpuState.MemSetToZero();
            gpuKernel.Run(chunked: true, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, inputs["beta"].Values, g, output, gpuState.View);
            return output;
        }

        var expected = new double[tokens * qHeads * vd];
        DeltaRuleReference.Forward(config, sequences, inputs["q"].Values, inputs["k"].Values, inputs["v"].Values, inputs["beta"].Values, g,
            expected, new double[2 * kvHeads * kd * vd]);
        AssertCausal(chunk, qHeads * vd, inputs, Run, expected);
    }

    /// <summary>A short first sequence, then one of two full chunks and a partial one of 7 tokens.</summary>
    private static (SequenceLayout Sequences, int Tokens) Layout(int chunk)
    {
        int tokens = FirstSequence + 2 * chunk + 7;
        return (SequenceLayout.Packed([0, FirstSequence, tokens], tokens), tokens);
    }

    /// <summary>Tokens of the second sequence that take the fault, as rows of its chunks.</summary>
    private static IEnumerable<(int Token, string Where)> FaultRows(int chunk) =>
    [
        (chunk, "first row of a chunk"),
        (chunk + 5, "row 5 of a sub-chunk"),
        (chunk + chunk / 2 + 4, "a middle row of a chunk"),
        (2 * chunk - 1, "last row of a chunk"),
        (2 * chunk + 2, "row 2 of a partial chunk"),
    ];

    private static void AssertCausal(int chunk, int outputPerToken, Dictionary<string, (float[] Values, int PerToken)> inputs,
        Func<float[]> run, double[] expected)
    {
        var clean = run();
        Assert.That(Numerics.RelativeRms(clean, expected), Is.LessThanOrEqualTo(Numerics.Fp32Tolerance), "the run without a fault");
        var failures = new List<string>();
        foreach (var (name, (values, perToken)) in inputs)
            foreach (var (row, where) in FaultRows(chunk))
                foreach (float fault in Faults)
                {
                    int token = FirstSequence + row;
                    int at = token * perToken + perToken / 2 + 1;
                    float original = values[at];
                    values[at] = fault;
                    var faulted = run();
                    values[at] = original;
                    int earlier = token * outputPerToken;
                    var before = faulted.AsSpan(0, earlier);
                    var bits = MemoryMarshal.Cast<float, int>(before);
                    var cleanBits = MemoryMarshal.Cast<float, int>(clean.AsSpan(0, earlier));
                    int first = 0;
                    while (first < earlier && bits[first] == cleanBits[first]) first++;
                    if (first < earlier)
                        failures.Add($"{name} = {fault} at token {token} ({where}): the output of token {first / outputPerToken} is " +
                            $"{(Numerics.AllFinite(before) ? "finite but changed" : "not finite")}");
                }
        Assert.That(failures, Is.Empty);
    }
}

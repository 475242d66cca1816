using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using Engine.Workloads;

namespace Engine.Tests.Onnx;

/// <summary>
/// A model holding one LinearAttention node whose inputs are graph inputs: every attribute and input form of
/// the signature, inputs fixed by a stable seed, and the float64 reference of the same call.
/// </summary>
public sealed record LinearAttentionNodeCase
{
    public UpdateRule Rule { get; init; } = UpdateRule.Gated;
    public DecayForm Decay { get; init; } = DecayForm.PerKey;
    public bool BetaPerHead { get; init; } = true;
    public int B { get; init; } = 2;
    public int T { get; init; } = 37;
    public int Hq { get; init; } = 2;
    public int Hkv { get; init; } = 2;
    public int Dk { get; init; } = 16;
    public int Dv { get; init; } = 12;
    public bool PastState { get; init; }
    public float Scale { get; init; }
    public double GateStrength { get; init; } = 1.0;
    /// <summary>"com.microsoft" or "" (ai.onnx, opset 27).</summary>
    public string Domain { get; init; } = HandoverRewriter.MicrosoftDomain;
    /// <summary>Batch and length as symbols in the model (else fixed numbers).</summary>
    public bool SymbolicDims { get; init; } = true;
    /// <summary>float16 tensors in and out (inputs drawn as floats and rounded to fp16; the reference sees the rounded values).</summary>
    public bool Half { get; init; }

    /// <summary>The tolerance against the float64 reference: fp32's, or fp16's for float16 tensors.</summary>
    public double Tolerance => Half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;

    public bool UsesDecay => LinearAttentionSignature.UsesDecay(Rule);
    public bool UsesBeta => LinearAttentionSignature.UsesBeta(Rule);
    /// <summary>Heads of the key and of the output (<see cref="LinearAttentionBlockSpec"/>).</summary>
    public int KeyHeads => Spec.KeyHeads;
    public int OutputHeads => Spec.OutputHeads;
    public int DecayWidth => Decay == DecayForm.PerKey ? Hkv * Dk : Hkv;
    public int BetaWidth => BetaPerHead ? Hkv : 1;

    public string Name =>
        $"{LinearAttentionSignature.Name(Rule)}" + (UsesDecay ? $" decay {Decay}" : "") + (UsesBeta ? (BetaPerHead ? " beta per head" : " beta shared") : "") +
        $" B{B} T{T} H{Hq}/{Hkv} dk{Dk} dv{Dv}" + (PastState ? " past" : "") + (Scale != 0 ? $" scale{Scale}" : "") +
        (Domain.Length == 0 ? " opset27" : "") + (Half ? " fp16" : "");

    public override string ToString() => Name;

    public LinearAttentionBlockSpec Spec => new()
    {
        QHeads = Hq, KvHeads = Hkv, KeyDim = Dk, ValueDim = Dv, Rule = Rule, Decay = Decay, BetaPerHead = BetaPerHead,
        PastState = PastState, Domain = Domain, Scale = Scale, Batch = SymbolicDims ? null : B, Length = SymbolicDims ? null : T,
        ElementType = Half ? TensorElementType.Float16 : TensorElementType.Float,
    };

    public OnnxModel Model() => SampleModels.LinearAttentionNode(Spec);

    public Dictionary<string, TensorData> Inputs()
    {
        var data = new TestData(AttentionCase.StableSeed(Name));
        var inputs = new Dictionary<string, TensorData>
        {
            ["query"] = Tensor(data.Normal((long)B * T * Hq * Dk), B, T, Hq * Dk),
            ["key"] = Tensor(data.UnitRows((long)B * T * KeyHeads, Dk), B, T, KeyHeads * Dk),
            ["value"] = Tensor(data.Normal((long)B * T * Hkv * Dv), B, T, Hkv * Dv),
        };
        if (PastState) inputs["past_state"] = Tensor(data.Normal((long)B * Hkv * Dk * Dv, 0.5), B, Hkv, Dk, Dv);
        if (UsesDecay) inputs["decay"] = Tensor(data.LogGates((long)B * T * DecayWidth, GateStrength), B, T, DecayWidth);
        if (UsesBeta) inputs["beta"] = Tensor(data.Uniform((long)B * T * BetaWidth, 0.05, 1.0), B, T, BetaWidth);
        return inputs;
    }

    private TensorData Tensor(float[] values, params long[] shape) =>
        Half ? TensorData.Create(TestData.ToHalf(values), shape) : TensorData.Create(values, shape);

    public LinearAttentionReference.Result Reference(IReadOnlyDictionary<string, TensorData> inputs) =>
        LinearAttentionReference.Run(Rule, B, T, Hq, Hkv, Dk, Dv, Scale != 0 ? Scale : 1.0 / Math.Sqrt(Dk),
            Values(inputs, "query")!, Values(inputs, "key")!, Values(inputs, "value")!, Values(inputs, "past_state"),
            Values(inputs, "decay"), Decay == DecayForm.PerKey, Values(inputs, "beta"), BetaPerHead);

    private static double[]? Values(IReadOnlyDictionary<string, TensorData> inputs, string name) =>
        inputs.TryGetValue(name, out var t) ? TestData.ToDouble(OnnxAssert.Floats(t)) : null;
}

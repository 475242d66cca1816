using Engine.Kernels.Gating;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// LinearAttentionGate (com.microsoft, ONNX Runtime 1.32): the gated delta rule's gates from their projections.
///   inputs  a (…, H); dt_bias (H) float32; decay_scale (H) float32 (−exp(A_log)); b (a's shape)?
///   outputs decay = decay_scale · Softplus(a + dt_bias); beta = Sigmoid(b)? (needs b)
/// </summary>
internal static class LinearAttentionGateSignature
{
    public const string OpType = "LinearAttentionGate";
    public static readonly string[] InputNames = ["a", "dt_bias", "decay_scale", "b"];
    public static readonly string[] OutputNames = ["decay", "beta"];
    public static readonly string[] AttributeNames = [];
}

/// <summary>
/// GatedRMSNorm (com.microsoft, ONNX Runtime 1.32): Y = X · (mean(X²) + epsilon)^−½ · scale · act(gate), the mean over each
/// group of C = len(scale) trailing elements. inputs X (…, H·C), scale (C), gate (X's shape), all one type; output Y.
/// attributes activation silu (default) | swish | sigmoid; epsilon (default 1e−5).
/// </summary>
internal static class GatedRmsNormSignature
{
    public const string OpType = "GatedRMSNorm";
    public static readonly string[] InputNames = ["X", "scale", "gate"];
    public static readonly string[] OutputNames = ["Y"];
    public static readonly string[] AttributeNames = ["activation", "epsilon"];
    public const float DefaultEpsilon = 1e-5f;

    /// <summary>Whether the engine's kernel takes this epsilon; the rewrite leaves a node with another to ORT.</summary>
    public static bool EngineRuns(float epsilon) => epsilon >= 0 && float.IsFinite(epsilon);

    public static GateActivation Activation(string? text, string node) => text switch
    {
        null or "silu" or "swish" => GateActivation.Silu,
        "sigmoid" => GateActivation.Sigmoid,
        _ => throw new ModelNodeException($"{node}: activation must be silu, swish or sigmoid, got '{text}'"),
    };
}

internal sealed class LinearAttentionGateOp(int elementType) : EngineOp
{
    public override string Name => LinearAttentionGateSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } =
        [new("a", false, elementType), new("dt_bias", false), new("decay_scale", false), new("b", true, elementType)];

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("decay", false, elementType), new("beta", true, elementType)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"LinearAttentionGate node '{info.NodeName}'";
        if (info.InputCount > 4) throw new ModelNodeException($"{node}: expected at most 4 inputs (a, dt_bias, decay_scale, b), got {info.InputCount}");
        for (int i = 0; i < 3; i++)
            if (!info.Input(i).Present) throw new ModelNodeException($"{node}: the required input {LinearAttentionGateSignature.InputNames[i]} is missing");
        if (info.OutputCount > 1 && info.OutputName(1).Length > 0 && !info.Input(3).Present)
            throw new ModelNodeException($"{node}: the beta output needs the b input");
        return new LinearAttentionGateKernel(node, device);
    }
}

internal sealed class LinearAttentionGateKernel(string node, EngineDevice device) : IEngineKernel
{
    public void Compute(KernelContext context)
    {
        var a = context.Input(0) ?? throw Bad("a", "the required input was not given");
        if (a.Dims.Length < 1 || a.Dims[^1] < 1) throw Bad("a", $"expected rank >= 1 with heads as the last axis, got shape {TensorData.Format(a.Dims)}");
        long heads = a.Dims[^1];
        var dtBias = context.Input(1) ?? throw Bad("dt_bias", "the required input was not given");
        var decayScale = context.Input(2) ?? throw Bad("decay_scale", "the required input was not given");
        if (dtBias.ElementCount != heads) throw Bad("dt_bias", $"expected {heads} values (one per head, a's last axis), got shape {TensorData.Format(dtBias.Dims)}");
        if (decayScale.ElementCount != heads) throw Bad("decay_scale", $"expected {heads} values (one per head, a's last axis), got shape {TensorData.Format(decayScale.Dims)}");
        var b = context.Input(3);
        var decay = context.Output(0, a.Dims) ?? throw new ModelNodeException($"{node}: ORT gave no output tensor");
        var beta = context.Output(1, a.Dims);
        if (beta is not null && b is null) throw Bad("b", "the beta output needs the b input");
        if (b is OrtTensorView bt && !bt.Dims.SequenceEqual(a.Dims)) throw Bad("b", $"expected a's shape {TensorData.Format(a.Dims)}, got {TensorData.Format(bt.Dims)}");
        using var views = new FloatViews();
        var scheduler = CallScheduler.For(context, device, inline: a.ElementCount <= CallScheduler.InlineElements);
        DecayGateCpu.Forward(views.In(a), views.In(dtBias), views.In(decayScale), beta is null ? [] : views.In(b),
            views.Out(decay, "decay"), views.Out(beta, "beta"), scheduler);
        NodeErrors.Commit(node, views);
    }

    private ArgumentException Bad(string name, string what) => new($"{node}: {name}: {what}", name);

    public void Dispose() { }
}

internal sealed class GatedRmsNormOp(int elementType) : EngineOp
{
    public override string Name => GatedRmsNormSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } = GatedRmsNormSignature.InputNames.Select(n => new OpParameter(n, false, elementType)).ToArray();

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("Y", false, elementType)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"GatedRMSNorm node '{info.NodeName}'";
        var activation = GatedRmsNormSignature.Activation(info.String("activation"), node);
        float epsilon = info.Float("epsilon") ?? GatedRmsNormSignature.DefaultEpsilon;
        if (!GatedRmsNormSignature.EngineRuns(epsilon)) throw new ModelNodeException($"{node}: epsilon must be finite and >= 0, got {epsilon}");
        for (int i = 0; i < 3; i++)
            if (!info.Input(i).Present) throw new ModelNodeException($"{node}: the required input {GatedRmsNormSignature.InputNames[i]} is missing");
        return new GatedRmsNormKernel(node, activation, epsilon, device);
    }
}

internal sealed class GatedRmsNormKernel(string node, GateActivation activation, float epsilon, EngineDevice device) : IEngineKernel
{
    public void Compute(KernelContext context)
    {
        var x = context.Input(0) ?? throw Bad("X", "the required input was not given");
        var scale = context.Input(1) ?? throw Bad("scale", "the required input was not given");
        var gate = context.Input(2) ?? throw Bad("gate", "the required input was not given");
        if (x.Dims.Length < 1) throw Bad("X", "expected rank >= 1");
        if (scale.ElementCount < 1 || x.Dims[^1] % scale.ElementCount != 0)
            throw Bad("scale", $"its length must divide X's last axis ({x.Dims[^1]}), got shape {TensorData.Format(scale.Dims)}");
        if (!gate.Dims.SequenceEqual(x.Dims)) throw Bad("gate", $"expected X's shape {TensorData.Format(x.Dims)}, got {TensorData.Format(gate.Dims)}");
        var y = context.Output(0, x.Dims) ?? throw new ModelNodeException($"{node}: ORT gave no output tensor");
        using var views = new FloatViews();
        var scheduler = CallScheduler.For(context, device, inline: x.ElementCount <= CallScheduler.InlineElements);
        GatedRmsNormCpu.Forward(views.In(x), views.In(gate), views.In(scale), epsilon, activation, views.Out(y, "Y"), scheduler);
        NodeErrors.Commit(node, views);
    }

    private ArgumentException Bad(string name, string what) => new($"{node}: {name}: {what}", name);

    public void Dispose() { }
}

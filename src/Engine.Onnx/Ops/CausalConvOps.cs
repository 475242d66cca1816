using Engine.Kernels.Common;
using Engine.Kernels.Conv;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// CausalConvWithState (com.microsoft, ONNX Runtime 1.32; ai.onnx opset 27 has the first four inputs, the two outputs and
/// activation only): a stateful causal depthwise 1-D convolution.
///   inputs  input (B, C, L), or (B, L, d1..dn) with channels_last = 1 (C = d1·…·dn); weight (C, 1, K); bias (C)?;
///           past_state (B, C, S)?, or (B, S, d1..dn) with channels_last = 1 (S = (K − 1)·dilation; zeros when absent)
///   outputs output (input's shape); present_state (past_state's shape): the last S positions of [past_state | input]
///   attributes activation none (default) | silu | swish; dilation (default 1); channels_last 0 (default) | 1; ndim 1 (the
///   only one ORT's CPU kernel runs); state_window 0 (CUDA only otherwise); and, in the engine's domain only,
///   state_channels_last −1 (follow channels_last, the default) | 0 | 1, the state's layout on its own (the CUDA extended
///   attribute's meaning): how the rewriter folds the Transposes around a channels-first node into it.
/// </summary>
internal static class CausalConvSignature
{
    public const string OpType = "CausalConvWithState";
    public static readonly string[] InputNames = ["input", "weight", "bias", "past_state"];
    public static readonly string[] OutputNames = ["output", "present_state"];
    public const int Input = 0, Weight = 1, Bias = 2, PastState = 3;

    /// <summary>Attributes the engine reads (ORT's CPU kernel's, and the state layout of a folded node).</summary>
    public static readonly string[] AttributeNames = ["activation", "dilation", "channels_last", "ndim", "state_window", "state_channels_last"];

    /// <summary>com.microsoft attributes only ORT's CUDA kernel runs: a node that sets one stays with ORT.</summary>
    public static readonly string[] CudaOnlyAttributes = ["input_channels", "input_channel_offset", "state_length", "state_channels_last", "state_update_capacity"];

    public static ConvActivation Activation(string? text, string node) => text switch
    {
        null or "none" => ConvActivation.None,
        "silu" or "swish" => ConvActivation.Silu,
        _ => throw new ModelNodeException($"{node}: activation must be none, silu or swish, got '{text}'"),
    };

    public static int Dilation(long? value, string node) => value switch
    {
        null => 1,
        >= 1 and <= 1 << 20 => (int)value,
        _ => throw new ModelNodeException($"{node}: dilation must be >= 1, got {value}"),
    };
}

/// <summary>VarlenCausalConvWithState (com.microsoft, ONNX Runtime 1.32): the convolution over packed token-major sequences.</summary>
/// <remarks>
/// inputs input (N, C) token-major; weight (C, 1, K); cumulative_sequence_length int32 (B + 1), non-decreasing from 0 to N;
/// bias (C)?; initial_state (B, C, S), required; capture_count, kernel_delta, previous_mask (CUDA or compact capture: left
/// to ORT). outputs output (N, C); final_state (B, C, S); state_update (capture only). attributes activation, dilation;
/// state_update_capacity 0, group_size 1, delta_offset 0 (other values: left to ORT).
/// </remarks>
internal static class VarlenCausalConvSignature
{
    public const string OpType = "VarlenCausalConvWithState";
    public static readonly string[] InputNames = ["input", "weight", "cumulative_sequence_length", "bias", "initial_state"];
    public static readonly string[] OutputNames = ["output", "final_state"];
    public const int Input = 0, Weight = 1, Offsets = 2, Bias = 3, InitialState = 4;
    public static readonly string[] AttributeNames = ["activation", "dilation", "state_update_capacity", "group_size", "delta_offset"];
}

/// <summary>CausalConvWithState in the engine's domain, one op per element type (float32, float16).</summary>
internal sealed class CausalConvOp(int elementType) : EngineOp
{
    public override string Name => CausalConvSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } =
        CausalConvSignature.InputNames.Select((name, i) => new OpParameter(name, Optional: i >= CausalConvSignature.Bias, elementType)).ToArray();

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("output", false, elementType), new("present_state", true, elementType)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"CausalConvWithState node '{info.NodeName}'";
        if (info.Int("ndim") is long ndim && ndim != 1) throw new ModelNodeException($"{node}: ndim must be 1, got {ndim}");
        if (info.Int("state_window") is long window && window != 0) throw new ModelNodeException($"{node}: state_window must be 0, got {window}");
        var activation = CausalConvSignature.Activation(info.String("activation"), node);
        int dilation = CausalConvSignature.Dilation(info.Int("dilation"), node);
        bool channelsLast = (info.Int("channels_last") ?? 0) switch
        {
            0 => false,
            1 => true,
            var other => throw new ModelNodeException($"{node}: channels_last must be 0 or 1, got {other}"),
        };
        bool stateChannelsLast = (info.Int("state_channels_last") ?? -1) switch
        {
            -1 => channelsLast,
            0 => false,
            1 => true,
            var other => throw new ModelNodeException($"{node}: state_channels_last must be -1, 0 or 1, got {other}"),
        };
        if (info.InputCount > CausalConvSignature.InputNames.Length)
            throw new ModelNodeException($"{node}: expected at most 4 inputs (input, weight, bias, past_state), got {info.InputCount}");
        var input = info.Input(CausalConvSignature.Input);
        var weight = info.Input(CausalConvSignature.Weight);
        if (!input.Present) throw new ModelNodeException($"{node}: the required input input is missing");
        if (!weight.Present) throw new ModelNodeException($"{node}: the required input weight is missing");
        if (input.Rank is int r && (channelsLast ? r < 3 : r != 3))
            throw new ModelNodeException($"{node}: input ('{input.Name}') must have rank {(channelsLast ? "3 or more (B, L, d1..dn)" : "3 (B, C, L)")}, the model gives rank {r}");
        if (weight.Rank is int rw && rw != 3)
            throw new ModelNodeException($"{node}: weight ('{weight.Name}') must have rank 3 (channels, 1, K), the model gives rank {rw}");
        return new CausalConvKernel(node, activation, dilation, channelsLast ? ConvLayout.ChannelsLast : ConvLayout.ChannelsFirst,
            stateChannelsLast ? ConvLayout.ChannelsLast : ConvLayout.ChannelsFirst, device);
    }
}

/// <summary>VarlenCausalConvWithState in the engine's domain, one op per element type.</summary>
internal sealed class VarlenCausalConvOp(int elementType) : EngineOp
{
    public override string Name => VarlenCausalConvSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } =
    [
        new("input", false, elementType), new("weight", false, elementType), new("cumulative_sequence_length", false, Ort.ElementInt32),
        new("bias", true, elementType), new("initial_state", false, elementType),
    ];

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("output", false, elementType), new("final_state", false, elementType)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"VarlenCausalConvWithState node '{info.NodeName}'";
        foreach (var (name, allowed) in new[] { ("state_update_capacity", 0L), ("delta_offset", 0L), ("group_size", 1L) })
            if (info.Int(name) is long value && value != allowed) throw new ModelNodeException($"{node}: {name} must be {allowed}, got {value}");
        if (info.InputCount > VarlenCausalConvSignature.InputNames.Length)
            throw new ModelNodeException($"{node}: expected at most 5 inputs (input, weight, cumulative_sequence_length, bias, initial_state), got {info.InputCount}");
        foreach (int i in new[] { VarlenCausalConvSignature.Input, VarlenCausalConvSignature.Weight, VarlenCausalConvSignature.Offsets, VarlenCausalConvSignature.InitialState })
            if (!info.Input(i).Present) throw new ModelNodeException($"{node}: the required input {VarlenCausalConvSignature.InputNames[i]} is missing");
        if (info.Input(VarlenCausalConvSignature.Input).Rank is int r && r != 2)
            throw new ModelNodeException($"{node}: input ('{info.Input(0).Name}') must have rank 2 (total_tokens, channels), the model gives rank {r}");
        return new CausalConvKernel(node, CausalConvSignature.Activation(info.String("activation"), node), CausalConvSignature.Dilation(info.Int("dilation"), node),
            ConvLayout.ChannelsLast, ConvLayout.ChannelsFirst, device, varlen: true);
    }
}

/// <summary>
/// Runs a convolution node on ORT's tensors: dense (B, C, L) or (B, L, d1..dn) batches, or packed sequences (varlen).
/// Input names in errors are the node's; CPU work runs on ORT's intra-op pool for the call.
/// </summary>
internal sealed class CausalConvKernel(string node, ConvActivation activation, int dilation, ConvLayout activations, ConvLayout state,
    EngineDevice device, bool varlen = false) : IEngineKernel
{
    /// <summary>Calls with at most this many multiply-adds run on the calling thread: waking ORT's pool costs more.</summary>
    private const long InlineWork = 1 << 16;

    public void Compute(KernelContext context)
    {
        var names = varlen ? VarlenCausalConvSignature.InputNames : CausalConvSignature.InputNames;
        int pastIndex = varlen ? VarlenCausalConvSignature.InitialState : CausalConvSignature.PastState;
        int biasIndex = varlen ? VarlenCausalConvSignature.Bias : CausalConvSignature.Bias;
        var input = context.Input(0) ?? throw Bad(names[0], "the required input was not given");
        var weight = context.Input(1) ?? throw Bad(names[1], "the required input was not given");
        var bias = context.Input(biasIndex);
        var past = context.Input(pastIndex);

        if (weight.Dims.Length != 3 || weight.Dims[1] != 1 || weight.Dims[2] < 1 || weight.Dims[2] > CausalConvConfig.MaxKernelSize)
            throw Bad("weight", $"expected shape (channels, 1, K) with K in [1, {CausalConvConfig.MaxKernelSize}], got {TensorData.Format(weight.Dims)}");
        long channels = weight.Dims[0], k = weight.Dims[2];
        var (stateDims, packed) = Shapes(context, input, channels, k);
        if (bias is OrtTensorView b && (b.Dims.Length != 1 || b.Dims[0] != channels))
            throw Bad(names[biasIndex], $"expected shape ({channels}) (channels), got {TensorData.Format(b.Dims)}");
        if (past is OrtTensorView p && !p.Dims.SequenceEqual(stateDims))
            throw Bad(names[pastIndex], $"expected shape {TensorData.Format(stateDims)} ({StateShapeText}), got {TensorData.Format(p.Dims)}");
        if (varlen && past is null) throw Bad(names[pastIndex], "the required input was not given");

        var config = new CausalConvConfig(checked((int)channels), checked((int)k), dilation, activation, activations, state);
        var output = context.Output(0, input.Dims) ?? throw new ModelNodeException($"{node}: ORT gave no output tensor");
        var present = context.Output(1, stateDims);
        // No batch or no channels: nothing to convolve or carry however long the other axes are, as ORT's kernel runs it.
        if (output.ElementCount == 0 && (present is not OrtTensorView carried || carried.ElementCount == 0)) return;
        var sequences = packed ?? DenseSequences(input);
        bool inline = (long)sequences.TotalTokens * channels * k <= InlineWork;
        var scheduler = CallScheduler.For(context, device, inline);
        using var views = new FloatViews();
        CausalConvCpu.Forward(config, sequences, views.In(input), views.In(weight), views.In(bias), views.In(past),
            views.Out(output, "output"), views.Out(present, varlen ? "final_state" : "present_state"), scheduler);
        NodeErrors.Commit(node, views);
    }

    private string StateShapeText => varlen ? "batch, channels, (K - 1)·dilation"
        : state == ConvLayout.ChannelsFirst ? "B, channels, (K - 1)·dilation" : "B, (K - 1)·dilation, d1..dn";

    /// <summary>The state's dims, and the packed sequences of a varlen node (dense ones: <see cref="DenseSequences"/>).</summary>
    private (long[] StateDims, SequenceLayout? Packed) Shapes(KernelContext context, OrtTensorView input, long channels, long k)
    {
        long stateLength = (k - 1) * dilation;
        string shape = TensorData.Format(input.Dims);
        if (varlen)
        {
            if (input.Dims.Length != 2 || input.Dims[1] != channels) throw Bad("input", $"expected shape (total_tokens, {channels}), got {shape}");
            var offsets = context.Input(VarlenCausalConvSignature.Offsets) ?? throw Bad("cumulative_sequence_length", "the required input was not given");
            if (offsets.Dims.Length != 1 || offsets.Dims[0] < 2) throw Bad("cumulative_sequence_length", $"expected rank 1 with at least 2 elements (batch + 1), got shape {TensorData.Format(offsets.Dims)}");
            if (input.Dims[0] > int.MaxValue) throw Bad("input", $"{input.Dims[0]} tokens is more than cumulative_sequence_length (int32) counts");
            var sequences = NodeGuard(() => SequenceLayout.Packed(offsets.AsReadOnlySpan<int>(), (int)input.Dims[0], "cumulative_sequence_length"));
            long batch = offsets.Dims[0] - 1;
            return ([batch, channels, stateLength], sequences);
        }
        bool last = activations == ConvLayout.ChannelsLast;
        if (last ? input.Dims.Length < 3 : input.Dims.Length != 3)
            throw Bad("input", $"expected {(last ? "rank 3 or more (B, L, d1..dn)" : "rank 3 (B, C, L)")}, got shape {shape}");
        long width = last ? input.Dims.Skip(2).Aggregate(1L, (a, d) => a * d) : input.Dims[1];
        if (width != channels) throw Bad("input", $"{(last ? "d1·…·dn" : "C")} must be weight's {channels} channels, got shape {shape}");
        long b = input.Dims[0];
        long[] stateDims = state == ConvLayout.ChannelsFirst ? [b, channels, stateLength]
            : last ? [b, stateLength, .. input.Dims.Skip(2)] : [b, stateLength, channels];
        return (stateDims, null);
    }

    /// <summary>The (B, L) batch as the kernels count it: in int, refused naming the input past that.</summary>
    private SequenceLayout DenseSequences(OrtTensorView input)
    {
        long b = input.Dims[0], l = input.Dims[activations == ConvLayout.ChannelsLast ? 1 : 2];
        if (b > int.MaxValue || l > int.MaxValue || b * l > int.MaxValue)
            throw Bad("input", $"(B, L) = ({b}, {l}) is more than {int.MaxValue} positions, which the convolution's kernels count");
        return SequenceLayout.Dense((int)b, (int)l);
    }

    private T NodeGuard<T>(Func<T> make)
    {
        try
        {
            return make();
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{node}: {NodeErrors.MessageOf(e)}", e.ParamName, e);
        }
    }

    private ArgumentException Bad(string name, string what) => new($"{node}: {name}: {what}", name);

    public void Dispose() { }
}

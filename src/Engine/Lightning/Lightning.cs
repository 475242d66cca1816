using System.Numerics.Tensors;

namespace Engine;

/// <summary>Options of a Lightning attention call.</summary>
public sealed record LightningOptions : AttentionOptions
{
    /// <summary>Decay slope s_h >= 0 per value head (λ_h = exp(−s_h)). Default: <see cref="Lightning.Slopes"/> for the head count.</summary>
    public float[]? Slopes { get; init; }

    /// <summary>Layer index l in [0, L − 1] of <see cref="Layers"/>: scales the default slopes by (1 − l/(L−1) + 1e−5), as MiniMax-01 does.</summary>
    public int? Layer { get; init; }

    /// <summary>The model's layer count L, given with <see cref="Layer"/> (at least 2); not with <see cref="Slopes"/>.</summary>
    public int? Layers { get; init; }

    /// <summary>Query scale; Lightning attention uses none (1).</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>Tokens per block: 64 (the chunk loop of Lightning Attention-2) or 256 (its parallel variant); 16, 32, 128 also work.</summary>
    public int BlockSize { get; init; } = 64;
}

/// <summary>
/// Lightning attention (TransNormerLLM, Lightning Attention-2, the linear layers of MiniMax-01):
///   S_t = λ_h S_{t-1} + k_t v_tᵀ,  o_t = S_tᵀ q_t,  λ_h = exp(−s_h)
/// Block form: O = [(Q Kᵀ) ⊙ D] V + (Q S) ⊙ λ^(i+1), D_ij = λ^(i−j) (j ≤ i), S ← λ^B S + (K ⊙ λ^(B−1−j))ᵀ V;
/// the decays λ^m are computed once per head and block size. It is the scalar-gate GLA path with the
/// constant gate −s_h and scale 1. Shapes as in <see cref="Gla"/> without g.
/// </summary>
public static class Lightning
{
    /// <summary>
    /// The ALiBi slope schedule: for H a power of two s_h = 2^(−8(h+1)/H); otherwise the slopes of the
    /// largest power of two n below H followed by every other slope of the 2n schedule. With a layer index
    /// l of L layers each slope is scaled by (1 − l/(L−1) + 1e−5).
    /// </summary>
    public static float[] Slopes(int heads, int? layer = null, int? layers = null)
    {
        if (heads < 1) throw new ArgumentOutOfRangeException(nameof(heads), heads, "heads must be >= 1");
        if (layer.HasValue != layers.HasValue)
            throw new ArgumentException($"layer and layers go together: give both or neither, got {(layer.HasValue ? $"layer {layer} alone" : $"layers {layers} alone")}",
                layer.HasValue ? nameof(layers) : nameof(layer));
        double factor = 1.0;
        if (layer is int l && layers is int count)
        {
            if (count < 2) throw new ArgumentOutOfRangeException(nameof(layers), count, "the per-layer schedule needs at least 2 layers");
            if (l < 0 || l >= count) throw new ArgumentOutOfRangeException(nameof(layer), l, $"layer must be in [0, {count - 1}]");
            factor = 1.0 - (double)l / (count - 1) + 1e-5;
        }
        return AlibiSlopes(heads).Select(s => (float)(s * factor)).ToArray();
    }

    private static double[] AlibiSlopes(int heads)
    {
        static double[] PowerOfTwo(int n) => Enumerable.Range(0, n).Select(h => Math.Pow(2.0, -8.0 * (h + 1) / n)).ToArray();
        if ((heads & (heads - 1)) == 0) return PowerOfTwo(heads);
        int n = 1 << (int)Math.Floor(Math.Log2(heads));
        var extra = PowerOfTwo(2 * n).Where((_, i) => i % 2 == 0).Take(heads - n);
        return [.. PowerOfTwo(n), .. extra];
    }

    /// <summary>Runs Lightning attention over whole sequences; states as in <see cref="Gla.Forward{T}(EngineDevice, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlyTensorSpan{float}, TensorSpan{float}, ReadOnlySpan{int}, GlaOptions?)"/>.</summary>
    /// <exception cref="ArgumentException">
    /// A tensor whose shape does not match q's, heads grouped neither way, slopes that are negative, not finite or not one
    /// per value head, slopes given with layer/layers, a state sharing memory with an input or the output, non-finite
    /// inputs, or an output or final state that overflows fp32 (float16 for a Half output) from finite inputs.
    /// </exception>
    public static void Forward<T>(EngineDevice device,
        ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, TensorSpan<T> output,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default,
        ReadOnlySpan<int> cuSeqlens = default, LightningOptions? options = null) where T : unmanaged
    {
        options ??= new LightningOptions();
        AttentionCall.Forward(device, new AttentionTensors<T>(q, k, v, default, default, output), cuSeqlens, initialState, finalState,
            options, takesBeta: false, constantGate: true, (heads, _) => Op(heads, options));
    }

    /// <summary>Runs Lightning attention on device tensors; states and checks as in <see cref="Gla.Forward{T}(EngineDevice, DeviceTensor{T}, DeviceTensor{T}, DeviceTensor{T}, DeviceTensor{T}?, DeviceTensor{T}, DeviceTensor{float}?, DeviceTensor{float}?, ReadOnlySpan{int}, GlaOptions?)"/>.</summary>
    public static void Forward<T>(EngineDevice device, DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> output,
        DeviceTensor<float>? initialState = null, DeviceTensor<float>? finalState = null,
        ReadOnlySpan<int> cuSeqlens = default, LightningOptions? options = null) where T : unmanaged
    {
        options ??= new LightningOptions();
        AttentionCall.Forward(device, DeviceAttentionTensors<T>.Of(q, k, v, null, null, output), cuSeqlens, initialState, finalState,
            options, takesBeta: false, constantGate: true, (heads, _) => Op(heads, options));
    }

    /// <summary>Convenience form: allocates and returns the output and the final state.</summary>
    public static AttentionResult<T> Forward<T>(EngineDevice device, Tensor<T> q, Tensor<T> k, Tensor<T> v,
        LightningOptions? options = null, Tensor<float>? initialState = null, int[]? cuSeqlens = null) where T : unmanaged
    {
        var (output, finalState) = AttentionResult<T>.Allocate(q, k, v, cuSeqlens, options);
        Forward(device, q.AsReadOnlyTensorSpan(), k.AsReadOnlyTensorSpan(), v.AsReadOnlyTensorSpan(), output.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(), finalState.AsTensorSpan(), cuSeqlens, options);
        return new AttentionResult<T>(output, finalState);
    }

    /// <summary>The GLA op with the constant gate −s_h and the block size as its chunk.</summary>
    internal static GlaOp Op(HeadLayout heads, LightningOptions options) =>
        GlaOp.Create(heads, GateKind.Constant, new GlaOptions { Scale = options.Scale, ChunkSize = options.BlockSize, GpuPrecision = options.GpuPrecision, StateLayout = options.StateLayout }, LogDecay(heads.ValueHeads, options),
            chunkSizeName: "block size (BlockSize)");

    /// <summary>−s_h per value head, from the given slopes or the schedule; checks them.</summary>
    private static float[] LogDecay(int valueHeads, LightningOptions options)
    {
        if (options.Slopes is not null && (options.Layer is not null || options.Layers is not null))
            throw new ArgumentException("slopes: give either slopes or layer/layers, not both", "slopes");
        var slopes = options.Slopes ?? Slopes(valueHeads, options.Layer, options.Layers);
        if (slopes.Length != valueHeads)
            throw new ArgumentException($"slopes: expected {valueHeads} slopes (one per value head), got {slopes.Length}", "slopes");
        for (int h = 0; h < slopes.Length; h++)
            if (!(slopes[h] >= 0f) || float.IsInfinity(slopes[h]))
                throw new ArgumentException($"slopes: every slope must be finite and >= 0, got {slopes[h]} at head {h}", "slopes");
        return slopes.Select(s => -s).ToArray();
    }
}

/// <summary>A Lightning attention layer with its state on the device: <see cref="Prefill"/> (blocks), then <see cref="Step"/> (recurrent).</summary>
public sealed class LightningSession : AttentionSession
{
    /// <param name="sequences">How many sequences the state holds (the batch, or the packed sequence count).</param>
    /// <param name="options">The slopes (default the ALiBi schedule for the value heads, or that of <see cref="LightningOptions.Layer"/>), scale and block size of every call.</param>
    public LightningSession(EngineDevice device, int sequences, HeadLayout heads, LightningOptions? options = null)
        : base(device, sequences, Lightning.Op(Checked(heads), options ??= new LightningOptions()), options)
    {
        Slopes = Array.ConvertAll(((GlaOp)Op).ConstantLogDecay!, l => -l);
    }

    /// <summary>The slope of each value head.</summary>
    public IReadOnlyList<float> Slopes { get; }

    /// <summary>Runs a block of tokens in blocks and carries the state.</summary>
    public void Prefill<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, TensorSpan<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, new AttentionTensors<T>(q, k, v, default, default, output), cuSeqlens);

    /// <summary>Runs a block of tokens in blocks on device tensors and carries the state (no host↔device copy).</summary>
    public void Prefill<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Chunked, DeviceAttentionTensors<T>.Of(q, k, v, null, null, output), cuSeqlens);

    /// <summary>Runs tokens one at a time on device tensors and carries the state (no host↔device copy).</summary>
    public void Step<T>(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, DeviceAttentionTensors<T>.Of(q, k, v, null, null, output), cuSeqlens);

    /// <inheritdoc cref="Prefill{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Prefill<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Prefill(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), TensorArgs.Output(output, nameof(output)), cuSeqlens);

    /// <summary>Runs tokens one at a time (usually T = 1) and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v, TensorSpan<T> output,
        ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Run(AttentionMode.Recurrent, new AttentionTensors<T>(q, k, v, default, default, output), cuSeqlens);

    /// <inheritdoc cref="Step{T}(ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, ReadOnlyTensorSpan{T}, TensorSpan{T}, ReadOnlySpan{int})"/>
    public void Step<T>(Tensor<T> q, Tensor<T> k, Tensor<T> v, Tensor<T> output, ReadOnlySpan<int> cuSeqlens = default) where T : unmanaged
        => Step(TensorArgs.Input(q, nameof(q)), TensorArgs.Input(k, nameof(k)), TensorArgs.Input(v, nameof(v)), TensorArgs.Output(output, nameof(output)), cuSeqlens);
}

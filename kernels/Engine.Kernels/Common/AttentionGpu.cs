using ILGPU;

namespace Engine.Kernels.Common;

/// <summary>
/// The device views of one linear-attention call: q [T, Hq, K], k [T, Hk, K], v [T, Hv, V], g and beta (empty when the
/// call has none), output [T, max(Hq, Hv), V], state [N, Hv, K, V] (initial on entry, final on return).
/// </summary>
public readonly record struct AttentionGpuViews(ArrayView<float> Q, ArrayView<float> K, ArrayView<float> V, ArrayView<float> G,
    ArrayView<float> Beta, ArrayView<float> Output, ArrayView<float> State);

/// <summary>
/// A linear-attention op's GPU kernels as the callers see them (GLA and Lightning, the delta rule): the buffers the
/// instance owns, and a run over device views that only enqueues (no synchronize, no copy).
/// </summary>
public interface IAttentionGpu : IDisposable
{
    GpuRuntime Runtime { get; }

    /// <summary>The instance's device buffers: host inputs are uploaded into those named after the views they become.</summary>
    GpuBuffers Buffers { get; }

    /// <summary>Enqueues the chunked form (prefill) or the recurrent form (decode) over <paramref name="views"/>; the caller holds the runtime's lock (<see cref="GpuRuntime.Enter"/>).</summary>
    void Run(bool chunked, SequenceLayout sequences, in AttentionGpuViews views);
}

/// <summary>A call with host inputs and output: uploaded once into the instance's buffers, run, and the output downloaded.</summary>
public static class AttentionGpuHost
{
    public static void Run(IAttentionGpu gpu, bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k,
        ReadOnlySpan<float> v, ReadOnlySpan<float> g, ReadOnlySpan<float> beta, Span<float> output, ArrayView<float> state)
    {
        if (sequences.TotalTokens == 0) return;
        var buffers = gpu.Buffers;
        using (gpu.Runtime.Enter())
        {
            var views = new AttentionGpuViews(
                buffers.Upload(nameof(AttentionGpuViews.Q), q), buffers.Upload(nameof(AttentionGpuViews.K), k), buffers.Upload(nameof(AttentionGpuViews.V), v),
                g.IsEmpty ? default : buffers.Upload(nameof(AttentionGpuViews.G), g), beta.IsEmpty ? default : buffers.Upload(nameof(AttentionGpuViews.Beta), beta),
                buffers.Get<float>(nameof(AttentionGpuViews.Output), output.Length), state);
            gpu.Run(chunked, sequences, views);
            gpu.Runtime.Download(views.Output, output);
        }
    }
}

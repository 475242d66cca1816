using ILGPU;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>GLA on an ILGPU accelerator (placeholder until the kernels land).</summary>
public sealed class GlaGpu : IDisposable
{
    public GlaGpu(GlaConfig config, GpuRuntime runtime) { Config = config; Runtime = runtime; }

    public GlaConfig Config { get; }
    public GpuRuntime Runtime { get; }

    public void Run(bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, ArrayView<float> state)
        => throw new NotSupportedException("GLA GPU kernels are not built yet");

    public void Dispose() { }
}

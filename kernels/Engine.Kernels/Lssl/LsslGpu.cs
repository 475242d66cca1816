using ILGPU;
using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

public sealed class LsslGpu(LsslConfig config, GpuRuntime runtime) : IDisposable
{
    public LsslConfig Config { get; } = config;
    public GpuRuntime Runtime { get; } = runtime;

    public void Run(LsslMode mode, LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, ArrayView<float> state,
        bool initialStateIsZero, bool needFinalState) => throw new NotSupportedException();

    public void Dispose() { }
}

using System.Buffers;
using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine;

/// <summary>fp32 recurrent state kept where the backend computes: host memory, or GPU memory across decode steps.</summary>
internal abstract class DeviceState : IDisposable
{
    protected DeviceState(int length) => Length = length;

    public int Length { get; }

    public abstract void Load(ReadOnlySpan<float> source);
    public abstract void Store(Span<float> destination);
    public abstract void Clear();
    public abstract void Dispose();

    /// <summary>Copies another state of the same length and backend.</summary>
    public abstract void CopyFrom(DeviceState source);

    /// <summary>A state of this length from the device's pool (made on first use): a whole-sequence call allocates no device memory in steady state.</summary>
    public static KernelLease<DeviceState> Lease(EngineDevice device, long length) => device.Lease(length, static (l, d) => Create(d, l));

    public static DeviceState Create(EngineDevice device, long length)
    {
        if (length > Array.MaxLength) throw new ArgumentException($"state of {length} floats is too large");
        return device.Backend == Backend.Gpu ? new GpuState(device.Gpu, (int)length) : new HostState((int)length);
    }
}

/// <summary>State in a pooled host array.</summary>
internal sealed class HostState : DeviceState
{
    private float[]? _data;

    public HostState(int length) : base(length)
    {
        _data = ArrayPool<float>.Shared.Rent(Math.Max(length, 1));
        Clear();
    }

    public Span<float> Span => (_data ?? throw new ObjectDisposedException(nameof(HostState))).AsSpan(0, Length);

    public override void Load(ReadOnlySpan<float> source) => source.CopyTo(Span);
    public override void Store(Span<float> destination) => Span.CopyTo(destination);
    public override void Clear() => Span.Clear();
    public override void CopyFrom(DeviceState source) => ((HostState)source).Span.CopyTo(Span);

    public override void Dispose()
    {
        if (_data is not null) ArrayPool<float>.Shared.Return(_data);
        _data = null;
    }
}

/// <summary>State in accelerator memory.</summary>
internal sealed class GpuState : DeviceState
{
    private readonly GpuRuntime _runtime;

    public GpuState(GpuRuntime runtime, int length) : base(length)
    {
        _runtime = runtime;
        Buffer = runtime.Allocate<float>(Math.Max(length, 1), "the session's state");
        Clear();
    }

    public MemoryBuffer1D<float, Stride1D.Dense> Buffer { get; }

    public ArrayView<float> View => Buffer.View.SubView(0, Length);

    public override void Load(ReadOnlySpan<float> source)
    {
        using (_runtime.Enter()) _runtime.Upload(View, source);
    }

    public override void Store(Span<float> destination)
    {
        using (_runtime.Enter()) _runtime.CopyToHost(View, destination);
    }

    public override void Clear()
    {
        using (_runtime.Enter()) Buffer.MemSetToZero();
    }

    /// <summary>Copies on the device, enqueued on the stream ahead of the kernels that read it.</summary>
    public override void CopyFrom(DeviceState source)
    {
        using (_runtime.Enter()) View.CopyFrom(_runtime.Accelerator.DefaultStream, ((GpuState)source).View);
    }

    public override void Dispose() => Buffer.Dispose();
}

using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>
/// Where a view's first float lies in device memory, for cache hints only: ILGPU gives a kernel no address of its own views,
/// so the host passes the address beside the view. Off CUDA the hints compile to nothing.
/// </summary>
public readonly struct DeviceAddress(long value)
{
    private readonly long _value = value;

    public static DeviceAddress Of(ArrayView<float> view) => new(view.LoadEffectiveAddressAsPtr().ToInt64());

    /// <summary>
    /// Asks the SM's L1 cache for the 128-byte line that holds float <paramref name="index"/> of the view (<c>prefetch.global.L1</c>):
    /// the thread does not wait, and a later load of the line finds it near.
    /// </summary>
    public void PrefetchL1(long index)
    {
        if (CudaAsm.IsSupported) CudaAsm.Emit("prefetch.global.L1 [%0];", _value + index * sizeof(float));
    }
}

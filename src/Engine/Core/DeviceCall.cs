using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine;

/// <summary>
/// One call on device tensors, under the runtime's lock: inputs as the fp32 views the kernels read (a float tensor's own
/// memory; a float16 one converted into the kernel instance's buffer of that name), each checked on the device; the
/// output written where it lies (float) or converted (float16) after its check; the check words read once, after the
/// launches (<see cref="Finish"/>). Nothing crosses between host and device but those words.
/// </summary>
internal readonly struct DeviceCall
{
    private readonly EngineDevice _device;
    private readonly GpuBuffers _buffers;

    /// <summary>Starts the call; the caller holds the runtime's lock (<see cref="GpuRuntime.Enter"/>) until <see cref="Finish"/>.</summary>
    public DeviceCall(EngineDevice device, GpuBuffers buffers)
    {
        _device = device;
        _buffers = buffers;
        buffers.Checks.Begin();
    }

    /// <summary>An input's fp32 view (empty when absent), its values checked against <paramref name="rule"/>.</summary>
    public ArrayView<float> Input<T>(DeviceTensor<T>? tensor, string name, string buffer, ValueRule rule) where T : unmanaged
    {
        if (tensor is null) return default;
        var values = Floats(tensor, name, buffer);
        _buffers.Checks.Check(values, name, rule);
        return values;
    }

    /// <summary>The fp32 view the kernels write the output into: the tensor itself (float) or the instance's buffer (float16).</summary>
    public ArrayView<float> Output<T>(DeviceTensor<T> tensor, string name, string buffer) where T : unmanaged
    {
        var view = tensor.ViewFor(_device, name);
        return typeof(T) == typeof(float) ? view.Cast<float>() : Scratch(buffer, view.Length);
    }

    /// <summary>Checks the output the kernels wrote (finite; within float16's range for a float16 tensor, then converted into it).</summary>
    public void CommitOutput<T>(DeviceTensor<T> tensor, ArrayView<float> values, string name) where T : unmanaged
    {
        var checks = _buffers.Checks;
        checks.Check(values, name, ValueRule.Finite);
        if (typeof(T) == typeof(float)) return;
        checks.Check(values, name, ValueRule.HalfRange);
        checks.FloatToHalf(values, tensor.ViewFor(_device, name).Cast<ILGPU.Half>());
    }

    /// <summary>A final state no output reads (a chunked call's, or LSSL's), checked finite: an fp32 overflow of the state alone.</summary>
    public void CheckFinalState(ArrayView<float> state) => _buffers.Checks.Check(state, FinalState, ValueRule.Finite);

    public const string FinalState = "final_state";

    /// <summary>
    /// The view the kernels update the state in: the final state's own memory, or the instance's buffer of that name when
    /// none is asked for or it is the initial state's tensor (so a refused call leaves the caller's state as it was).
    /// </summary>
    public ArrayView<float> StateFor(DeviceTensor<float>? final, DeviceTensor<float>? initial, string buffer, long length) =>
        final is null || ReferenceEquals(final, initial) ? Scratch(buffer, length) : final.ViewFor(_device, FinalState);

    /// <summary>A state loaded on the device: copied from <paramref name="initial"/> (checked finite), or zeros.</summary>
    public void LoadState(ArrayView<float> state, DeviceTensor<float>? initial, string name)
    {
        // A batch of no sequences has an empty state: nothing to load (ILGPU refuses to set or copy an empty view).
        if (state.Length == 0) return;
        if (initial is null)
        {
            state.MemSetToZero(_device.Gpu.Accelerator.DefaultStream);
            return;
        }
        state.CopyFrom(_device.Gpu.Accelerator.DefaultStream, initial.ViewFor(_device, name));
        _buffers.Checks.Check(state, name, ValueRule.Finite);
    }

    /// <summary>After a call that passed its checks: the state the kernels updated in the instance's buffer (see <see cref="StateFor"/>) copied into the caller's tensor.</summary>
    public void StoreState(ArrayView<float> state, DeviceTensor<float>? final, DeviceTensor<float>? initial)
    {
        if (final is null || !ReferenceEquals(final, initial) || state.Length == 0) return;
        final.ViewFor(_device, FinalState).CopyFrom(_device.Gpu.Accelerator.DefaultStream, state);
    }

    /// <summary>Waits for the launches and reads the checks: the first refused value, or null.</summary>
    public GpuCheckFailure? Finish() => _buffers.Checks.Read();

    /// <summary>
    /// The instance's buffer of that name, exactly <paramref name="length"/> long: the pool hands out at least one element, and
    /// a longer view of an empty tensor was converted into it (past its end) and checked with a stale value.
    /// </summary>
    private ArrayView<float> Scratch(string buffer, long length) => _buffers.Get<float>(buffer, length).SubView(0, length);

    private ArrayView<float> Floats<T>(DeviceTensor<T> tensor, string name, string buffer) where T : unmanaged
    {
        var view = tensor.ViewFor(_device, name);
        if (typeof(T) == typeof(float)) return view.Cast<float>();
        var floats = Scratch(buffer, view.Length);
        _buffers.Checks.HalfToFloat(view.Cast<ILGPU.Half>(), floats);
        return floats;
    }
}

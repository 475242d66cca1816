using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine;

/// <summary>
/// A dense tensor in the memory of a GPU device (<see cref="Backend.Gpu"/>), float or System.Half, made by
/// <see cref="EngineDevice.Allocate{T}"/> or <see cref="EngineDevice.Upload{T}(ReadOnlyTensorSpan{T})"/>. The ops take it
/// wherever they take a tensor and read or write it where it lies: a call whose inputs, output and state are device tensors
/// moves no data between host and device. Copies from and to the host go through page-locked memory, asynchronously on the
/// device's stream: <see cref="Upload(ReadOnlyTensorSpan{T})"/> returns once the data is staged (the source may be reused at
/// once), <see cref="Download(TensorSpan{T})"/> once the data has arrived. Dispose frees the device memory.
/// </summary>
public sealed class DeviceTensor<T> : IDisposable where T : unmanaged
{
    private readonly nint[] _lengths;
    private MemoryBuffer1D<T, Stride1D.Dense>? _buffer;

    internal DeviceTensor(EngineDevice device, ReadOnlySpan<nint> lengths)
    {
        TensorArgs.RequireElementType<T>();
        long count = 1;
        foreach (nint n in lengths)
        {
            if (n < 0) throw new ArgumentOutOfRangeException(nameof(lengths), $"a device tensor's lengths must be >= 0, got {TensorArgs.Format(lengths)}");
            count = checked(count * n);
        }
        if (count > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(lengths), $"a device tensor holds at most {Array.MaxLength} elements, {TensorArgs.Format(lengths)} has {count}");
        Device = device;
        _lengths = lengths.ToArray();
        FlattenedLength = count;
        _buffer = device.Gpu.Allocate<T>(Math.Max(count, 1), $"a device tensor of {TensorArgs.Format(lengths)}");
    }

    /// <summary>The device whose memory holds the tensor; calls on another device refuse it.</summary>
    public EngineDevice Device { get; }

    /// <summary>The shape, dense and row-major (the last dim contiguous), as the host tensors the ops take.</summary>
    public ReadOnlySpan<nint> Lengths => _lengths;

    /// <summary>The number of dims.</summary>
    public int Rank => _lengths.Length;

    /// <summary>The number of elements: the product of <see cref="Lengths"/>.</summary>
    public long FlattenedLength { get; }

    /// <summary>The elements as a view (exactly <see cref="FlattenedLength"/> of them).</summary>
    internal ArrayView<T> View
    {
        get
        {
            var buffer = _buffer ?? throw new ObjectDisposedException(nameof(DeviceTensor<T>), "the device tensor was disposed");
            if (Device.IsDisposed) throw new ObjectDisposedException(nameof(EngineDevice), "the device tensor's device was disposed");
            return buffer.View.SubView(0, FlattenedLength);
        }
    }

    /// <summary>Copies <paramref name="source"/> (of this tensor's shape) to the device.</summary>
    public void Upload(ReadOnlyTensorSpan<T> source)
    {
        TensorArgs.RequireShape(source.Lengths, "source", "(the device tensor's shape)", _lengths);
        if (source.IsDense || source.FlattenedLength <= 1) Upload(TensorArgs.DenseSpan(source));
        else
        {
            var dense = new T[FlattenedLength];
            source.FlattenTo(dense);
            Upload(dense);
        }
    }

    /// <summary>Copies <paramref name="source"/> (<see cref="FlattenedLength"/> elements, row-major) to the device.</summary>
    public void Upload(ReadOnlySpan<T> source)
    {
        if (source.Length != FlattenedLength)
            throw new ArgumentException($"source: expected {FlattenedLength} elements (shape {TensorArgs.Format(_lengths)}), got {source.Length}", nameof(source));
        var gpu = Device.Gpu;
        using (gpu.Enter()) gpu.Upload(View, source);
    }

    /// <summary>Copies the tensor into <paramref name="destination"/> (of this tensor's shape, dense), after the device's pending work.</summary>
    public void Download(TensorSpan<T> destination)
    {
        TensorArgs.RequireShape(destination.Lengths, "destination", "(the device tensor's shape)", _lengths);
        Download(TensorArgs.DenseSpan(destination, "destination"));
    }

    /// <summary>Copies the tensor into <paramref name="destination"/> (<see cref="FlattenedLength"/> elements, row-major).</summary>
    public void Download(Span<T> destination)
    {
        if (destination.Length != FlattenedLength)
            throw new ArgumentException($"destination: expected {FlattenedLength} elements (shape {TensorArgs.Format(_lengths)}), got {destination.Length}", nameof(destination));
        var gpu = Device.Gpu;
        using (gpu.Enter()) gpu.Download(View, destination);
    }

    /// <summary>A new host tensor with the device tensor's values.</summary>
    public Tensor<T> ToTensor()
    {
        var tensor = Tensor.CreateFromShapeUninitialized<T>(_lengths);
        Download(tensor.AsTensorSpan());
        return tensor;
    }

    /// <summary>
    /// Frees the buffer under the runtime's lock: a call reading the tensor on another thread finishes first, and later
    /// ones find it disposed. Any number of threads may dispose it, at once or again: the buffer is freed once.
    /// </summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _buffer) is null) return;
        try
        {
            // Released under the lock, not before it: a call running meanwhile reads the tensor more than once (a float16
            // output again to convert the result into it, a state to store it) and must still find it. Taken by exchange, so
            // of two disposers that both waited for the lock only the first frees it.
            using (Device.Gpu.Enter()) Interlocked.Exchange(ref _buffer, null)?.Dispose();
        }
        catch (ObjectDisposedException)
        {
            // The device is gone: its accelerator released every buffer.
            Volatile.Write(ref _buffer, null);
        }
    }

    /// <summary>The view of a tensor a call names <paramref name="name"/>, refused when it belongs to another device.</summary>
    internal ArrayView<T> ViewFor(EngineDevice device, string name)
    {
        RequireOn(device, name);
        return View;
    }

    /// <summary>Refuses a tensor of another device than the call's, before the call compiles or launches anything.</summary>
    internal void RequireOn(EngineDevice device, string name)
    {
        if (!ReferenceEquals(Device, device))
            throw new ArgumentException($"{name}: the device tensor lives on another device than the call's ({Device.Description}); upload it to the call's device", name);
    }
}

using System.Numerics.Tensors;

namespace Engine.Onnx.Interop;

/// <summary>
/// A tensor ORT lends a kernel (an OrtValue* it owns): element type, dims and its memory. Never released
/// here, and only valid while the callback that received it runs.
/// </summary>
internal readonly unsafe struct OrtTensorView
{
    public OrtTensorView(nint value)
    {
        Value = value;
        int type;
        long* shape;
        nuint rank;
        Ort.Check(Ort.GetTensorElementTypeAndShapeDataReference(value, &type, &shape, &rank));
        ElementType = type;
        Dims = new ReadOnlySpan<long>(shape, checked((int)rank)).ToArray();
        void* data;
        Ort.Check(Ort.GetTensorMutableData(value, &data));
        Data = data;
    }

    public nint Value { get; }
    public int ElementType { get; }
    public long[] Dims { get; }
    public void* Data { get; }

    public long ElementCount
    {
        get
        {
            long n = 1;
            foreach (long d in Dims) n *= d;
            return n;
        }
    }

    public nint[] Lengths => Array.ConvertAll(Dims, d => checked((nint)d));

    public ReadOnlySpan<T> AsReadOnlySpan<T>() where T : unmanaged => new(Data, SpanLength);

    public Span<T> AsSpan<T>() where T : unmanaged => new(Data, SpanLength);

    /// <summary>The element count as a span's length (elements, not bytes: a float tensor of 8 GiB still fits one).</summary>
    private int SpanLength => ElementCount <= int.MaxValue ? (int)ElementCount
        : throw new NotSupportedException($"a tensor of {ElementCount} elements {TensorData.Format(Dims)} is more than one span holds ({int.MaxValue})");

    /// <summary>The same memory seen with other dims of the same element count (e.g. [B, T, H·d] as [B, T, H, d]).</summary>
    public ReadOnlyTensorSpan<T> AsReadOnlyTensor<T>(params nint[] lengths) where T : unmanaged => AsTensor<T>(lengths);

    public TensorSpan<T> AsTensor<T>(params nint[] lengths) where T : unmanaged => ElementCount == 0
        ? new((T*)EmptyElement, 1, lengths, new nint[lengths.Length])
        : new((T*)Data, checked((nint)ElementCount), lengths, []);

    /// <summary>What a zero-size view points at: System.Numerics.Tensors refuses zero-length memory under lengths with a 0 axis.</summary>
    private static readonly void* EmptyElement = System.Runtime.InteropServices.NativeMemory.AllocZeroed(16);
}

/// <summary>The inputs and outputs of one kernel call. Valid only inside the compute callback.</summary>
internal readonly unsafe struct KernelContext
{
    public KernelContext(nint context)
    {
        Handle = context;
        nuint inputs, outputs;
        Ort.Check(Ort.KernelContextGetInputCount(context, &inputs));
        Ort.Check(Ort.KernelContextGetOutputCount(context, &outputs));
        InputCount = (int)inputs;
        OutputCount = (int)outputs;
    }

    public nint Handle { get; }

    public int InputCount { get; }

    public int OutputCount { get; }

    /// <summary>Input <paramref name="index"/>, or null when the node leaves that optional input out.</summary>
    public OrtTensorView? Input(int index)
    {
        if (index >= InputCount) return null;
        nint value;
        Ort.Check(Ort.KernelContextGetInput(Handle, (nuint)index, &value));
        return value == 0 ? null : new OrtTensorView(value);
    }

    /// <summary>Output <paramref name="index"/> allocated by ORT with the given dims, or null when the node does not produce it.</summary>
    public OrtTensorView? Output(int index, ReadOnlySpan<long> dims)
    {
        if (index >= OutputCount) return null;
        nint value;
        fixed (long* p = dims) Ort.Check(Ort.KernelContextGetOutput(Handle, (nuint)index, p, (nuint)dims.Length, &value));
        return value == 0 ? null : new OrtTensorView(value);
    }
}

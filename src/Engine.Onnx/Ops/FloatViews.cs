using System.Buffers;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// A call's tensors as the kernels take them, fp32: ORT's memory itself for float32 tensors, pooled fp32 copies of
/// float16 and bfloat16 ones; <see cref="Commit"/> writes the fp32 results into float16 and bfloat16 outputs, refusing
/// values the type cannot hold.
/// </summary>
internal sealed class FloatViews : IDisposable
{
    private readonly List<float[]> _rented = [];
    private readonly List<(float[] Values, OrtTensorView Output, string Name)> _narrowOutputs = [];

    /// <summary>The tensor's values, or empty when it is absent.</summary>
    public ReadOnlySpan<float> In(OrtTensorView? tensor)
    {
        if (tensor is not OrtTensorView t) return [];
        if (t.ElementType == Ort.ElementFloat) return t.AsReadOnlySpan<float>();
        var copy = Rent(t);
        if (t.ElementType == Ort.ElementBFloat16) BFloat16Values.ToSingle(t.AsReadOnlySpan<ushort>(), copy);
        else TensorPrimitives.ConvertToSingle(t.AsReadOnlySpan<Half>(), copy);
        return copy;
    }

    /// <summary>Where the kernel writes an output (empty when it is absent); <paramref name="name"/> names it in errors.</summary>
    public Span<float> Out(OrtTensorView? tensor, string name)
    {
        if (tensor is not OrtTensorView t) return [];
        if (t.ElementType == Ort.ElementFloat) return t.AsSpan<float>();
        var values = Rent(t);
        _narrowOutputs.Add((values.Array!, t, name));
        return values;
    }

    public void Commit()
    {
        foreach (var (values, output, name) in _narrowOutputs)
        {
            var span = values.AsSpan(0, checked((int)output.ElementCount));
            if (output.ElementType == Ort.ElementBFloat16)
            {
                BFloat16Values.FromSingle(span, output.AsSpan<ushort>(), name);
                continue;
            }
            HalfRange.Require(span, name);
            TensorPrimitives.ConvertToHalf(span, output.AsSpan<Half>());
        }
    }

    public void Dispose()
    {
        foreach (var array in _rented) ArrayPool<float>.Shared.Return(array);
        _rented.Clear();
        _narrowOutputs.Clear();
    }

    /// <summary>Pooled fp32 memory for <paramref name="count"/> floats, returned with the views.</summary>
    public ArraySegment<float> Rent(long count)
    {
        int n = checked((int)count);
        var array = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
        _rented.Add(array);
        return new ArraySegment<float>(array, 0, n);
    }

    private ArraySegment<float> Rent(OrtTensorView t) => Rent(t.ElementCount);
}

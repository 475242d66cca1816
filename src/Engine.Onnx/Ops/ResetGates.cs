using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace Engine.Onnx.Ops;

/// <summary>
/// Log gates where they lie, or (<see cref="ResetNegativeInfinity"/>) a copy with the lowest finite log gate in place of −∞:
/// ORT's kernels take a decay of −∞ (what an unfused gate chain gives once exp(A_log) passes float32) as a factor of 0, the
/// state reset, and so does the lowest finite one; the engine's kernels take finite log gates only. T is float or Half.
/// </summary>
internal ref struct ResetGates<T> where T : unmanaged
{
    private T[]? _copy;

    public ReadOnlyTensorSpan<T> Tensor { get; private set; }

    public static ResetGates<T> Over(ReadOnlyTensorSpan<T> gates) => new() { Tensor = gates };

    /// <summary>Whether the gates held −∞ (the first time only): <see cref="Tensor"/> is then a copy with the lowest finite value there.</summary>
    public bool ResetNegativeInfinity()
    {
        if (_copy is not null || Tensor.IsEmpty) return false;
        var values = MemoryMarshal.CreateReadOnlySpan(in Tensor.GetPinnableReference(), checked((int)Tensor.FlattenedLength));
        bool found = typeof(T) == typeof(float)
            ? MemoryMarshal.Cast<T, float>(values).Contains(float.NegativeInfinity)
            : MemoryMarshal.Cast<T, Half>(values).Contains(Half.NegativeInfinity);
        if (!found) return false;
        _copy = ArrayPool<T>.Shared.Rent(values.Length);
        var span = _copy.AsSpan(0, values.Length);
        values.CopyTo(span);
        if (typeof(T) == typeof(float)) MemoryMarshal.Cast<T, float>(span).Replace(float.NegativeInfinity, float.MinValue);
        else MemoryMarshal.Cast<T, Half>(span).Replace(Half.NegativeInfinity, Half.MinValue);
        Tensor = new ReadOnlyTensorSpan<T>(span, Tensor.Lengths.ToArray(), []);
        return true;
    }

    public void Dispose()
    {
        if (_copy is not null) ArrayPool<T>.Shared.Return(_copy);
        _copy = null;
    }
}

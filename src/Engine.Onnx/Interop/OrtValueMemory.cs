using System.Runtime.CompilerServices;
using Microsoft.ML.OnnxRuntime;

namespace Engine.Onnx.Interop;

/// <summary>
/// The memory of a tensor an <see cref="OrtValue"/> holds, by pointer. The managed package's spans over it
/// (GetTensorMutableRawData, GetTensorDataAsSpan) take the tensor's byte count as an int: over 2 GiB they throw, and
/// over 4 GiB they wrap to a shorter span. A pointer reaches any part of a tensor of any size.
/// </summary>
internal static unsafe class OrtValueMemory
{
    /// <summary>The largest tensor a .NET span of bytes covers whole.</summary>
    public const long MaxSpanBytes = int.MaxValue;

    // The package keeps the native OrtValue* internal; OrtApi's GetTensorMutableData needs it.
    [UnsafeAccessor(UnsafeAccessorKind.Method, Name = "get_Handle")]
    private static extern nint NativeHandle(OrtValue value);

    /// <summary>The first element of the tensor <paramref name="value"/> holds (CPU memory).</summary>
    public static void* Data(OrtValue value)
    {
        void* data;
        Ort.Check(Ort.GetTensorMutableData(NativeHandle(value), &data));
        return data;
    }
}

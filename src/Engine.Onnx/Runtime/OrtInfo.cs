using Engine.Onnx.Interop;

namespace Engine.Onnx;

/// <summary>The ONNX Runtime library in use.</summary>
public static class OrtInfo
{
    public static string Version => Ort.Version;
}

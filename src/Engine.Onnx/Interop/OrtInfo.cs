namespace Engine.Onnx.Interop;

/// <summary>The ONNX Runtime library in use.</summary>
public static class OrtInfo
{
    public static string Version => Ort.Version;
}

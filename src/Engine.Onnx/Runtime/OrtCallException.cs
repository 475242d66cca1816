namespace Engine.Onnx;

/// <summary>An error ONNX Runtime reported through its C API (for one, registering the engine's ops with a session).</summary>
public sealed class OrtCallException(string message) : Exception(message)
{
    /// <summary>ORT's OrtErrorCode of the failed call, handed back to ORT when the call failed inside one of the engine's callbacks.</summary>
    internal int OrtErrorCode { get; init; } = Interop.Ort.ErrorFail;
}

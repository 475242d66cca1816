namespace Engine.Onnx;

/// <summary>An error ONNX Runtime reported through its C API (for one, registering the engine's ops with a session).</summary>
public sealed class OrtCallException(string message) : Exception(message);

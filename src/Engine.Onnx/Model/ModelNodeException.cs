namespace Engine.Onnx;

/// <summary>A node of a model the engine cannot run as given; the message names the op and the node.</summary>
public sealed class ModelNodeException(string message) : Exception(message);

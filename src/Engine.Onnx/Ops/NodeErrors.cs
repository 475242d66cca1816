namespace Engine.Onnx.Ops;

/// <summary>Engine errors restated in a node's terms: the node named, tensors by their ONNX input names.</summary>
internal static class NodeErrors
{
    /// <summary>The message without the " (Parameter 'x')" suffix argument exceptions append (the message names the tensor).</summary>
    public static string MessageOf(Exception e)
    {
        if (e is not ArgumentException { ParamName: string name }) return e.Message;
        string suffix = $" (Parameter '{name}')";
        return e.Message.EndsWith(suffix, StringComparison.Ordinal) ? e.Message[..^suffix.Length] : e.Message;
    }

    /// <summary>
    /// Runs an engine call for <paramref name="node"/>; an argument error it raises is rethrown prefixed with the
    /// node, its tensor renamed from the engine's name to the ONNX input's (<paramref name="onnxName"/>).
    /// </summary>
    public static void Guard(string node, Func<string?, string> onnxName, Action run)
    {
        try
        {
            run();
        }
        catch (ArgumentException e) when (!e.Message.StartsWith(node, StringComparison.Ordinal))
        {
            string name = onnxName(e.ParamName);
            string message = MessageOf(e);
            if (e.ParamName is string engineName && message.StartsWith(engineName + ":", StringComparison.Ordinal))
                message = name + message[engineName.Length..];
            throw new ArgumentException($"{node}: {message}", name, e);
        }
    }

    /// <summary>
    /// Writes a call's float16 and bfloat16 outputs back (<see cref="FloatViews.Commit"/>); a value the type cannot hold is
    /// refused naming <paramref name="node"/> and the output.
    /// </summary>
    public static void Commit(string node, FloatViews views) => Guard(node, name => name ?? "output", views.Commit);
}

namespace Engine;

/// <summary>How each head's recurrent state lies in memory.</summary>
public enum StateLayout
{
    /// <summary>[K, V] per head: row c is key dim c (the engine's layout, ONNX LinearAttention's past_state).</summary>
    KeyMajor,
    /// <summary>[V, K] per head, the transpose (ONNX Runtime's GatedDeltaNet initial_state / final_state).</summary>
    ValueMajor,
}

/// <summary>Where the GPU kernels find a state element in the caller's states.</summary>
public static class StateIndex
{
    /// <summary>
    /// Element (key c, value d) of head h of sequence n in states [N, heads, K, V], or [N, heads, V, K] value-major. Computed
    /// where a kernel loads or stores the state, so no 64-bit address stays live through its loops.
    /// </summary>
    public static long Of(bool valueMajor, int heads, int keyDim, int valueDim, int n, int h, int c, int d) =>
        ((long)n * heads + h) * keyDim * valueDim + (valueMajor ? (long)d * keyDim + c : (long)c * valueDim + d);
}

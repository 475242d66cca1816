namespace Engine;

/// <summary>How each head's recurrent state lies in memory.</summary>
public enum StateLayout
{
    /// <summary>[K, V] per head: row c is key dim c (the engine's layout, ONNX LinearAttention's past_state).</summary>
    KeyMajor,
    /// <summary>[V, K] per head, the transpose (ONNX Runtime's GatedDeltaNet initial_state / final_state).</summary>
    ValueMajor,
}

namespace Engine.Onnx;

/// <summary>How a LinearAttention node's decay is shaped.</summary>
public enum DecayForm
{
    /// <summary>(B, T, Hkv·dk): one log decay per key dim (GLA, RWKV-6).</summary>
    PerKey,
    /// <summary>(B, T, Hkv): one log decay per head (RetNet, Mamba-2, Gated DeltaNet).</summary>
    PerHead,
}

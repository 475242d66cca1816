// In namespace Engine: GatedOutputNorm.Activation takes it, so users name it.
namespace Engine;

/// <summary>The gate's activation in a gated RMS norm.</summary>
public enum GateActivation
{
    /// <summary>z · sigmoid(z) (SiLU, Swish).</summary>
    Silu,
    /// <summary>sigmoid(z).</summary>
    Sigmoid,
}

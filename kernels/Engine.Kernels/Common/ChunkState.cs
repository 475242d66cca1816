using System.Runtime.CompilerServices;

namespace Engine.Kernels.Common;

/// <summary>The state update at the end of a chunk, whatever the decay: S ← diag(decay) S + Kᵀ V.</summary>
public static unsafe class ChunkState
{
    /// <summary>
    /// S [kp × vp] ← diag(decay) S + keysᵀ values, keys [len × kp] (already decayed to the chunk end) and values
    /// [len × vp]. The decay e^b is given in its two parts (<see cref="SimdMath.DecayParts"/>) and applied as
    /// S + near S + far S: a decay near 1 multiplied in as e^b rounded to fp32 would drift a state carried over many
    /// chunks, and e^b − 1 alone would drop a state decayed below 3e-8. One value per row of S (decayStride 1), one value
    /// (decayStride 0), or none (null).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Update(float* state, int kp, int vp, float* near, float* far, int decayStride, float* keys, float* values, int len)
    {
        if (near != null)
            for (int c = 0; c < kp; c++) SimdOps.DecayInPlace(state + (long)c * vp, near[c * decayStride], far[c * decayStride], vp);
        SimdGemm.MultiplyTransposedA(keys, kp, values, vp, state, vp, kp, len, vp, accumulate: true);
    }
}

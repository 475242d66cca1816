using System.Runtime.CompilerServices;

namespace Engine.Kernels.Common;

/// <summary>The state update at the end of a chunk, whatever the decay: S ← diag(decay) S + Kᵀ V.</summary>
public static unsafe class ChunkState
{
    /// <summary>
    /// S [kp × vp] ← diag(decay) S + keysᵀ values, keys [len × kp] (already decayed to the chunk end) and values
    /// [len × vp]. The decay is given less one, e^b − 1, and applied as S + (e^b − 1) S: a decay near 1 multiplied in as
    /// e^b rounded to fp32 would drift a state carried over many chunks. One value per row of S (decayStride 1), one value
    /// (decayStride 0), or none (null).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Update(float* state, int kp, int vp, float* decayM1, int decayStride, float* keys, float* values, int len)
    {
        if (decayM1 != null)
            for (int c = 0; c < kp; c++) SimdOps.DecayInPlace(state + (long)c * vp, decayM1[c * decayStride], vp);
        SimdGemm.MultiplyTransposedA(keys, kp, values, vp, state, vp, kp, len, vp, accumulate: true);
    }
}

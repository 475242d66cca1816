using System.Runtime.Intrinsics.X86;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gating;

/// <summary>
/// The gated RMS norm an attention kernel applies to each output head's rows before it stores them (Gated DeltaNet's
/// output norm): y = o / sqrt(mean(o²) + epsilon) · scale · act(z) per head row of V, z the gate [tokens, heads, V] with
/// its token rows <paramref name="gateRowStride"/> floats apart. A default instance is no norm.
/// </summary>
public readonly unsafe struct GatedNormRows(float* gate, long gateRowStride, float* scale, int valueDim, float epsilon, GateActivation activation)
{
    private readonly float* _gate = gate, _scale = scale;

    public bool Active => _gate != null;

    /// <summary>
    /// Asks for the gate rows of output head <paramref name="head"/> over tokens [start, start + len) into L2: each row lies in its
    /// own page, which the hardware prefetcher does not cross, so a kernel asks when it starts a chunk and reads them at its end.
    /// </summary>
    public void Prefetch(int head, int start, int len)
    {
        if (!Sse.IsSupported) return;
        for (int i = 0; i < len; i++)
        {
            float* row = _gate + (start + i) * gateRowStride + (long)head * valueDim;
            for (int f = 0; f < valueDim; f += 16) Sse.Prefetch1(row + f);
        }
    }

    /// <summary>Rows 0..len (stride <paramref name="ld"/>) of output head <paramref name="head"/> from packed token <paramref name="start"/>, in place.</summary>
    public void Apply(float* rows, int ld, int head, int start, int len)
    {
        for (int i = 0; i < len; i++)
        {
            float* row = rows + (long)i * ld;
            GatedRmsNormCpu.Row(row, _gate + (start + i) * gateRowStride + (long)head * valueDim, _scale, row, valueDim, epsilon, activation == GateActivation.Silu);
        }
    }
}

using System.Collections.Immutable;
using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// Everything about a delta-rule call except the sequences: heads, dims, gate form, scale, chunk
/// size and in-kernel L2 normalization of q and k. Kernels and their scratch are built per config and
/// reused across calls (value equality keys the kernel pools).
/// </summary>
public sealed record DeltaRuleConfig
{
    public static readonly ImmutableArray<int> ChunkSizes = [16, 32, 64];

    /// <summary>Largest key head dim the kernels take (the GPU state pass keeps a K × 16 state slice in shared memory).</summary>
    public const int MaxKeyDim = 256;

    /// <summary>Largest value head dim the kernels take (CPU scratch holds a K × V state per worker).</summary>
    public const int MaxValueDim = 256;

    /// <summary>The default epsilon of the in-kernel L2 normalization: x / sqrt(Σ x² + eps).</summary>
    public const float DefaultL2NormEpsilon = 1e-6f;

    /// <summary>A validated config (the facade checks the options): kernels trust it.</summary>
    public DeltaRuleConfig(HeadLayout heads, GateKind gate, float scale, int chunkSize, bool qkL2Norm,
        float l2NormEpsilon = DefaultL2NormEpsilon, StateLayout stateLayout = StateLayout.KeyMajor, GpuPrecision gpuPrecision = GpuPrecision.Fp32)
    {
        Heads = heads; Gate = gate; Scale = scale; ChunkSize = chunkSize; QkL2Norm = qkL2Norm;
        L2NormEpsilon = l2NormEpsilon; StateLayout = stateLayout; GpuPrecision = gpuPrecision;
    }

    public HeadLayout Heads { get; }

    /// <summary>None: DeltaNet. PerHead: Gated DeltaNet, a log decay per token and value head. PerKey: one per key dim too.</summary>
    public GateKind Gate { get; }

    /// <summary>Floats of gate per token: 0, Hv or Hv·K.</summary>
    public int GatePerToken => Gate switch
    {
        GateKind.PerHead => Heads.ValueHeads,
        GateKind.PerKey => Heads.ValueHeads * Heads.KeyDim,
        _ => 0,
    };

    public float Scale { get; }
    public int ChunkSize { get; }

    /// <summary>q and k rows are L2-normalized per head inside the kernels.</summary>
    public bool QkL2Norm { get; }

    /// <summary>eps of the L2 normalization x / sqrt(Σ x² + eps), > 0.</summary>
    public float L2NormEpsilon { get; }

    /// <summary>Each head's state [K, V] (key-major) or [V, K] (value-major) in the caller's memory; kernels work key-major inside.</summary>
    public StateLayout StateLayout { get; }

    /// <summary>How the GPU kernels multiply the chunk products (the CPU kernels and the reference are fp32 / float64 throughout).</summary>
    public GpuPrecision GpuPrecision { get; }

    /// <summary>
    /// Model floating-point operations of a chunked forward pass over these sequences, the count every
    /// GFLOP/s figure of the delta rule uses (whatever the mode). Per chunk of c tokens and value head:
    ///   2c²K (K Kᵀ) + c³/3 (the inverse) + 2c²(K + V) (W and U) + 2cKV (W S) + 2cKV (state update),
    /// and per output head: 2c²K (Q Kᵀ) + 2c²V (its product with V_new) + 2cKV (Q S).
    /// Triangular products are counted in full, as the dense products they are written as.
    /// </summary>
    public double ModelFlops(SequenceLayout sequences)
    {
        double kd = Heads.KeyDim, vd = Heads.ValueDim, flops = 0;
        for (int n = 0; n < sequences.Count; n++)
        {
            for (int start = 0; start < sequences.Length(n); start += ChunkSize)
            {
                double c = Math.Min(ChunkSize, sequences.Length(n) - start);
                double perValueHead = 2 * c * c * kd + c * c * c / 3 + 2 * c * c * (kd + vd) + 4 * c * kd * vd;
                double perOutputHead = 2 * c * c * kd + 2 * c * c * vd + 2 * c * kd * vd;
                flops += Heads.ValueHeads * perValueHead + Heads.OutputHeads * perOutputHead;
            }
        }
        return flops;
    }
}

using System.Collections.Immutable;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// Everything about a GLA call except the sequences: heads, dims, gate form, scale and chunk size.
/// Kernels and their scratch are built per config and reused across calls.
/// </summary>
public sealed record GlaConfig
{
    /// <summary>Chunk sizes the kernels take, for GLA and Lightning's blocks alike: 16, 32, 64 (the default), 128, 256.</summary>
    public static readonly ImmutableArray<int> ChunkSizes = [16, 32, 64, 128, 256];

    /// <summary>A validated config (the facade checks the options): kernels trust it.</summary>
    public GlaConfig(HeadLayout heads, GateKind gate, float scale, int chunkSize, float[]? constantLogDecay = null, GpuPrecision gpuPrecision = GpuPrecision.Fp32,
        StateLayout stateLayout = StateLayout.KeyMajor)
    {
        Heads = heads; Gate = gate; Scale = scale; ChunkSize = chunkSize; ConstantLogDecay = constantLogDecay; GpuPrecision = gpuPrecision;
        StateLayout = stateLayout;
    }

    public HeadLayout Heads { get; }
    public GateKind Gate { get; }
    public float Scale { get; }
    public int ChunkSize { get; }
    public float[]? ConstantLogDecay { get; }

    /// <summary>How the GPU kernels multiply the chunked form's products (the CPU kernels are fp32 throughout).</summary>
    public GpuPrecision GpuPrecision { get; }

    /// <summary>How the caller's states hold each head: [K, V] or [V, K].</summary>
    public StateLayout StateLayout { get; }

    public bool Equals(GlaConfig? other) =>
        other is not null && Heads == other.Heads && Gate == other.Gate && Scale.Equals(other.Scale) && ChunkSize == other.ChunkSize
        && GpuPrecision == other.GpuPrecision && StateLayout == other.StateLayout && (ConstantLogDecay ?? []).AsSpan().SequenceEqual(other.ConstantLogDecay ?? []);

    public override int GetHashCode() => HashCode.Combine(Heads, Gate, Scale, ChunkSize, ConstantLogDecay?.Length ?? -1, GpuPrecision, StateLayout);

    /// <summary>Floats of gate per token: 0, Hv or Hv·K.</summary>
    public int GatePerToken => Gate switch
    {
        GateKind.PerHead => Heads.ValueHeads,
        GateKind.PerKey => Heads.ValueHeads * Heads.KeyDim,
        _ => 0,
    };
}

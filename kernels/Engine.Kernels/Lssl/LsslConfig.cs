using System.Collections.Immutable;
using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

/// <summary>
/// Everything about an LSSL layer that shapes its kernels: channels H, state size N, the form of A and
/// the chunk length Q of the scan. Validated here; value equality (it keys kernel pools).
/// </summary>
public sealed record LsslConfig
{
    public static readonly ImmutableArray<int> ChunkLengths = [16, 32, 64, 128, 256];

    public LsslConfig(int channels, int stateSize, LsslStateMatrix form, int chunkLength)
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels H must be >= 1");
        if (stateSize < 1) throw new ArgumentOutOfRangeException(nameof(stateSize), stateSize, "state size N must be >= 1");
        if (!ChunkLengths.Contains(chunkLength))
            throw new ArgumentException($"chunk length must be one of {string.Join(", ", ChunkLengths)}, got {chunkLength}", nameof(chunkLength));
        Channels = channels; StateSize = stateSize; Form = form; ChunkLength = chunkLength;
    }

    public int Channels { get; }
    public int StateSize { get; }
    public LsslStateMatrix Form { get; }
    public int ChunkLength { get; }

    public bool IsDiagonal => Form == LsslStateMatrix.Diagonal;

    /// <summary>N padded to whole Vector512s, as every fp32 table holds the state.</summary>
    public int StatePadded => HeadLayout.RoundUp16(StateSize);

    /// <summary>The default Q: the smallest power of two &gt;= N (the scan's cost 2(Q + 2N + N²/Q) per step is least at Q ≈ N), in [16, 256].</summary>
    public static int DefaultChunkLength(int stateSize)
    {
        int q = 16;
        while (q < stateSize && q < 256) q *= 2;
        return q;
    }
}

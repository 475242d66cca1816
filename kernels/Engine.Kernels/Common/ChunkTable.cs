namespace Engine.Kernels.Common;

/// <summary>
/// The chunks of a <see cref="SequenceLayout"/> as GPU kernels index them: one grid row per chunk, each
/// knowing its first token and length, and per sequence the range of its chunks (for the scans that
/// carry a state from chunk to chunk). Every sequence of length L contributes ceil(L / chunk) chunks;
/// empty sequences contribute none. The host array is reused across calls.
/// </summary>
public sealed class ChunkTable
{
    private int[] _data = [];

    /// <summary>Chunks in the layout of the last <see cref="Build"/>.</summary>
    public int Chunks { get; private set; }

    /// <summary>Sequences in the layout of the last <see cref="Build"/>.</summary>
    public int Sequences { get; private set; }

    /// <summary>
    /// Lays the table out as [first token (Chunks) | length (Chunks) | first chunk (Sequences + 1)]:
    /// sequence n owns chunks [first chunk[n], first chunk[n + 1]).
    /// </summary>
    public ReadOnlySpan<int> Build(SequenceLayout layout, int chunkSize)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkSize, 1);
        int chunks = 0;
        for (int n = 0; n < layout.Count; n++) chunks += (layout.Length(n) + chunkSize - 1) / chunkSize;
        int length = 2 * chunks + layout.Count + 1;
        if (_data.Length < length) _data = new int[length];

        var start = _data.AsSpan(0, chunks);
        var size = _data.AsSpan(chunks, chunks);
        var firstChunk = _data.AsSpan(2 * chunks, layout.Count + 1);
        int chunk = 0;
        for (int n = 0; n < layout.Count; n++)
        {
            firstChunk[n] = chunk;
            int end = layout.Start(n) + layout.Length(n);
            for (int t = layout.Start(n); t < end; t += chunkSize, chunk++)
            {
                start[chunk] = t;
                size[chunk] = Math.Min(chunkSize, end - t);
            }
        }
        firstChunk[layout.Count] = chunk;
        Chunks = chunks;
        Sequences = layout.Count;
        return _data.AsSpan(0, length);
    }
}

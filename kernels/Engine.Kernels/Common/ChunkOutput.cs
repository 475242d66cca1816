namespace Engine.Kernels.Common;

/// <summary>
/// Where a chunk's output rows of one head are written: in place in the output tensor when its rows need no
/// padding, else in padded scratch rows that <see cref="CopyBack"/> moves there.
/// </summary>
public readonly unsafe struct ChunkOutput
{
    private readonly HeadRows _target;

    /// <param name="target">the head's output rows over the chunk</param>
    /// <param name="scratch">[C × padded] rows used when the output rows need padding</param>
    public ChunkOutput(HeadRows target, float* scratch, int padded)
    {
        _target = target;
        InPlace = target.Dim == padded;
        Rows = InPlace ? target.Row(0) : scratch;
        Stride = InPlace ? target.Stride : padded;
    }

    public bool InPlace { get; }

    /// <summary>Row 0 of the rows to write, each padded to whole vectors.</summary>
    public float* Rows { get; }

    public int Stride { get; }

    /// <summary>Moves rows 0..len to the output when they were written to scratch.</summary>
    public void CopyBack(int len)
    {
        if (!InPlace) _target.CopyFrom(Rows, Stride, len);
    }
}

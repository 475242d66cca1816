namespace Engine.Kernels.Common;

/// <summary>
/// Where each sequence lies along the packed token axis. A dense batch [B, T, ...] is B sequences at
/// offsets 0, T, 2T, ...; a packed varlen batch (B = 1) is given by its cu_seqlens offsets.
/// Every kernel sees tokens as [TotalTokens, heads, dim] and works per sequence.
/// </summary>
public sealed class SequenceLayout
{
    private readonly int[] _offsets;

    private SequenceLayout(int[] offsets) => _offsets = offsets;

    public int Count => _offsets.Length - 1;
    public int TotalTokens => _offsets[^1];
    public ReadOnlySpan<int> Offsets => _offsets;
    public int Start(int sequence) => _offsets[sequence];
    public int Length(int sequence) => _offsets[sequence + 1] - _offsets[sequence];

    /// <summary>The sequence holding packed token <paramref name="token"/> (empty sequences at its offset are skipped).</summary>
    public int SequenceOf(int token)
    {
        int lo = 0, hi = Count - 1;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (_offsets[mid] <= token) lo = mid;
            else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>The longest sequence, which bounds per-sequence scratch.</summary>
    public int MaxLength
    {
        get
        {
            int max = 0;
            for (int n = 0; n < Count; n++) max = Math.Max(max, Length(n));
            return max;
        }
    }

    public static SequenceLayout Dense(int batch, int tokens)
    {
        if (batch < 0) throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be >= 0");
        if (tokens < 0) throw new ArgumentOutOfRangeException(nameof(tokens), tokens, "tokens must be >= 0");
        var offsets = new int[batch + 1];
        for (int b = 0; b <= batch; b++) offsets[b] = checked(b * tokens);
        return new SequenceLayout(offsets);
    }

    /// <summary>Packed sequences: offsets start at 0, never decrease and end at the token count.</summary>
    public static SequenceLayout Packed(ReadOnlySpan<int> cuSeqlens, int totalTokens, string name = "cu_seqlens")
    {
        if (cuSeqlens.Length < 2)
            throw new ArgumentException($"{name} must hold at least 2 offsets (0 and the token count), got {cuSeqlens.Length}", name);
        if (cuSeqlens[0] != 0)
            throw new ArgumentException($"{name}[0] must be 0, got {cuSeqlens[0]}", name);
        for (int i = 1; i < cuSeqlens.Length; i++)
        {
            if (cuSeqlens[i] < cuSeqlens[i - 1])
                throw new ArgumentException($"{name} must not decrease, but {name}[{i}] = {cuSeqlens[i]} < {name}[{i - 1}] = {cuSeqlens[i - 1]}", name);
        }
        if (cuSeqlens[^1] != totalTokens)
            throw new ArgumentException($"{name} must end at the packed token count {totalTokens}, got {cuSeqlens[^1]}", name);
        return new SequenceLayout(cuSeqlens.ToArray());
    }
}

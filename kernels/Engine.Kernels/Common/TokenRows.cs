namespace Engine.Kernels.Common;

/// <summary>
/// Where q, k and v keep their token rows: floats from one token's [heads, dim] row to the next. A dense
/// [tokens, heads, dim] tensor has heads·dim; rows that lie inside wider rows (the q, k and v parts of one packed
/// projection output) have that row's width, and the kernels read them where they lie.
/// </summary>
public readonly record struct TokenRows(int Q, int K, int V)
{
    public static TokenRows Dense(HeadLayout heads) =>
        new(heads.QHeads * heads.KeyDim, heads.KeyHeads * heads.KeyDim, heads.ValueHeads * heads.ValueDim);
}

using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// What a GLA kernel knows at compile time: dims, gate form, scale and tile geometry. Kernels take it as a
/// <see cref="SpecializedValue{T}"/>, so every field is a constant in the generated code (loop bounds,
/// shared-memory carving, the gate branches). Built on the host from the config and the group size.
/// </summary>
public readonly struct GlaGpuShape : IEquatable<GlaGpuShape>
{
    /// <summary>Key dims (or tokens) staged in shared memory per step of a reduction.</summary>
    public const int SliceWidth = 32;

    /// <summary>Row stride of a staged slice: one float of padding keeps column walks off one bank.</summary>
    public const int SlicePitch = SliceWidth + 1;

    /// <summary>Rows of one band of the intra-chunk scores (one group each).</summary>
    public const int SubChunk = 16;

    /// <summary>Score columns a band accumulates in shared memory at a time.</summary>
    public const int ScoreBlock = 64;

    public GlaGpuShape(GlaConfig config, int groupSize, int recurrentCols)
    {
        QHeads = config.Heads.QHeads;
        KeyHeads = config.Heads.KeyHeads;
        ValueHeads = config.Heads.ValueHeads;
        KeyDim = config.Heads.KeyDim;
        ValueDim = config.Heads.ValueDim;
        Chunk = config.ChunkSize;
        Gate = config.Gate;
        Scale = config.Scale;
        GroupSize = groupSize;
        OutputRowThreads = Math.Min(Chunk / 4, 16);
        OutputColThreads = groupSize / OutputRowThreads;
        StateColThreads = 1 << ((int.Log2(groupSize) + 1) / 2);
        StateRowThreads = groupSize / StateColThreads;
        RecurrentCols = recurrentCols;
        RecurrentRowThreads = groupSize / recurrentCols;
    }

    public int QHeads { get; }
    public int KeyHeads { get; }

    /// <summary>Heads of v, the gates and the state (<see cref="HeadLayout"/>).</summary>
    public int ValueHeads { get; }

    public int KeyDim { get; }
    public int ValueDim { get; }
    public int Chunk { get; }
    public GateKind Gate { get; }
    public float Scale { get; }
    public int GroupSize { get; }

    /// <summary>Output kernel: the threads of a group as OutputRowThreads × OutputColThreads, each owning 4 × 4 outputs.</summary>
    public int OutputRowThreads { get; }
    public int OutputColThreads { get; }

    /// <summary>Chunk-state kernel: the threads of a group as StateRowThreads × StateColThreads, each owning 4 × 4 state entries.</summary>
    public int StateRowThreads { get; }
    public int StateColThreads { get; }

    /// <summary>Recurrent kernel: value columns per group, and the threads that split the key rows of each column.</summary>
    public int RecurrentCols { get; }
    public int RecurrentRowThreads { get; }

    /// <summary>max(Hq, Hv): heads of the output, the scores' rows.</summary>
    public int OutputHeads => Math.Max(QHeads, ValueHeads);

    /// <summary>Output heads per value head (grouped query heads).</summary>
    public int Group => OutputHeads / ValueHeads;

    /// <summary>Value heads per query/key head (grouped value heads).</summary>
    public int ValueGroup => ValueHeads / KeyHeads;
    public bool PerKey => Gate == GateKind.PerKey;
    public bool PerHead => Gate == GateKind.PerHead;
    public bool Constant => Gate == GateKind.Constant;
    public bool NoGate => Gate == GateKind.None;

    /// <summary>Floats of gate per token: Hv·K, Hv, or 0 for a constant or no gate.</summary>
    public int GatePerToken => PerKey ? ValueHeads * KeyDim : PerHead ? ValueHeads : 0;

    /// <summary>Chunk rows and value columns of one output group (4 per thread row and column).</summary>
    public int OutputRows => 4 * OutputRowThreads;
    public int OutputCols => 4 * OutputColThreads;

    /// <summary>Key rows and value columns of one chunk-state tile.</summary>
    public int StateRows => 4 * StateRowThreads;
    public int StateCols => 4 * StateColThreads;

    public bool Equals(GlaGpuShape other) =>
        QHeads == other.QHeads && KeyHeads == other.KeyHeads && ValueHeads == other.ValueHeads && KeyDim == other.KeyDim && ValueDim == other.ValueDim
        && Chunk == other.Chunk && Gate == other.Gate && Scale.Equals(other.Scale) && GroupSize == other.GroupSize
        && RecurrentCols == other.RecurrentCols;

    public override bool Equals(object? obj) => obj is GlaGpuShape other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(QHeads, KeyHeads, ValueHeads, KeyDim, ValueDim, Chunk, Gate, HashCode.Combine(Scale, GroupSize, RecurrentCols));
}

/// <summary>What a GLA kernel gets at run time: the device buffers of one call (views a launch does not read are placeholders) and its sequence count.</summary>
public struct GlaGpuArgs
{
    /// <summary>Inputs q [T, Hq, K], k [T, Hk, K], v [T, Hv, V]; G holds the raw log gates, laid out [T, Hv, K] or [T, Hv].</summary>
    public ArrayView<float> Q, K, V, G;

    /// <summary>b: the log gates summed within each chunk, laid out as G.</summary>
    public ArrayView<float> CumulativeGate;

    /// <summary>[Hv] log decay of a constant gate.</summary>
    public ArrayView<float> ConstantDecay;

    /// <summary>A [T, max(Hq, Hv), C] per output head: scale Σ_c q_ic k_jc exp(b_ic − b_jc) for j <= i; entries above the diagonal are not written.</summary>
    public ArrayView<float> Scores;

    /// <summary>[chunks, Hv, K, V]: each chunk's state contribution, turned by the scan into its start state.</summary>
    public ArrayView<float> ChunkStates;

    /// <summary>[T, max(Hq, Hv), V].</summary>
    public ArrayView<float> Output;

    /// <summary>[N, Hv, K, V], initial on entry, final on return.</summary>
    public ArrayView<float> State;

    /// <summary>The <see cref="ChunkTable"/>: first token and length per chunk, first chunk per sequence.</summary>
    public ArrayView<int> ChunkStart, ChunkLength, FirstChunk;

    /// <summary>[N + 1] token offsets of the sequences (recurrent form).</summary>
    public ArrayView<int> SequenceStart;

    /// <summary>N, the sequences of the call.</summary>
    public int Sequences;
}

/// <summary>Dynamic shared memory of the intra-chunk score kernel, in floats (the host sizes launches with it).</summary>
internal static class IntraScoreTiles
{
    public const int RowSize = GlaGpuShape.SubChunk * GlaGpuShape.SlicePitch;
    public const int ColumnPitch = GlaGpuShape.ScoreBlock + 1;
    public const int RawQueries = 0;                         // [16 × pitch] scale·q of the band's rows
    public const int GatedQueries = RowSize;                 // [16 × pitch] scale·q_i ⊙ exp(b_i − b_r)
    public const int RowGates = 2 * RowSize;                 // [16 × pitch] b of the band's rows
    public const int Keys = 3 * RowSize;                     // [slice × (block + 1)] keys of a column block, transposed
    public const int Scores = Keys + GlaGpuShape.SliceWidth * ColumnPitch;   // [16 × block] accumulated scores
    public const int Floats = Scores + GlaGpuShape.SubChunk * GlaGpuShape.ScoreBlock;
}

/// <summary>Dynamic shared memory of the chunk-state kernel, in floats.</summary>
internal readonly struct ChunkStateTiles(GlaGpuShape s)
{
    public int Keys => 0;                                    // [StateRows × pitch] a token slice of k_j ⊙ exp(b_last − b_j), transposed
    public int Values => s.StateRows * GlaGpuShape.SlicePitch;   // [slice × StateCols]
    public int Floats => Values + GlaGpuShape.SliceWidth * s.StateCols;
}

/// <summary>Dynamic shared memory of the output kernel, in floats.</summary>
internal readonly struct OutputTiles(GlaGpuShape s)
{
    public int Left => 0;                                    // [OutputRows × pitch] gated queries, then scores
    public int Right => s.OutputRows * GlaGpuShape.SlicePitch;   // [slice × OutputCols] start state, then values
    public int Floats => Right + GlaGpuShape.SliceWidth * s.OutputCols;
}

/// <summary>Dynamic shared memory of the recurrent kernel, in floats.</summary>
internal readonly struct RecurrentTiles(GlaGpuShape s)
{
    public int State => 0;                                   // [K × cols] the state tile
    public int Keys => s.KeyDim * s.RecurrentCols;           // [K]
    public int Decay => Keys + s.KeyDim;                     // [K] exp(g_t)
    public int Values => Decay + s.KeyDim;                   // [cols]
    public int Queries => Values + s.RecurrentCols;          // [G × K] scale·q of the value head's output heads
    public int Partials => Queries + s.Group * s.KeyDim;     // [G × row threads × cols] partial outputs
    public int Floats => Partials + s.Group * s.RecurrentRowThreads * s.RecurrentCols;
}

/// <summary>
/// The GLA kernels. Chunked form, one launch each, in order:
///   CumulativeGates   b = in-chunk cumulative log gate (per-key and per-head gates; constant gates compute b = (i+1)·λ inline)
///   ChunkStates       ΔS = Σ_j (k_j ⊙ exp(b_last − b_j)) v_jᵀ per chunk and value head, tiled over (K, V), tokens in slices
///   ScanChunkStates   S_start(chunk) in place of ΔS, sequentially over each sequence's chunks, parallel over state entries
///   IntraScores       A_ij = scale Σ_c q_ic k_jc exp(b_ic − b_jc), j <= i, per chunk, output head and 16-row band
///   Output            O = (scale q ⊙ exp(b)) S_start + A V per chunk, output head, row block and value tile
/// Heads (<see cref="HeadLayout"/>): value head h reads key head h / ValueGroup; output head o reads value head o / Group and
/// query head o / ValueGroup. q and k are read where they lie, never copied per head.
/// Shared memory per group does not grow with K, V or the chunk size: reductions run in slices of 32.
/// Recurrent form: one group per (sequence, value head, value tile) walks the tokens with the state tile in shared memory.
/// Every exponent is a difference b_i − b_j with j <= i (or b_last − b_j, or b_i), so it is <= 0.
/// </summary>
public static class GlaGpuKernels
{
    private const int SubChunk = GlaGpuShape.SubChunk;
    private const int SliceWidth = GlaGpuShape.SliceWidth;
    private const int SlicePitch = GlaGpuShape.SlicePitch;
    private const int ScoreBlock = GlaGpuShape.ScoreBlock;

    /// <summary>b at local row i of the chunk starting at token <paramref name="start"/>, key dim c: per-key and per-head gates.</summary>
    private static float CumulativeLogGate(GlaGpuArgs args, GlaGpuShape s, int h, int start, int i, int c) => s.PerKey
        ? args.CumulativeGate[((long)(start + i) * s.ValueHeads + h) * s.KeyDim + c]
        : args.CumulativeGate[(long)(start + i) * s.ValueHeads + h];

    /// <summary>
    /// exp(b_i − b_j) for local rows j <= i of one chunk; j = −1 stands for the chunk start (b = 0).
    /// A constant gate has b_i − b_j = (i − j)·λ; no gate, 0.
    /// </summary>
    private static float Decay(GlaGpuArgs args, GlaGpuShape s, int h, int start, int i, int j, int c)
    {
        if (s.NoGate) return 1f;
        if (s.Constant) return XMath.Exp((i - j) * args.ConstantDecay[h]);
        float before = j < 0 ? 0f : CumulativeLogGate(args, s, h, start, j, c);
        return XMath.Exp(CumulativeLogGate(args, s, h, start, i, c) - before);
    }

    /// <summary>Grid (chunks, ceil(gate floats per token / group)): one thread per gate entry walks the chunk.</summary>
    public static void CumulativeGates(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        int perToken = s.GatePerToken;
        int entry = Grid.IdxY * s.GroupSize + Group.IdxX;
        if (entry >= perToken) return;
        int start = args.ChunkStart[Grid.IdxX], len = args.ChunkLength[Grid.IdxX];
        float sum = 0f;
        for (int i = 0; i < len; i++)
        {
            long at = (long)(start + i) * perToken + entry;
            sum += args.G[at];
            args.CumulativeGate[at] = sum;
        }
    }

    /// <summary>
    /// Grid (chunks, Hv, K tiles × V tiles): ΔS[c, d] = Σ_j k_jc exp(b_last,c − b_jc) v_jd for one
    /// StateRows × StateCols tile, the chunk's tokens staged in slices.
    /// </summary>
    public static void ChunkStates(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        var tiles = new ChunkStateTiles(s);
        int chunk = Grid.IdxX, h = Grid.IdxY, kh = h / s.ValueGroup, tid = Group.IdxX;
        int tilesV = (s.ValueDim + s.StateCols - 1) / s.StateCols;
        int c0 = Grid.IdxZ / tilesV * s.StateRows, d0 = Grid.IdxZ % tilesV * s.StateCols;
        int start = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        var shared = SharedMemory.GetDynamic<float>();
        var keys = shared.SubView(tiles.Keys, s.StateRows * SlicePitch);
        var values = shared.SubView(tiles.Values, SliceWidth * s.StateCols);
        int row = tid / s.StateColThreads, col = tid % s.StateColThreads;
        var tile = new RegisterTile4x4();

        for (int j0 = 0; j0 < len; j0 += SliceWidth)
        {
            int depth = Math.Min(SliceWidth, len - j0);
            for (int e = tid; e < SliceWidth * s.StateRows; e += s.GroupSize)
            {
                int j = e / s.StateRows, cc = e % s.StateRows, c = c0 + cc;
                float x = 0f;
                if (j < depth && c < s.KeyDim)
                    x = args.K[((long)(start + j0 + j) * s.KeyHeads + kh) * s.KeyDim + c] * Decay(args, s, h, start, len - 1, j0 + j, c);
                keys[cc * SlicePitch + j] = x;
            }
            for (int e = tid; e < SliceWidth * s.StateCols; e += s.GroupSize)
            {
                int j = e / s.StateCols, d = d0 + e % s.StateCols;
                values[e] = j < depth && d < s.ValueDim ? args.V[((long)(start + j0 + j) * s.ValueHeads + h) * s.ValueDim + d] : 0f;
            }
            Group.Barrier();
            tile.Accumulate(keys, SlicePitch, values, s.StateCols, depth, row, s.StateRowThreads, col, s.StateColThreads);
            Group.Barrier();
        }

        long chunkBase = ((long)chunk * s.ValueHeads + h) * s.KeyDim * s.ValueDim;
        for (int m = 0; m < 4; m++)
        {
            int c = c0 + row + m * s.StateRowThreads;
            if (c < s.KeyDim) tile.StoreRow(m, args.ChunkStates, chunkBase + (long)c * s.ValueDim + d0, col, s.StateColThreads, s.ValueDim - d0);
        }
    }

    /// <summary>
    /// Grid (ceil(N·Hv·K·V / group)): one thread per state entry walks its sequence's chunks, replacing
    /// each chunk's ΔS by the state at the chunk's start, S ← exp(b_last) ⊙ S + ΔS, and stores the final state.
    /// </summary>
    public static void ScanChunkStates(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        long perSequence = (long)s.ValueHeads * s.KeyDim * s.ValueDim;
        long entry = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (entry >= args.Sequences * perSequence) return;
        int n = (int)(entry / perSequence);
        long within = entry - n * perSequence;
        int h = (int)(within / ((long)s.KeyDim * s.ValueDim));
        int c = (int)(within / s.ValueDim % s.KeyDim);
        float state = args.State[entry];
        for (int chunk = args.FirstChunk[n]; chunk < args.FirstChunk[n + 1]; chunk++)
        {
            long at = chunk * perSequence + within;
            float delta = args.ChunkStates[at];
            args.ChunkStates[at] = state;
            state = Decay(args, s, h, args.ChunkStart[chunk], args.ChunkLength[chunk] - 1, -1, c) * state + delta;
        }
        args.State[entry] = state;
    }

    /// <summary>
    /// Grid (chunks, max(Hq, Hv), C / 16): the scores of rows r..r+15 (r = 16·band) against columns j <= i, in
    /// column blocks of 64; entries above the diagonal are not written (the output kernel masks them).
    /// Per-key gates: the columns before the band are a plain product of (scale q_i ⊙ exp(b_i − b_r)) and
    /// (k_j ⊙ exp(b_r − b_j)); the band's own 16 × 16 block takes exp(b_ic − b_jc) element by element.
    /// Scalar gates: the product q_i · k_j times exp(b_i − b_j).
    /// </summary>
    public static void IntraScores(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        int chunk = Grid.IdxX, o = Grid.IdxY, r = Grid.IdxZ * SubChunk, tid = Group.IdxX;
        int start = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        if (r >= len) return;
        int h = o / s.Group, qh = o / s.ValueGroup, kh = h / s.ValueGroup, rows = Math.Min(SubChunk, len - r), pitch = IntraScoreTiles.ColumnPitch;
        var shared = SharedMemory.GetDynamic<float>();
        var rawQueries = shared.SubView(IntraScoreTiles.RawQueries, IntraScoreTiles.RowSize);
        var gatedQueries = shared.SubView(IntraScoreTiles.GatedQueries, IntraScoreTiles.RowSize);
        var rowGates = shared.SubView(IntraScoreTiles.RowGates, IntraScoreTiles.RowSize);
        var keys = shared.SubView(IntraScoreTiles.Keys, SliceWidth * pitch);
        var scores = shared.SubView(IntraScoreTiles.Scores, SubChunk * ScoreBlock);

        for (int j0 = 0; j0 < r + SubChunk; j0 += ScoreBlock)
        {
            int width = Math.Min(ScoreBlock, r + SubChunk - j0);
            // Each thread owns the same score entries in every pass, so the running sums need no barrier.
            for (int e = tid; e < SubChunk * width; e += s.GroupSize) scores[e] = 0f;
            for (int c0 = 0; c0 < s.KeyDim; c0 += SliceWidth)
            {
                int depth = Math.Min(SliceWidth, s.KeyDim - c0);
                for (int e = tid; e < SubChunk * SliceWidth; e += s.GroupSize)
                {
                    int i = e / SliceWidth, u = e % SliceWidth, at = i * SlicePitch + u;
                    float q = 0f, b = 0f, gated = 0f;
                    if (i < rows && u < depth)
                    {
                        q = s.Scale * args.Q[((long)(start + r + i) * s.QHeads + qh) * s.KeyDim + c0 + u];
                        if (s.PerKey)
                        {
                            b = CumulativeLogGate(args, s, h, start, r + i, c0 + u);
                            gated = q * XMath.Exp(b - CumulativeLogGate(args, s, h, start, r, c0 + u));
                        }
                    }
                    rawQueries[at] = q;
                    if (s.PerKey)
                    {
                        rowGates[at] = b;
                        gatedQueries[at] = gated;
                    }
                }
                for (int e = tid; e < width * SliceWidth; e += s.GroupSize)
                {
                    int jj = e / SliceWidth, u = e % SliceWidth, j = j0 + jj;
                    float k = 0f;
                    if (j < len && u < depth)
                    {
                        k = args.K[((long)(start + j) * s.KeyHeads + kh) * s.KeyDim + c0 + u];
                        if (s.PerKey && j < r) k *= XMath.Exp(CumulativeLogGate(args, s, h, start, r, c0 + u) - CumulativeLogGate(args, s, h, start, j, c0 + u));
                    }
                    keys[u * pitch + jj] = k;
                }
                Group.Barrier();

                for (int e = tid; e < SubChunk * width; e += s.GroupSize)
                {
                    int i = e / width, jj = e % width, j = j0 + jj;
                    if (i >= rows || j > r + i) continue;
                    float sum = 0f;
                    if (!s.PerKey)
                    {
                        for (int u = 0; u < depth; u++) sum += rawQueries[i * SlicePitch + u] * keys[u * pitch + jj];
                    }
                    else if (j < r)
                    {
                        for (int u = 0; u < depth; u++) sum += gatedQueries[i * SlicePitch + u] * keys[u * pitch + jj];
                    }
                    else
                    {
                        int jr = j - r;
                        for (int u = 0; u < depth; u++)
                            sum += rawQueries[i * SlicePitch + u] * keys[u * pitch + jj] * XMath.Exp(rowGates[i * SlicePitch + u] - rowGates[jr * SlicePitch + u]);
                    }
                    scores[e] += sum;
                }
                Group.Barrier();
            }

            for (int e = tid; e < SubChunk * width; e += s.GroupSize)
            {
                int i = e / width, j = j0 + e % width;
                if (i >= rows || j > r + i) continue;
                float a = scores[e];
                if (!s.PerKey) a *= Decay(args, s, h, start, r + i, j, 0);
                args.Scores[((long)(start + r + i) * s.OutputHeads + o) * s.Chunk + j] = a;
            }
        }
    }

    /// <summary>
    /// Grid (chunks, max(Hq, Hv), C / OutputRows × ceil(V / OutputCols)): O = [scale q ⊙ exp(b) | A] · [S_start ; V] for
    /// one block of the chunk's rows and one tile of value columns, both halves of the reduction staged
    /// slice by slice through shared memory; the scores are masked to j <= i as they are staged.
    /// </summary>
    public static void Output(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        var tiles = new OutputTiles(s);
        int rowBlocks = s.Chunk / s.OutputRows, cols = s.OutputCols, rowCount = s.OutputRows;
        int chunk = Grid.IdxX, o = Grid.IdxY, i0 = Grid.IdxZ % rowBlocks * rowCount, d0 = Grid.IdxZ / rowBlocks * cols, tid = Group.IdxX;
        int start = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        if (i0 >= len) return;
        int h = o / s.Group, qh = o / s.ValueGroup, rows = Math.Min(rowCount, len - i0);
        var shared = SharedMemory.GetDynamic<float>();
        var left = shared.SubView(tiles.Left, rowCount * SlicePitch);
        var right = shared.SubView(tiles.Right, SliceWidth * cols);
        int row = tid / s.OutputColThreads, col = tid % s.OutputColThreads;
        var tile = new RegisterTile4x4();

        // Inter-chunk part: the gated queries against the chunk's start state.
        long stateBase = ((long)chunk * s.ValueHeads + h) * s.KeyDim * s.ValueDim;
        for (int c0 = 0; c0 < s.KeyDim; c0 += SliceWidth)
        {
            int depth = Math.Min(SliceWidth, s.KeyDim - c0);
            for (int e = tid; e < rowCount * SliceWidth; e += s.GroupSize)
            {
                int i = e / SliceWidth, u = e % SliceWidth;
                float x = 0f;
                if (i < rows && u < depth)
                    x = s.Scale * args.Q[((long)(start + i0 + i) * s.QHeads + qh) * s.KeyDim + c0 + u] * Decay(args, s, h, start, i0 + i, -1, c0 + u);
                left[i * SlicePitch + u] = x;
            }
            for (int e = tid; e < SliceWidth * cols; e += s.GroupSize)
            {
                int u = e / cols, d = d0 + e % cols;
                right[e] = u < depth && d < s.ValueDim ? args.ChunkStates[stateBase + (long)(c0 + u) * s.ValueDim + d] : 0f;
            }
            Group.Barrier();
            tile.Accumulate(left, SlicePitch, right, cols, depth, row, s.OutputRowThreads, col, s.OutputColThreads);
            Group.Barrier();
        }

        // Intra-chunk part: the scores against the values of the tokens up to the block's last row.
        for (int j0 = 0; j0 < i0 + rows; j0 += SliceWidth)
        {
            int depth = Math.Min(SliceWidth, i0 + rows - j0);
            for (int e = tid; e < rowCount * SliceWidth; e += s.GroupSize)
            {
                int i = e / SliceWidth, u = e % SliceWidth;
                left[i * SlicePitch + u] = i < rows && j0 + u <= i0 + i ? args.Scores[((long)(start + i0 + i) * s.OutputHeads + o) * s.Chunk + j0 + u] : 0f;
            }
            for (int e = tid; e < SliceWidth * cols; e += s.GroupSize)
            {
                int u = e / cols, d = d0 + e % cols;
                right[e] = u < depth && d < s.ValueDim ? args.V[((long)(start + j0 + u) * s.ValueHeads + h) * s.ValueDim + d] : 0f;
            }
            Group.Barrier();
            // Slices that reach past the block's first row hold values of tokens some of its rows may not read.
            if (j0 + depth - 1 <= i0) tile.Accumulate(left, SlicePitch, right, cols, depth, row, s.OutputRowThreads, col, s.OutputColThreads);
            else tile.AccumulateCausal(left, SlicePitch, right, cols, depth, row, s.OutputRowThreads, col, s.OutputColThreads, i0 - j0);
            Group.Barrier();
        }

        for (int m = 0; m < 4; m++)
        {
            int i = row + m * s.OutputRowThreads;
            if (i < rows) tile.StoreRow(m, args.Output, ((long)(start + i0 + i) * s.OutputHeads + o) * s.ValueDim + d0, col, s.OutputColThreads, s.ValueDim - d0);
        }
    }

    /// <summary>exp(g_t) of one token at key dim c: the per-token decay of the recurrent form.</summary>
    private static float StepDecay(GlaGpuArgs args, GlaGpuShape s, int t, int h, int c)
    {
        if (s.PerKey) return XMath.Exp(args.G[((long)t * s.ValueHeads + h) * s.KeyDim + c]);
        if (s.PerHead) return XMath.Exp(args.G[(long)t * s.ValueHeads + h]);
        if (s.Constant) return XMath.Exp(args.ConstantDecay[h]);
        return 1f;
    }

    /// <summary>
    /// Grid (N, Hv, ceil(V / RecurrentCols)): the recurrence token by token, S = diag(exp(g_t)) S + k_t v_tᵀ,
    /// o_t = Sᵀ (scale q_t) for every output head of the value head (their query heads are adjacent). The state tile [K × cols] stays in shared
    /// memory; thread (row, col) owns the key rows row, row + RecurrentRowThreads, ... of column col.
    /// </summary>
    public static void Recurrent(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        var tiles = new RecurrentTiles(s);
        int n = Grid.IdxX, h = Grid.IdxY, cols = s.RecurrentCols, d0 = Grid.IdxZ * cols, tid = Group.IdxX;
        int rowThreads = s.RecurrentRowThreads, row = tid / cols, col = tid % cols, kd = s.KeyDim;
        var shared = SharedMemory.GetDynamic<float>();
        var state = shared.SubView(tiles.State, kd * cols);
        var keys = shared.SubView(tiles.Keys, kd);
        var decay = shared.SubView(tiles.Decay, kd);
        var values = shared.SubView(tiles.Values, cols);
        var queries = shared.SubView(tiles.Queries, s.Group * kd);
        var partials = shared.SubView(tiles.Partials, s.Group * rowThreads * cols);

        long stateBase = ((long)n * s.ValueHeads + h) * kd * s.ValueDim;
        for (int e = tid; e < kd * cols; e += s.GroupSize)
        {
            int c = e / cols, d = d0 + e % cols;
            state[e] = d < s.ValueDim ? args.State[stateBase + (long)c * s.ValueDim + d] : 0f;
        }

        int end = args.SequenceStart[n + 1];
        for (int t = args.SequenceStart[n]; t < end; t++)
        {
            Group.Barrier();
            long keyRow = (long)t * s.KeyHeads + h / s.ValueGroup, valueRow = (long)t * s.ValueHeads + h;
            for (int e = tid; e < kd; e += s.GroupSize)
            {
                keys[e] = args.K[keyRow * kd + e];
                decay[e] = StepDecay(args, s, t, h, e);
            }
            for (int e = tid; e < cols; e += s.GroupSize)
                values[e] = d0 + e < s.ValueDim ? args.V[valueRow * s.ValueDim + d0 + e] : 0f;
            long qRow = (long)t * s.QHeads + h * s.Group / s.ValueGroup, oRow = (long)t * s.OutputHeads + h * s.Group;
            for (int e = tid; e < s.Group * kd; e += s.GroupSize) queries[e] = s.Scale * args.Q[qRow * kd + e];
            Group.Barrier();

            float v = values[col];
            for (int c = row; c < kd; c += rowThreads)
            {
                int at = c * cols + col;
                state[at] = decay[c] * state[at] + keys[c] * v;
            }
            for (int g = 0; g < s.Group; g++)
            {
                float sum = 0f;
                for (int c = row; c < kd; c += rowThreads) sum += queries[g * kd + c] * state[c * cols + col];
                partials[(g * rowThreads + row) * cols + col] = sum;
            }
            Group.Barrier();

            for (int e = tid; e < s.Group * cols; e += s.GroupSize)
            {
                int g = e / cols, d = e % cols;
                if (d0 + d >= s.ValueDim) continue;
                float o = 0f;
                for (int p = 0; p < rowThreads; p++) o += partials[(g * rowThreads + p) * cols + d];
                args.Output[(oRow + g) * s.ValueDim + d0 + d] = o;
            }
        }
        Group.Barrier();
        for (int e = tid; e < kd * cols; e += s.GroupSize)
        {
            int c = e / cols, d = d0 + e % cols;
            if (d < s.ValueDim) args.State[stateBase + (long)c * s.ValueDim + d] = state[e];
        }
    }
}

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

    /// <summary>
    /// Tokens of a per-key score span: the scores of a row against the keys of an earlier span of a slice are a product against the
    /// span's last token as the reference; only the pairs within a row's own span are summed term by term.
    /// </summary>
    public const int ReferenceSpan = 16;

    private readonly int _valueMajor;

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
        Precision = config.GpuPrecision;
        _valueMajor = config.StateLayout == StateLayout.ValueMajor ? 1 : 0;
        GroupSize = groupSize;
        // Row blocks of one reference span (16 rows) and value tiles as wide as the group allows (128 columns at 128 threads): the
        // scores of a row are made by one group, not once per value tile, and its term-by-term per-key pairs lie in its own span.
        OutputRowThreads = ReferenceSpan / 4;
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

    /// <summary>How the chunk products are multiplied: <see cref="RegisterTile4x4"/> (fp32) or <see cref="MmaTile{TMma}"/> (tf32, fp16).</summary>
    public GpuPrecision Precision { get; }
    public int GroupSize { get; }

    /// <summary>The caller's state holds each head [V, K] (<see cref="StateLayout.ValueMajor"/>) rather than [K, V].</summary>
    public bool ValueMajor => _valueMajor != 0;

    /// <summary>Output kernel: the threads of a group as OutputRowThreads × OutputColThreads, each owning 4 × 4 outputs.</summary>
    public int OutputRowThreads { get; }
    public int OutputColThreads { get; }

    /// <summary>Chunk-delta kernel: the threads of a group as StateRowThreads × StateColThreads, each owning 4 × 4 state entries.</summary>
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

    /// <summary>The products run on tensor cores (tf32 or fp16), in warps of 32 over 16 × 32 blocks.</summary>
    public bool TensorCores => Precision != GpuPrecision.Fp32;

    /// <summary>Floats of gate per token: Hv·K, Hv, or 0 for a constant or no gate.</summary>
    public int GatePerToken => PerKey ? ValueHeads * KeyDim : PerHead ? ValueHeads : 0;

    /// <summary>Chunk rows and value columns of one output group (4 per thread row and column); a slice of scores spans as many tokens as columns.</summary>
    public int OutputRows => 4 * OutputRowThreads;
    public int OutputCols => 4 * OutputColThreads;

    /// <summary>Output groups per chunk and output head: its row blocks times its value tiles.</summary>
    public int OutputGroupsPerChunk => Chunk / OutputRows * ((ValueDim + OutputCols - 1) / OutputCols);

    /// <summary>Key rows and value columns of one chunk-state tile.</summary>
    public int StateRows => 4 * StateRowThreads;
    public int StateCols => 4 * StateColThreads;

    public bool Equals(GlaGpuShape other) =>
        QHeads == other.QHeads && KeyHeads == other.KeyHeads && ValueHeads == other.ValueHeads && KeyDim == other.KeyDim && ValueDim == other.ValueDim
        && Chunk == other.Chunk && Gate == other.Gate && Scale.Equals(other.Scale) && Precision == other.Precision && GroupSize == other.GroupSize
        && RecurrentCols == other.RecurrentCols && _valueMajor == other._valueMajor;

    public override bool Equals(object? obj) => obj is GlaGpuShape other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(QHeads, KeyHeads, ValueHeads, KeyDim, ValueDim, Chunk, Gate, HashCode.Combine(Scale, Precision, GroupSize, RecurrentCols, _valueMajor));
}

/// <summary>What a GLA kernel gets at run time: the device buffers of one call (views a launch does not read are placeholders) and its sequence count.</summary>
public struct GlaGpuArgs
{
    /// <summary>Inputs q [T, Hq, K], k [T, Hk, K], v [T, Hv, V]; G holds the raw log gates, laid out [T, Hv, K] or [T, Hv].</summary>
    public ArrayView<float> Q, K, V, G;

    /// <summary>b: the log gates summed within each chunk, laid out as G (<see cref="CompensatedGateSum"/>).</summary>
    public ArrayView<CompensatedGateSum> CumulativeGate;

    /// <summary>[Hv] log decay of a constant gate.</summary>
    public ArrayView<float> ConstantDecay;

    /// <summary>[chunks, Hv, K, V]: each chunk's delta from ChunkDeltas, then the state at each chunk's start from StateScan.</summary>
    public ArrayView<float> ChunkStates;

    /// <summary>[T, max(Hq, Hv), V].</summary>
    public ArrayView<float> Output;

    /// <summary>[N, Hv, K, V] (or [N, Hv, V, K] value-major), initial on entry, final on return.</summary>
    public ArrayView<float> State;

    /// <summary>The <see cref="ChunkTable"/>: first token and length per chunk, first chunk per sequence.</summary>
    public ArrayView<int> ChunkStart, ChunkLength, FirstChunk;

    /// <summary>[N + 1] token offsets of the sequences (recurrent form).</summary>
    public ArrayView<int> SequenceStart;

    /// <summary>N, the sequences of the call.</summary>
    public int Sequences;
}

/// <summary>Dynamic shared memory of the chunk-delta kernel, in floats.</summary>
internal readonly struct ChunkDeltaTiles(GlaGpuShape s)
{
    public int Keys => 0;                                    // [StateRows × pitch] a token slice of k_j ⊙ exp(b_last − b_j), transposed
    public int Values => s.StateRows * GlaGpuShape.SlicePitch;   // [slice × StateCols]
    public int Gates => Values + GlaGpuShape.SliceWidth * s.StateCols;    // [StateRows × pitch] the slice's log gates, transposed as the keys
    public int Suffix => Gates + s.StateRows * GlaGpuShape.SlicePitch;   // [StateRows] b_last − b_j of the slice's first token, per key row
    public int Floats => Suffix + s.StateRows;
}

/// <summary>Dynamic shared memory of the output kernel, in floats.</summary>
internal readonly struct OutputTiles(GlaGpuShape s)
{
    public int Left => 0;                                    // [OutputRows × pitch] gated queries
    public int Right => s.OutputRows * GlaGpuShape.SlicePitch;   // [slice × OutputCols] start state, keys (transposed) or values
    public int Scores => Right + GlaGpuShape.SliceWidth * s.OutputCols;   // [OutputRows × ScorePitch] a slice of the scores
    public int ScorePitch => s.OutputCols + 1;
    public int Output => Scores + s.OutputRows * ScorePitch;   // [OutputRows × ScorePitch] the output block between products
    public int Floats => Output + s.OutputRows * ScorePitch;
}

/// <summary>Dynamic shared memory of the recurrent kernel, in floats.</summary>
internal readonly struct RecurrentTiles(GlaGpuShape s)
{
    public int State => 0;                                   // [K × cols] the state tile
    public int Keys => s.KeyDim * s.RecurrentCols;           // [K]
    public int Decay => Keys + s.KeyDim;                     // [K] exp(g_t)'s near part (SimdMath.DecayParts)
    public int DecayFar => Decay + s.KeyDim;                 // [K] its far part
    public int Values => DecayFar + s.KeyDim;                // [cols]
    public int Queries => Values + s.RecurrentCols;          // [G × K] scale·q of the value head's output heads
    public int Partials => Queries + s.Group * s.KeyDim;     // [G × row threads × cols] partial outputs
    public int Floats => Partials + s.Group * s.RecurrentRowThreads * s.RecurrentCols;
}

/// <summary>
/// The GLA kernels. Chunked form, three launches in order, every chunk in parallel but for the scan's walk:
///   ChunkDeltas   per chunk, value head and (K, V) tile: the chunk's own contribution to the state,
///                 Δ = Σ_j (k_j ⊙ exp(b_last − b_j)) v_jᵀ, stored in the chunk's slot of ChunkStates; the groups of the first value
///                 tile also store b, the in-chunk cumulative log gate (per-key and per-head gates; constant gates compute b = (i+1)·λ inline)
///   StateScan     per sequence, value head and state entry: the chunks in order, S ← diag(exp(b_last)) S + Δ, each chunk's slot
///                 overwritten with its start state; the final state back to State
///   Output        per chunk, output head, row block and value tile: O = (scale q ⊙ exp(b)) S_start + A V, the scores
///                 A_ij = scale Σ_c q_ic k_jc exp(b_ic − b_jc) (j &lt;= i) made on chip a slice of tokens at a time
/// The products run on a tile type chosen by <see cref="GlaGpuShape.Precision"/>: <see cref="RegisterTile4x4"/> or <see cref="MmaTile{TMma}"/>.
/// Heads (<see cref="HeadLayout"/>): value head h reads key head h / ValueGroup; output head o reads value head o / Group and
/// query head o / ValueGroup. q and k are read where they lie, never copied per head.
/// Shared memory per group does not grow with K, V or the chunk size: reductions run in slices of 32.
/// Recurrent form: one group per (sequence, value head, value tile) walks the tokens with the state tile in shared memory.
/// Every exponent is a difference b_i − b_j with j &lt;= i (or b_last − b_j, or b_i), so it is &lt;= 0.
/// </summary>
public static class GlaGpuKernels
{
    private const int SliceWidth = GlaGpuShape.SliceWidth;
    private const int SlicePitch = GlaGpuShape.SlicePitch;
    private const int ReferenceSpan = GlaGpuShape.ReferenceSpan;

    /// <summary>Where b at local row i of the chunk starting at token <paramref name="start"/>, key dim c lies: per-key and per-head gates.</summary>
    private static long CumulativeGateAt(GlaGpuShape s, int h, int start, int i, int c) => s.PerKey
        ? ((long)(start + i) * s.ValueHeads + h) * s.KeyDim + c
        : (long)(start + i) * s.ValueHeads + h;

    /// <summary>
    /// exp(b_i − b_j) for local rows j &lt;= i of one chunk; j = −1 stands for the chunk start (b = 0).
    /// A constant gate has b_i − b_j = (i − j)·λ; no gate, 0.
    /// </summary>
    private static float Decay(GlaGpuArgs args, GlaGpuShape s, int h, int start, int i, int j, int c)
    {
        if (s.NoGate) return 1f;
        if (s.Constant) return XMath.Exp((i - j) * args.ConstantDecay[h]);
        var b = args.CumulativeGate[CumulativeGateAt(s, h, start, i, c)];
        return XMath.Exp(j < 0 ? b.Value : CompensatedGateSum.Difference(b, args.CumulativeGate[CumulativeGateAt(s, h, start, j, c)]));
    }

    /// <summary>
    /// Grid (chunks, Hv, K tiles × V tiles): the chunk's contribution to one StateRows × StateCols tile of the state,
    /// Δ[c, d] = Σ_j k_jc exp(b_last,c − b_jc) v_jd, stored in the chunk's slot of ChunkStates for <see cref="StateScan"/>. The
    /// slices of tokens run from the chunk's end back, so that exp(b_last − b_j) = exp(Σ_{t > j} g_t) is a running sum per key row.
    /// The groups of the first value tile also store b for <see cref="Output"/> and the scan: a per-head gate's only from the first key tile.
    /// </summary>
    public static void ChunkDeltas(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        // fp16 too keeps the state's products in tf32: a state may outgrow fp16's range, a chunk's operands do so only with the inputs.
        if (s.TensorCores) ChunkDeltas<MmaTile<Tf32Mma>>(args, s);
        else ChunkDeltas<RegisterTile4x4>(args, s);
    }

    private static void ChunkDeltas<TTile>(GlaGpuArgs args, GlaGpuShape s) where TTile : struct, IProductTile
    {
        var tiles = new ChunkDeltaTiles(s);
        int chunk = Grid.IdxX, h = Grid.IdxY, kh = h / s.ValueGroup, tid = Group.IdxX;
        int tilesV = (s.ValueDim + s.StateCols - 1) / s.StateCols;
        int c0 = Grid.IdxZ / tilesV * s.StateRows, d0 = Grid.IdxZ % tilesV * s.StateCols;
        int rows = Math.Min(s.StateRows, s.KeyDim - c0), cols = Math.Min(s.StateCols, s.ValueDim - d0);
        int start = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        var shared = SharedMemory.GetDynamic<float>();
        var keys = shared.SubView(tiles.Keys, s.StateRows * SlicePitch);
        var values = shared.SubView(tiles.Values, SliceWidth * s.StateCols);
        var gates = shared.SubView(tiles.Gates, s.StateRows * SlicePitch);
        var suffix = shared.SubView(tiles.Suffix, s.StateRows);
        var layout = new TileLayout(s.StateRows, s.StateCols, tid);

        if (d0 == 0 && (s.PerKey || (s.PerHead && c0 == 0)))
            StoreCumulativeGates(args, s, h, start, len, s.PerKey ? c0 : 0, s.PerKey ? rows : 1, tid);
        for (int cc = tid; cc < s.StateRows; cc += s.GroupSize) suffix[cc] = 0f;

        var delta = default(TTile);
        for (int j0 = (len - 1) / SliceWidth * SliceWidth; j0 >= 0; j0 -= SliceWidth)
        {
            int depth = Math.Min(SliceWidth, len - j0);
            // Every thread stages the slice's keys and log gates (a constant gate's decay applied at once), so the loads run side by side.
            for (int e = tid; e < SliceWidth * s.StateRows; e += s.GroupSize)
            {
                int j = e / s.StateRows, cc = e % s.StateRows;
                float x = 0f, logGate = 0f;
                if (j < depth && cc < rows)
                {
                    int t = start + j0 + j;
                    x = args.K[((long)t * s.KeyHeads + kh) * s.KeyDim + c0 + cc];
                    if (s.Constant) x *= XMath.Exp((len - 1 - j0 - j) * args.ConstantDecay[h]);
                    else if (s.PerKey) logGate = args.G[((long)t * s.ValueHeads + h) * s.KeyDim + c0 + cc];
                    else if (s.PerHead) logGate = args.G[(long)t * s.ValueHeads + h];
                }
                keys[cc * SlicePitch + j] = x;
                gates[cc * SlicePitch + j] = logGate;
            }
            for (int e = tid; e < SliceWidth * s.StateCols; e += s.GroupSize)
            {
                int j = e / s.StateCols, dd = e % s.StateCols;
                values[e] = j < depth && dd < cols ? args.V[((long)(start + j0 + j) * s.ValueHeads + h) * s.ValueDim + d0 + dd] : 0f;
            }
            Group.Barrier();
            // Then a thread per key row walks the staged slice back, from shared memory: k_j ← k_j exp(b_last − b_j), the sum of the gates after j.
            if (s.PerKey || s.PerHead)
            {
                for (int cc = tid; cc < s.StateRows; cc += s.GroupSize)
                {
                    float after = suffix[cc];
                    for (int j = depth - 1; j >= 0; j--)
                    {
                        keys[cc * SlicePitch + j] *= XMath.Exp(after);
                        after += gates[cc * SlicePitch + j];
                    }
                    suffix[cc] = after;
                }
                Group.Barrier();
            }
            delta.Accumulate(keys, SlicePitch, values, s.StateCols, depth, layout);
            Group.Barrier();
        }
        long perChunk = (long)s.ValueHeads * s.KeyDim * s.ValueDim;
        delta.Store(args.ChunkStates, chunk * perChunk + (long)h * s.KeyDim * s.ValueDim + (long)c0 * s.ValueDim + d0, s.ValueDim, rows, cols, layout);
    }

    /// <summary>
    /// b = the log gates summed within the chunk (<see cref="CompensatedGateSum"/>), for <paramref name="count"/> gate entries of the head
    /// from <paramref name="first"/> (key dims, or the one per-head entry): one thread per entry walks the chunk, four tokens' gates
    /// loaded ahead of their sums.
    /// </summary>
    private static void StoreCumulativeGates(GlaGpuArgs args, GlaGpuShape s, int h, int start, int len, int first, int count, int tid)
    {
        int perHead = s.PerKey ? s.KeyDim : 1;
        long perToken = (long)s.ValueHeads * perHead;
        for (int entry = tid; entry < count; entry += s.GroupSize)
        {
            long at = ((long)start * s.ValueHeads + h) * perHead + first + entry;
            var sum = default(CompensatedGateSum);
            for (int i = 0; i < len; i += 4)
            {
                // The loads read a valid token (the chunk's last again past its end) whatever the guards.
                long at0 = at + i * perToken, at1 = at + Math.Min(i + 1, len - 1) * perToken;
                long at2 = at + Math.Min(i + 2, len - 1) * perToken, at3 = at + Math.Min(i + 3, len - 1) * perToken;
                float g0 = LogGates.Summand(args.G[at0]), g1 = LogGates.Summand(args.G[at1]);
                float g2 = LogGates.Summand(args.G[at2]), g3 = LogGates.Summand(args.G[at3]);
                sum.Add(g0);
                args.CumulativeGate[at0] = sum;
                if (i + 1 < len) { sum.Add(g1); args.CumulativeGate[at1] = sum; }
                if (i + 2 < len) { sum.Add(g2); args.CumulativeGate[at2] = sum; }
                if (i + 3 < len) { sum.Add(g3); args.CumulativeGate[at3] = sum; }
            }
        }
    }

    /// <summary>
    /// Grid (N, Hv, ceil(K·V / group)): one thread per state entry walks its sequence's chunks in order, S ← exp(b_last) S + Δ, each
    /// chunk's slot of ChunkStates read for Δ and overwritten with the chunk's start state; the final state goes back to State.
    /// The deltas and decays of four chunks are loaded ahead of their steps, so the walk waits on memory once per four chunks.
    /// </summary>
    public static void StateScan(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        int perHead = s.KeyDim * s.ValueDim, entry = Grid.IdxZ * s.GroupSize + Group.IdxX;
        if (entry >= perHead) return;
        int n = Grid.IdxX, h = Grid.IdxY, c = entry / s.ValueDim;
        long perChunk = (long)s.ValueHeads * perHead, at = (long)h * perHead + entry;
        long stateAt = StateAt(s, n, h, c, entry - c * s.ValueDim);
        float state = args.State[stateAt];
        int end = args.FirstChunk[n + 1];
        for (int chunk = args.FirstChunk[n]; chunk < end; chunk += 4)
        {
            // The loads read a valid chunk (the last one again past the end) whatever the guards, so none waits behind a branch.
            int chunk1 = Math.Min(chunk + 1, end - 1), chunk2 = Math.Min(chunk + 2, end - 1), chunk3 = Math.Min(chunk + 3, end - 1);
            long slot0 = chunk * perChunk + at, slot1 = chunk1 * perChunk + at, slot2 = chunk2 * perChunk + at, slot3 = chunk3 * perChunk + at;
            float delta0 = args.ChunkStates[slot0], delta1 = args.ChunkStates[slot1], delta2 = args.ChunkStates[slot2], delta3 = args.ChunkStates[slot3];
            float decay0 = ChunkDecay(args, s, h, c, chunk), decay1 = ChunkDecay(args, s, h, c, chunk1);
            float decay2 = ChunkDecay(args, s, h, c, chunk2), decay3 = ChunkDecay(args, s, h, c, chunk3);
            args.ChunkStates[slot0] = state;
            state = decay0 * state + delta0;
            if (chunk + 1 < end) { args.ChunkStates[slot1] = state; state = decay1 * state + delta1; }
            if (chunk + 2 < end) { args.ChunkStates[slot2] = state; state = decay2 * state + delta2; }
            if (chunk + 3 < end) { args.ChunkStates[slot3] = state; state = decay3 * state + delta3; }
        }
        args.State[stateAt] = state;
    }

    private static long StateAt(GlaGpuShape s, int n, int h, int c, int d) => StateIndex.Of(s.ValueMajor, s.ValueHeads, s.KeyDim, s.ValueDim, n, h, c, d);

    /// <summary>exp(b_last) of a chunk at key row c: the decay of the state over the whole chunk.</summary>
    private static float ChunkDecay(GlaGpuArgs args, GlaGpuShape s, int h, int c, int chunk)
    {
        int start = args.ChunkStart[chunk];
        return Decay(args, s, h, start, args.ChunkLength[chunk] - 1, -1, c);
    }

    /// <summary>
    /// Grid (chunks × C / OutputRows × ceil(V / OutputCols), max(Hq, Hv)): one block of 16 rows of a chunk and one tile of value
    /// columns. O = (scale q ⊙ exp(b)) S_start, then for each slice of OutputCols tokens up to the block's last row: the scores
    /// of the block's rows against the slice, made on chip and masked to j &lt;= i, and O += A_slice V_slice.
    /// Scores: scalar gates multiply (scale q_i · k_j) by exp(b_i − b_j). Per-key gates take a reference token p: rows i >= p
    /// against keys j &lt;= p are the product of (scale q_i ⊙ exp(b_i − b_p)) and (k_j ⊙ exp(b_p − b_j)), both exponents &lt;= 0. The
    /// slice's last token is the reference of every key of the slice for the rows from it on, and the last token of each
    /// <see cref="GlaGpuShape.ReferenceSpan"/>-token span before it the reference of that span's keys for the rows between; only a
    /// row's pairs within its own span sum exp(b_ic − b_jc) term by term.
    /// </summary>
    public static void Output(GlaGpuArgs args, SpecializedValue<GlaGpuShape> shape)
    {
        var s = shape.Value;
        // fp16 takes the chunk's own products (scores, A·V); the product with the start state stays in tf32, as in ChunkStates.
        if (s.Precision == GpuPrecision.Tf32) Output<MmaTile<Tf32Mma>, MmaTile<Tf32Mma>>(args, s);
        else if (s.Precision == GpuPrecision.Fp16) Output<MmaTile<Tf32Mma>, MmaTile<F16Mma>>(args, s);
        else Output<RegisterTile4x4, RegisterTile4x4>(args, s);
    }

    /// <summary>The output kernel with the product against the start state on <typeparamref name="TStateTile"/> and the chunk's own products on <typeparamref name="TTile"/> (one warp layout).</summary>
    private static void Output<TStateTile, TTile>(GlaGpuArgs args, GlaGpuShape s) where TStateTile : struct, IProductTile where TTile : struct, IProductTile
    {
        var tiles = new OutputTiles(s);
        int rowBlocks = s.Chunk / s.OutputRows, cols = s.OutputCols, rowCount = s.OutputRows, pitch = tiles.ScorePitch;
        // The groups of one chunk and head are adjacent in the grid, so the chunk's start state and rows they all read are in L2.
        int chunk = Grid.IdxX / s.OutputGroupsPerChunk, tile = Grid.IdxX % s.OutputGroupsPerChunk, o = Grid.IdxY;
        int i0 = tile % rowBlocks * rowCount, d0 = tile / rowBlocks * cols, tid = Group.IdxX;
        int start = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        if (i0 >= len) return;
        int h = o / s.Group, qh = o / s.ValueGroup, kh = h / s.ValueGroup, rows = Math.Min(rowCount, len - i0), end = i0 + rows;
        var shared = SharedMemory.GetDynamic<float>();
        var left = shared.SubView(tiles.Left, rowCount * SlicePitch);
        var right = shared.SubView(tiles.Right, SliceWidth * cols);
        var scores = shared.SubView(tiles.Scores, rowCount * pitch);
        var block = shared.SubView(tiles.Output, rowCount * pitch);
        var layout = new TileLayout(rowCount, cols, tid);
        // The output block waits in shared memory while the scores are made: one tile of accumulators live at a time.
        var inter = default(TStateTile);

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
            inter.Accumulate(left, SlicePitch, right, cols, depth, layout);
            Group.Barrier();
        }
        inter.Store(block, 0, pitch, rowCount, cols, layout);

        // Intra-chunk part, a slice of tokens [j0, j0 + cols) at a time.
        for (int j0 = 0; j0 < end; j0 += cols)
        {
            int last = Math.Min(j0 + cols, end) - 1;
            var score = default(TTile);
            // Per-key gates: a pass per span of the slice before its last token, then the last token's pass (the only one otherwise).
            int spanPasses = s.PerKey ? (last - j0) / ReferenceSpan : 0;
            for (int pass = 0; pass <= spanPasses; pass++)
            {
                bool lastPass = pass == spanPasses;
                int reference = lastPass ? last : j0 + (pass + 1) * ReferenceSpan - 1;
                int firstKey = lastPass ? j0 : reference - ReferenceSpan + 1, firstRow = lastPass ? last : reference + 1, endRow = lastPass ? end : last;
                for (int c0 = 0; c0 < s.KeyDim; c0 += SliceWidth)
                {
                    int depth = Math.Min(SliceWidth, s.KeyDim - c0);
                    for (int e = tid; e < rowCount * SliceWidth; e += s.GroupSize)
                    {
                        int i = e / SliceWidth, u = e % SliceWidth, row = i0 + i;
                        float x = 0f;
                        if (i < rows && u < depth && (!s.PerKey || (row >= firstRow && row < endRow)))
                        {
                            x = s.Scale * args.Q[((long)(start + row) * s.QHeads + qh) * s.KeyDim + c0 + u];
                            if (s.PerKey) x *= Decay(args, s, h, start, row, reference, c0 + u);
                        }
                        left[i * SlicePitch + u] = x;
                    }
                    for (int e = tid; e < SliceWidth * cols; e += s.GroupSize)
                    {
                        int u = e / cols, j = j0 + e % cols;
                        float k = 0f;
                        if (u < depth && j >= firstKey && j <= reference)
                        {
                            k = args.K[((long)(start + j) * s.KeyHeads + kh) * s.KeyDim + c0 + u];
                            if (s.PerKey) k *= Decay(args, s, h, start, reference, j, c0 + u);
                        }
                        right[e] = k;
                    }
                    Group.Barrier();
                    score.Accumulate(left, SlicePitch, right, cols, depth, layout);
                    Group.Barrier();
                }
            }
            score.Store(scores, 0, pitch, rowCount, cols, layout);
            Group.Barrier();
            for (int e = tid; e < rowCount * cols; e += s.GroupSize)
            {
                int i = e / cols, jj = e % cols, row = i0 + i, j = j0 + jj;
                bool reads = i < rows && j <= row;
                float a = scores[i * pitch + jj];
                if (reads && s.PerKey && row < last && (row - j0) / ReferenceSpan == jj / ReferenceSpan) a = PerKeyScore(args, s, h, qh, kh, start, row, j);
                else if (reads && !s.PerKey) a *= Decay(args, s, h, start, row, j, 0);
                // Selected, not multiplied: a score of a later token may be non-finite.
                scores[i * pitch + jj] = reads ? a : 0f;
            }
            Group.Barrier();

            var output = default(TTile);
            output.Load(block, 0, pitch, rowCount, cols, layout);
            for (int js = 0; js < cols && j0 + js < end; js += SliceWidth)
            {
                int first = j0 + js, depth = Math.Min(Math.Min(SliceWidth, cols - js), end - first);
                for (int e = tid; e < SliceWidth * cols; e += s.GroupSize)
                {
                    int u = e / cols, d = d0 + e % cols;
                    right[e] = u < depth && d < s.ValueDim ? args.V[((long)(start + first + u) * s.ValueHeads + h) * s.ValueDim + d] : 0f;
                }
                Group.Barrier();
                var slice = scores.SubView(js, rowCount * pitch - js);
                // Slices that reach past the block's first row hold values of tokens some of its rows may not read.
                if (first + depth - 1 <= i0) output.Accumulate(slice, pitch, right, cols, depth, layout);
                else output.AccumulateCausal(slice, pitch, right, cols, depth, layout, i0 - first);
                Group.Barrier();
            }
            output.Store(block, 0, pitch, rowCount, cols, layout);
        }

        Group.Barrier();
        long outputBase = ((long)(start + i0) * s.OutputHeads + o) * s.ValueDim + d0;
        for (int e = tid; e < rowCount * cols; e += s.GroupSize)
        {
            int i = e / cols, d = e % cols;
            if (i < rows && d0 + d < s.ValueDim) args.Output[outputBase + (long)i * s.OutputHeads * s.ValueDim + d] = block[i * pitch + d];
        }
    }

    /// <summary>scale Σ_c q_ic k_jc exp(b_ic − b_jc) for local rows j &lt;= i, term by term (per-key gates, near the diagonal).</summary>
    private static float PerKeyScore(GlaGpuArgs args, GlaGpuShape s, int h, int qh, int kh, int start, int i, int j)
    {
        long q = ((long)(start + i) * s.QHeads + qh) * s.KeyDim, k = ((long)(start + j) * s.KeyHeads + kh) * s.KeyDim;
        float sum = 0f;
        for (int c = 0; c < s.KeyDim; c++) sum += args.Q[q + c] * args.K[k + c] * Decay(args, s, h, start, i, j, c);
        return s.Scale * sum;
    }

    /// <summary>
    /// g_t of one token at key dim c (0 without a gate): the recurrent form adds its decay as S + near S + far S
    /// (<see cref="SimdMath.DecayParts"/>), so a decay near 1 does not drift the state by its rounding to fp32 at every token
    /// and one below 3e-8 does not drop it.
    /// </summary>
    private static float StepGate(GlaGpuArgs args, GlaGpuShape s, int t, int h, int c)
    {
        if (s.PerKey) return args.G[((long)t * s.ValueHeads + h) * s.KeyDim + c];
        if (s.PerHead) return args.G[(long)t * s.ValueHeads + h];
        if (s.Constant) return args.ConstantDecay[h];
        return 0f;
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
        var decayFar = shared.SubView(tiles.DecayFar, kd);
        var values = shared.SubView(tiles.Values, cols);
        var queries = shared.SubView(tiles.Queries, s.Group * kd);
        var partials = shared.SubView(tiles.Partials, s.Group * rowThreads * cols);

        for (int e = tid; e < kd * cols; e += s.GroupSize)
        {
            int c = e / cols, d = d0 + e % cols;
            state[e] = d < s.ValueDim ? args.State[StateAt(s, n, h, c, d)] : 0f;
        }

        int end = args.SequenceStart[n + 1];
        for (int t = args.SequenceStart[n]; t < end; t++)
        {
            Group.Barrier();
            long keyRow = (long)t * s.KeyHeads + h / s.ValueGroup, valueRow = (long)t * s.ValueHeads + h;
            for (int e = tid; e < kd; e += s.GroupSize)
            {
                keys[e] = args.K[keyRow * kd + e];
                float gate = StepGate(args, s, t, h, e);
                decay[e] = SimdMath.DecayNear(gate);
                decayFar[e] = SimdMath.DecayFar(gate);
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
                // The near part joins the token's write before the state: S + near S rounded on its own drops a decay
                // within half an ulp of 1 at every token. A write past half fp32's range could overflow near S + write
                // although the decayed sum fits: it takes the decay as one factor, 1 + near + far.
                float write = keys[c] * v;
                state[at] = decay[c] == -1f || XMath.Abs(write) > float.MaxValue / 2 ? (1f + decay[c] + decayFar[c]) * state[at] + write
                    : state[at] + (decay[c] * state[at] + write);
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
            if (d < s.ValueDim) args.State[StateAt(s, n, h, c, d)] = state[e];
        }
    }
}

using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// What a delta-rule kernel knows at compile time: dims, gate form, normalization, scale, chunk size and group
/// size. Kernels take it as a <see cref="SpecializedValue{T}"/>, so every field is a constant in the generated
/// code (loop bounds, shared-memory carving, the gate branches). Built on the host from the config and the
/// runtime's group size (a multiple of <see cref="Tile"/>).
/// </summary>
public readonly struct DeltaRuleGpuShape : IEquatable<DeltaRuleGpuShape>
{
    /// <summary>Value columns of an output or recurrent group, and rows of a diagonal block of T: the delta rule never mixes value columns.</summary>
    public const int Tile = 16;

    /// <summary>
    /// Value columns of one state-pass group, whose chunks run in order: narrow, so the sequential pass fills the
    /// GPU (B = 1, Hv = 8, V = 128: 256 groups on 132 SMs), and one thread's four adjacent columns stay in registers.
    /// </summary>
    public const int StateColumns = 4;

    private readonly int _qkL2Norm, _valueMajor;

    public DeltaRuleGpuShape(DeltaRuleConfig config, int groupSize)
    {
        QHeads = config.Heads.QHeads;
        KeyHeads = config.Heads.KeyHeads;
        ValueHeads = config.Heads.ValueHeads;
        KeyDim = config.Heads.KeyDim;
        ValueDim = config.Heads.ValueDim;
        Chunk = config.ChunkSize;
        Gate = config.Gate;
        _qkL2Norm = config.QkL2Norm ? 1 : 0;
        _valueMajor = config.StateLayout == StateLayout.ValueMajor ? 1 : 0;
        L2NormEpsilon = config.L2NormEpsilon;
        Scale = config.Scale;
        Precision = config.GpuPrecision;
        GroupSize = groupSize;
    }

    public int QHeads { get; }
    public int KeyHeads { get; }

    /// <summary>Heads of v, β, the gates and the state (<see cref="HeadLayout"/>).</summary>
    public int ValueHeads { get; }

    public int KeyDim { get; }
    public int ValueDim { get; }
    public int Chunk { get; }
    public GateKind Gate { get; }
    public float Scale { get; }
    public float L2NormEpsilon { get; }

    /// <summary>
    /// How the chunk products are multiplied: fp32 FMA on the CUDA cores, or <see cref="MmaTile{TMma}"/> on tensor cores, in tf32, or with the
    /// chunk's own products (scores, W, U, P V_new) in fp16 and the product with the state in tf32.
    /// </summary>
    public GpuPrecision Precision { get; }
    public int GroupSize { get; }
    public bool TensorCores => Precision != GpuPrecision.Fp32;

    /// <summary>q and k rows are L2-normalized in the kernels (an int behind it: ILGPU refuses bool kernel parameters).</summary>
    public bool QkL2Norm => _qkL2Norm != 0;

    /// <summary>The state in device memory is [N, Hv, V, K] (value-major): its load and store index it transposed.</summary>
    public bool ValueMajor => _valueMajor != 0;

    /// <summary>max(Hq, Hv): heads of the output, the gated queries and the scores.</summary>
    public int OutputHeads => Math.Max(QHeads, ValueHeads);

    /// <summary>Output heads per value head (grouped query heads).</summary>
    public int Group => OutputHeads / ValueHeads;

    /// <summary>Value heads per query/key head (grouped value heads).</summary>
    public int ValueGroup => ValueHeads / KeyHeads;
    public bool PerKey => Gate == GateKind.PerKey;
    public bool PerHead => Gate == GateKind.PerHead;

    /// <summary>Row slices of a group: thread = slice · 16 + value column of the tile.</summary>
    public int Slices => GroupSize / Tile;

    /// <summary>Value tiles of 16 columns (the last one may be partial).</summary>
    public int ValueTiles => (ValueDim + Tile - 1) / Tile;

    /// <summary>Key dims of the rows the preparation stages in shared memory at a time for its C × C products (K Kᵀ, Q Kᵀ).</summary>
    public const int Slab = 8;

    /// <summary>Row stride of a staged slab: odd, so the rows of a column lie in different banks.</summary>
    public const int SlabStride = Slab + 1;

    /// <summary>Value tiles of <see cref="StateColumns"/> columns: the state pass's groups per (sequence, value head).</summary>
    public int StateTiles => (ValueDim + StateColumns - 1) / StateColumns;

    /// <summary>Threads of the state pass sharing one chunk row of W S, each summing every KeyParts-th key dim: the group's threads over the chunk's rows.</summary>
    public int KeyParts => Math.Max(1, GroupSize / Chunk);

    /// <summary>Row stride of the C × C tiles A and T in shared memory: odd, so a column's rows lie in different banks.</summary>
    public int ChunkStride => Chunk + 1;

    /// <summary>16-row diagonal blocks of T in a full chunk.</summary>
    public int Blocks => Chunk / Tile;

    /// <summary>Key dims or tokens of the left operand a tensor-core product stages in shared memory at a time.</summary>
    public const int Slice = 32;

    /// <summary>Row stride of a staged left operand: 4 mod 32, so the lanes of a tf32 A fragment read distinct banks.</summary>
    public const int SlicePitch = Slice + 4;

    /// <summary>Columns of a tensor-core product tile over the chunk's rows (<see cref="MmaTile{TMma}"/>: rows · columns = 16 · group size).</summary>
    public int ProductCols => 16 * GroupSize / Chunk;

    /// <summary>Row stride of a staged right operand: 8 mod 32, so the lanes of a tf32 B fragment read distinct banks.</summary>
    public int ProductStride => ProductCols + 8;

    /// <summary>Floats a tensor-core product stages: a slice of the left operand and of the right one, or a chunk of the right one.</summary>
    public int ProductStageFloats => Math.Max(Chunk * SlicePitch + Slice * ProductStride, Chunk * ProductStride);

    /// <summary>Value columns of an output group: 16, or a tensor-core product tile's width.</summary>
    public int OutputCols => TensorCores ? ProductCols : Tile;

    /// <summary>Output groups per (chunk, output head).</summary>
    public int OutputTiles => (ValueDim + OutputCols - 1) / OutputCols;

    public bool Equals(DeltaRuleGpuShape other) =>
        QHeads == other.QHeads && KeyHeads == other.KeyHeads && ValueHeads == other.ValueHeads && KeyDim == other.KeyDim && ValueDim == other.ValueDim && Chunk == other.Chunk
        && Gate == other.Gate && _qkL2Norm == other._qkL2Norm && _valueMajor == other._valueMajor && L2NormEpsilon.Equals(other.L2NormEpsilon) && Scale.Equals(other.Scale) && Precision == other.Precision && GroupSize == other.GroupSize;

    public override bool Equals(object? obj) => obj is DeltaRuleGpuShape other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(QHeads, KeyHeads, ValueHeads, KeyDim, ValueDim, Chunk, Gate, HashCode.Combine(_qkL2Norm, _valueMajor, L2NormEpsilon, Scale, Precision, GroupSize));
}

/// <summary>What a delta-rule kernel gets at run time: the device buffers of one call (views a launch does not read are placeholders).</summary>
public struct DeltaRuleGpuArgs
{
    /// <summary>Inputs: q [T, Hq, K], k [T, Hk, K], v [T, Hv, V], β [T, Hv], raw log gates [T, Hv] or [T, Hv, K].</summary>
    public ArrayView<float> Q, K, V, Beta, G;

    /// <summary>[T, max(Hq, Hv), V].</summary>
    public ArrayView<float> Output;

    /// <summary>[N, Hv, K, V], initial on entry, final on return.</summary>
    public ArrayView<float> State;

    /// <summary>
    /// Written by the preparation, per value head: W [T, Hv, K] chunk-transposed (each chunk's block column by column, see
    /// <c>ChunkTransposed</c>), the decayed keys [T, Hv, K]; U [T, Hv, V], which the state pass overwrites with V_new.
    /// </summary>
    public ArrayView<float> W, DecayedKeys, U;

    /// <summary>Device addresses of <see cref="W"/> and <see cref="DecayedKeys"/>, for the state pass's prefetch of the next chunk.</summary>
    public DeviceAddress WAddress, DecayedKeysAddress;

    /// <summary>
    /// Per output head, chunk-transposed: the inter-chunk queries scale q̂ ⊙ e^G [T, max(Hq, Hv), K] and the masked
    /// intra scores P [T, max(Hq, Hv), C] (row i, key j &lt;= i).
    /// </summary>
    public ArrayView<float> GatedQueries, Scores;

    /// <summary>Written by the state pass for the output: each chunk's initial state [chunks, Hv, K, V] (key-major whatever the state layout).</summary>
    public ArrayView<float> ChunkStates;

    /// <summary>e^{G_last} per chunk and value head [chunks, Hv] (per key dim too with a per-key gate: [chunks, Hv, K]).</summary>
    public ArrayView<float> ChunkDecay;

    /// <summary>Per-key gate: the log gates summed within each chunk, laid out as G (<see cref="CompensatedGateSum"/>).</summary>
    public ArrayView<CompensatedGateSum> CumulativeGate;

    /// <summary>The <see cref="ChunkTable"/>: first token and length per chunk, first chunk per sequence.</summary>
    public ArrayView<int> ChunkStart, ChunkLength, FirstChunk;

    /// <summary>[N + 1] token offsets of the sequences (recurrent form).</summary>
    public ArrayView<int> SequenceStart;
}

/// <summary>Dynamic shared memory of the preparation kernel, in floats.</summary>
internal readonly struct PrepareTiles(DeltaRuleGpuShape s)
{
    public int A => 0;                                       // [C × (C + 1)] A, zero on and above the diagonal; tf32: W's and U's staged operands once T is built
    public int T => MatrixFloats;                            // [C × (C + 1)] T = (I + A)⁻¹; tf32: the staged operands of the scores before T is built and after W, U
    public int MatrixFloats => s.TensorCores ? Math.Max(s.Chunk * s.ChunkStride, s.ProductStageFloats) : s.Chunk * s.ChunkStride;
    public int Merge => 2 * MatrixFloats;                    // [(blocks − 1) × 16 × 16] Σ A T of one block row
    public int MergeFloats => Math.Max(1, s.Blocks - 1) * DeltaRuleGpuShape.Tile * DeltaRuleGpuShape.Tile;
    public int Gates => Merge + MergeFloats;                 // [C] in-chunk cumulative log gate (per head; zeros otherwise)
    public int GateErrors => Gates + s.Chunk;                // [C] the rounding its fp32 sum left (CompensatedGateSum)
    public int Betas => GateErrors + s.Chunk;                // [C]
    public int KeyNorms => Betas + s.Chunk;                  // [C] 1 / ‖k_j‖ (or 1)
    public int QueryNorms => KeyNorms + s.Chunk;             // [C] 1 / ‖q_i‖ (or 1) of one output head's query head
    public int Slabs => QueryNorms + s.Chunk;                // [2 or 4 × C × (slab + 1)] key-dim slabs of the rows x, the keys, and per-key gates and their roundings
    public int SlabFloats => (s.PerKey ? 4 : 2) * s.Chunk * DeltaRuleGpuShape.SlabStride;
    public int Floats => Slabs + SlabFloats;
}

/// <summary>Dynamic shared memory of the state-pass kernel, in floats.</summary>
internal readonly struct StatePassTiles(DeltaRuleGpuShape s)
{
    private const int Columns = DeltaRuleGpuShape.StateColumns;
    public int State => 0;                                   // [K × 4] the state tile
    public int NewValues => s.KeyDim * Columns;              // [C × 4] V_new of the chunk
    public int Partials => NewValues + s.Chunk * Columns;    // [key parts × 4 × C] partial (W S)ᵀ, one per key part
    public int Floats => Partials + s.KeyParts * Columns * s.Chunk;
}

/// <summary>Dynamic shared memory of the output kernel, in floats.</summary>
internal readonly struct OutputTiles(DeltaRuleGpuShape s)
{
    public int State => 0;                                   // [K × 16] the chunk's initial state, one V tile
    public int NewValues => s.KeyDim * DeltaRuleGpuShape.Tile;   // [C × 16] V_new of the chunk, the same tile
    public int Left => 0;                                    // tf32: [C × pitch] a slice of the gated queries or of the scores
    public int Right => s.Chunk * DeltaRuleGpuShape.SlicePitch;  // tf32: [slice × product stride] the start state's or V_new's rows of the slice
    public int Floats => s.TensorCores ? s.ProductStageFloats : NewValues + s.Chunk * DeltaRuleGpuShape.Tile;
}

/// <summary>Dynamic shared memory of the recurrent kernel, in floats.</summary>
internal readonly struct RecurrentTiles(DeltaRuleGpuShape s)
{
    public int State => 0;                                   // [K × 16] the state slice
    public int Row => s.KeyDim * DeltaRuleGpuShape.Tile;     // [K] k_t, then q_t of one output head
    public int Partials => Row + s.KeyDim;                   // [slices × 16] partial (diag(e^g) S)ᵀ k̂
    public int Outputs => Partials + s.Slices * DeltaRuleGpuShape.Tile;   // [slices × 16] partial outputs
    public int Floats => Outputs + s.Slices * DeltaRuleGpuShape.Tile;
}

/// <summary>
/// DeltaNet / Gated DeltaNet as ILGPU kernels, explicitly grouped with shared-memory tiles.
///
/// Chunked form, three launches (notation of <see cref="DeltaRuleCpu"/>):
///  1. Prepare, one group per (chunk, value head), all chunks in parallel: G, A in shared memory (K Kᵀ summed over
///     key-dim slabs staged in shared memory), T = (I + A)⁻¹ as four-at-most 16×16 diagonal-block inverses (row
///     recurrence, one column per thread) merged block row by block row (T_pq = −T_pp Σ_{q&lt;=m&lt;p} A_pm T_mq); then
///     W = T diag(β e^G) K, U = T diag(β) V, the decayed keys k̂ e^{G_last − G}, and per output head the inter query
///     scale e^G q̂ and the masked intra scores P = scale (Q Kᵀ ⊙ D), all written to global memory; W, the queries and
///     P chunk-transposed, so the later passes read a column over the chunk's rows with one coalesced load.
///  2. StatePass, the only sequential part: one group per (sequence, value head, 4 value columns), over the chunks in
///     order, the K × 4 state tile in shared memory: V_new = U − W S (written over U), the chunk's initial state out,
///     S ← e^{G_last} S + K_dᵀ V_new. The delta rule never mixes value columns, so tiles are independent.
///  3. Output, one group per (chunk, output head, 16 value columns), all chunks in parallel: O = Q_g S + P V_new.
/// With <see cref="GpuPrecision.Tf32"/> the chunk products of Prepare (K Kᵀ and Q Kᵀ without a per-key gate, W, U) and of Output run on
/// tensor cores (<see cref="MmaTile{TMma}"/>, operands staged in shared memory); with <see cref="GpuPrecision.Fp16"/> those of the chunk's
/// own rows (all but Output's product with the start state, which stays tf32) take fp16 operands; the inverse, the state pass and every
/// sum stay fp32.
/// A per-key gate makes G a per-key-dim cumulative sum (written to global memory by Prepare): every
/// e^{G_i − G_j} moves inside the key-dim sums and the chunk decay becomes one factor per row of S.
/// Recurrent form: one group per (sequence, value head, V tile), one token at a time.
/// Heads (<see cref="HeadLayout"/>): value head h reads key head h / ValueGroup; output head o reads value head o / Group and
/// query head o / ValueGroup. q and k are read where they lie, never copied per head.
/// Threads of the recurrent kernel: column d = thread % 16 of the tile, slice = thread / 16 over the state's rows.
/// Every exponent is a difference G_i − G_j with j &lt;= i (or G_last − G_j, or G_i, or a raw log gate), so it is &lt;= 0.
/// </summary>
public static class DeltaRuleGpuKernels
{
    private const int Tile = DeltaRuleGpuShape.Tile;
    private const int Columns = DeltaRuleGpuShape.StateColumns;

    /// <summary>Four adjacent value columns of one row, in registers (a struct of scalars; an indexed array would go to local memory).</summary>
    private struct Columns4
    {
        public float C0, C1, C2, C3;

        /// <summary>this += a · x.</summary>
        public void AddScaled(float a, Columns4 x)
        {
            C0 += a * x.C0; C1 += a * x.C1; C2 += a * x.C2; C3 += a * x.C3;
        }

        /// <summary>
        /// this += Σ_m x[at + m · xStep] · rows[(first + m · step) · rowStride + rowOffset] over the m = 0..3 with first + m · step &lt; limit.
        /// The four global loads are issued before their products, so each thread keeps four in flight (ILGPU unrolls no loop).
        /// </summary>
        public void AddProducts4(ArrayView<float> x, long at, long xStep, ArrayView<Columns4> rows, int first, int step, int limit, int rowStride, int rowOffset) =>
            AddProducts(Gathered4.Load(x, at, xStep, first, step, limit), rows, first, step, limit, rowStride, rowOffset);

        /// <summary>
        /// <see cref="AddProducts4"/> over m = 0..7: the eight global loads are issued before any product, so a thread whose loop
        /// walks a serial path waits on memory once per eight terms.
        /// </summary>
        public void AddProducts8(ArrayView<float> x, long at, long xStep, ArrayView<Columns4> rows, int first, int step, int limit, int rowStride, int rowOffset)
        {
            var x0 = Gathered4.Load(x, at, xStep, first, step, limit);
            var x1 = Gathered4.Load(x, at + 4 * xStep, xStep, first + 4 * step, step, limit);
            AddProducts(x0, rows, first, step, limit, rowStride, rowOffset);
            AddProducts(x1, rows, first + 4 * step, step, limit, rowStride, rowOffset);
        }

        private void AddProducts(Gathered4 x, ArrayView<Columns4> rows, int first, int step, int limit, int rowStride, int rowOffset)
        {
            int m1 = first + step, m2 = m1 + step, m3 = m2 + step;
            if (first < limit) AddScaled(x.X0, rows[first * rowStride + rowOffset]);
            if (m1 < limit) AddScaled(x.X1, rows[m1 * rowStride + rowOffset]);
            if (m2 < limit) AddScaled(x.X2, rows[m2 * rowStride + rowOffset]);
            if (m3 < limit) AddScaled(x.X3, rows[m3 * rowStride + rowOffset]);
        }

        /// <summary>The first <paramref name="count"/> columns to view[at], view[at + 1], …</summary>
        public readonly void Store(ArrayView<float> view, long at, int count)
        {
            view[at] = C0;
            if (count > 1) view[at + 1] = C1;
            if (count > 2) view[at + 2] = C2;
            if (count > 3) view[at + 3] = C3;
        }

        /// <summary>All four columns to view[at], view[at + stride], …</summary>
        public readonly void StoreStrided(ArrayView<float> view, long at, int stride)
        {
            view[at] = C0; view[at + stride] = C1; view[at + 2 * stride] = C2; view[at + 3 * stride] = C3;
        }
    }

    /// <summary>Four values of a global view at equal steps, those past a limit zero: loaded together, used later.</summary>
    private struct Gathered4
    {
        public float X0, X1, X2, X3;

        /// <summary>x[at + m · xStep] for m = 0..3 where first + m · step &lt; limit.</summary>
        public static Gathered4 Load(ArrayView<float> x, long at, long xStep, int first, int step, int limit)
        {
            int m1 = first + step, m2 = m1 + step, m3 = m2 + step;
            return new Gathered4
            {
                X0 = first < limit ? x[at] : 0f,
                X1 = m1 < limit ? x[at + xStep] : 0f,
                X2 = m2 < limit ? x[at + 2 * xStep] : 0f,
                X3 = m3 < limit ? x[at + 3 * xStep] : 0f,
            };
        }
    }

    /// <summary>1 / sqrt(Σ x² + eps) over the K floats of a global row at <paramref name="offset"/>, or 1 without normalization.</summary>
    private static float InverseNorm(DeltaRuleGpuShape s, ArrayView<float> x, long offset) => s.QkL2Norm ? InverseNorm(x, offset, s.KeyDim, s.L2NormEpsilon) : 1f;

    /// <summary>
    /// 1 / sqrt(Σ x² + eps) over <paramref name="count"/> floats at <paramref name="offset"/> (global or shared memory). Where Σ x²
    /// overflows fp32 (an element past about 1.8e19) it is summed again over the row divided by its largest magnitude, so the
    /// factor is small rather than 0.
    /// </summary>
    private static float InverseNorm(ArrayView<float> x, long offset, int count, float epsilon)
    {
        float sum = 0f, largest = 0f;
        for (int c = 0; c < count; c++)
        {
            float v = x[offset + c];
            sum += v * v;
            largest = XMath.Max(largest, XMath.Abs(v));
        }
        if (sum <= float.MaxValue) return 1f / XMath.Sqrt(sum + epsilon);
        float scaled = 0f;
        for (int c = 0; c < count; c++)
        {
            float v = x[offset + c] / largest;
            scaled += v * v;
        }
        return 1f / XMath.Sqrt(scaled + epsilon / largest / largest) / largest;
    }

    private static long StateAt(DeltaRuleGpuShape s, int n, int h, int c, int d) => StateIndex.Of(s.ValueMajor, s.ValueHeads, s.KeyDim, s.ValueDim, n, h, c, d);

    /// <summary>
    /// Where element (row i, column c) of head h's block of a chunk lies in a chunk-transposed buffer [T, heads, width]:
    /// from the chunk's first token cs on, head by head, each block column by column, a column len rows long. Threads
    /// along a block's rows read or write a column with one coalesced access.
    /// </summary>
    private static long ChunkTransposed(int cs, int len, int heads, int width, int h, int i, int c) =>
        ((long)cs * heads + (long)h * len) * width + (long)c * len + i;

    /// <summary>
    /// G_i − G_j of chunk rows j &lt;= i at key dim c (j = −1: the chunk start, G = 0), from the in-chunk cumulative log gate: CumulativeGate
    /// (per key) or <paramref name="gates"/> (per head, or zeros), each with the rounding its sum left (<see cref="CompensatedGateSum"/>).
    /// </summary>
    private static float LogDecay(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, ArrayView<float> gates, ArrayView<float> gateErrors, int start, int h, int i, int j, int c)
    {
        var b = s.PerKey ? args.CumulativeGate[((long)(start + i) * s.ValueHeads + h) * s.KeyDim + c] : new CompensatedGateSum(gates[i], gateErrors[i]);
        if (j < 0) return b.Value;
        var before = s.PerKey ? args.CumulativeGate[((long)(start + j) * s.ValueHeads + h) * s.KeyDim + c] : new CompensatedGateSum(gates[j], gateErrors[j]);
        return CompensatedGateSum.Difference(b, before);
    }

    /// <summary>
    /// acc[i · (C + 1) + j] += Σ_c x̂_ic k̂_jc (e^{G_ic − G_jc} inside the sum with a per-key gate) for the chunk's rows j &lt; i (j &lt;= i with
    /// <paramref name="diagonal"/>), the rows staged <see cref="DeltaRuleGpuShape.Slab"/> key dims at a time in shared memory, each
    /// loaded once: x̂_i = x_i · xNorms[i] (row i of head xHead of x, q or k), k̂_j = k_j · 1/‖k_j‖. Row i reads rows up to its own only.
    /// </summary>
    private static void DecayedProducts(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, ArrayView<float> slabs, ArrayView<float> acc,
        ArrayView<float> x, int xHeads, int xHead, ArrayView<float> xNorms, ArrayView<float> keyNorms, int cs, int len, int h, int diagonal)
    {
        const int slab = DeltaRuleGpuShape.Slab, stride = DeltaRuleGpuShape.SlabStride;
        int kd = s.KeyDim, ts = s.ChunkStride, nt = s.GroupSize, tid = Group.IdxX, kh = h / s.ValueGroup;
        var sx = slabs.SubView(0, s.Chunk * stride);
        var sk = slabs.SubView(s.Chunk * stride, s.Chunk * stride);
        // The slabs of per-key gates follow (without them, views of the first two that nothing reads).
        var sg = slabs.SubView(s.PerKey ? 2 * s.Chunk * stride : 0, s.Chunk * stride);
        var sgError = slabs.SubView(s.PerKey ? 3 * s.Chunk * stride : 0, s.Chunk * stride);
        for (int c0 = 0; c0 < kd; c0 += slab)
        {
            for (int e = tid; e < len * slab; e += nt)
            {
                int j = e / slab, cl = e % slab, c = c0 + cl;
                bool inside = c < kd;
                sx[j * stride + cl] = inside ? x[((long)(cs + j) * xHeads + xHead) * kd + c] * xNorms[j] : 0f;
                sk[j * stride + cl] = inside ? args.K[((long)(cs + j) * s.KeyHeads + kh) * kd + c] * keyNorms[j] : 0f;
                if (s.PerKey)
                {
                    var b = inside ? args.CumulativeGate[((long)(cs + j) * s.ValueHeads + h) * kd + c] : default;
                    sg[j * stride + cl] = b.High;
                    sgError[j * stride + cl] = b.Low;
                }
            }
            Group.Barrier();
            for (int e = tid; e < len * len; e += nt)
            {
                int i = e / len, j = e % len;
                if (j >= i + diagonal) continue;
                float dot = 0f;
                for (int cl = 0; cl < slab; cl++)
                {
                    float product = sx[i * stride + cl] * sk[j * stride + cl];
                    dot += s.PerKey
                        ? product * XMath.Exp(CompensatedGateSum.Difference(new(sg[i * stride + cl], sgError[i * stride + cl]), new(sg[j * stride + cl], sgError[j * stride + cl])))
                        : product;
                }
                acc[i * ts + j] += dot;
            }
            Group.Barrier();
        }
    }

    /// <summary>
    /// acc[i · (C + 1) + j] = Σ_c x̂_ic k̂_jc for every pair of the chunk's rows i, j &lt; len on tensor cores (the caller keeps the causal
    /// part; entry (i, j) reads rows i and j only), x̂_i = x_i · xNorms[i] (row i of head xHead of x, q or k), k̂_j = k_j · keyNorms[j]:
    /// a column tile of the product at a time, slices of <see cref="DeltaRuleGpuShape.Slice"/> key dims of the rows and of the keys
    /// (transposed) staged in <paramref name="stage"/>. No gate per key dim: its decay lies inside the sum.
    /// </summary>
    private static void ScoresOnTensorCores<TMma>(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, ArrayView<float> stage, ArrayView<float> acc,
        ArrayView<float> x, int xHeads, int xHead, ArrayView<float> xNorms, ArrayView<float> keyNorms, int cs, int len, int h) where TMma : struct, IWarpMma
    {
        const int slice = DeltaRuleGpuShape.Slice, pitch = DeltaRuleGpuShape.SlicePitch;
        int kd = s.KeyDim, cc = s.Chunk, nt = s.GroupSize, tid = Group.IdxX, kh = h / s.ValueGroup, cols = s.ProductCols, stride = s.ProductStride;
        var left = stage.SubView(0, cc * pitch);
        var right = stage.SubView(cc * pitch, slice * stride);
        var layout = new TileLayout(cc, cols, tid);
        for (int j0 = 0; j0 < len; j0 += cols)
        {
            var product = default(MmaTile<TMma>);
            for (int c0 = 0; c0 < kd; c0 += slice)
            {
                int depth = Math.Min(slice, kd - c0);
                for (int e = tid; e < cc * slice; e += nt)
                {
                    int i = e / slice, u = e % slice;
                    left[i * pitch + u] = i < len && u < depth ? x[((long)(cs + i) * xHeads + xHead) * kd + c0 + u] * xNorms[i] : 0f;
                }
                for (int e = tid; e < cols * slice; e += nt)
                {
                    int j = j0 + e / slice, u = e % slice;
                    right[u * stride + e / slice] = j < len && u < depth ? args.K[((long)(cs + j) * s.KeyHeads + kh) * kd + c0 + u] * keyNorms[j] : 0f;
                }
                Group.Barrier();
                product.Accumulate(left, pitch, right, stride, depth, layout);
                Group.Barrier();
            }
            product.Store(acc, j0, s.ChunkStride, len, len - j0, layout);
        }
        Group.Barrier();
    }

    /// <summary>W = T diag(β) (K̂ ⊙ e^G) and U = T diag(β) V in fp32, threads along W's rows, which it stores transposed.</summary>
    private static void WAndU(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, ArrayView<float> sT, ArrayView<float> sG, ArrayView<float> sGError, ArrayView<float> sBeta,
        ArrayView<float> sRk, int cs, int len, int h)
    {
        int ts = s.ChunkStride, kd = s.KeyDim, vd = s.ValueDim, hk = s.KeyHeads, hv = s.ValueHeads, kh = h / s.ValueGroup, nt = s.GroupSize, tid = Group.IdxX;
        for (int e = tid; e < len * kd; e += nt)
        {
            int i = e % len, c = e / len;
            float sum = 0f;
            for (int j = 0; j <= i; j++)
                sum += sT[i * ts + j] * sBeta[j] * XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, j, -1, c)) * sRk[j] * args.K[((long)(cs + j) * hk + kh) * kd + c];
            args.W[ChunkTransposed(cs, len, hv, kd, h, i, c)] = sum;
        }
        for (int e = tid; e < len * vd; e += nt)
        {
            int i = e / vd, d = e % vd;
            float sum = 0f;
            for (int j = 0; j <= i; j++) sum += sT[i * ts + j] * sBeta[j] * args.V[((long)(cs + j) * hv + h) * vd + d];
            args.U[((long)(cs + i) * hv + h) * vd + d] = sum;
        }
    }

    /// <summary>
    /// <see cref="WAndU"/> on tensor cores: a column tile of diag(β) (K̂ ⊙ e^G) or of diag(β) V at a time staged in <paramref name="stage"/>
    /// (rows from len on zero), multiplied by T with row i reading rows j &lt;= i only (<see cref="MmaTile{TMma}.AccumulateCausal"/>: T above its
    /// diagonal is never read, and a later token's row never reaches an earlier one, not even times zero). W goes through the stage to
    /// be stored transposed.
    /// </summary>
    private static void WAndUOnTensorCores<TMma>(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, ArrayView<float> sT, ArrayView<float> stage, ArrayView<float> sG,
        ArrayView<float> sGError, ArrayView<float> sBeta, ArrayView<float> sRk, int cs, int len, int h) where TMma : struct, IWarpMma
    {
        int ts = s.ChunkStride, kd = s.KeyDim, vd = s.ValueDim, hk = s.KeyHeads, hv = s.ValueHeads, kh = h / s.ValueGroup, cc = s.Chunk, nt = s.GroupSize;
        int tid = Group.IdxX, cols = s.ProductCols, stride = s.ProductStride;
        var layout = new TileLayout(cc, cols, tid);
        for (int c0 = 0; c0 < kd; c0 += cols)
        {
            for (int e = tid; e < cc * cols; e += nt)
            {
                int j = e / cols, c = c0 + e % cols;
                stage[j * stride + e % cols] = j < len && c < kd
                    ? sBeta[j] * XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, j, -1, c)) * sRk[j] * args.K[((long)(cs + j) * hk + kh) * kd + c]
                    : 0f;
            }
            var w = TimesT<TMma>(sT, ts, stage, stride, len, layout);
            w.Store(stage, 0, stride, len, cols, layout);
            Group.Barrier();
            for (int e = tid; e < len * cols; e += nt)
            {
                int i = e % len, c = c0 + e / len;
                if (c < kd) args.W[ChunkTransposed(cs, len, hv, kd, h, i, c)] = stage[i * stride + e / len];
            }
            Group.Barrier();
        }
        for (int d0 = 0; d0 < vd; d0 += cols)
        {
            for (int e = tid; e < cc * cols; e += nt)
            {
                int j = e / cols, d = d0 + e % cols;
                stage[j * stride + e % cols] = j < len && d < vd ? sBeta[j] * args.V[((long)(cs + j) * hv + h) * vd + d] : 0f;
            }
            var u = TimesT<TMma>(sT, ts, stage, stride, len, layout);
            u.Store(args.U, ((long)cs * hv + h) * vd + d0, hv * vd, len, vd - d0, layout);
        }
    }

    /// <summary>T times the staged chunk rows on tensor cores, row i reading rows j &lt;= i only; barriers before (the stage is written) and after (it is read).</summary>
    private static MmaTile<TMma> TimesT<TMma>(ArrayView<float> sT, int ts, ArrayView<float> stage, int stride, int len, TileLayout layout) where TMma : struct, IWarpMma
    {
        Group.Barrier();
        var product = default(MmaTile<TMma>);
        product.AccumulateCausal(sT, ts, stage, stride, len, layout, 0);
        Group.Barrier();
        return product;
    }

    /// <summary>Grid (chunks, Hv): T = (I + A)⁻¹ of the chunk, then W, U, the decayed keys, the chunk decay and per output head the gated queries and scores.</summary>
    public static void Prepare(DeltaRuleGpuArgs args, SpecializedValue<DeltaRuleGpuShape> shape)
    {
        var s = shape.Value;
        if (s.Precision == GpuPrecision.Fp16) Prepare<F16Mma>(args, s);
        else Prepare<Tf32Mma>(args, s);
    }

    /// <summary>The preparation with its tensor-core products (if the precision has them) on <typeparamref name="TMma"/>.</summary>
    private static void Prepare<TMma>(DeltaRuleGpuArgs args, DeltaRuleGpuShape s) where TMma : struct, IWarpMma
    {
        var tiles = new PrepareTiles(s);
        int cc = s.Chunk, ts = s.ChunkStride, kd = s.KeyDim, vd = s.ValueDim, hk = s.KeyHeads, hv = s.ValueHeads, ho = s.OutputHeads, nt = s.GroupSize;
        var shared = SharedMemory.GetDynamic<float>();
        var sA = shared.SubView(tiles.A, tiles.MatrixFloats);
        var sT = shared.SubView(tiles.T, tiles.MatrixFloats);
        var sX = shared.SubView(tiles.Merge, tiles.MergeFloats);
        var sG = shared.SubView(tiles.Gates, cc);
        var sGError = shared.SubView(tiles.GateErrors, cc);
        var sBeta = shared.SubView(tiles.Betas, cc);
        var sRk = shared.SubView(tiles.KeyNorms, cc);
        var sRq = shared.SubView(tiles.QueryNorms, cc);
        var sSlabs = shared.SubView(tiles.Slabs, tiles.SlabFloats);

        int tid = Group.IdxX, chunk = Grid.IdxX, h = Grid.IdxY, kh = h / s.ValueGroup;
        int cs = args.ChunkStart[chunk], len = args.ChunkLength[chunk];

        if (tid == 0)
        {
            var sum = default(CompensatedGateSum);
            for (int i = 0; i < len; i++)
            {
                if (s.PerHead) sum.Add(LogGates.Summand(args.G[(long)(cs + i) * hv + h]));
                sG[i] = sum.High;
                sGError[i] = sum.Low;
                sBeta[i] = args.Beta[(long)(cs + i) * hv + h];
            }
        }
        if (s.PerKey)
        {
            for (int c = tid; c < kd; c += nt)
            {
                var sum = default(CompensatedGateSum);
                for (int i = 0; i < len; i++)
                {
                    long at = ((long)(cs + i) * hv + h) * kd + c;
                    sum.Add(LogGates.Summand(args.G[at]));
                    args.CumulativeGate[at] = sum;
                }
            }
        }
        for (int i = tid; i < len; i += nt) sRk[i] = InverseNorm(s, args.K, ((long)(cs + i) * hk + kh) * kd);
        Group.Barrier();

        // A_ij = β_i Σ_c k̂_ic k̂_jc e^{G_ic − G_jc} below the diagonal, zero elsewhere (a per-head decay applied after the sum).
        for (int e = tid; e < cc * ts; e += nt) sA[e] = 0f;
        Group.Barrier();
        if (s.TensorCores && !s.PerKey) ScoresOnTensorCores<TMma>(args, s, sT, sA, args.K, hk, kh, sRk, sRk, cs, len, h);
        else DecayedProducts(args, s, sSlabs, sA, args.K, hk, kh, sRk, sRk, cs, len, h, 0);
        for (int e = tid; e < len * len; e += nt)
        {
            int i = e / len, j = e % len;
            // Selected: the tensor-core product fills every pair, the strict lower part is A.
            sA[i * ts + j] = j < i ? sA[i * ts + j] * sBeta[i] * (s.PerKey ? 1f : XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, i, j, 0))) : 0f;
        }
        // The decayed keys k̂_j ⊙ e^{G_last − G_j}.
        for (int e = tid; e < len * kd; e += nt)
        {
            int j = e / kd, c = e % kd;
            args.DecayedKeys[((long)(cs + j) * hv + h) * kd + c] = args.K[((long)(cs + j) * hk + kh) * kd + c] * sRk[j] * XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, len - 1, j, c));
        }
        Group.Barrier();

        // Diagonal 16×16 blocks of T = (I + A)⁻¹: one column per thread, down the rows.
        int blocks = (len + Tile - 1) / Tile;
        for (int e = tid; e < blocks * Tile; e += nt)
        {
            int b0 = e / Tile * Tile, col = b0 + e % Tile;
            for (int r = b0; r < b0 + Tile; r++)
            {
                float value = r == col ? 1f : 0f;
                if (r > col)
                    for (int m = col; m < r; m++) value -= sA[r * ts + m] * sT[m * ts + col];
                sT[r * ts + col] = value;
            }
        }
        Group.Barrier();

        // Merge: T_pq = −T_pp Σ_{q<=m<p} A_pm T_mq, block row p after block row p − 1.
        for (int p = 1; p < blocks; p++)
        {
            for (int e = tid; e < p * Tile * Tile; e += nt)
            {
                int qb = e / (Tile * Tile), r = p * Tile + e / Tile % Tile, col = qb * Tile + e % Tile;
                float sum = 0f;
                for (int m = qb * Tile; m < p * Tile; m++) sum += sA[r * ts + m] * sT[m * ts + col];
                sX[e] = sum;
            }
            Group.Barrier();
            for (int e = tid; e < p * Tile * Tile; e += nt)
            {
                int qb = e / (Tile * Tile), rl = e / Tile % Tile, cl = e % Tile;
                int r = p * Tile + rl;
                float sum = 0f;
                // T is lower triangular: row r reads rows up to itself only, so a later token's fault stays there.
                for (int l = 0; l <= rl; l++) sum += sT[r * ts + p * Tile + l] * sX[qb * Tile * Tile + l * Tile + cl];
                sT[r * ts + qb * Tile + cl] = -sum;
            }
            Group.Barrier();
        }

        // W = T diag(β) (K̂ ⊙ e^G) and U = T diag(β) V (T is lower triangular); threads along W's rows, which it stores transposed.
        if (s.TensorCores) WAndUOnTensorCores<TMma>(args, s, sT, sA, sG, sGError, sBeta, sRk, cs, len, h);
        else WAndU(args, s, sT, sG, sGError, sBeta, sRk, cs, len, h);
        if (s.PerKey)
        {
            for (int c = tid; c < kd; c += nt) args.ChunkDecay[((long)chunk * hv + h) * kd + c] = XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, len - 1, -1, c));
        }
        else if (tid == 0)
        {
            args.ChunkDecay[(long)chunk * hv + h] = XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, len - 1, -1, 0));
        }

        // Per output head: Q_g = scale q̂ ⊙ e^G and P_ij = scale Σ_c q̂_ic k̂_jc e^{G_ic − G_jc} for j <= i, summed in A's tile (T is built).
        for (int o = h * s.Group; o < (h + 1) * s.Group; o++)
        {
            int qh = o / s.ValueGroup;
            for (int i = tid; i < len; i += nt) sRq[i] = s.Scale * InverseNorm(s, args.Q, ((long)(cs + i) * s.QHeads + qh) * kd);
            for (int e = tid; e < cc * ts; e += nt) sA[e] = 0f;
            Group.Barrier();
            for (int e = tid; e < len * kd; e += nt)
            {
                int i = e % len, c = e / len;
                args.GatedQueries[ChunkTransposed(cs, len, ho, kd, o, i, c)] =
                    XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, i, -1, c)) * sRq[i] * args.Q[((long)(cs + i) * s.QHeads + qh) * kd + c];
            }
            if (s.TensorCores && !s.PerKey) ScoresOnTensorCores<TMma>(args, s, sT, sA, args.Q, s.QHeads, qh, sRq, sRk, cs, len, h);
            else DecayedProducts(args, s, sSlabs, sA, args.Q, s.QHeads, qh, sRq, sRk, cs, len, h, 1);
            for (int e = tid; e < len * len; e += nt)
            {
                int i = e % len, j = e / len;
                if (j <= i) args.Scores[ChunkTransposed(cs, len, ho, cc, o, i, j)] = sA[i * ts + j] * (s.PerKey ? 1f : XMath.Exp(LogDecay(args, s, sG, sGError, cs, h, i, j, 0)));
            }
            Group.Barrier();
        }
    }

    /// <summary>
    /// Grid (N, Hv, V tiles of 4 columns): the chunks of a sequence in order, the K × 4 state tile in shared memory. Per chunk:
    /// V_new = U − W S (written over U), the chunk's initial state out for <see cref="Output"/>, S ← diag(e^{G_last}) S + K_dᵀ V_new.
    /// Every global read is a coalesced row: a column of the transposed W over the chunk's rows, a row of K_d over the key dims.
    /// </summary>
    public static void StatePass(DeltaRuleGpuArgs args, SpecializedValue<DeltaRuleGpuShape> shape)
    {
        var s = shape.Value;
        var tiles = new StatePassTiles(s);
        int hv = s.ValueHeads, kd = s.KeyDim, vd = s.ValueDim, cc = s.Chunk, nt = s.GroupSize, parts = s.KeyParts;
        var shared = SharedMemory.GetDynamic<float>();
        var sS = shared.SubView(tiles.State, kd * Columns);
        var sV = shared.SubView(tiles.NewValues, cc * Columns);
        // The state and V_new rows as 16-byte quads: one vector load each (every tile begins at a multiple of 4 floats).
        var sS4 = sS.AsAligned(16).Cast<Columns4>();
        var sV4 = sV.AsAligned(16).Cast<Columns4>();
        var sPartial = shared.SubView(tiles.Partials, parts * Columns * cc);

        int tid = Group.IdxX, n = Grid.IdxX, h = Grid.IdxY, col0 = Grid.IdxZ * Columns;
        int columns = Math.Min(Columns, vd - col0);

        for (int e = tid; e < kd * Columns; e += nt)
        {
            int c = e / Columns, d = e % Columns;
            sS[e] = d < columns ? args.State[StateAt(s, n, h, c, col0 + d)] : 0f;
        }
        Group.Barrier();

        // The serial path waits on global memory once per eight terms of a thread's sums (at K = 128, C = 32: four rounds for
        // W S, four for the state update); the next chunk's place in the table, the thread's first U element and the chunk
        // decay are asked for beside them, not in rounds of their own.
        int chunk = args.FirstChunk[n], end = args.FirstChunk[n + 1];
        int cs = chunk < end ? args.ChunkStart[chunk] : 0, len = chunk < end ? args.ChunkLength[chunk] : 0;
        for (; chunk < end; chunk++)
        {
            int next = chunk + 1 < end ? chunk + 1 : chunk;
            int nextStart = args.ChunkStart[next], nextLength = args.ChunkLength[next];
            if (CudaAsm.IsSupported && next != chunk) PrefetchChunk(args, s, nextStart, nextLength, h, tid);
            // U of this thread's first V_new element (on CUDA, C · 4 <= group size: its only one), loaded beside the W values.
            int firstRow = tid / Columns, firstColumn = tid % Columns;
            float firstU = tid < len * Columns && firstColumn < columns ? args.U[((long)(cs + firstRow) * hv + h) * vd + col0 + firstColumn] : 0f;
            // W S: thread (row i, key part p) sums the key dims p, p + parts, …; the parts meet in shared memory.
            for (int e = tid; e < cc * parts; e += nt)
            {
                int i = e % cc, p = e / cc;
                if (i >= len) continue;
                var sum = new Columns4();
                for (int c = p; c < kd; c += 8 * parts) sum.AddProducts8(args.W, ChunkTransposed(cs, len, hv, kd, h, i, c), (long)parts * len, sS4, c, parts, kd, 1, 0);
                sum.StoreStrided(sPartial, p * Columns * cc + i, cc);
            }
            Group.Barrier();
            // V_new = U − W S, kept for the state update and written over U for the output.
            for (int e = tid; e < len * Columns; e += nt)
            {
                int i = e / Columns, d = e % Columns;
                float product = 0f;
                for (int p = 0; p < parts; p++) product += sPartial[(p * Columns + d) * cc + i];
                long at = ((long)(cs + i) * hv + h) * vd + col0 + d;
                float value = (e == tid ? firstU : d < columns ? args.U[at] : 0f) - product;
                sV[e] = value;
                if (d < columns) args.U[at] = value;
            }
            Group.Barrier();
            // The chunk's initial state out, then S ← diag(e^{G_last}) S + K_dᵀ V_new: thread c owns state row c. The decay is
            // applied after the products, so its load is in flight with theirs.
            for (int c = tid; c < kd; c += nt)
            {
                var row = sS4[c];
                row.Store(args.ChunkStates, (((long)chunk * hv + h) * kd + c) * vd + col0, columns);
                float decay = s.PerKey ? args.ChunkDecay[((long)chunk * hv + h) * kd + c] : args.ChunkDecay[(long)chunk * hv + h];
                var update = new Columns4();
                for (int j = 0; j < len; j += 8) update.AddProducts8(args.DecayedKeys, ((long)(cs + j) * hv + h) * kd + c, (long)hv * kd, sV4, j, 1, len, 1, 0);
                update.AddScaled(decay, row);
                sS4[c] = update;
            }
            Group.Barrier();
            cs = nextStart;
            len = nextLength;
        }

        for (int e = tid; e < kd * columns; e += nt)
        {
            int c = e / columns, d = e % columns;
            args.State[StateAt(s, n, h, c, col0 + d)] = sS[c * Columns + d];
        }
    }

    /// <summary>
    /// Asks L1 for what the state pass reads of a chunk of head h: W's block (len · K floats in a row) and the decayed keys' rows
    /// (K floats each), 32 floats a line. Issued a chunk ahead, so that chunk's rounds of loads find their lines in L1 instead of
    /// waiting on L2 or memory.
    /// </summary>
    private static void PrefetchChunk(DeltaRuleGpuArgs args, DeltaRuleGpuShape s, int start, int len, int h, int tid)
    {
        const int lineFloats = 32;
        int kd = s.KeyDim, hv = s.ValueHeads, rowLines = (kd + lineFloats - 1) / lineFloats;
        long block = ChunkTransposed(start, len, hv, kd, h, 0, 0);
        for (int line = tid; line * lineFloats < len * kd; line += s.GroupSize) args.WAddress.PrefetchL1(block + line * lineFloats);
        for (int e = tid; e < len * rowLines; e += s.GroupSize)
            args.DecayedKeysAddress.PrefetchL1(((long)(start + e / rowLines) * hv + h) * kd + e % rowLines * lineFloats);
    }

    /// <summary>
    /// Grid (chunks, max(Hq, Hv), V tiles of 16 columns), every chunk in parallel after the state pass: O = Q_g S + P V_new from the
    /// chunk's initial state and V_new. Thread (row i, 4 columns of the tile) reads a column of the transposed Q_g and P, coalesced.
    /// </summary>
    public static void Output(DeltaRuleGpuArgs args, SpecializedValue<DeltaRuleGpuShape> shape)
    {
        var s = shape.Value;
        if (s.Precision == GpuPrecision.Fp16) OutputOnTensorCores<F16Mma>(args, s);
        else if (s.Precision == GpuPrecision.Tf32) OutputOnTensorCores<Tf32Mma>(args, s);
        else OutputOnCudaCores(args, s);
    }

    private static void OutputOnCudaCores(DeltaRuleGpuArgs args, DeltaRuleGpuShape s)
    {
        var tiles = new OutputTiles(s);
        int hv = s.ValueHeads, ho = s.OutputHeads, kd = s.KeyDim, vd = s.ValueDim, cc = s.Chunk, nt = s.GroupSize;
        var shared = SharedMemory.GetDynamic<float>();
        var sS = shared.SubView(tiles.State, kd * Tile);
        var sV = shared.SubView(tiles.NewValues, cc * Tile);
        const int quads = Tile / Columns;
        var sS4 = sS.AsAligned(16).Cast<Columns4>();
        var sV4 = sV.AsAligned(16).Cast<Columns4>();

        int tid = Group.IdxX, chunk = Grid.IdxX, o = Grid.IdxY, h = o / s.Group, col0 = Grid.IdxZ * Tile;
        int cs = args.ChunkStart[chunk], len = args.ChunkLength[chunk];

        for (int e = tid; e < kd * Tile; e += nt)
        {
            int c = e / Tile, col = col0 + e % Tile;
            sS[e] = col < vd ? args.ChunkStates[(((long)chunk * hv + h) * kd + c) * vd + col] : 0f;
        }
        for (int e = tid; e < len * Tile; e += nt)
        {
            int j = e / Tile, col = col0 + e % Tile;
            sV[e] = col < vd ? args.U[((long)(cs + j) * hv + h) * vd + col] : 0f;
        }
        Group.Barrier();

        for (int e = tid; e < cc * quads; e += nt)
        {
            int i = e % cc, quad = e / cc, col = col0 + quad * Columns;
            if (i >= len || col >= vd) continue;
            var sum = new Columns4();
            for (int c = 0; c < kd; c += 4) sum.AddProducts4(args.GatedQueries, ChunkTransposed(cs, len, ho, kd, o, i, c), len, sS4, c, 1, kd, quads, quad);
            // Row i reads the keys up to its own only: a later token's row is never multiplied, not even by zero.
            for (int j = 0; j <= i; j += 4) sum.AddProducts4(args.Scores, ChunkTransposed(cs, len, ho, cc, o, i, j), len, sV4, j, 1, i + 1, quads, quad);
            sum.Store(args.Output, ((long)(cs + i) * ho + o) * vd + col, Math.Min(Columns, vd - col));
        }
    }

    /// <summary>
    /// <see cref="Output"/> on tensor cores, a tile of <see cref="DeltaRuleGpuShape.ProductCols"/> value columns per group: Q_g S a slice of
    /// key dims at a time in tf32, then P V_new a slice of tokens at a time on <typeparamref name="TMma"/>, both operands staged in shared memory;
    /// row i reads the rows of V_new up to its own only (<see cref="MmaTile{TMma}.AccumulateCausal"/>), the scores above the diagonal are never read.
    /// </summary>
    private static void OutputOnTensorCores<TMma>(DeltaRuleGpuArgs args, DeltaRuleGpuShape s) where TMma : struct, IWarpMma
    {
        const int slice = DeltaRuleGpuShape.Slice, pitch = DeltaRuleGpuShape.SlicePitch;
        var tiles = new OutputTiles(s);
        int hv = s.ValueHeads, ho = s.OutputHeads, kd = s.KeyDim, vd = s.ValueDim, cc = s.Chunk, nt = s.GroupSize, cols = s.ProductCols, stride = s.ProductStride;
        var shared = SharedMemory.GetDynamic<float>();
        var left = shared.SubView(tiles.Left, cc * pitch);
        var right = shared.SubView(tiles.Right, slice * stride);
        int tid = Group.IdxX, chunk = Grid.IdxX, o = Grid.IdxY, h = o / s.Group, d0 = Grid.IdxZ * cols;
        int cs = args.ChunkStart[chunk], len = args.ChunkLength[chunk];
        var layout = new TileLayout(cc, cols, tid);
        var inter = default(MmaTile<Tf32Mma>);

        long stateBase = ((long)chunk * hv + h) * kd * vd;
        for (int c0 = 0; c0 < kd; c0 += slice)
        {
            int depth = Math.Min(slice, kd - c0);
            // Threads along the chunk's rows: a column of the transposed Q_g in one coalesced load.
            for (int e = tid; e < cc * slice; e += nt)
            {
                int i = e % cc, u = e / cc;
                left[i * pitch + u] = i < len && u < depth ? args.GatedQueries[ChunkTransposed(cs, len, ho, kd, o, i, c0 + u)] : 0f;
            }
            for (int e = tid; e < slice * cols; e += nt)
            {
                int u = e / cols, d = d0 + e % cols;
                right[u * stride + e % cols] = u < depth && d < vd ? args.ChunkStates[stateBase + (long)(c0 + u) * vd + d] : 0f;
            }
            Group.Barrier();
            inter.Accumulate(left, pitch, right, stride, depth, layout);
            Group.Barrier();
        }
        // The chunk's own product goes on from the same accumulators on its own instruction.
        var output = inter.SummedOnWith<TMma>();
        for (int j0 = 0; j0 < len; j0 += slice)
        {
            int depth = Math.Min(slice, len - j0);
            for (int e = tid; e < cc * slice; e += nt)
            {
                int i = e % cc, j = j0 + e / cc;
                left[i * pitch + e / cc] = i < len && j <= i ? args.Scores[ChunkTransposed(cs, len, ho, cc, o, i, j)] : 0f;
            }
            for (int e = tid; e < slice * cols; e += nt)
            {
                int u = e / cols, d = d0 + e % cols;
                right[u * stride + e % cols] = u < depth && d < vd ? args.U[((long)(cs + j0 + u) * hv + h) * vd + d] : 0f;
            }
            Group.Barrier();
            output.AccumulateCausal(left, pitch, right, stride, depth, layout, -j0);
            Group.Barrier();
        }
        output.Store(args.Output, ((long)cs * ho + o) * vd + d0, ho * vd, len, vd - d0, layout);
    }

    /// <summary>Grid (N, Hv, V tiles): the recurrence token by token, the state slice in shared memory.</summary>
    public static void Recurrent(DeltaRuleGpuArgs args, SpecializedValue<DeltaRuleGpuShape> shape)
    {
        var s = shape.Value;
        var tiles = new RecurrentTiles(s);
        int hv = s.ValueHeads, kd = s.KeyDim, vd = s.ValueDim, nt = s.GroupSize, slices = s.Slices;
        var shared = SharedMemory.GetDynamic<float>();
        var sS = shared.SubView(tiles.State, kd * Tile);
        var sRow = shared.SubView(tiles.Row, kd);
        var sPartial = shared.SubView(tiles.Partials, slices * Tile);
        var sOut = shared.SubView(tiles.Outputs, slices * Tile);

        int tid = Group.IdxX, d = tid % Tile, slice = tid / Tile;
        int n = Grid.IdxX, h = Grid.IdxY, col = Grid.IdxZ * Tile + d;
        bool valid = col < vd;

        for (int c = slice; c < kd; c += slices) sS[c * Tile + d] = valid ? args.State[StateAt(s, n, h, c, col)] : 0f;

        for (int t = args.SequenceStart[n]; t < args.SequenceStart[n + 1]; t++)
        {
            long row = (long)t * hv + h, keyRow = (long)t * s.KeyHeads + h / s.ValueGroup;
            for (int c = tid; c < kd; c += nt) sRow[c] = args.K[keyRow * kd + c];
            Group.Barrier();
            float rk = s.QkL2Norm ? InverseNorm(sRow, 0, kd, s.L2NormEpsilon) : 1f;
            // (diag(e^g) S)ᵀ k̂ from the old state, reduced over the slices (a per-head decay is applied after). Each element
            // of k̂ is normalized before the product: a row past 1e19 would overflow the product of the raw row.
            float partial = 0f;
            for (int c = slice; c < kd; c += slices)
            {
                float key = sRow[c] * rk;
                float gate = s.PerKey ? args.G[row * kd + c] : 0f;
                partial += sS[c * Tile + d] * (s.PerKey ? key + SimdMath.DecayNear(gate) * key + SimdMath.DecayFar(gate) * key : key);
            }
            sPartial[slice * Tile + d] = partial;
            Group.Barrier();
            float predicted = 0f;
            for (int r = 0; r < slices; r++) predicted += sPartial[r * Tile + d];
            // Decays as S + near S + far S (SimdMath.DecayParts): e^g near 1 rounded to fp32 would drift the state at every
            // token, and e^g − 1 alone would drop a state decayed below 3e-8.
            float headGate = s.PerHead ? args.G[row] : 0f, near = SimdMath.DecayNear(headGate), far = SimdMath.DecayFar(headGate);
            float u = args.Beta[row] * ((valid ? args.V[row * vd + col] : 0f) - (predicted + near * predicted + far * predicted));
            for (int c = slice; c < kd; c += slices)
            {
                float gate = s.PerKey ? args.G[row * kd + c] : 0f;
                float rowNear = s.PerKey ? SimdMath.DecayNear(gate) : near, rowFar = s.PerKey ? SimdMath.DecayFar(gate) : far;
                float old = sS[c * Tile + d], write = rk * sRow[c] * u;
                // The near part joins the token's write before the state: S + near S rounded on its own drops a decay
                // within half an ulp of 1 at every token.
                sS[c * Tile + d] = rowNear == -1f ? rowFar * old + write : old + (rowNear * old + write);
            }
            Group.Barrier();

            for (int o = h * s.Group; o < (h + 1) * s.Group; o++)
            {
                long qrow = (long)t * s.QHeads + o / s.ValueGroup;
                for (int c = tid; c < kd; c += nt) sRow[c] = args.Q[qrow * kd + c];
                Group.Barrier();
                float rq = s.QkL2Norm ? s.Scale * InverseNorm(sRow, 0, kd, s.L2NormEpsilon) : s.Scale;
                float read = 0f;
                for (int c = slice; c < kd; c += slices) read += sRow[c] * rq * sS[c * Tile + d];
                sOut[slice * Tile + d] = read;
                Group.Barrier();
                if (slice == 0 && valid)
                {
                    float sum = 0f;
                    for (int r = 0; r < slices; r++) sum += sOut[r * Tile + d];
                    args.Output[((long)t * s.OutputHeads + o) * vd + col] = sum;
                }
                Group.Barrier();
            }
        }

        if (valid)
            for (int c = slice; c < kd; c += slices) args.State[StateAt(s, n, h, c, col)] = sS[c * Tile + d];
    }
}

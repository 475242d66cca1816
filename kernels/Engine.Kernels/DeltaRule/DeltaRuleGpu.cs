using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// DeltaNet / Gated DeltaNet as ILGPU kernels, explicitly grouped with shared-memory tiles, launched with
/// <see cref="GpuRuntime.GroupSize"/> threads per group (a multiple of 16, at most 256).
///
/// Chunked form, two launches (notation of <see cref="DeltaRuleCpu"/>):
///  1. Preparation, one group per (chunk, key/value head), all chunks in parallel: G, A in shared memory,
///     T = (I + A)⁻¹ as four-at-most 16×16 diagonal-block inverses (row recurrence, one column per thread)
///     merged block row by block row (T_pq = −T_pp Σ_{q<=m<p} A_pm T_mq); then W = T diag(β e^G) K,
///     U = T diag(β) V, the decayed keys k̂ e^{G_last − G}, and per query head the inter query
///     scale e^G q̂ and the masked intra scores P = scale (Q Kᵀ ⊙ D), all written to global memory.
///  2. State pass, one group per (sequence, key/value head, 16-column tile of V), sequential over the
///     chunks: the K × 16 state slice stays in shared memory; V_new = U − W S, O = Q_g S + P V_new,
///     S ← e^{G_last} S + K_dᵀ V_new. The delta rule never mixes value columns, so tiles are independent.
/// A per-key gate makes G a per-key-dim cumulative sum (written to global memory by the preparation): every
/// e^{G_i − G_j} moves inside the key-dim sums and the chunk decay becomes one factor per row of S.
/// Recurrent form: one group per (sequence, key/value head, V tile), one token at a time.
/// Threads of a group: column d = thread % 16 of the tile, slice s = thread / 16 over rows.
/// </summary>
public sealed class DeltaRuleGpu : IDisposable
{
    private const int Tile = 16;
    private const int MaxChunk = 64;
    private const int MaxSlices = 16;
    private const int StateSlice = DeltaRuleConfig.MaxKeyDim * Tile;
    private const int GateNone = 0, GatePerHead = 1, GatePerKey = 2;

    private readonly GpuBuffers _buffers;
    private readonly ChunkTable _chunks = new();

    public DeltaRuleGpu(DeltaRuleConfig config, GpuRuntime runtime)
    {
        if (runtime.GroupSize % Tile != 0 || runtime.GroupSize > Tile * MaxSlices)
            throw new ArgumentException($"the delta-rule kernels need a group size that is a multiple of {Tile} up to {Tile * MaxSlices}, got {runtime.GroupSize}", nameof(runtime));
        Config = config;
        Runtime = runtime;
        _buffers = new GpuBuffers(runtime.Accelerator);
    }

    public DeltaRuleConfig Config { get; }
    public GpuRuntime Runtime { get; }

    public void Dispose() => _buffers.Dispose();

    /// <summary>Runs the chunked (prefill) or recurrent (decode) form. state: [N, Hkv, K, V] on the device, initial on entry, final on return.</summary>
    public void Run(bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, ArrayView<float> state)
    {
        if (sequences.TotalTokens == 0) return;
        var heads = Config.Heads;
        long tokens = sequences.TotalTokens;
        int tiles = (heads.ValueDim + Tile - 1) / Tile;
        lock (Runtime.Lock)
        {
            var args = new Args
            {
                Q = _buffers.Upload("q", q),
                K = _buffers.Upload("k", k),
                V = _buffers.Upload("v", v),
                Beta = _buffers.Upload("beta", beta),
                G = _buffers.Upload("g", g),
                O = _buffers.Get<float>("o", output.Length),
                State = state,
                QHeads = heads.QHeads,
                KvHeads = heads.KvHeads,
                KeyDim = heads.KeyDim,
                ValueDim = heads.ValueDim,
                Chunk = Config.ChunkSize,
                Gate = Config.Gate switch { GateKind.PerHead => GatePerHead, GateKind.PerKey => GatePerKey, _ => GateNone },
                L2Norm = Config.QkL2Norm ? 1 : 0,
                Scale = Config.Scale,
                Tiles = tiles,
            };
            var acc = Runtime.Accelerator;
            var passGrid = new KernelConfig(sequences.Count * heads.KvHeads * tiles, Runtime.GroupSize);
            if (chunked)
            {
                var table = _buffers.Upload("chunk_table", _chunks.Build(sequences, Config.ChunkSize));
                int chunks = _chunks.Chunks;
                args.ChunkStart = table.SubView(0, chunks);
                args.ChunkLength = table.SubView(chunks, chunks);
                args.FirstChunk = table.SubView(2 * chunks, sequences.Count + 1);
                args.W = _buffers.Get<float>("w", tokens * heads.KvHeads * heads.KeyDim);
                args.U = _buffers.Get<float>("u", tokens * heads.KvHeads * heads.ValueDim);
                args.Kd = _buffers.Get<float>("kd", tokens * heads.KvHeads * heads.KeyDim);
                args.Qg = _buffers.Get<float>("qg", tokens * heads.QHeads * heads.KeyDim);
                args.P = _buffers.Get<float>("p", tokens * heads.QHeads * Config.ChunkSize);
                bool perKey = Config.Gate == GateKind.PerKey;
                args.ChunkDecay = _buffers.Get<float>("chunk_decay", (long)chunks * heads.KvHeads * (perKey ? heads.KeyDim : 1));
                args.Gcum = _buffers.Get<float>("g_cumulative", perKey ? tokens * heads.KvHeads * heads.KeyDim : 1);
                var prepare = Runtime.Kernel("DeltaRule.Prepare", a => a.LoadStreamKernel<Args>(PrepareKernel));
                var pass = Runtime.Kernel("DeltaRule.StatePass", a => a.LoadStreamKernel<Args>(StatePassKernel));
                if (chunks > 0) prepare(new KernelConfig(chunks * heads.KvHeads, Runtime.GroupSize), args);
                pass(passGrid, args);
            }
            else
            {
                args.FirstChunk = _buffers.Upload("offsets", sequences.Offsets);
                var recurrent = Runtime.Kernel("DeltaRule.Recurrent", a => a.LoadStreamKernel<Args>(RecurrentKernel));
                recurrent(passGrid, args);
            }
            acc.Synchronize();
            args.O.SubView(0, output.Length).CopyToCPU(output);
        }
    }

    /// <summary>Everything a kernel reads and writes. Token-major layouts as in the kernels' contract.</summary>
    public struct Args
    {
        public ArrayView<float> Q, K, V, Beta, G, O, State;
        public ArrayView<float> W, U, Kd, Qg, P, ChunkDecay, Gcum;
        /// <summary>Chunked: chunk table and each sequence's first chunk. Recurrent: FirstChunk holds the sequence offsets.</summary>
        public ArrayView<int> ChunkStart, ChunkLength, FirstChunk;
        public int QHeads, KvHeads, KeyDim, ValueDim, Chunk, Gate, L2Norm, Tiles;
        public float Scale;
    }

    /// <summary>1 / sqrt(Σ x² + eps) over row [offset, offset + count) of a global view, or 1 without normalization.</summary>
    private static float InverseNorm(ArrayView<float> x, long offset, int count, int l2Norm)
    {
        if (l2Norm == 0) return 1f;
        float sum = 0f;
        for (int c = 0; c < count; c++) sum += x[offset + c] * x[offset + c];
        return 1f / XMath.Sqrt(sum + DeltaRuleConfig.L2NormEpsilon);
    }

    /// <summary>The in-chunk cumulative log gate of chunk row i at key dim c: from Gcum (per key) or sG (per head, or zeros).</summary>
    private static float Cumulative(Args a, ArrayView<float> sG, int cs, int h, int i, int c) =>
        a.Gate == GatePerKey ? a.Gcum[((long)(cs + i) * a.KvHeads + h) * a.KeyDim + c] : sG[i];

    /// <summary>Σ_c x_c y_c e^{G_ic − G_jc}: the decay inside the sum for a per-key gate, outside it otherwise.</summary>
    private static float DecayedDot(Args a, ArrayView<float> sG, ArrayView<float> x, long xi, long yj, int cs, int h, int i, int j)
    {
        float dot = 0f;
        if (a.Gate == GatePerKey)
        {
            for (int c = 0; c < a.KeyDim; c++)
                dot += x[xi + c] * a.K[yj + c] * XMath.Exp(Cumulative(a, sG, cs, h, i, c) - Cumulative(a, sG, cs, h, j, c));
            return dot;
        }
        for (int c = 0; c < a.KeyDim; c++) dot += x[xi + c] * a.K[yj + c];
        return dot * XMath.Exp(sG[i] - sG[j]);
    }

    private static void PrepareKernel(Args a)
    {
        var sA = SharedMemory.Allocate<float>(MaxChunk * MaxChunk);
        var sT = SharedMemory.Allocate<float>(MaxChunk * MaxChunk);
        var sX = SharedMemory.Allocate<float>(3 * Tile * Tile);
        var sG = SharedMemory.Allocate<float>(MaxChunk);
        var sBeta = SharedMemory.Allocate<float>(MaxChunk);
        var sRk = SharedMemory.Allocate<float>(MaxChunk);
        var sRq = SharedMemory.Allocate<float>(MaxChunk);

        int tid = Group.IdxX, nt = Group.DimX;
        int chunk = Grid.IdxX / a.KvHeads, h = Grid.IdxX % a.KvHeads;
        int cs = a.ChunkStart[chunk], len = a.ChunkLength[chunk], cc = a.Chunk;
        int kd = a.KeyDim, vd = a.ValueDim, hkv = a.KvHeads;

        if (tid == 0)
        {
            float acc = 0f;
            for (int i = 0; i < len; i++)
            {
                if (a.Gate == GatePerHead) acc += a.G[(long)(cs + i) * hkv + h];
                sG[i] = acc;
                sBeta[i] = a.Beta[(long)(cs + i) * hkv + h];
            }
        }
        if (a.Gate == GatePerKey)
        {
            for (int c = tid; c < kd; c += nt)
            {
                float acc = 0f;
                for (int i = 0; i < len; i++)
                {
                    long at = ((long)(cs + i) * hkv + h) * kd + c;
                    acc += a.G[at];
                    a.Gcum[at] = acc;
                }
            }
        }
        for (int i = tid; i < len; i += nt) sRk[i] = InverseNorm(a.K, ((long)(cs + i) * hkv + h) * kd, kd, a.L2Norm);
        Group.Barrier();

        // A_ij = β_i Σ_c k̂_ic k̂_jc e^{G_ic − G_jc} below the diagonal; the decayed keys k̂_j ⊙ e^{G_last − G_j}.
        for (int e = tid; e < cc * cc; e += nt)
        {
            int i = e / cc, j = e % cc;
            float value = 0f;
            if (j < i && i < len)
            {
                long ki = ((long)(cs + i) * hkv + h) * kd, kj = ((long)(cs + j) * hkv + h) * kd;
                value = sBeta[i] * sRk[i] * sRk[j] * DecayedDot(a, sG, a.K, ki, kj, cs, h, i, j);
            }
            sA[e] = value;
        }
        for (int e = tid; e < len * kd; e += nt)
        {
            int j = e / kd, c = e % kd;
            long at = ((long)(cs + j) * hkv + h) * kd + c;
            a.Kd[at] = a.K[at] * sRk[j] * XMath.Exp(Cumulative(a, sG, cs, h, len - 1, c) - Cumulative(a, sG, cs, h, j, c));
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
                    for (int m = col; m < r; m++) value -= sA[r * cc + m] * sT[m * cc + col];
                sT[r * cc + col] = value;
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
                for (int m = qb * Tile; m < p * Tile; m++) sum += sA[r * cc + m] * sT[m * cc + col];
                sX[e] = sum;
            }
            Group.Barrier();
            for (int e = tid; e < p * Tile * Tile; e += nt)
            {
                int qb = e / (Tile * Tile), rl = e / Tile % Tile, cl = e % Tile;
                int r = p * Tile + rl;
                float sum = 0f;
                for (int l = 0; l < Tile; l++) sum += sT[r * cc + p * Tile + l] * sX[qb * Tile * Tile + l * Tile + cl];
                sT[r * cc + qb * Tile + cl] = -sum;
            }
            Group.Barrier();
        }

        // W = T diag(β) (K̂ ⊙ e^G) and U = T diag(β) V (T is lower triangular).
        for (int e = tid; e < len * kd; e += nt)
        {
            int i = e / kd, c = e % kd;
            float sum = 0f;
            for (int j = 0; j <= i; j++)
                sum += sT[i * cc + j] * sBeta[j] * XMath.Exp(Cumulative(a, sG, cs, h, j, c)) * sRk[j] * a.K[((long)(cs + j) * hkv + h) * kd + c];
            a.W[((long)(cs + i) * hkv + h) * kd + c] = sum;
        }
        for (int e = tid; e < len * vd; e += nt)
        {
            int i = e / vd, d = e % vd;
            float sum = 0f;
            for (int j = 0; j <= i; j++) sum += sT[i * cc + j] * sBeta[j] * a.V[((long)(cs + j) * hkv + h) * vd + d];
            a.U[((long)(cs + i) * hkv + h) * vd + d] = sum;
        }
        if (a.Gate == GatePerKey)
        {
            for (int c = tid; c < kd; c += nt) a.ChunkDecay[((long)chunk * hkv + h) * kd + c] = XMath.Exp(Cumulative(a, sG, cs, h, len - 1, c));
        }
        else if (tid == 0)
        {
            a.ChunkDecay[(long)chunk * hkv + h] = XMath.Exp(sG[len - 1]);
        }

        // Per query head: Q_g = scale q̂ ⊙ e^G and P_ij = scale Σ_c q̂_ic k̂_jc e^{G_ic − G_jc} for j <= i.
        int group = a.QHeads / hkv;
        for (int qh = h * group; qh < (h + 1) * group; qh++)
        {
            for (int i = tid; i < len; i += nt) sRq[i] = InverseNorm(a.Q, ((long)(cs + i) * a.QHeads + qh) * kd, kd, a.L2Norm);
            Group.Barrier();
            for (int e = tid; e < len * kd; e += nt)
            {
                int i = e / kd, c = e % kd;
                long at = ((long)(cs + i) * a.QHeads + qh) * kd + c;
                a.Qg[at] = a.Scale * XMath.Exp(Cumulative(a, sG, cs, h, i, c)) * sRq[i] * a.Q[at];
            }
            for (int e = tid; e < len * cc; e += nt)
            {
                int i = e / cc, j = e % cc;
                if (j > i) continue;
                long qi = ((long)(cs + i) * a.QHeads + qh) * kd, kj = ((long)(cs + j) * hkv + h) * kd;
                a.P[((long)(cs + i) * a.QHeads + qh) * cc + j] = a.Scale * sRq[i] * sRk[j] * DecayedDot(a, sG, a.Q, qi, kj, cs, h, i, j);
            }
            Group.Barrier();
        }
    }

    private static void StatePassKernel(Args a)
    {
        var sS = SharedMemory.Allocate<float>(StateSlice);
        var sV = SharedMemory.Allocate<float>(MaxChunk * Tile);

        int tid = Group.IdxX, slices = Group.DimX / Tile, d = tid % Tile, s = tid / Tile;
        int hkv = a.KvHeads, kd = a.KeyDim, vd = a.ValueDim, cc = a.Chunk, group = a.QHeads / hkv;
        int item = Grid.IdxX / a.Tiles, tile = Grid.IdxX % a.Tiles;
        int n = item / hkv, h = item % hkv, col = tile * Tile + d;
        bool valid = col < vd;
        long stateBase = ((long)n * hkv + h) * kd * vd + col;

        for (int c = s; c < kd; c += slices) sS[c * Tile + d] = valid ? a.State[stateBase + (long)c * vd] : 0f;
        Group.Barrier();

        for (int chunk = a.FirstChunk[n]; chunk < a.FirstChunk[n + 1]; chunk++)
        {
            int cs = a.ChunkStart[chunk], len = a.ChunkLength[chunk];
            // V_new = U − W S.
            for (int i = s; i < len; i += slices)
            {
                long row = (long)(cs + i) * hkv + h;
                float sum = valid ? a.U[row * vd + col] : 0f;
                for (int c = 0; c < kd; c++) sum -= a.W[row * kd + c] * sS[c * Tile + d];
                sV[i * Tile + d] = sum;
            }
            Group.Barrier();
            // O = Q_g S + P V_new.
            for (int qh = h * group; qh < (h + 1) * group; qh++)
            {
                for (int i = s; i < len; i += slices)
                {
                    long row = (long)(cs + i) * a.QHeads + qh;
                    float sum = 0f;
                    for (int c = 0; c < kd; c++) sum += a.Qg[row * kd + c] * sS[c * Tile + d];
                    for (int j = 0; j <= i; j++) sum += a.P[row * cc + j] * sV[j * Tile + d];
                    if (valid) a.O[row * vd + col] = sum;
                }
            }
            Group.Barrier();
            // S ← diag(e^{G_last}) S + K_dᵀ V_new.
            for (int c = s; c < kd; c += slices)
            {
                float decay = a.Gate == GatePerKey ? a.ChunkDecay[((long)chunk * hkv + h) * kd + c] : a.ChunkDecay[(long)chunk * hkv + h];
                float sum = decay * sS[c * Tile + d];
                for (int j = 0; j < len; j++) sum += a.Kd[((long)(cs + j) * hkv + h) * kd + c] * sV[j * Tile + d];
                sS[c * Tile + d] = sum;
            }
            Group.Barrier();
        }

        if (valid)
            for (int c = s; c < kd; c += slices) a.State[stateBase + (long)c * vd] = sS[c * Tile + d];
    }

    private static void RecurrentKernel(Args a)
    {
        var sS = SharedMemory.Allocate<float>(StateSlice);
        var sRow = SharedMemory.Allocate<float>(DeltaRuleConfig.MaxKeyDim);
        var sPartial = SharedMemory.Allocate<float>(MaxSlices * Tile);
        var sOut = SharedMemory.Allocate<float>(MaxSlices * Tile);

        int tid = Group.IdxX, nt = Group.DimX, slices = nt / Tile, d = tid % Tile, s = tid / Tile;
        int hkv = a.KvHeads, kd = a.KeyDim, vd = a.ValueDim, group = a.QHeads / hkv;
        int item = Grid.IdxX / a.Tiles, tile = Grid.IdxX % a.Tiles;
        int n = item / hkv, h = item % hkv, col = tile * Tile + d;
        bool valid = col < vd;
        long stateBase = ((long)n * hkv + h) * kd * vd + col;

        for (int c = s; c < kd; c += slices) sS[c * Tile + d] = valid ? a.State[stateBase + (long)c * vd] : 0f;

        for (int t = a.FirstChunk[n]; t < a.FirstChunk[n + 1]; t++)
        {
            long row = (long)t * hkv + h;
            for (int c = tid; c < kd; c += nt) sRow[c] = a.K[row * kd + c];
            Group.Barrier();
            float rk = 1f;
            if (a.L2Norm != 0)
            {
                float sum = 0f;
                for (int c = 0; c < kd; c++) sum += sRow[c] * sRow[c];
                rk = 1f / XMath.Sqrt(sum + DeltaRuleConfig.L2NormEpsilon);
            }
            // (diag(e^g) S)ᵀ k̂ from the old state, reduced over the slices (a per-head decay is applied after).
            float partial = 0f;
            for (int c = s; c < kd; c += slices)
                partial += sS[c * Tile + d] * sRow[c] * (a.Gate == GatePerKey ? XMath.Exp(a.G[row * kd + c]) : 1f);
            sPartial[s * Tile + d] = partial * rk;
            Group.Barrier();
            float predicted = 0f;
            for (int r = 0; r < slices; r++) predicted += sPartial[r * Tile + d];
            float decay = a.Gate == GatePerHead ? XMath.Exp(a.G[row]) : 1f;
            float u = a.Beta[row] * ((valid ? a.V[row * vd + col] : 0f) - decay * predicted);
            for (int c = s; c < kd; c += slices)
            {
                float rowDecay = a.Gate == GatePerKey ? XMath.Exp(a.G[row * kd + c]) : decay;
                sS[c * Tile + d] = rowDecay * sS[c * Tile + d] + rk * sRow[c] * u;
            }
            Group.Barrier();

            for (int qh = h * group; qh < (h + 1) * group; qh++)
            {
                long qrow = (long)t * a.QHeads + qh;
                for (int c = tid; c < kd; c += nt) sRow[c] = a.Q[qrow * kd + c];
                Group.Barrier();
                float rq = a.Scale;
                if (a.L2Norm != 0)
                {
                    float sum = 0f;
                    for (int c = 0; c < kd; c++) sum += sRow[c] * sRow[c];
                    rq /= XMath.Sqrt(sum + DeltaRuleConfig.L2NormEpsilon);
                }
                float o = 0f;
                for (int c = s; c < kd; c += slices) o += sRow[c] * sS[c * Tile + d];
                sOut[s * Tile + d] = o * rq;
                Group.Barrier();
                if (s == 0 && valid)
                {
                    float sum = 0f;
                    for (int r = 0; r < slices; r++) sum += sOut[r * Tile + d];
                    a.O[qrow * vd + col] = sum;
                }
                Group.Barrier();
            }
        }

        if (valid)
            for (int c = s; c < kd; c += slices) a.State[stateBase + (long)c * vd] = sS[c * Tile + d];
    }
}

using System.Runtime.CompilerServices;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// GLA on the CPU: the chunked form as small Vector512 matrix products, and the recurrent form for
/// decode. Work items are (sequence, block of value heads) run by HeadBlockSweep; each worker owns a
/// scratch block sized here from the config, so calls allocate nothing. Value head h reads key head h / ValueGroup
/// and its output heads read their query heads (<see cref="HeadLayout"/>) where they lie in q and k.
///
/// Chunk of C tokens, b = in-chunk cumulative log gate (fp32):
///   inter   O   = (scale·q ⊙ exp(b)) S
///   intra   O  += A V,  A_ij = scale Σ_c q_ic k_jc exp(b_ic − b_jc), j &lt;= i
///   state   S   = diag(exp(b_last)) S + (k ⊙ exp(b_last − b))ᵀ V
/// A per-key gate is factored by sub-chunks (<see cref="PerKeyChunkDecay"/>) so every exponent is &lt;= 0.
/// Scalar gates (per head, constant, none) need no sub-chunks: A = (Q Kᵀ) ⊙ D (<see cref="ScalarChunkDecay"/>).
/// The output product is causal (<see cref="SimdGemm.MultiplyCausal"/>): no output row reads a later token's row.
/// </summary>
/// <remarks>
/// Hot methods are compiled fully optimized on first use (a first call on a long sequence must not run unoptimized code).
/// </remarks>
public sealed unsafe class GlaCpu : IDisposable
{
    private const int Sub = PerKeyChunkDecay.Sub;

    private readonly GlaConfig _config;
    private readonly WorkerScratch _scratch;
    private readonly int _kp, _vp, _c;
    /// <summary>Row stride of QA: the output of a sub-chunk is one product [Q_inter | A] · [S; V].</summary>
    private readonly int _lqa;
    /// <summary>Each head's state slot holds [S; V]: the chunk values follow the state.</summary>
    private readonly StackedStateSlots _slots;
    /// <summary>Constant gate only: per value head exp(logDecay · m), m = 0..C, made once (Lightning's decays).</summary>
    private readonly float[][]? _constantPowers;

    public GlaCpu(GlaConfig config)
    {
        _config = config;
        _kp = config.Heads.KeyDimPadded;
        _vp = config.Heads.ValueDimPadded;
        _c = config.ChunkSize;
        _lqa = _kp + _c;
        _slots = new StackedStateSlots(_kp, _vp, _c);
        if (config.ConstantLogDecay is { } logDecay)
            _constantPowers = logDecay.Select(l => Enumerable.Range(0, _c + 1).Select(m => (float)Math.Exp((double)l * m)).ToArray()).ToArray();
        Carve(null, out long floats);
        _scratch = new WorkerScratch(floats);
    }

    public GlaConfig Config => _config;

    public void Dispose()
    {
        _scratch.Dispose();
    }

    /// <summary>
    /// Chunked prefill. q [TotalTokens, Hq, K], k [TotalTokens, Hk, K], v [TotalTokens, Hv, V], their token rows
    /// <paramref name="rows"/> apart (default dense); state: [N, Hv, K, V], initial on entry, final on return; or, with initialState
    /// (same shape) given, final only: the initial state is read from there and never copied.
    /// </summary>
    public void Chunked(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default, TokenRows? rows = null)
        => Run(scheduler, sequences, q, k, v, g, output, state, initialState, rows, chunked: true);

    /// <summary>Token-by-token recurrence (decode). Same contract as <see cref="Chunked"/>.</summary>
    public void Recurrent(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState = default, TokenRows? rows = null)
        => Run(scheduler, sequences, q, k, v, g, output, state, initialState, rows, chunked: false);

    private void Run(IWorkScheduler scheduler, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, Span<float> state, ReadOnlySpan<float> initialState, TokenRows? rows, bool chunked)
    {
        initialState = HeadBlockSweep.InitialState(initialState, state);
        int gateFaults = 0;
        fixed (float* pq = q, pk = k, pv = v, pg = g, po = output, ps = state, pi = initialState)
            HeadBlockSweep.Run<Steps, Work>(scheduler, _scratch, _config.Heads, _config.StateLayout, sequences, pi, ps, chunked ? _c : 0,
                new Steps(this, new Io(pq, pk, pv, pg, po, rows ?? TokenRows.Dense(_config.Heads), &gateFaults)));
        if (gateFaults != 0) LogGates.Refuse(g, "g");
    }

    private readonly struct Steps(GlaCpu kernel, Io io) : IHeadBlockSteps<Work>
    {
        public Work Carve(float* scratch) => kernel.Carve(scratch, out _);

        /// <summary>Each head's state is directly followed by its chunk values: [S; V] is the right operand of the output product.</summary>
        public float* StateSlot(in Work work, int j) => kernel._slots.Slot(work.S, j);

        public void Chunk(in Work work, ChunkUnit unit, float* state)
        {
            var w = work with { S = state, Vc = kernel._slots.RowsOf(state) };
            if (kernel._config.Gate == GateKind.PerKey) kernel.ChunkPerKey(io, unit, w);
            else kernel.ChunkScalar(io, unit, w);
        }

        public void Token(in Work work, int head, int token, float* source, float* state, StateLayout layout) =>
            kernel.RecurrentStep(io, head, token, source, work with { S = state }, layout);
    }

    /// <summary>The call's tensors, and a flag any worker sets when it loads a gate that is not a valid log gate.</summary>
    private readonly struct Io(float* q, float* k, float* v, float* g, float* o, TokenRows rows, int* gateFaults)
    {
        public readonly float* Q = q, K = k, V = v, G = g, O = o;
        public readonly TokenRows Rows = rows;
        public readonly int* GateFaults = gateFaults;
    }

    /// <summary>Per-worker scratch regions. Built with a null base to size the block.</summary>
    private readonly struct Work
    {
        public float* S { get; init; }        // [KP × VP] state, directly followed by
        public float* Vc { get; init; }       // [C × VP] chunk values: [S; V] is the right operand of the output product;
                                              // one such pair per head of a work item (HeadBlocks.MaxPerItem)
        public float* Oc { get; init; }       // [C × VP] chunk output
        public float* QA { get; init; }       // [C × (KP + C)] inter queries | intra scores A: the left operand
        public float* Kc { get; init; }       // [C × KP] chunk keys (rows up to the next multiple of 16 zeroed)
        public float* Qr { get; init; }       // [C × KP] scale · q
        public float* DecayNear { get; init; }   // [KP] the recurrent decay's near part (SimdMath.DecayParts), then
        public float* DecayFar { get; init; }    // [KP] its far part
        public PerKeyChunkDecay KeyDecay { get; init; }      // per-key gate: the chunk's decay factors
        public ScalarChunkDecay HeadDecay { get; init; }     // other gates: the chunk's decay factors
        public float* Acc { get; init; }      // [G × VP] recurrent output accumulators (first, the token's value row)
    }

    private Work Carve(float* baseAddress, out long floats)
    {
        var c = new ScratchCarver(baseAddress);
        long kp = _kp, vp = _vp, cc = _c;
        var work = new Work
        {
            S = c.Take(HeadBlocks.MaxPerItem * _slots.Floats),
            Oc = c.Take(cc * vp),
            QA = c.Take(cc * (kp + cc)),
            Kc = c.Take(cc * kp),
            Qr = c.Take(cc * kp),
            DecayNear = c.Take(kp),
            DecayFar = c.Take(kp),
            KeyDecay = _config.Gate == GateKind.PerKey ? new PerKeyChunkDecay(ref c, _kp, _c) : default,
            HeadDecay = _config.Gate != GateKind.PerKey ? new ScalarChunkDecay(ref c, _kp, _c, gated: _config.Gate != GateKind.None) : default,
            Acc = c.Take((long)_config.Heads.Group * vp),
        };
        floats = c.Used;
        return work with { Vc = _slots.RowsOf(work.S) };
    }

    /// <summary>
    /// Asks for the rows of the chunk processed next ahead of time, into L2 (the chunk's work set fills L1 many times
    /// over before they are read); sub-chunk s asks for its share, so the requests are spread over the chunk's work.
    /// </summary>
    private void PrefetchNext(in Io io, ChunkUnit chunk, int s, int nsub) =>
        RowPrefetch.NextUnit(_config.Heads, chunk, s, nsub, io.Rows, io.Q, io.K, io.V, _config.Gate == GateKind.PerKey ? io.G : null);

    /// <summary>Loads the chunk's keys (of the value head's key head) and values (padded rows, zero up to the next 16), shared by every output head of the value head.</summary>
    private void LoadKeysValues(in Io io, ChunkUnit chunk, in Work w)
    {
        var heads = _config.Heads;
        new HeadRows(io.K, io.Rows.K, heads.KeyDim, heads.KeyHeadOf(chunk.Head), chunk.Start).CopyTo(w.Kc, _kp, chunk.Length);
        new HeadRows(io.V, io.Rows.V, heads.ValueDim, chunk.Head, chunk.Start).CopyTo(w.Vc, _vp, chunk.Length);
    }

    /// <summary>Scale · the queries output head <paramref name="o"/> reads.</summary>
    private void LoadScaledQueries(in Io io, int o, int cs, int len, in Work w)
    {
        var heads = _config.Heads;
        new HeadRows(io.Q, io.Rows.Q, heads.KeyDim, heads.QueryHeadOf(o), cs).CopyScaledTo(w.Qr, _kp, len, _config.Scale);
    }

    /// <summary>
    /// The chunk's output for output head o: [Q_inter | A] · [S; V], all rows at once so [S; V] is read from L2
    /// once per column tile; row i reads A and V up to its own token only.
    /// </summary>
    private void Output(in Io io, int o, int cs, int len, in Work w)
    {
        var heads = _config.Heads;
        var rows = new ChunkOutput(new HeadRows(io.O, heads.OutputHeads * heads.ValueDim, heads.ValueDim, o, cs), w.Oc, _vp);
        SimdGemm.MultiplyCausal(w.QA, _lqa, w.S, _vp, rows.Rows, rows.Stride, len, _kp, _vp, accumulate: false);
        rows.CopyBack(len);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkPerKey(in Io io, ChunkUnit chunk, in Work w)
    {
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        var heads = _config.Heads;
        int nsub = (len + Sub - 1) / Sub;
        LoadKeysValues(io, chunk, w);
        var decay = w.KeyDecay;
        if (!decay.Prepare(io.G + ((long)cs * heads.ValueHeads + h) * heads.KeyDim, (long)heads.ValueHeads * heads.KeyDim, heads.KeyDim, w.Kc, len))
            *io.GateFaults = 1;
        for (int o = h * heads.Group; o < (h + 1) * heads.Group; o++)
        {
            LoadScaledQueries(io, o, cs, len, w);
            for (int s = 0; s < nsub; s++)
            {
                if (o == h * heads.Group) PrefetchNext(io, chunk, s, nsub);
                decay.Scores(w.Qr, w.Kc, s, len, w.QA, _lqa);
            }
            Output(io, o, cs, len, w);
        }
        decay.UpdateState(w.S, w.Vc, _vp, len);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void ChunkScalar(in Io io, ChunkUnit chunk, in Work w)
    {
        int h = chunk.Head, cs = chunk.Start, len = chunk.Length;
        var heads = _config.Heads;
        int kp = _kp, lqa = _lqa, nblocks = HeadLayout.RoundUp16(len) / ScalarChunkDecay.Block;
        LoadKeysValues(io, chunk, w);
        var decay = w.HeadDecay;
        decay.TransposeKeys(w.Kc, len);
        if (_constantPowers is not null) decay.Prepare(_constantPowers[h], _config.ConstantLogDecay![h], w.Kc, len);
        else if (!decay.Prepare(_config.Gate == GateKind.PerHead ? io.G + (long)cs * heads.ValueHeads + h : null, heads.ValueHeads, w.Kc, len))
            *io.GateFaults = 1;

        for (int o = h * heads.Group; o < (h + 1) * heads.Group; o++)
        {
            LoadScaledQueries(io, o, cs, len, w);
            for (int i = 0; i < len; i++) SimdOps.CopyScaledPadded(w.QA + (long)i * lqa, w.Qr + (long)i * kp, decay.RowDecay[i], kp, kp);
            for (int s = 0; s < nblocks; s++)
            {
                if (o == h * heads.Group) PrefetchNext(io, chunk, s, nblocks);
                decay.Scores(w.Qr, s, len, w.QA + kp, lqa);
            }
            Output(io, o, cs, len, w);
        }
        decay.UpdateState(w.S, w.Kc, w.Vc, _vp, len);
    }

    /// <summary>
    /// One token: S = S + diag(near) S + diag(far) S + k vᵀ (e^g = 1 + near + far), then o = Sᵀ (scale q) for each output head of the value head; on a key-major
    /// state column slices at a time, on the caller's value-major state (unpadded) row by row.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RecurrentStep(in Io io, int h, int t, float* source, in Work w, StateLayout layout)
    {
        var heads = _config.Heads;
        int kd = heads.KeyDim, vd = heads.ValueDim, vp = _vp, group = heads.Group;
        long valueRow = (long)t * heads.ValueHeads + h;
        float* kt = io.K + (long)t * io.Rows.K + (long)heads.KeyHeadOf(h) * kd;
        // v goes where the first output head's sums go: the step reads each value before it writes that output.
        float* vrow = w.Acc;
        SimdOps.CopyPadded(vrow, io.V + (long)t * io.Rows.V + (long)h * vd, vd, vp);
        // The decay's two parts per key row (RecurrentRows).
        float* near = w.DecayNear, far = w.DecayFar;
        float scalarGate = 0f;
        switch (_config.Gate)
        {
            case GateKind.PerKey:
                if (!LogGates.DecayRow(near, far, io.G + valueRow * kd, kd, _kp)) *io.GateFaults = 1;
                break;
            case GateKind.PerHead:
                if (!LogGates.IsValid(io.G[valueRow])) *io.GateFaults = 1;
                scalarGate = io.G[valueRow];
                break;
            case GateKind.Constant:
                scalarGate = _config.ConstantLogDecay![h];
                break;
        }
        if (_config.Gate != GateKind.PerKey)
        {
            SimdOps.Fill(near, SimdMath.DecayNear(scalarGate), kd);
            SimdOps.Fill(far, SimdMath.DecayFar(scalarGate), kd);
        }
        // A state near fp32's range may meet a write past half of it: that token's decay is one factor, rounded to fp32 once.
        if (RecurrentRows.WriteMayOverflowNearForm(kt, kd, vrow, vd)) RecurrentRows.UseOneFactor(near, far, kd);
        // The output heads of value head h read adjacent query heads, from the first one's.
        float* q0 = io.Q + (long)t * io.Rows.Q + (long)heads.QueryHeadOf(h * group) * kd;
        if (layout == StateLayout.ValueMajor) RecurrentRows.UpdateValueRows(source, w.S, kd, vd, 0f, 0f, near, far, kt, null, 1f, q0, group, w.Acc, vp);
        else
        {
            // The first output head of the group reads S as it is updated; the other heads of a group read it afterwards.
            RecurrentRows.UpdateAndRead(source, w.S, vp, kd, vrow, near, far, 1, kt, q0, w.Acc);
            for (int gi = 1; gi < group; gi++) RecurrentRows.Read(w.S, vp, kd, q0 + (long)gi * kd, w.Acc + (long)gi * vp);
        }
        for (int gi = 0; gi < group; gi++) SimdOps.ScaleInPlace(w.Acc + (long)gi * vp, _config.Scale, vp);
        SimdOps.CopyFromPadded(io.O + ((long)t * heads.OutputHeads + h * group) * vd, vd, w.Acc, vp, group, vd);
    }
}

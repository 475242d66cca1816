namespace Engine.Kernels.Common;

/// <summary>A chunk of one head, and the chunk the same worker runs after it (its length 0 if none): what to prefetch.</summary>
public readonly record struct ChunkUnit(int Head, int Start, int Length, int NextHead, int NextStart, int NextLength)
{
    /// <summary>The rows [From, To) of the next unit that step <paramref name="step"/> of <paramref name="steps"/> should prefetch.</summary>
    public (int From, int To) NextShare(int step, int steps) =>
        ((int)((long)step * NextLength / steps), (int)((long)(step + 1) * NextLength / steps));
}

/// <summary>
/// An op's steps for <see cref="HeadBlockSweep"/>: how it carves a worker's scratch, where the state slot of
/// an item's j-th head lies in it ([KP × VP], row stride VP), and one chunk or one token of one head (a token
/// step reads the state from source, which is state itself or the call's initial state, and writes state, both
/// held as <c>layout</c> says: [K, V], or [V, K] where the caller keeps the state value-major and needs no padding).
/// </summary>
public unsafe interface IHeadBlockSteps<TWork> where TWork : struct
{
    TWork Carve(float* scratch);

    float* StateSlot(in TWork work, int j);

    void Chunk(in TWork work, ChunkUnit unit, float* state);

    void Token(in TWork work, int head, int token, float* source, float* state, StateLayout layout);
}

/// <summary>
/// The state slots of a worker's scratch when each head's state [KP × VP] is directly followed by up to C rows of
/// the chunk ([S; rows], row stride VP): the right operand of an [inter rows | scores] · [S; rows] product.
/// </summary>
public readonly unsafe record struct StackedStateSlots(int KeyDimPadded, int ValueDimPadded, int Rows)
{
    /// <summary>Floats of one slot, state and rows.</summary>
    public long Floats => (long)(KeyDimPadded + Rows) * ValueDimPadded;

    /// <summary>Slot j of the slots starting at first.</summary>
    public float* Slot(float* first, int j) => first + j * Floats;

    /// <summary>The rows that follow the state of a slot.</summary>
    public float* RowsOf(float* state) => state + (long)KeyDimPadded * ValueDimPadded;
}

/// <summary>
/// The work loop of the CPU attention kernels: items of one sequence and a block of adjacent value (state) heads
/// (<see cref="HeadBlocks"/>) run by the scheduler. Each head's state is loaded padded into the worker's scratch
/// as [K, V] and stored back after the sequence, transposed on the way when the caller keeps it value-major
/// ([V, K], <see cref="StateLayout.ValueMajor"/>); the token-by-token form works on the state in place, in the
/// caller's layout, when no padding is needed, its first token reading the initial state where that is elsewhere.
/// Chunks run head by head inside a chunk of tokens, so the heads of a block read adjacent rows.
/// </summary>
public static unsafe class HeadBlockSweep
{
    /// <summary>The initial state a call reads: <paramref name="initialState"/> when given (as long as the state), else the state itself.</summary>
    public static ReadOnlySpan<float> InitialState(ReadOnlySpan<float> initialState, Span<float> state)
    {
        if (initialState.IsEmpty) return state;
        if (initialState.Length != state.Length)
            throw new ArgumentException($"initial state: {initialState.Length} floats, the state has {state.Length}", nameof(initialState));
        return initialState;
    }

    /// <param name="layout">how <paramref name="initial"/> and <paramref name="state"/> hold each head: [K, V] or [V, K].</param>
    /// <param name="initial">[sequences, Hv, K, V] (or [.., V, K]): the initial state; may be <paramref name="state"/> itself.</param>
    /// <param name="state">[sequences, Hv, K, V] (or [.., V, K]): the final state on return.</param>
    /// <param name="chunkSize">tokens per chunk; 0 for the token-by-token form.</param>
    public static void Run<TSteps, TWork>(IWorkScheduler scheduler, WorkerScratch scratch, HeadLayout heads, StateLayout layout,
        SequenceLayout sequences, float* initial, float* state, int chunkSize, TSteps steps)
        where TSteps : struct, IHeadBlockSteps<TWork>
        where TWork : struct
    {
        int kd = heads.KeyDim, vd = heads.ValueDim, kp = heads.KeyDimPadded, vp = heads.ValueDimPadded;
        bool chunked = chunkSize > 0, valueMajor = layout == StateLayout.ValueMajor;
        bool inPlace = !chunked && kp == kd && vp == vd;
        var tokenLayout = inPlace ? layout : StateLayout.KeyMajor;
        var blocks = new HeadBlocks(sequences.Count, heads.ValueHeads, scheduler.Workers);
        // Never more workers than items: a scheduler asked for far more threads than there is work reserves no more scratch.
        scratch.Reserve(Math.Min(scheduler.Workers, blocks.Items));
        scheduler.Run(blocks.Items, (item, worker) =>
        {
            var (n, h0, h1) = blocks[item];
            var work = steps.Carve(scratch[worker]);
            long Offset(int h) => ((long)n * heads.ValueHeads + h) * kd * vd;
            float* StateOf(int h) => state + Offset(h);
            float* Slot(int h) => inPlace ? StateOf(h) : steps.StateSlot(work, h - h0);
            int start = sequences.Start(n), end = start + sequences.Length(n);
            if (valueMajor && !inPlace)
                for (int h = h0; h < h1; h++) SimdOps.TransposeToPadded(Slot(h), kp, vp, initial + Offset(h), vd, kd);
            else if (!inPlace)
                for (int h = h0; h < h1; h++) SimdOps.CopyToPadded(Slot(h), kp, vp, initial + Offset(h), kd, vd);
            else if (initial != state && start == end)
                for (int h = h0; h < h1; h++) new Span<float>(initial + Offset(h), kd * vd).CopyTo(new Span<float>(StateOf(h), kd * vd));
            if (chunked)
            {
                for (int cs = start; cs < end; cs += chunkSize)
                {
                    int len = Math.Min(chunkSize, end - cs);
                    for (int h = h0; h < h1; h++)
                    {
                        var unit = h + 1 < h1
                            ? new ChunkUnit(h, cs, len, h + 1, cs, len)
                            : new ChunkUnit(h, cs, len, h0, cs + len, Math.Min(chunkSize, end - cs - len));
                        steps.Chunk(work, unit, Slot(h));
                    }
                }
            }
            else
            {
                for (int t = start; t < end; t++)
                    for (int h = h0; h < h1; h++) steps.Token(work, h, t, t == start && inPlace ? initial + Offset(h) : Slot(h), Slot(h), tokenLayout);
            }
            if (valueMajor && !inPlace)
                for (int h = h0; h < h1; h++) SimdOps.TransposeFromPadded(StateOf(h), Slot(h), vp, kd, vd);
            else if (!inPlace)
                for (int h = h0; h < h1; h++) SimdOps.CopyFromPadded(StateOf(h), vd, Slot(h), vp, kd, vd);
        });
    }
}

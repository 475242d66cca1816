using System.Buffers;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine;

/// <summary>The tensors of one attention call as the caller gives them; g and beta are default when the op or call has none.</summary>
internal readonly ref struct AttentionTensors<T>(ReadOnlyTensorSpan<T> q, ReadOnlyTensorSpan<T> k, ReadOnlyTensorSpan<T> v,
    ReadOnlyTensorSpan<T> g, ReadOnlyTensorSpan<T> beta, TensorSpan<T> output) where T : unmanaged
{
    public ReadOnlyTensorSpan<T> Q { get; } = q;
    public ReadOnlyTensorSpan<T> K { get; } = k;
    public ReadOnlyTensorSpan<T> V { get; } = v;
    public ReadOnlyTensorSpan<T> G { get; } = g;
    public ReadOnlyTensorSpan<T> Beta { get; } = beta;
    public TensorSpan<T> Output { get; } = output;
}

/// <summary>The tensors of one attention call on device tensors; g and beta are null when the op or call has none.</summary>
internal readonly record struct DeviceAttentionTensors<T>(DeviceTensor<T> Q, DeviceTensor<T> K, DeviceTensor<T> V,
    DeviceTensor<T>? G, DeviceTensor<T>? Beta, DeviceTensor<T> Output) where T : unmanaged
{
    public AttentionLengths Lengths => new(Q.Lengths, K.Lengths, V.Lengths, G is null ? default : G.Lengths, Beta is null ? default : Beta.Lengths, Output.Lengths);

    public static DeviceAttentionTensors<T> Of(DeviceTensor<T> q, DeviceTensor<T> k, DeviceTensor<T> v, DeviceTensor<T>? g, DeviceTensor<T>? beta, DeviceTensor<T> output)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        ArgumentNullException.ThrowIfNull(output);
        foreach (var (input, name) in new[] { (q, "q"), (k, "k"), (v, "v"), (g, "g"), (beta, "beta") })
            RequireApart(output, "output", input, name);
        return new(q, k, v, g, beta, output);
    }

    /// <summary>
    /// Refuses one device tensor in two roles where the kernels write the one while they read the other (on the host the
    /// output may be q's, k's or v's very tensor: each row is read before it is written over).
    /// </summary>
    public static void RequireApart(object written, string writtenName, object? read, string readName)
    {
        if (ReferenceEquals(written, read))
            throw new ArgumentException($"{writtenName}: is the device tensor given as {readName}: the kernels read the one while they write the other; give {writtenName} a tensor of its own", writtenName);
    }

    /// <summary>Refuses a tensor of another device than the call's (the states too, where given).</summary>
    public void RequireOn(EngineDevice device, DeviceTensor<float>? initialState = null, DeviceTensor<float>? finalState = null)
    {
        Q.RequireOn(device, "q");
        K.RequireOn(device, "k");
        V.RequireOn(device, "v");
        G?.RequireOn(device, "g");
        Beta?.RequireOn(device, "beta");
        Output.RequireOn(device, "output");
        initialState?.RequireOn(device, "initial_state");
        finalState?.RequireOn(device, "final_state");
    }

    /// <summary>Refuses a state that is one of the call's device tensors.</summary>
    public void RequireStateApart(DeviceTensor<float>? state, string name)
    {
        if (state is null) return;
        foreach (var (tensor, role) in new (object?, string)[] { (Q, "q"), (K, "k"), (V, "v"), (G, "g"), (Beta, "beta"), (Output, "output") })
            RequireApart(state, name, tensor, role);
    }
}

/// <summary>The shapes of one attention call's tensors (an absent tensor has none: rank 0).</summary>
internal readonly ref struct AttentionLengths(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v,
    ReadOnlySpan<nint> g, ReadOnlySpan<nint> beta, ReadOnlySpan<nint> output)
{
    public ReadOnlySpan<nint> Q { get; } = q;
    public ReadOnlySpan<nint> K { get; } = k;
    public ReadOnlySpan<nint> V { get; } = v;
    public ReadOnlySpan<nint> G { get; } = g;
    public ReadOnlySpan<nint> Beta { get; } = beta;
    public ReadOnlySpan<nint> Output { get; } = output;
}

/// <summary>
/// The route of every linear-attention call: shapes checked (once, here), inputs as fp32, values checked, the state
/// where the backend computes, the op's kernel on the device's backend. The facades (<see cref="Gla"/>,
/// <see cref="Lightning"/>, <see cref="DeltaRule"/>) and <see cref="AttentionSession"/> are its only callers.
/// </summary>
internal readonly record struct AttentionCall(AttentionShapes Shapes, GateKind Gate)
{
    /// <summary>
    /// Checks every shape against q: k, v, output and cu_seqlens (<see cref="AttentionShapes"/>), beta when the op reads
    /// it, and g, whose rank gives the gate form (a constant-gate op takes none).
    /// </summary>
    /// <param name="output">false for a call that writes no output (its shape is not checked).</param>
    public static AttentionCall Describe<T>(in AttentionTensors<T> t, ReadOnlySpan<int> cuSeqlens, bool takesBeta, bool constantGate, bool output = true)
        where T : unmanaged
        => Describe(new AttentionLengths(t.Q.Lengths, t.K.Lengths, t.V.Lengths, t.G.Lengths, t.Beta.Lengths, t.Output.Lengths), cuSeqlens, takesBeta, constantGate, output);

    /// <inheritdoc cref="Describe{T}(in AttentionTensors{T}, ReadOnlySpan{int}, bool, bool, bool)"/>
    public static AttentionCall Describe(in AttentionLengths t, ReadOnlySpan<int> cuSeqlens, bool takesBeta, bool constantGate, bool output = true)
    {
        var shapes = AttentionShapes.Check(t.Q, t.K, t.V, t.Output, cuSeqlens, output);
        TensorArgs.RequireElementCount(t.Q, "q");
        TensorArgs.RequireElementCount(t.K, "k");
        TensorArgs.RequireElementCount(t.V, "v");
        if (output) TensorArgs.RequireElementCount(t.Output, "output");
        if (takesBeta) TensorArgs.RequireShape(t.Beta, "beta", "(B, T, Hv)", shapes.PerHeadShape);
        GateKind gate;
        if (constantGate)
        {
            if (t.G.Length != 0) throw new ArgumentException("g: a constant decay takes no gate tensor (its decay comes from the slopes)", "g");
            gate = GateKind.Constant;
        }
        else
        {
            gate = GateKindOf(t.G.Length);
            if (gate == GateKind.PerHead) TensorArgs.RequireShape(t.G, "g", "(B, T, Hv)", shapes.PerHeadShape);
            if (gate == GateKind.PerKey) TensorArgs.RequireShape(t.G, "g", "(B, T, Hv, K)", [.. shapes.PerHeadShape, shapes.Heads.KeyDim]);
            // Per key dim, g holds K floats per value head: more than q where the value heads outnumber the query heads.
            TensorArgs.RequireElementCount(t.G, "g");
        }
        return new AttentionCall(shapes, gate);
    }

    /// <summary>The gate form a g tensor of this rank selects: 4 per key dim, 3 per head, 0 (absent) none.</summary>
    public static GateKind GateKindOf(int gateRank) => gateRank switch
    {
        0 => GateKind.None,
        3 => GateKind.PerHead,
        4 => GateKind.PerKey,
        _ => throw new ArgumentException($"g: expected rank 4 (B, T, Hv, K) for a per-key gate, rank 3 (B, T, Hv) for a per-head gate, or no tensor; got rank {gateRank}", "g"),
    };

    /// <summary>
    /// A whole-sequence call. The op is built from the heads and gate form the tensors give. On the host the kernel
    /// writes the final state straight into <paramref name="finalState"/> (a pooled buffer when not asked for) and
    /// reads <paramref name="initialState"/> where it lies; a GPU call moves both through a device state. With a short
    /// <paramref name="convolution"/>, q, k and v are the rows before it: the CPU kernel convolves them as it loads them, the
    /// other backends run on convolved copies. With an <paramref name="outputNorm"/>, the output is normalized and gated per head:
    /// by the CPU kernel before it stores each head's rows, by the other backends after the run.
    /// </summary>
    public static void Forward<T>(EngineDevice device, in AttentionTensors<T> t, ReadOnlySpan<int> cuSeqlens,
        ReadOnlyTensorSpan<float> initialState, TensorSpan<float> finalState, AttentionOptions options,
        bool takesBeta, bool constantGate, Func<HeadLayout, GateKind, AttentionOp> build, ShortConvolution? convolution = null,
        GatedOutputNorm? outputNorm = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        TensorArgs.RequireElementType<T>();
        var call = Describe(t, cuSeqlens, takesBeta, constantGate);
        var op = build(call.Shapes.Heads, call.Gate);
        int stateLength = call.StateLength(op, initialState.Lengths, finalState.Lengths);
        // The kernels read the initial state and write the final one while they read the inputs and write the output.
        RequireOutputPlacement(t, convolved: convolution is not null);
        RequireStateApart(initialState, "initial_state", t);
        RequireStateApart(finalState, "final_state", t);
        using var conv = ConvolutionCall.Check(convolution, op.Heads, call.Shapes.Sequences);
        conv?.RequireApart((ReadOnlyTensorSpan<T>)t.Output, finalState);
        var norm = NormCall.Check(outputNorm, op.Heads, call.Shapes.Sequences.TotalTokens);
        norm?.RequireApart((ReadOnlyTensorSpan<T>)t.Output, finalState);
        bool cpu = device.Backend == Backend.Cpu;
        var scheduler = device.SchedulerFor(options.Scheduler);

        using var inputs = CallInputs.From(op, t, rowsInPlace: cpu, scheduler);
        using var output = new FloatOutput<T>(t.Output, "output");
        if (conv is not null)
        {
            inputs.KeepConvolutionState(conv, op.Heads);
            if (!cpu) inputs.Convolve(conv, op.Heads, exact: device.Backend == Backend.Reference);
        }
        var batch = inputs.Batch(options.CheckedMode == AttentionMode.Chunked, call.Shapes.Sequences, output.Span, cpu ? conv : null, cpu ? norm : null);
        if (device.Backend == Backend.Gpu)
        {
            using var init = FloatInput.From(initialState);
            TensorArgs.RequireFinite(init.Span, "initial_state");
            inputs.RequireFinite();
            // The state lives in the kernel instance's buffer: no device allocation per call in steady state.
            using var lease = op.LeaseGpu(device);
            var gpu = device.Gpu;
            ArrayView<float> state;
            using (gpu.Enter())
            {
                state = lease.Kernel.Buffers.Get<float>(nameof(AttentionGpuViews.State), stateLength);
                if (init.Span.IsEmpty) state.MemSetToZero(gpu.Accelerator.DefaultStream);
                else gpu.Upload(state, init.Span);
                AttentionGpuHost.Run(lease.Kernel, batch.Chunked, batch.Sequences, batch.Q, batch.K, batch.V, batch.G, batch.Beta, batch.Output, state);
            }
            norm?.ApplyAfter(batch.Output, exact: false, scheduler);
            // q, k, v and the initial state were checked before the run, so a value not finite after it is an overflow. The final
            // state may be the initial state's memory: downloaded once the output passed, so a refused output leaves it as it was.
            OutputCheck.AfterRun(batch, op.Heads, default, default, scheduler, norm);
            output.Commit();
            if (finalState.Rank != 0)
            {
                var final = TensorArgs.DenseSpan(finalState, "final_state");
                bool check = OutputCheck.StateReachesNoOutput(batch.Chunked, device.Backend);
                // Over the caller's initial state, a state to check lands in a copy first: refused, it leaves that state as it was.
                float[]? landing = check && init.Span.Overlaps(final) ? ArrayPool<float>.Shared.Rent(final.Length) : null;
                try
                {
                    var target = landing is null ? final : landing.AsSpan(0, final.Length);
                    using (gpu.Enter()) gpu.Download(state, target);
                    if (check) OutputCheck.RequireStateFinite(target, scheduler);
                    if (landing is not null) target.CopyTo(final);
                }
                finally
                {
                    if (landing is not null) ArrayPool<float>.Shared.Return(landing);
                }
            }
        }
        else
        {
            using var final = new StateBuffer(finalState, stateLength);
            using var init = FloatInput.From(initialState);
            var initial = init.Span;
            float[]? kept = null;
            if (initial.IsEmpty) final.Span.Clear();
            else if (initial.Overlaps(final.Span, out int offset))
            {
                if (offset != 0 || initial.Length != final.Span.Length)
                    throw new ArgumentException("final_state: overlaps initial_state without being the same memory", "final_state");
                // The same tensor: the kernels read a copy, so a call refused after they ran puts the caller's state back.
                kept = ArrayPool<float>.Shared.Rent(initial.Length);
                initial.CopyTo(kept);
                initial = kept.AsSpan(0, initial.Length);
            }
            try
            {
                RunOnHost(device, op, scheduler, batch, final.Span, initial);
                if (!cpu) norm?.ApplyAfter(batch.Output, exact: true, scheduler);
                // A state the caller did not ask for is not checked: the GPU keeps such a state on the device, unread.
                bool checkState = finalState.Rank != 0 && OutputCheck.StateReachesNoOutput(batch.Chunked, device.Backend);
                OutputCheck.AfterRun(batch, op.Heads, initial, checkState ? final.Span : default, scheduler, norm);
                // The output's float16 range is checked as it is committed.
                output.Commit();
            }
            catch when (kept is not null)
            {
                initial.CopyTo(final.Span);
                throw;
            }
            finally
            {
                if (kept is not null) ArrayPool<float>.Shared.Return(kept);
            }
        }
        conv?.CommitState();
    }

    /// <summary>
    /// The CPU kernels write the output in place while they read q, k and v: it may be one of them exactly (each row is read
    /// before it is written over) or lie apart from them; any other overlap, and any with g or beta, is refused. Under a
    /// short convolution it lies apart from q, k and v: each row is read again, as it was, for the tokens after it.
    /// </summary>
    private static void RequireOutputPlacement<T>(in AttentionTensors<T> t, bool convolved) where T : unmanaged
    {
        var output = (ReadOnlyTensorSpan<T>)t.Output;
        RequireReadable(output, t.Q, "q", convolved);
        RequireReadable(output, t.K, "k", convolved);
        RequireReadable(output, t.V, "v", convolved);
        TensorArgs.RequireApart(output, "output", t.G, "g");
        TensorArgs.RequireApart(output, "output", t.Beta, "beta");
    }

    private static void RequireReadable<T>(ReadOnlyTensorSpan<T> output, ReadOnlyTensorSpan<T> read, string name, bool convolved)
    {
        if (convolved) TensorArgs.RequireApart(output, "output", read, name, why: $"the short convolution reads each row of {name} as it was for the tokens after it");
        else TensorArgs.RequireSameOrApart(output, "output", read, name);
    }

    private static void RequireStateApart<T>(ReadOnlyTensorSpan<float> state, string name, in AttentionTensors<T> t) where T : unmanaged
    {
        TensorArgs.RequireApart(state, name, t.Q, "q");
        TensorArgs.RequireApart(state, name, t.K, "k");
        TensorArgs.RequireApart(state, name, t.V, "v");
        TensorArgs.RequireApart(state, name, t.G, "g");
        TensorArgs.RequireApart(state, name, t.Beta, "beta");
        TensorArgs.RequireApart(state, name, (ReadOnlyTensorSpan<T>)t.Output, "output");
    }

    /// <summary>A session's call: the shapes checked against the session's op and sequence count, the state carried in place.</summary>
    public static void Run<T>(EngineDevice device, AttentionOp op, int sequences, SessionState state, AttentionMode mode,
        in AttentionTensors<T> t, ReadOnlySpan<int> cuSeqlens, IWorkScheduler? callScheduler) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        var call = Describe(t, cuSeqlens, op.TakesBeta, op.Gate == GateKind.Constant);
        call.RequireSession(op, sequences, cuSeqlens);
        RequireOutputPlacement(t, convolved: false);
        var scheduler = device.SchedulerFor(callScheduler);

        using var inputs = CallInputs.From(op, t, rowsInPlace: device.Backend == Backend.Cpu, scheduler);
        using var output = new FloatOutput<T>(t.Output, "output");
        var batch = inputs.Batch(mode == AttentionMode.Chunked, call.Shapes.Sequences, output.Span);
        // The kernels write the spare, from the current state; a call refused after they ran leaves the current one as it was.
        if (state.Current is GpuState current)
        {
            inputs.RequireFinite();
            using var lease = op.LeaseGpu(device);
            var spare = (GpuState)state.Spare;
            GpuCheckFailure? stateFailure = null;
            using (device.Gpu.Enter())
            {
                spare.CopyFrom(current);
                AttentionGpuHost.Run(lease.Kernel, batch.Chunked, batch.Sequences, batch.Q, batch.K, batch.V, batch.G, batch.Beta, batch.Output, spare.View);
                // The state checked where it lies: one launch and a check word read back, not the state.
                if (OutputCheck.StateReachesNoOutput(batch.Chunked, device.Backend))
                    stateFailure = lease.Kernel.Buffers.Checks.CheckNow(spare.View, DeviceCall.FinalState, ValueRule.Finite);
            }
            OutputCheck.AfterRun(batch, op.Heads, default, default, scheduler);
            if (stateFailure is { } f) throw OutputCheck.StateOverflow(f.Value, f.Index);
        }
        else
        {
            var initial = ((HostState)state.Current).Span;
            var spare = ((HostState)state.Spare).Span;
            RunOnHost(device, op, scheduler, batch, spare, initial);
            OutputCheck.AfterRun(batch, op.Heads, initial, OutputCheck.StateReachesNoOutput(batch.Chunked, device.Backend) ? spare : default, scheduler,
                stateName: SessionStateName);
        }
        // The output's float16 range is checked as it is committed: a refusal there leaves the state as it was too.
        output.Commit();
        state.Swap();
    }

    private const string SessionStateName = "the session's state (not finite: an earlier call overflowed fp32; ResetState or SetState)";

    /// <summary>A session's call: the shapes checked against the session's op and sequence count.</summary>
    private void RequireSession(AttentionOp op, int sequences, ReadOnlySpan<int> cuSeqlens)
    {
        var heads = Shapes.Heads;
        if (heads != op.Heads)
            throw new ArgumentException($"q, k, v: heads and dims ({heads}) differ from the session's ({op.Heads})", "q");
        if (Gate != op.Gate)
            throw new ArgumentException($"g: the session was made for gate {op.Gate}, this call gives {Gate}", "g");
        if (Shapes.Sequences.Count != sequences)
        {
            // The count comes from q's batch, or from cu_seqlens when the call packs its sequences: the message names that one.
            string name = cuSeqlens.IsEmpty ? "q" : "cu_seqlens";
            throw new ArgumentException($"{name}: the session holds {sequences} sequences, this call has {Shapes.Sequences.Count} " +
                $"({(cuSeqlens.IsEmpty ? "batch B" : $"{cuSeqlens.Length} offsets")})", name);
        }
    }

    /// <summary>
    /// The state's length in floats, the given initial and final states' shapes (rank 0: not given) checked. A state of more
    /// floats than one array holds is refused as the final state, given or not: the call holds it as one span.
    /// </summary>
    public int StateLength(AttentionOp op, ReadOnlySpan<nint> initialState, ReadOnlySpan<nint> finalState)
    {
        nint[] stateShape = op.StateShape(Shapes.Sequences.Count);
        TensorArgs.RequireArrayHolds(stateShape, DeviceCall.FinalState, $"the state {op.StateAxes}", "fewer sequences or smaller heads");
        if (initialState.Length != 0) TensorArgs.RequireShape(initialState, "initial_state", op.StateAxes, stateShape);
        if (finalState.Length != 0) TensorArgs.RequireShape(finalState, "final_state", op.StateAxes, stateShape);
        return (int)(Shapes.Sequences.Count * op.Heads.StatePerSequence);
    }

    /// <summary>
    /// A whole-sequence call on device tensors: no data crosses between host and device. The kernels update
    /// <paramref name="finalState"/> in place (loaded from <paramref name="initialState"/>, or zeros), or the kernel instance's
    /// state buffer when no final state is asked for.
    /// </summary>
    public static void Forward<T>(EngineDevice device, in DeviceAttentionTensors<T> t, ReadOnlySpan<int> cuSeqlens,
        DeviceTensor<float>? initialState, DeviceTensor<float>? finalState, AttentionOptions options,
        bool takesBeta, bool constantGate, Func<HeadLayout, GateKind, AttentionOp> build) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        TensorArgs.RequireElementType<T>();
        var call = Describe(t.Lengths, cuSeqlens, takesBeta, constantGate);
        var op = build(call.Shapes.Heads, call.Gate);
        int stateLength = call.StateLength(op, initialState is null ? default : initialState.Lengths, finalState is null ? default : finalState.Lengths);
        t.RequireStateApart(initialState, "initial_state");
        t.RequireStateApart(finalState, "final_state");
        t.RequireOn(device, initialState, finalState);
        using var lease = op.LeaseGpu(device);
        var gpu = device.Gpu;
        GpuCheckFailure? failure;
        using (gpu.Enter())
        {
            var run = new DeviceCall(device, lease.Kernel.Buffers);
            var state = run.StateFor(finalState, initialState, nameof(AttentionGpuViews.State), stateLength);
            bool chunked = options.CheckedMode == AttentionMode.Chunked;
            // A state the caller did not ask for stays unread in the kernel's buffer: no check.
            failure = RunOnDevice(run, lease.Kernel, op, chunked, call.Shapes.Sequences, t, state,
                r => r.LoadState(state, initialState, "initial_state"), checkState: finalState is not null && OutputCheck.StateReachesNoOutput(chunked, Backend.Gpu));
            if (failure is null) run.StoreState(state, finalState, initialState);
        }
        if (failure is { } f) throw Refusal(f);
    }

    /// <summary>
    /// A session's call on device tensors. The kernels run on the session's spare state, a device copy of the current
    /// one, swapped in when every check passed: a refused call leaves the session as it was.
    /// </summary>
    public static void Run<T>(EngineDevice device, AttentionOp op, int sequences, SessionState state, AttentionMode mode,
        in DeviceAttentionTensors<T> t, ReadOnlySpan<int> cuSeqlens) where T : unmanaged
    {
        TensorArgs.RequireElementType<T>();
        var call = Describe(t.Lengths, cuSeqlens, op.TakesBeta, op.Gate == GateKind.Constant);
        call.RequireSession(op, sequences, cuSeqlens);
        t.RequireOn(device);
        using var lease = op.LeaseGpu(device);
        var gpu = device.Gpu;
        var current = (GpuState)state.Current;
        var spare = (GpuState)state.Spare;
        GpuCheckFailure? failure;
        using (gpu.Enter())
        {
            var run = new DeviceCall(device, lease.Kernel.Buffers);
            bool chunked = mode == AttentionMode.Chunked;
            failure = RunOnDevice(run, lease.Kernel, op, chunked, call.Shapes.Sequences, t, spare.View, _ => spare.CopyFrom(current),
                checkState: OutputCheck.StateReachesNoOutput(chunked, Backend.Gpu));
        }
        if (failure is { } f) throw Refusal(f);
        state.Swap();
    }

    /// <summary>
    /// The launches of a call on device tensors: inputs checked, state loaded, the op's kernels, the output checked (and the
    /// final state with <paramref name="checkState"/>); then the check words read.
    /// </summary>
    private static GpuCheckFailure? RunOnDevice<T>(DeviceCall run, IAttentionGpu kernel, AttentionOp op, bool chunked, SequenceLayout sequences,
        in DeviceAttentionTensors<T> t, ArrayView<float> state, Action<DeviceCall> loadState, bool checkState) where T : unmanaged
    {
        // In the order the host checks them, so the same tensor is named first.
        var beta = run.Input(op.TakesBeta ? t.Beta : null, "beta", nameof(AttentionGpuViews.Beta), ValueRule.Finite);
        var g = run.Input(op.Gate is GateKind.PerHead or GateKind.PerKey ? t.G : null, "g", nameof(AttentionGpuViews.G), ValueRule.LogGate);
        var q = run.Input(t.Q, "q", nameof(AttentionGpuViews.Q), ValueRule.Finite);
        var k = run.Input(t.K, "k", nameof(AttentionGpuViews.K), ValueRule.Finite);
        var v = run.Input(t.V, "v", nameof(AttentionGpuViews.V), ValueRule.Finite);
        loadState(run);
        var output = run.Output(t.Output, "output", nameof(AttentionGpuViews.Output));
        kernel.Run(chunked, sequences, new AttentionGpuViews(q, k, v, g, beta, output, state));
        run.CommitOutput(t.Output, output, "output");
        if (checkState) run.CheckFinalState(state);
        return run.Finish();
    }

    /// <summary>The refusal of a device call: the host check's message; an output or final state not finite from finite inputs is an fp32 overflow.</summary>
    private static ArgumentException Refusal(GpuCheckFailure failure) => failure switch
    {
        { Name: "output", Rule: ValueRule.Finite } => OutputCheck.Overflow(failure.Value, failure.Index),
        { Name: DeviceCall.FinalState, Rule: ValueRule.Finite } => OutputCheck.StateOverflow(failure.Value, failure.Index),
        _ => failure.Refusal(),
    };

    /// <summary>The CPU kernel, or the float64 reference with the state and output going through double.</summary>
    private static void RunOnHost(EngineDevice device, AttentionOp op, IWorkScheduler scheduler, in AttentionBatch batch,
        Span<float> state, ReadOnlySpan<float> initialState)
    {
        if (device.Backend == Backend.Cpu)
        {
            op.RunCpu(device, scheduler, batch, state, initialState);
            return;
        }
        using var run = Float64Run.Begin(initialState.IsEmpty ? state : initialState, batch.Output.Length);
        op.RunReference(batch, run.Output, run.State);
        run.End(batch.Output, state);
    }
}

/// <summary>
/// A call's inputs as fp32 (the tensors' own memory when they are dense float; with <c>rowsInPlace</c>, also q, k and v whose
/// token rows are equally spaced inside wider rows, as the parts of a packed projection are), with the values a kernel cannot
/// check cheaply as it runs checked before it does: a refused call leaves a session's state as it was.
/// </summary>
internal ref struct CallInputs
{
    private FloatInput _q, _k, _v, _g, _beta;
    private TokenRows _rows;

    public static CallInputs From<T>(AttentionOp op, in AttentionTensors<T> t, bool rowsInPlace, IWorkScheduler scheduler) where T : unmanaged
    {
        var inputs = new CallInputs();
        try
        {
            inputs._beta = FloatInput.From(t.Beta);
            if (op.TakesBeta) TensorArgs.RequireFinite(inputs._beta.Span, "beta");
            inputs._g = FloatInput.From(t.G);
            if (op.Gate is (GateKind.PerHead or GateKind.PerKey) && !TensorArgs.InSlices(inputs._g.Span, scheduler, LogGates.AllValid))
                LogGates.Refuse(inputs._g.Span, "g");
            inputs._q = FloatInput.Rows(t.Q, rowsInPlace, out int q);
            inputs._k = FloatInput.Rows(t.K, rowsInPlace, out int k);
            inputs._v = FloatInput.Rows(t.V, rowsInPlace, out int v);
            inputs._rows = new TokenRows(q, k, v);
            return inputs;
        }
        catch
        {
            inputs.Dispose();
            throw;
        }
    }

    /// <summary>q, k and v finite, checked before a kernel that cannot be undone runs (the GPU's in-place state).</summary>
    public readonly void RequireFinite()
    {
        TensorArgs.RequireFinite(_q.Span, "q");
        TensorArgs.RequireFinite(_k.Span, "k");
        TensorArgs.RequireFinite(_v.Span, "v");
    }

    public readonly AttentionBatch Batch(bool chunked, SequenceLayout sequences, Span<float> output, ConvolutionCall? convolution = null, NormCall? norm = null) =>
        new(chunked, sequences, _q.Span, _k.Span, _v.Span, _rows, _g.Span, _beta.Span, output, convolution, norm);

    /// <summary>Keeps the convolution's final state of the raw q, k and v rows (before <see cref="Convolve"/> replaces them).</summary>
    public readonly void KeepConvolutionState(ConvolutionCall conv, HeadLayout heads) => conv.KeepFinalState(_q.Span, _k.Span, _v.Span, _rows, heads);

    /// <summary>
    /// q, k and v replaced by dense convolved copies (float64 sums when exact), for the backends whose kernels do not convolve.
    /// The rows given are checked first and the convolved ones after: a NaN or infinity is named where the caller put it, and
    /// a convolution that overflows fp32 from finite rows is refused as such, not as a q, k or v that is not finite.
    /// </summary>
    public void Convolve(ConvolutionCall conv, HeadLayout heads, bool exact)
    {
        RequireFinite();
        int kw = heads.KeyDim;
        _q = FloatInput.Convolved(conv, _q, _rows.Q, 0, heads.QHeads, kw, exact);
        _k = FloatInput.Convolved(conv, _k, _rows.K, heads.QHeads * kw, heads.KeyHeads, kw, exact);
        _v = FloatInput.Convolved(conv, _v, _rows.V, (heads.QHeads + heads.KeyHeads) * kw, heads.ValueHeads, heads.ValueDim, exact);
        _rows = TokenRows.Dense(heads);
        RequireConvolvedFinite(_q.Span, "q");
        RequireConvolvedFinite(_k.Span, "k");
        RequireConvolvedFinite(_v.Span, "v");
    }

    private static void RequireConvolvedFinite(ReadOnlySpan<float> rows, string name)
    {
        if (TensorArgs.AllFinite(rows)) return;
        float value = OutputCheck.FirstNotFinite(rows, out int i);
        throw new ArgumentException($"options: the short convolution of {name} overflows fp32 although the rows, weights, bias and state are finite " +
            $"(value {value} at flat index {i} of the convolved {name}): inputs or weights too large", "options");
    }

    public void Dispose()
    {
        _q.Dispose();
        _k.Dispose();
        _v.Dispose();
        _g.Dispose();
        _beta.Dispose();
    }
}

/// <summary>The final state of a whole-sequence call on the host: the caller's tensor, or a pooled buffer when none is asked for.</summary>
internal ref struct StateBuffer
{
    private float[]? _rented;

    public StateBuffer(TensorSpan<float> finalState, int length)
    {
        if (finalState.Rank != 0)
        {
            Span = TensorArgs.DenseSpan(finalState, "final_state");
            return;
        }
        _rented = ArrayPool<float>.Shared.Rent(Math.Max(length, 1));
        Span = _rented.AsSpan(0, length);
    }

    public Span<float> Span { get; }

    public void Dispose()
    {
        if (_rented is not null) ArrayPool<float>.Shared.Return(_rented);
        _rented = null;
    }
}

/// <summary>
/// The finite check of a call's q, k, v and initial state, made on its output and final state after the run instead of as
/// passes over the inputs: a NaN or infinity in q, k or v at a token, or anywhere in a sequence's initial state, reaches
/// that token's (or the sequence's first token's) output, and the sequence's final state, through multiply-adds (0 · ∞ is
/// NaN). So one pass over the output and the final state; the inputs are read only when one is not finite, to name the
/// offender. An output or a state that overflows fp32 from finite inputs is refused as such.
/// </summary>
internal static class OutputCheck
{
    /// <param name="finalState">the state the call wrote, checked when not empty (a state no output reads: the last chunk's).</param>
    /// <param name="stateName">what the initial state is to the caller: the call's initial_state, or a session's state.</param>
    public static void AfterRun(in AttentionBatch batch, HeadLayout heads, ReadOnlySpan<float> initialState, ReadOnlySpan<float> finalState,
        IWorkScheduler scheduler, NormCall? norm = null, string stateName = "initial_state")
    {
        // An empty sequence's initial state reaches no output.
        bool anyEmpty = false;
        for (int n = 0; n < batch.Sequences.Count && !anyEmpty; n++) anyEmpty = batch.Sequences.Length(n) == 0;
        if (anyEmpty) TensorArgs.RequireFinite(initialState, stateName);
        bool outputFinite = TensorArgs.AllFinite(batch.Output, scheduler);
        if (outputFinite && TensorArgs.AllFinite(finalState, scheduler)) return;
        if (norm is not null && !outputFinite) TensorArgs.RequireFinite(norm.Norm.Gate.Span, "output norm gate");
        var dense = TokenRows.Dense(heads);
        TensorArgs.RequireFiniteRows(batch.Q, batch.Rows.Q, dense.Q, "q");
        TensorArgs.RequireFiniteRows(batch.K, batch.Rows.K, dense.K, "k");
        TensorArgs.RequireFiniteRows(batch.V, batch.Rows.V, dense.V, "v");
        TensorArgs.RequireFinite(initialState, stateName);
        if (!outputFinite) throw Overflow(FirstNotFinite(batch.Output, out int i), i);
        throw StateOverflow(FirstNotFinite(finalState, out int j), j);
    }

    /// <summary>Refuses a final state that is not finite from inputs and an initial state checked finite: an fp32 overflow.</summary>
    public static void RequireStateFinite(ReadOnlySpan<float> finalState, IWorkScheduler scheduler)
    {
        if (!TensorArgs.AllFinite(finalState, scheduler)) throw StateOverflow(FirstNotFinite(finalState, out int i), i);
    }

    public static ArgumentException StateOverflow(float value, long index) =>
        new($"final_state: value {value} at flat index {index} is not finite although q, k, v and the initial state are: the state overflows fp32: inputs too large", "final_state");

    /// <summary>
    /// Whether a call's final state needs a check of its own: the chunked form writes it after the last chunk's outputs, and
    /// the reference rounds it from float64, where it may not have overflowed. In fp32, the recurrent form's last output reads
    /// every element of the final state (an infinite one gives ±∞, or NaN times a zero of q), so its output check covers it.
    /// </summary>
    public static bool StateReachesNoOutput(bool chunked, Backend backend) => chunked || backend == Backend.Reference;

    public static float FirstNotFinite(ReadOnlySpan<float> values, out int index)
    {
        index = 0;
        while (float.IsFinite(values[index])) index++;
        return values[index];
    }

    public static ArgumentException Overflow(float value, long index) =>
        new($"output: value {value} at flat index {index} is not finite although the inputs and the initial state are: the products or the state " +
            "overflow fp32 (or fp16, with GpuPrecision Fp16 on the GPU): inputs too large", "output");
}

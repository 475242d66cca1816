using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Lssl;

namespace Engine;

/// <summary>
/// The Linear State-Space Layer (LSSL, Gu et al. 2021): H independent channels, each a single-input
/// single-output state-space model of state size N, discretized once with step Δ_h:
///   x_k = Ā x_(k−1) + B̄ u_k,   y_k = C x_k + D u_k
/// u, y [B, L, H] (float or System.Half); state [B, H, N] fp32. Build a <see cref="LsslLayer"/> from A, B, C,
/// D, Δ; the builders here make the structured initializations (HiPPO matrices, log-uniform Δ).
/// </summary>
public static class Lssl
{
    /// <summary>HiPPO-LegS: A [N, N] with A_nk = −√(2n+1)√(2k+1) (n > k), −(n+1) (n = k), 0 (n &lt; k); B [N] = √(2n+1).</summary>
    public static (Tensor<float> A, Tensor<float> B) HippoLegS(int n)
    {
        var (a, b) = LsslInit.HippoLegS(n);
        return (Tensor.Create(ToFloat(a), [n, n]), Tensor.Create(ToFloat(b), [n]));
    }

    /// <summary>HiPPO-LegT: A [N, N] with A_nk = −½√(2n+1)√(2k+1)·(1 if n >= k else (−1)^(n−k)); B [N] = ½√(2n+1).</summary>
    public static (Tensor<float> A, Tensor<float> B) HippoLegT(int n)
    {
        var (a, b) = LsslInit.HippoLegT(n);
        return (Tensor.Create(ToFloat(a), [n, n]), Tensor.Create(ToFloat(b), [n]));
    }

    /// <summary>
    /// Δ [H], log-uniform in [dtMin, dtMax], the same values for the same seed in every process. Both bounds must lie in
    /// float32's normal range: past it a step would be stored as 0 or infinity, which no layer takes.
    /// </summary>
    public static Tensor<float> LogUniformDt(int channels, int seed, double dtMin = 1e-3, double dtMax = 1e-1)
    {
        if (!(dtMin >= MinStep && dtMax <= MaxStep))
            throw new ArgumentOutOfRangeException(nameof(dtMin), $"steps must lie in float32's range [{MinStep}, {MaxStep}], got [{dtMin}, {dtMax}]");
        return Tensor.Create(ToFloat(LsslInit.LogUniformDt(channels, seed, dtMin, dtMax)), [channels]);
    }

    /// <summary>The smallest step float32 holds at full precision (its smallest normal number).</summary>
    public const float MinStep = 1.17549435e-38f;

    /// <summary>The largest step float32 holds.</summary>
    public const float MaxStep = float.MaxValue;

    /// <summary>
    /// A full parameter set for H channels of state size N, the same for the same seed: A and B from the HiPPO
    /// measure (LegS or LegT, shared by the channels) or S4D-real (diagonal A_hn = −(n+1), B = 1);
    /// C ~ N(0, 1/N) [H, N]; D ~ N(0, 1) [H]; Δ log-uniform in [dtMin, dtMax].
    /// </summary>
    public static LsslParameters Parameters(LsslInitKind kind, int channels, int stateSize, int seed, double dtMin = 1e-3, double dtMax = 1e-1)
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels H must be >= 1");
        if (!Enum.IsDefined(kind))
            throw new ArgumentOutOfRangeException(nameof(kind), kind, $"kind must be one of {string.Join(", ", Enum.GetNames<LsslInitKind>())}");
        Tensor<float> a, b;
        switch (kind)
        {
            case LsslInitKind.Legs: (a, b) = HippoLegS(stateSize); break;
            case LsslInitKind.Legt: (a, b) = HippoLegT(stateSize); break;
            default:
            {
                if (stateSize < 1) throw new ArgumentOutOfRangeException(nameof(stateSize), stateSize, "state size N must be >= 1");
                var diagonal = new float[channels * stateSize];
                for (int i = 0; i < diagonal.Length; i++) diagonal[i] = -(i % stateSize + 1);
                a = Tensor.Create(diagonal, [channels, stateSize]);
                b = Tensor.Create(Enumerable.Repeat(1f, channels * stateSize).ToArray(), [channels, stateSize]);
                break;
            }
        }
        var random = new Random(seed);
        var c = Tensor.Create(Normal(random, channels * stateSize, 1.0 / Math.Sqrt(stateSize)), [channels, stateSize]);
        var d = Tensor.Create(Normal(random, channels, 1.0), [channels]);
        var form = kind == LsslInitKind.Diagonal ? LsslStateMatrix.Diagonal : LsslStateMatrix.DenseShared;
        return new LsslParameters(a, b, c, d, LogUniformDt(channels, seed, dtMin, dtMax), form);
    }

    private static float[] Normal(Random random, int count, double std)
    {
        var x = new float[count];
        for (int i = 0; i < count; i++)
            x[i] = (float)(std * Math.Sqrt(-2.0 * Math.Log(1.0 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        return x;
    }

    private static float[] ToFloat(double[] values)
    {
        var f = new float[values.Length];
        for (int i = 0; i < f.Length; i++) f[i] = (float)values[i];
        return f;
    }
}

/// <summary>Which structured initialization <see cref="Lssl.Parameters"/> makes.</summary>
public enum LsslInitKind
{
    /// <summary>HiPPO-LegS A [N, N] and B [N], shared by the channels.</summary>
    Legs,
    /// <summary>HiPPO-LegT A [N, N] and B [N], shared by the channels.</summary>
    Legt,
    /// <summary>S4D-real: diagonal A [H, N] with A_hn = −(n+1), B [H, N] = 1.</summary>
    Diagonal,
}

/// <summary>An LSSL parameter set as tensors, with the form of its A: what <see cref="LsslLayer"/> is built from.</summary>
public sealed record LsslParameters(Tensor<float> A, Tensor<float> B, Tensor<float> C, Tensor<float> D, Tensor<float> Dt, LsslStateMatrix StateMatrix)
{
    /// <summary>Discretizes these parameters into a layer (the form of A is this set's, whatever H and N are).</summary>
    public LsslLayer Layer(LsslOptions? options = null) => new(A, B, C, D, Dt, (options ?? new LsslOptions()) with { StateMatrix = StateMatrix });
}

/// <summary>Options of an <see cref="LsslLayer"/>.</summary>
public sealed record LsslOptions
{
    /// <summary>The discretization rule; default the bilinear transform (GBT with α = 0.5).</summary>
    public LsslDiscretization Discretization { get; init; } = LsslDiscretization.Bilinear;

    /// <summary>The form of A; null infers it from A's shape (an error where [N, N] and [H, N] coincide, H = N).</summary>
    public LsslStateMatrix? StateMatrix { get; init; }

    /// <summary>The dt tensor holds log Δ (as models learn it) rather than Δ.</summary>
    public bool LogDt { get; init; }

    /// <summary>Steps per chunk of the scan (16, 32, 64, 128 or 256); null: the smallest power of two &gt;= N, within 16–256 (N = 64: 64).</summary>
    public int? ChunkLength { get; init; }
}

/// <summary>
/// An LSSL layer: parameters A, B, C, D, Δ discretized once (float64, then fp32 tables), ready to run on
/// any device in any mode. Shapes: C [H, N] fixes H and N; A [N, N] (shared), [H, N, N] (per channel) or
/// [H, N] (diagonal); B [N] or [H, N]; D [H]; dt [H]. Calls on one layer may run on any number of threads at once (the
/// tables are shared, read only). Dispose releases cached device copies of the tables once the GPU calls using them are
/// done; later calls throw <see cref="ObjectDisposedException"/>.
/// </summary>
public sealed class LsslLayer : IDisposable
{
    public LsslLayer(ReadOnlyTensorSpan<float> a, ReadOnlyTensorSpan<float> b, ReadOnlyTensorSpan<float> c,
        ReadOnlyTensorSpan<float> d, ReadOnlyTensorSpan<float> dt, LsslOptions? options = null)
    {
        options ??= new LsslOptions();
        TensorArgs.RequireRank(c.Lengths, "C", 2, "(H, N)");
        var (h, n) = ChannelsAndStateSize(a.Lengths, b.Lengths, c.Lengths, d.Lengths, dt.Lengths);
        if (h < 1 || n < 1) throw new ArgumentException($"C: expected H >= 1 channels and state size N >= 1, got shape {TensorArgs.Format(c.Lengths)}", "C");
        TensorArgs.RequireShape(c.Lengths, "C", "(H, N)", h, n);
        var form = StateMatrixOf(a.Lengths, h, n, options.StateMatrix);
        if (b.Rank == 1) TensorArgs.RequireShape(b.Lengths, "B", "(N) shared by the channels", n);
        else TensorArgs.RequireShape(b.Lengths, "B", "(H, N)", h, n);
        TensorArgs.RequireShape(d.Lengths, "D", "(H)", h);
        TensorArgs.RequireShape(dt.Lengths, "dt", "(H)", h);
        int chunk = options.ChunkLength ?? LsslConfig.DefaultChunkLength(n);
        if (!LsslConfig.ChunkLengths.Contains(chunk))
            throw new ArgumentException($"options: chunk length must be one of {string.Join(", ", LsslConfig.ChunkLengths)}, got {chunk}", nameof(options));

        var steps = ToDouble(dt, "dt");
        for (int i = 0; i < steps.Length; i++)
        {
            double step = options.LogDt ? Math.Exp(steps[i]) : steps[i];
            if (!(step > 0.0) || !double.IsFinite(step))
                throw new ArgumentException(options.LogDt
                    ? $"dt: log steps must be finite and give a positive finite step, got log dt = {steps[i]} for channel {i}"
                    : $"dt: steps must be finite and > 0, got {steps[i]} for channel {i}", "dt");
            steps[i] = step;
        }
        Config = new LsslConfig(h, n, form, chunk);
        Discretization = options.Discretization;
        // A layer belongs to no device: its one-off discretization runs on every core.
        System = new LsslSystem(Config, options.Discretization, ToDouble(a, "A"), ToDouble(b, "B"), ToDouble(c, "C"), ToDouble(d, "D"), steps,
            new ThreadPoolScheduler(Environment.ProcessorCount));
    }

    /// <summary>
    /// H and N as most of the tensors that hold them give them (C's where they split evenly): a mistaken tensor is then
    /// refused by its own name, not every other one against it. A's first dim, H or N as its form says, is left out.
    /// </summary>
    private static (int H, int N) ChannelsAndStateSize(ReadOnlySpan<nint> a, ReadOnlySpan<nint> b, ReadOnlySpan<nint> c, ReadOnlySpan<nint> d, ReadOnlySpan<nint> dt)
    {
        List<nint> channels = [c[0]], states = [c[1]];
        if (d.Length == 1) channels.Add(d[0]);
        if (dt.Length == 1) channels.Add(dt[0]);
        if (b.Length == 2) channels.Add(b[0]);
        if (b.Length is 1 or 2) states.Add(b[^1]);
        if (a.Length is 2 or 3) states.Add(a[^1]);
        if (a.Length == 3) channels.Add(a[0]);
        static int MostCommon(List<nint> dims) =>
            (int)Math.Min(dims.GroupBy(x => x).OrderByDescending(g => g.Count()).ThenBy(g => dims.IndexOf(g.Key)).First().Key, int.MaxValue);
        return (MostCommon(channels), MostCommon(states));
    }

    /// <summary>Convenience form over tensors.</summary>
    public LsslLayer(Tensor<float> a, Tensor<float> b, Tensor<float> c, Tensor<float> d, Tensor<float> dt, LsslOptions? options = null)
        : this(Checked(a, "A").AsReadOnlyTensorSpan(), Checked(b, "B").AsReadOnlyTensorSpan(), Checked(c, "C").AsReadOnlyTensorSpan(),
            Checked(d, "D").AsReadOnlyTensorSpan(), Checked(dt, "dt").AsReadOnlyTensorSpan(), options)
    {
    }

    internal LsslConfig Config { get; }
    public LsslDiscretization Discretization { get; }
    public int Channels => Config.Channels;
    public int StateSize => Config.StateSize;
    public LsslStateMatrix StateMatrix => Config.Form;
    public int ChunkLength => Config.ChunkLength;

    internal LsslSystem System { get; }

    /// <summary>State shape [B, H, N] for a batch.</summary>
    public nint[] StateShape(int batch) => batch >= 0 ? [batch, Channels, StateSize]
        : throw new ArgumentOutOfRangeException(nameof(batch), batch, "batch must be >= 0");

    /// <summary>The mode <paramref name="mode"/> becomes for this shape on this device (Auto resolved by <see cref="LsslModeRule"/>).</summary>
    public LsslMode ResolveMode(EngineDevice device, int batch, int length, LsslMode mode = LsslMode.Auto, bool stateIn = false, bool stateOut = false)
    {
        ArgumentNullException.ThrowIfNull(device);
        return LsslModeRule.Resolve(mode, device.Backend, Config, batch, length, stateIn, stateOut);
    }

    /// <summary>
    /// Runs the layer over u [B, L, H] into y [B, L, H]. initialState defaults to zeros; finalState is
    /// optional. Returns the mode that ran (what Auto picked). <paramref name="scheduler"/> runs this call's CPU work
    /// (default the device's).
    /// </summary>
    /// <exception cref="ArgumentException">
    /// u, y or a state of the wrong shape, non-finite u or initial state, or (parameter u) a y or final state that overflowed:
    /// the input too large for fp32 in this (stable) system.
    /// </exception>
    public LsslMode Forward<T>(EngineDevice device, ReadOnlyTensorSpan<T> u, TensorSpan<T> y,
        ReadOnlyTensorSpan<float> initialState = default, TensorSpan<float> finalState = default, LsslMode mode = LsslMode.Auto,
        IWorkScheduler? scheduler = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        var (batch, length) = LsslCall.Describe(this, u.Lengths, y.Lengths, null);
        var stateShape = StateShape(batch);
        if (initialState.Rank != 0) TensorArgs.RequireShape(initialState.Lengths, "initial_state", "(B, H, N)", stateShape);
        if (finalState.Rank != 0) TensorArgs.RequireShape(finalState.Lengths, "final_state", "(B, H, N)", stateShape);
        // The final state is stored after y is written and u read: in either, it would overwrite them.
        TensorArgs.RequireApart((ReadOnlyTensorSpan<float>)finalState, "final_state", (ReadOnlyTensorSpan<T>)y, "y");
        TensorArgs.RequireApart((ReadOnlyTensorSpan<float>)finalState, "final_state", u, "u");
        bool stateIn = initialState.Rank != 0, stateOut = finalState.Rank != 0;
        var resolved = ResolveMode(device, batch, length, mode, stateIn, stateOut);

        using var lease = DeviceState.Lease(device, (long)batch * Channels * StateSize);
        var state = lease.Kernel;
        if (stateIn)
        {
            using var init = FloatInput.From(initialState);
            TensorArgs.RequireFinite(init.Span, "initial_state");
            state.Load(init.Span);
        }
        else state.Clear();
        LsslCall.Run(device, scheduler, this, resolved, batch, length, u, y, state, !stateIn, stateOut);
        if (stateOut) state.Store(TensorArgs.DenseSpan(finalState, "final_state"));
        return resolved;
    }

    /// <summary>
    /// Runs the layer over device tensors u, y [B, L, H] of this (GPU) device, read and written where they lie: with the
    /// states on the device too, no data crosses between host and device. The kernels update finalState in place (loaded
    /// from initialState, or zeros; when it is initialState's tensor, it is written once the call passed); u and y are checked on the device. Returns the mode that ran.
    /// </summary>
    public LsslMode Forward<T>(EngineDevice device, DeviceTensor<T> u, DeviceTensor<T> y, DeviceTensor<float>? initialState = null,
        DeviceTensor<float>? finalState = null, LsslMode mode = LsslMode.Auto, IWorkScheduler? scheduler = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(device);
        var (batch, length) = LsslCall.Describe(this, u, y, null);
        var stateShape = StateShape(batch);
        if (initialState is not null) TensorArgs.RequireShape(initialState.Lengths, "initial_state", "(B, H, N)", stateShape);
        if (finalState is not null) TensorArgs.RequireShape(finalState.Lengths, "final_state", "(B, H, N)", stateShape);
        u.RequireOn(device, "u");
        y.RequireOn(device, "y");
        if (finalState is not null)
        {
            // The kernels update the final state while they write y and read u.
            DeviceAttentionTensors<T>.RequireApart(finalState, "final_state", y, "y");
            DeviceAttentionTensors<T>.RequireApart(finalState, "final_state", u, "u");
        }
        initialState?.RequireOn(device, "initial_state");
        finalState?.RequireOn(device, "final_state");
        var resolved = ResolveMode(device, batch, length, mode, initialState is not null, finalState is not null);
        using var lease = LsslCall.LeaseGpu(device, scheduler, System, resolved, length);
        var gpu = device.Gpu;
        GpuCheckFailure? failure;
        using (gpu.Enter())
        {
            var call = new DeviceCall(device, lease.Kernel.Buffers);
            var state = call.StateFor(finalState, initialState, nameof(LsslGpuArgs.State), (long)batch * Channels * StateSize);
            failure = LsslCall.RunOnDevice(call, lease.Kernel, this, resolved, batch, length, u, y, state,
                run => run.LoadState(state, initialState, "initial_state"), initialState is null, finalState is not null);
            if (failure is null) call.StoreState(state, finalState, initialState);
        }
        if (failure is { } f) throw LsslCall.Refusal(this, length, f);
        return resolved;
    }

    /// <summary>Convenience form: allocates and returns y (and fills finalState when given).</summary>
    public Tensor<T> Forward<T>(EngineDevice device, Tensor<T> u, LsslMode mode = LsslMode.Auto,
        Tensor<float>? initialState = null, Tensor<float>? finalState = null) where T : unmanaged
    {
        ArgumentNullException.ThrowIfNull(u);
        var y = Tensor.CreateFromShapeUninitialized<T>(u.Lengths);
        Forward(device, u.AsReadOnlyTensorSpan(), y.AsTensorSpan(),
            initialState is null ? default : initialState.AsReadOnlyTensorSpan(),
            finalState is null ? default : finalState.AsTensorSpan(), mode);
        return y;
    }

    /// <summary>A decode session over <paramref name="batch"/> sequences with its state on the device.</summary>
    /// <param name="scheduler">Runs the session's CPU work (default the device's).</param>
    public LsslSession CreateSession(EngineDevice device, int batch, IWorkScheduler? scheduler = null)
    {
        ThrowIfDisposed();
        // Named here: the session's own check knows the state's first axis as the attention sessions' "sequences".
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        return new(this, device, batch, scheduler);
    }

    private bool _disposed;

    /// <summary>Refuses a call on a disposed layer (the GPU's cached tables are gone; the host paths would run on).</summary>
    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    public void Dispose()
    {
        _disposed = true;
        System.Dispose();
    }

    private static Tensor<float> Checked(Tensor<float>? t, string name) => t ?? throw new ArgumentNullException(name);

    private static LsslStateMatrix StateMatrixOf(ReadOnlySpan<nint> a, int h, int n, LsslStateMatrix? requested)
    {
        string expected = $"[{n}, {n}] (N, N) shared, [{h}, {n}, {n}] (H, N, N) per channel, or [{h}, {n}] (H, N) diagonal";
        if (requested is { } form)
        {
            if (!Enum.IsDefined(form))
                throw new ArgumentException($"options: StateMatrix must be one of {string.Join(", ", Enum.GetNames<LsslStateMatrix>())}, got {(int)form}", "options");
            switch (form)
            {
                case LsslStateMatrix.DenseShared: TensorArgs.RequireShape(a, "A", "(N, N) shared", n, n); break;
                case LsslStateMatrix.DensePerChannel: TensorArgs.RequireShape(a, "A", "(H, N, N) per channel", h, n, n); break;
                default: TensorArgs.RequireShape(a, "A", "(H, N) diagonal", h, n); break;
            }
            return form;
        }
        if (a.Length == 3 && a[0] == h && a[1] == n && a[2] == n) return LsslStateMatrix.DensePerChannel;
        if (a.Length == 2)
        {
            bool shared = a[0] == n && a[1] == n, diagonal = a[0] == h && a[1] == n;
            if (shared && diagonal)
                throw new ArgumentException($"A: shape {TensorArgs.Format(a)} is both (N, N) and (H, N) when H = N = {n}: set LsslOptions.StateMatrix", "A");
            if (shared) return LsslStateMatrix.DenseShared;
            if (diagonal) return LsslStateMatrix.Diagonal;
        }
        throw new ArgumentException($"A: expected shape {expected}, got {TensorArgs.Format(a)}", "A");
    }

    private static double[] ToDouble(ReadOnlyTensorSpan<float> t, string name)
    {
        using var input = FloatInput.From(t);
        TensorArgs.RequireFinite(input.Span, name);
        var values = new double[input.Span.Length];
        for (int i = 0; i < values.Length; i++) values[i] = input.Span[i];
        return values;
    }
}

/// <summary>
/// An LSSL layer with its state [B, H, N] kept on the device: <see cref="Step"/> runs the recurrence one
/// step (or a few) at a time, <see cref="Prefill"/> runs a block in any mode; both carry the state.
/// </summary>
public sealed class LsslSession : StatefulSession
{
    private readonly LsslLayer _layer;
    private readonly IWorkScheduler? _scheduler;

    internal LsslSession(LsslLayer layer, EngineDevice device, int batch, IWorkScheduler? scheduler)
        : base(device, layer.StateShape(batch), "(B, H, N)")
    {
        _layer = layer;
        _scheduler = scheduler;
    }

    /// <summary>Runs u [B, T, H] (usually T = 1) through the recurrence and carries the state.</summary>
    public void Step<T>(ReadOnlyTensorSpan<T> u, TensorSpan<T> y) where T : unmanaged
        => Run(LsslMode.Recurrent, u, y);

    /// <inheritdoc cref="Step{T}(ReadOnlyTensorSpan{T}, TensorSpan{T})"/>
    public void Step<T>(Tensor<T> u, Tensor<T> y) where T : unmanaged
        => Run(LsslMode.Recurrent, TensorArgs.Input(u, nameof(u)), TensorArgs.Output(y, nameof(y)));

    /// <summary>Runs device tensors u [B, T, H] (usually T = 1) through the recurrence into y and carries the state (no host↔device copy).</summary>
    public void Step<T>(DeviceTensor<T> u, DeviceTensor<T> y) where T : unmanaged => Run(LsslMode.Recurrent, u, y);

    /// <summary>Runs device tensors u [B, T, H] in <paramref name="mode"/> into y and carries the state (no host↔device copy); returns the mode that ran.</summary>
    public LsslMode Prefill<T>(DeviceTensor<T> u, DeviceTensor<T> y, LsslMode mode = LsslMode.Auto) where T : unmanaged => Run(mode, u, y);

    /// <summary>Runs u [B, T, H] in <paramref name="mode"/> (Auto: by the rule) and carries the state; returns the mode that ran.</summary>
    public LsslMode Prefill<T>(ReadOnlyTensorSpan<T> u, TensorSpan<T> y, LsslMode mode = LsslMode.Auto) where T : unmanaged
        => Run(mode, u, y);

    /// <inheritdoc cref="Prefill{T}(ReadOnlyTensorSpan{T}, TensorSpan{T}, LsslMode)"/>
    public LsslMode Prefill<T>(Tensor<T> u, Tensor<T> y, LsslMode mode = LsslMode.Auto) where T : unmanaged
        => Run(mode, TensorArgs.Input(u, nameof(u)), TensorArgs.Output(y, nameof(y)));

    private LsslMode Run<T>(LsslMode mode, ReadOnlyTensorSpan<T> u, TensorSpan<T> y) where T : unmanaged
    {
        using var use = Use();
        var (batch, length) = LsslCall.Describe(_layer, u.Lengths, y.Lengths, this);
        var resolved = _layer.ResolveMode(Device, batch, length, mode, stateIn: true, stateOut: true);
        // The kernels run on the spare, a copy of the current state: a refused call (y overflowed) leaves the session as it was.
        var spare = States.Spare;
        spare.CopyFrom(State);
        LsslCall.Run(Device, _scheduler, _layer, resolved, batch, length, u, y, spare, initialStateIsZero: false, needFinalState: true);
        States.Swap();
        return resolved;
    }

    /// <summary>A call on device tensors: the kernels run on the spare state, a device copy of the current one, swapped in when every check passed.</summary>
    private LsslMode Run<T>(LsslMode mode, DeviceTensor<T> u, DeviceTensor<T> y) where T : unmanaged
    {
        using var use = Use();
        var (batch, length) = LsslCall.Describe(_layer, u, y, this);
        var resolved = _layer.ResolveMode(Device, batch, length, mode, stateIn: true, stateOut: true);
        using var lease = LsslCall.LeaseGpu(Device, _scheduler, _layer.System, resolved, length);
        var gpu = Device.Gpu;
        var current = (GpuState)States.Current;
        var spare = (GpuState)States.Spare;
        GpuCheckFailure? failure;
        using (gpu.Enter())
        {
            failure = LsslCall.RunOnDevice(new DeviceCall(Device, lease.Kernel.Buffers), lease.Kernel, _layer, resolved, batch, length, u, y, spare.View,
                _ => spare.CopyFrom(current), initialStateIsZero: false, needFinalState: true);
        }
        if (failure is { } f) throw LsslCall.Refusal(_layer, length, f);
        States.Swap();
        return resolved;
    }
}

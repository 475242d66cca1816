using Engine.Kernels.Common;
using Engine.Onnx.Interop;
using Engine.Onnx.Ops;

namespace Engine.Onnx;

/// <summary>Where the nodes the engine takes over run.</summary>
public enum HandoverBackend
{
    /// <summary>No hand-over: ONNX Runtime runs the model as given.</summary>
    None,
    /// <summary>The engine's CPU kernels (SIMD, threads on ORT's intra-op pool).</summary>
    Cpu,
    /// <summary>The engine's GPU kernels behind the same custom-op interface, with host tensors.</summary>
    Gpu,
}

/// <summary>Options of a <see cref="KernelHost"/>.</summary>
public sealed record KernelHostOptions
{
    /// <summary>
    /// ORT intra-op threads of every session on this host, which also run the engine's CPU work (default: all cores), 1 to
    /// <see cref="KernelHost.MaxIntraOpThreads"/>.
    /// </summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>The accelerator behind <see cref="HandoverBackend.Gpu"/>.</summary>
    public GpuPreference Gpu { get; init; } = GpuPreference.Auto;
}

/// <summary>
/// Owns what ORT borrows from the engine: the devices the kernels run on and the native custom-op tables
/// and domains registered with ORT. It outlives its sessions: disposing it while sessions are open defers
/// the release until the last one is disposed.
/// </summary>
public sealed class KernelHost : IDisposable
{
    private static readonly Lazy<KernelHost> SharedHost = new(() => new KernelHost());

    private readonly object _lock = new();
    private readonly Dictionary<HandoverBackend, (EngineDevice Device, NativeOpDomain Domain)> _backends = [];
    private int _liveKernels;
    private int _openSessions;
    private bool _disposeRequested;
    private bool _released;

    /// <summary>A host of its own for the sessions given it in <see cref="ModelSessionOptions.Host"/>; dispose it after them.</summary>
    /// <exception cref="ArgumentOutOfRangeException">IntraOpThreads below 1 or above <see cref="MaxIntraOpThreads"/>.</exception>
    public KernelHost(KernelHostOptions? options = null)
    {
        Options = options ?? new KernelHostOptions();
        IntraOpThreads = Options.IntraOpThreads ?? Environment.ProcessorCount;
        int most = Math.Max(MaxIntraOpThreads, Environment.ProcessorCount);
        if (IntraOpThreads < 1 || IntraOpThreads > most)
            throw new ArgumentOutOfRangeException(nameof(options), IntraOpThreads, $"IntraOpThreads must be 1..{most}");
    }

    /// <summary>
    /// The most intra-op threads a host takes (or the machine's cores, where there are more): ORT starts every one when a
    /// session opens and joins them when it closes, so a count far past the cores (a typo) spent minutes there (5,000 on two
    /// cores: 2 s to open, nearly 3 minutes to close), and int.MaxValue failed the open as ORT's std::bad_alloc.
    /// </summary>
    public const int MaxIntraOpThreads = 1024;

    /// <summary>The process-wide host sessions use unless given their own; never disposed (its Dispose does nothing).</summary>
    public static KernelHost Shared => SharedHost.Value;

    /// <summary>The options the host was made with.</summary>
    public KernelHostOptions Options { get; }

    /// <summary>The intra-op threads of every session on this host (<see cref="KernelHostOptions.IntraOpThreads"/>, default all cores).</summary>
    public int IntraOpThreads { get; }

    /// <summary>Kernels ORT has created from this host's ops and not yet destroyed.</summary>
    public int LiveKernels => Volatile.Read(ref _liveKernels);

    /// <summary>Sessions open on this host (not yet disposed).</summary>
    public int OpenSessions
    {
        get { lock (_lock) return _openSessions; }
    }

    /// <summary>The update rules and engine ops this build's kernels run: what <see cref="HandoverRewriter.Rewrite"/> hands over.</summary>
    public EngineCapabilities Capabilities => EngineCapabilities.Current;

    /// <summary>What the backend's kernels run on, e.g. "cpu: 2 threads, Vector512 (AVX-512)".</summary>
    public string Describe(HandoverBackend backend) => backend == HandoverBackend.None ? "none (ONNX Runtime only)" : Backend(backend).Device.Description;

    /// <summary>
    /// The GPU backend's kernel launches, host↔device bytes and device allocations so far (zero before its first use):
    /// each hand-over call uploads ORT's tensors once into buffers its kernels own and downloads its outputs.
    /// </summary>
    public GpuTraffic GpuTraffic
    {
        get
        {
            lock (_lock) return _backends.TryGetValue(HandoverBackend.Gpu, out var gpu) ? gpu.Device.GpuTraffic : default;
        }
    }

    /// <summary>Registers a session: the host's native state stays alive until <see cref="Release"/>.</summary>
    internal NativeOpDomain Acquire(HandoverBackend backend)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposeRequested, this);
            var domain = Backend(backend).Domain;
            _openSessions++;
            return domain;
        }
    }

    internal void Release()
    {
        lock (_lock)
        {
            _openSessions--;
            if (_disposeRequested && _openSessions == 0) ReleaseNative();
        }
    }

    public void Dispose()
    {
        // The shared host serves every session opened without one of its own, in any part of the process.
        if (SharedHost.IsValueCreated && ReferenceEquals(this, SharedHost.Value)) return;
        lock (_lock)
        {
            if (_disposeRequested) return;
            _disposeRequested = true;
            if (_openSessions == 0) ReleaseNative();
        }
    }

    /// <summary>The backend's device and op domain, made on first use.</summary>
    internal (EngineDevice Device, NativeOpDomain Domain) Backend(HandoverBackend backend)
    {
        lock (_lock)
        {
            if (_backends.TryGetValue(backend, out var made)) return made;
            // Made after the release, a backend's device and native tables would never be released.
            ObjectDisposedException.ThrowIf(_released, this);
            var device = backend switch
            {
                HandoverBackend.Cpu => EngineDevice.Create(Engine.Backend.Cpu, new EngineDeviceOptions { CpuThreads = IntraOpThreads }),
                // The GPU backend's CPU-side work (convolutions, gates, norms) runs on ORT's pool too: as many slots as its threads.
                HandoverBackend.Gpu => EngineDevice.Create(Engine.Backend.Gpu, new EngineDeviceOptions { Gpu = Options.Gpu, CpuThreads = IntraOpThreads }),
                _ => throw new ArgumentOutOfRangeException(nameof(backend), backend, "no engine kernels for this backend"),
            };
            try
            {
                var ops = EngineOps(Capabilities).Select(op => new NativeCustomOp(op, device, CountKernels)).ToArray();
                var domain = new NativeOpDomain(HandoverRewriter.EngineDomain, ops);
                _backends[backend] = (device, domain);
                return (device, domain);
            }
            catch
            {
                device.Dispose();
                throw;
            }
        }
    }

    private static IEnumerable<EngineOp> EngineOps(EngineCapabilities capabilities)
    {
        yield return new LinearAttentionOp(capabilities.UpdateRules, Ort.ElementFloat);
        yield return new LinearAttentionOp(capabilities.UpdateRules, Ort.ElementFloat16);
        yield return new GatedDeltaNetOp(Ort.ElementFloat);
        yield return new GatedDeltaNetOp(Ort.ElementFloat16);
        yield return new GatedDeltaNetOp(Ort.ElementBFloat16);
        yield return new LightningAttentionOp();
        yield return new LsslScanOp();
        foreach (int type in new[] { Ort.ElementFloat, Ort.ElementFloat16 })
        {
            yield return new CausalConvOp(type);
            yield return new VarlenCausalConvOp(type);
            yield return new LinearAttentionGateOp(type);
            yield return new GatedRmsNormOp(type);
        }
    }

    private void CountKernels(int delta) => Interlocked.Add(ref _liveKernels, delta);

    private void ReleaseNative()
    {
        if (_released) return;
        _released = true;
        foreach (var (device, domain) in _backends.Values)
        {
            domain.Dispose();
            device.Dispose();
        }
        _backends.Clear();
    }
}

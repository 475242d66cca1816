using System.Collections.Concurrent;
using System.Numerics.Tensors;
using Engine.Kernels.Common;

namespace Engine;

/// <summary>Options for <see cref="EngineDevice.Create"/>.</summary>
public sealed record EngineDeviceOptions
{
    /// <summary>CPU worker threads (default: all cores).</summary>
    public int? CpuThreads { get; init; }

    /// <summary>Runs the CPU work items instead of the .NET thread pool (e.g. a host's own pool), with its own workers: not with <see cref="CpuThreads"/>.</summary>
    public IWorkScheduler? Scheduler { get; init; }

    /// <summary>Which ILGPU accelerator the Gpu backend uses.</summary>
    public GpuPreference Gpu { get; init; } = GpuPreference.Auto;

    /// <summary>
    /// ILGPU's CPU accelerator only: threads per group (default 16, a power of two >= 16) and lanes per warp (4 by default, or 32).
    /// 128 threads in warps of 32 run the GPU kernels in CUDA's geometry, tensor-core precisions
    /// (<see cref="AttentionOptions.GpuPrecision"/>) emulated: slowly, for testing them on tiny shapes.
    /// </summary>
    public int CpuAcceleratorGroupSize { get; init; } = 16;

    /// <inheritdoc cref="CpuAcceleratorGroupSize"/>
    public int CpuAcceleratorWarpSize { get; init; } = 4;
}

/// <summary>The accelerator behind <see cref="Backend.Gpu"/>.</summary>
public enum GpuPreference
{
    /// <summary>CUDA when a GPU is present, otherwise ILGPU's CPU accelerator.</summary>
    Auto,
    /// <summary>CUDA only: fails when no CUDA device is found.</summary>
    Cuda,
    /// <summary>ILGPU's CPU accelerator, which runs the GPU kernels on CPU threads (for testing them).</summary>
    CpuAccelerator,
}

/// <summary>
/// One backend's compute resources: the CPU scheduler, or the ILGPU context and accelerator, and the
/// kernels built for it. Kernels carry their own scratch and are pooled per configuration, so calls on
/// several threads at once each get their own instance and steady-state calls allocate nothing. Disposing it while other
/// threads call it: each call finishes or throws <see cref="ObjectDisposedException"/> (on the GPU, a call in flight
/// finishes before the accelerator goes).
/// </summary>
public sealed class EngineDevice : IDisposable
{
    // Keyed by a tuple held unboxed, and kernels made by a factory of the config: a call that finds its kernel pooled allocates
    // nothing for it (a config that is a value, a state's length, is still boxed into the key).
    private readonly ConcurrentDictionary<(Type Kernel, object Config), ConcurrentBag<IDisposable>> _pools = new();
    private readonly GpuRuntime? _gpu;
    private bool _disposed;

    private EngineDevice(Backend backend, IWorkScheduler scheduler, GpuRuntime? gpu)
    {
        Backend = backend;
        Scheduler = scheduler;
        _gpu = gpu;
    }

    /// <summary>
    /// A device for <paramref name="backend"/>: <see cref="Backend.Reference"/> (float64 loops), <see cref="Backend.Cpu"/>
    /// (SIMD kernels on <see cref="EngineDeviceOptions.CpuThreads"/> workers, default all cores) or <see cref="Backend.Gpu"/>
    /// (the ILGPU kernels on the accelerator <see cref="EngineDeviceOptions.Gpu"/> picks: CUDA when present, else ILGPU's CPU
    /// accelerator). Dispose it after the sessions and device tensors made on it.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">
    /// A backend or GPU preference no member names, CpuThreads below 1, or (Gpu) a CPU accelerator group size that is not a
    /// power of two >= 16 or a warp size other than 4 or 32.
    /// </exception>
    /// <exception cref="ArgumentException">Both CpuThreads and Scheduler given, or a scheduler with no workers.</exception>
    /// <exception cref="InvalidOperationException"><see cref="GpuPreference.Cuda"/> asked for and no CUDA device found.</exception>
    public static EngineDevice Create(Backend backend, EngineDeviceOptions? options = null)
    {
        if (!Enum.IsDefined(backend)) throw new ArgumentOutOfRangeException(nameof(backend), backend, "backend must be Backend.Reference, Cpu or Gpu");
        options ??= new EngineDeviceOptions();
        if (!Enum.IsDefined(options.Gpu)) throw new ArgumentOutOfRangeException(nameof(options), options.Gpu, "options.Gpu must be GpuPreference.Auto, Cuda or CpuAccelerator");
        int threads = options.CpuThreads ?? Environment.ProcessorCount;
        if (threads < 1) throw new ArgumentOutOfRangeException(nameof(options), threads, "CpuThreads must be >= 1");
        if (options.Scheduler is not null && options.CpuThreads is not null)
            throw new ArgumentException("CpuThreads and Scheduler: give one (a scheduler brings its own workers)", nameof(options));
        var scheduler = options.Scheduler is null ? new ThreadPoolScheduler(threads) : RequireWorkers(options.Scheduler, "Scheduler");
        var gpu = backend == Backend.Gpu ? GpuRuntime.Create(options.Gpu switch
        {
            GpuPreference.Cuda => GpuRuntime.Choice.Cuda,
            GpuPreference.CpuAccelerator => GpuRuntime.Choice.CpuAccelerator,
            _ => GpuRuntime.Choice.Auto,
        }, options.CpuAcceleratorGroupSize, options.CpuAcceleratorWarpSize) : null;
        return new EngineDevice(backend, scheduler, gpu);
    }

    /// <summary>The backend the device was created for.</summary>
    public Backend Backend { get; }

    /// <summary>What runs the work: e.g. "cpu: 2 threads, Vector512" or "gpu: NVIDIA H100 (CUDA)".</summary>
    public string Description => Backend switch
    {
        Backend.Reference => "reference: float64 loops, one thread",
        Backend.Cpu => $"cpu: {Scheduler.Workers} thread{(Scheduler.Workers == 1 ? "" : "s")}, {CpuInfo.SimdDescription}",
        _ => $"gpu: {_gpu!.Description}",
    };

    /// <summary>CPU workers the kernels split their work over.</summary>
    public int Threads => Scheduler.Workers;

    internal IWorkScheduler Scheduler { get; }

    /// <summary>
    /// The GPU's kernel launches and host↔device bytes so far (all zero on the CPU and reference backends): take a reading
    /// before and after a call and subtract (<see cref="GpuTraffic.Since"/>) to see what the call moved.
    /// </summary>
    public GpuTraffic GpuTraffic => _gpu?.Traffic ?? default;

    internal GpuRuntime Gpu
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _gpu ?? throw new InvalidOperationException($"this device is not a GPU device ({Description}): device tensors and GPU profiles need Backend.Gpu");
        }
    }

    internal bool IsDisposed => _disposed;

    /// <summary>
    /// The scheduler a call runs its CPU work on: the one it was given (checked), else the device's. Every call on host
    /// tensors asks for it before it runs, so a disposed device is refused here, whatever the backend.
    /// </summary>
    internal IWorkScheduler SchedulerFor(IWorkScheduler? given)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return given is null ? Scheduler : RequireWorkers(given, "Scheduler");
    }

    private static IWorkScheduler RequireWorkers(IWorkScheduler scheduler, string name) => scheduler.Workers >= 1 ? scheduler
        : throw new ArgumentException($"{name}: the scheduler has {scheduler.Workers} workers; IWorkScheduler.Workers must be >= 1", name);

    /// <summary>An uninitialized tensor of this shape in the GPU's memory (float or System.Half); dispose it to free the memory.</summary>
    /// <exception cref="InvalidOperationException">The device is not a <see cref="Backend.Gpu"/> device.</exception>
    /// <exception cref="NotSupportedException">T is neither float nor System.Half.</exception>
    public DeviceTensor<T> Allocate<T>(params ReadOnlySpan<nint> lengths) where T : unmanaged => new(this, lengths);

    /// <summary>A tensor in the GPU's memory with <paramref name="source"/>'s shape and values.</summary>
    /// <exception cref="InvalidOperationException">The device is not a <see cref="Backend.Gpu"/> device.</exception>
    public DeviceTensor<T> Upload<T>(ReadOnlyTensorSpan<T> source) where T : unmanaged
    {
        var tensor = Allocate<T>(source.Lengths);
        try
        {
            tensor.Upload(source);
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <inheritdoc cref="Upload{T}(ReadOnlyTensorSpan{T})"/>
    public DeviceTensor<T> Upload<T>(Tensor<T> source) where T : unmanaged => Upload(TensorArgs.Input(source, nameof(source)));

    /// <summary>
    /// Starts timing every GPU kernel launch (markers on the device's stream around each, only while a profile is taken;
    /// otherwise calls stay asynchronous). <see cref="StopGpuProfile"/> ends it. The profile is the device's: it holds the
    /// launches of every thread's calls meanwhile, and one profile at a time is taken.
    /// </summary>
    public void StartGpuProfile() => Gpu.StartProfile();

    /// <summary>
    /// Waits for the profiled launches and returns, per kernel ("gla.Output", "delta-rule.Prepare", ...) in order of first
    /// launch, its launches and their summed device time since <see cref="StartGpuProfile"/>.
    /// </summary>
    public IReadOnlyList<GpuKernelTime> StopGpuProfile() => Gpu.StopProfile();

    /// <summary>A kernel of this type for <paramref name="config"/> from the pool (or a new one), returned when the lease is disposed.</summary>
    internal KernelLease<TKernel> Lease<TKernel, TConfig>(TConfig config, Func<TConfig, EngineDevice, TKernel> create)
        where TKernel : class, IDisposable where TConfig : notnull
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var key = (typeof(TKernel), (object)config);
        var pool = _pools.GetOrAdd(key, static _ => new ConcurrentBag<IDisposable>());
        return new KernelLease<TKernel>(this, key, pool.TryTake(out var kernel) ? (TKernel)kernel : create(config, this));
    }

    internal void Return((Type Kernel, object Config) key, IDisposable kernel)
    {
        var pool = _pools.GetOrAdd(key, static _ => new ConcurrentBag<IDisposable>());
        pool.Add(kernel);
        // A Dispose that ran between the call's start and here has drained the pools already: drain this one again, so a
        // kernel given back meanwhile is disposed too (Dispose marks, then drains; this adds, then reads the mark).
        Interlocked.MemoryBarrier();
        if (Volatile.Read(ref _disposed)) Drain(pool);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, true)) return;
        foreach (var pool in _pools.Values) Drain(pool);
        _gpu?.Dispose();
    }

    private static void Drain(ConcurrentBag<IDisposable> pool)
    {
        while (pool.TryTake(out var kernel)) kernel.Dispose();
    }
}

/// <summary>A pooled kernel in use; disposing the lease gives it back to its device.</summary>
internal readonly struct KernelLease<TKernel>(EngineDevice device, (Type Kernel, object Config) key, TKernel kernel) : IDisposable where TKernel : class, IDisposable
{
    public TKernel Kernel { get; } = kernel;

    public void Dispose() => device.Return(key, Kernel);
}

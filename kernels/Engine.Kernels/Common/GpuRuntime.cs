using System.Collections.Concurrent;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>
/// Owns one ILGPU context, its accelerator and the kernels loaded on it. No global state: every GPU
/// op gets the runtime it runs on and asks it for its kernels, which are loaded once per kernel method.
/// A call runs under the runtime's lock (<see cref="Enter"/>; one default stream per runtime): upload, launches, then
/// <see cref="Download"/>, the call's one synchronize (docs/architecture.md, "GPU kernels: one convention").
/// Host data crosses through one page-locked staging area with asynchronous copies on the default stream.
/// </summary>
public sealed class GpuRuntime : IDisposable
{
    public enum Choice { Auto, Cuda, CpuAccelerator }

    private readonly ConcurrentDictionary<MethodInfo, object> _kernels = new();
    private long _launches, _bytesToDevice, _bytesToHost, _allocations;
    private PageLockedArray1D<byte> _staging = PageLockedArray1D<byte>.Empty;
    private long _stagingUsed;
    private List<(string Kernel, ProfilingMarker Start, ProfilingMarker End)>? _profile;

    private GpuRuntime(Context context, Accelerator accelerator, int cpuGroupSize)
    {
        Context = context;
        Accelerator = accelerator;
        IsCuda = accelerator.AcceleratorType == AcceleratorType.Cuda;
        GroupSize = IsCuda ? CudaGroupSize : cpuGroupSize;
    }

    /// <summary>Threads per group of every launch on CUDA.</summary>
    public const int CudaGroupSize = 128;

    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public bool IsCuda { get; }

    /// <summary>
    /// Threads per group the kernels are launched with (a power of two >= 16). Kernels never assume it: it reaches
    /// them through their shape, and no kernel relies on a warp size (4 threads on the CPU accelerator).
    /// </summary>
    public int GroupSize { get; }

    private readonly object _lock = new();
    private volatile bool _disposed;

    /// <summary>Whether the runtime was disposed (its accelerator and every buffer on it are gone).</summary>
    public bool IsDisposed => _disposed;

    /// <summary>
    /// Takes the runtime's lock for a call (reentrant) and refuses a runtime disposed meanwhile: a call that waited for the
    /// lock while another thread disposed the runtime never touches the freed accelerator.
    /// </summary>
    public CallLock Enter()
    {
        Monitor.Enter(_lock);
        if (!_disposed) return new CallLock(_lock);
        Monitor.Exit(_lock);
        throw new ObjectDisposedException(nameof(GpuRuntime), "the GPU runtime of this device was disposed");
    }

    /// <summary>The runtime's lock, held until disposed.</summary>
    public readonly struct CallLock(object gate) : IDisposable
    {
        public void Dispose() => Monitor.Exit(gate);
    }

    /// <summary>Kernel launches, host↔device bytes and device allocations since the runtime was made (every launch, copy and buffer of the ops counts).</summary>
    public GpuTraffic Traffic => new(Interlocked.Read(ref _launches), Interlocked.Read(ref _bytesToDevice), Interlocked.Read(ref _bytesToHost),
        Interlocked.Read(ref _allocations));

    /// <summary>Shared memory a group may use: the device's, but never more than <see cref="MaxSharedMemoryPerGroup"/>.</summary>
    public long SharedMemoryPerGroup => Math.Min(MaxSharedMemoryPerGroup, Accelerator.MaxSharedMemoryPerGroup);

    /// <summary>48 KB, which ILGPU 1.5.3 never opts in past (every CUDA GPU it runs on offers at least that).</summary>
    public const int MaxSharedMemoryPerGroup = 48 * 1024;

    public string Description => IsCuda
        ? $"{Accelerator.Name} (CUDA, {Accelerator.MemorySize >> 20} MiB)"
        : $"ILGPU CPU accelerator ({GroupSize} threads per group in warps of {Accelerator.WarpSize}; correctness only)";

    /// <summary>The CUDA devices ILGPU finds on this machine (empty when none).</summary>
    public static IReadOnlyList<string> CudaDevices()
    {
        using var context = Context.Create(b => b.Cuda());
        var names = new List<string>();
        foreach (CudaDevice d in context.GetCudaDevices())
            names.Add($"{d.Name} (compute {d.Architecture}, {d.MemorySize >> 20} MiB)");
        return names;
    }

    /// <param name="cpuGroupSize">
    /// Threads per group on the CPU accelerator, which simulates every thread of a group with an OS thread:
    /// small by default; 128 runs the kernels in their CUDA geometry (slowly, for tests of tiny shapes).
    /// </param>
    /// <param name="cpuWarpSize">
    /// Lanes of a warp on the CPU accelerator: 4 by default; 32, CUDA's, for the kernels that need whole warps (tensor-core
    /// products, <see cref="MmaTf32"/>), which the accelerator then emulates.
    /// </param>
    public static GpuRuntime Create(Choice choice, int cpuGroupSize = 16, int cpuWarpSize = 4)
    {
        // GLA's kernels lay a group out as a power-of-two grid of threads, and ILGPU's CPU device refuses groups of 48 or 80
        // threads in warps of 4 with an exception that names neither.
        if (cpuGroupSize < 16 || !int.IsPow2(cpuGroupSize))
            throw new ArgumentOutOfRangeException(nameof(cpuGroupSize), cpuGroupSize, "a power of two >= 16");
        if ((cpuWarpSize != 4 && cpuWarpSize != MmaTf32.WarpSize) || cpuGroupSize % cpuWarpSize != 0)
            throw new ArgumentOutOfRangeException(nameof(cpuWarpSize), cpuWarpSize, "4 or 32, dividing the group size");
        var context = Context.Create(b =>
        {
            b.Optimize(OptimizationLevel.O2).EnableAlgorithms().Profiling();
            if (choice != Choice.CpuAccelerator) b.Cuda();
            if (choice != Choice.Cuda) b.CPU(new CPUDevice(numThreadsPerWarp: cpuWarpSize, numWarpsPerMultiprocessor: Math.Max(8, cpuGroupSize / cpuWarpSize), numMultiprocessors: 1));
        });
        try
        {
            var cuda = context.GetCudaDevices();
            Accelerator accelerator;
            if (choice != Choice.CpuAccelerator && cuda.Count > 0)
                accelerator = cuda[0].CreateAccelerator(context);
            else if (choice == Choice.Cuda)
                throw new InvalidOperationException("no CUDA device found (the Gpu backend was asked for CUDA only)");
            else
                accelerator = context.GetCPUDevices()[0].CreateAccelerator(context);
            return new GpuRuntime(context, accelerator, cpuGroupSize);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The launcher of <paramref name="kernel"/>, loaded on first use and cached by the kernel method; ILGPU
    /// compiles it once per value of the shape. Every kernel takes its op's arguments and its op's shape.
    /// </summary>
    public Action<KernelConfig, TArgs, SpecializedValue<TShape>> Kernel<TArgs, TShape>(Action<TArgs, SpecializedValue<TShape>> kernel)
        where TArgs : struct
        where TShape : unmanaged, IEquatable<TShape>
        => (Action<KernelConfig, TArgs, SpecializedValue<TShape>>)_kernels.GetOrAdd(kernel.Method, method =>
        {
            // Under the lock: a runtime disposed meanwhile is refused as such, its freed accelerator never touched.
            Action<KernelConfig, TArgs, SpecializedValue<TShape>> launch;
            using (Enter()) launch = Accelerator.LoadStreamKernel(kernel);
            string name = GpuKernelCatalog.NameOf(method);
            return (Action<KernelConfig, TArgs, SpecializedValue<TShape>>)((config, args, shape) =>
            {
                Interlocked.Increment(ref _launches);
                if (_profile is null)
                {
                    launch(config, args, shape);
                    return;
                }
                var start = Accelerator.AddProfilingMarker();
                launch(config, args, shape);
                _profile.Add((name, start, Accelerator.AddProfilingMarker()));
            });
        });

    /// <summary>
    /// From now until <see cref="StopProfile"/>, every launch is bracketed by profiling markers on the stream (only then:
    /// otherwise launches carry no markers and calls stay asynchronous). Under <see cref="Enter"/>, like the launches.
    /// </summary>
    public void StartProfile()
    {
        using (Enter())
        {
            if (_profile is not null) throw new InvalidOperationException("a GPU profile is already being taken on this device");
            _profile = [];
        }
    }

    /// <summary>Waits for the profiled launches and returns, per kernel in order of first launch, its launches and their summed time.</summary>
    public IReadOnlyList<GpuKernelTime> StopProfile()
    {
        using (Enter())
        {
            var profile = _profile ?? throw new InvalidOperationException("no GPU profile is being taken on this device");
            _profile = null;
            Accelerator.Synchronize();
            var times = new List<GpuKernelTime>();
            foreach (var (kernel, start, end) in profile)
            {
                var elapsed = end.MeasureFrom(start);
                int i = times.FindIndex(t => t.Kernel == kernel);
                if (i < 0) times.Add(new GpuKernelTime(kernel, 1, elapsed));
                else times[i] = times[i] with { Launches = times[i].Launches + 1, Elapsed = times[i].Elapsed + elapsed };
                start.Dispose();
                end.Dispose();
            }
            return times;
        }
    }

    /// <summary>
    /// A device buffer of <paramref name="length"/> elements (counted in <see cref="Traffic"/>). One the accelerator cannot
    /// hold is refused with <see cref="InsufficientMemoryException"/> naming <paramref name="purpose"/> and its size: the
    /// accelerator's own failure names neither.
    /// </summary>
    public MemoryBuffer1D<T, Stride1D.Dense> Allocate<T>(long length, string purpose) where T : unmanaged
    {
        MemoryBuffer1D<T, Stride1D.Dense> buffer;
        using (Enter())
        {
            try
            {
                if ((Int128)length * Unsafe.SizeOf<T>() > Accelerator.MemorySize) throw new InsufficientMemoryException();
                buffer = Accelerator.Allocate1D<T>(length);
            }
            catch (Exception e) when (e is OutOfMemoryException or CudaException { Error: nameof(CudaError.CUDA_ERROR_OUT_OF_MEMORY) })
            {
                throw new InsufficientMemoryException(
                    $"{purpose}: {length} elements of {Unsafe.SizeOf<T>()} bytes could not be allocated on {Accelerator.Name} " +
                    $"({Accelerator.MemorySize} bytes of memory); run fewer tokens per call or use the CPU backend", e);
            }
        }
        Interlocked.Increment(ref _allocations);
        return buffer;
    }

    /// <summary>
    /// Copies host data to the device (counted in <see cref="Traffic"/>): into the page-locked staging area, then an
    /// asynchronous copy on the stream, so the caller may reuse <paramref name="source"/> at once. Under <see cref="Enter"/>.
    /// </summary>
    public void Upload<T>(ArrayView<T> destination, ReadOnlySpan<T> source) where T : unmanaged
    {
        if (source.IsEmpty) return;
        var staged = Stage<T>(source.Length, out var stagedSpan);
        source.CopyTo(stagedSpan);
        destination.SubView(0, source.Length).CopyFrom(Accelerator.DefaultStream, staged);
        Interlocked.Add(ref _bytesToDevice, (long)source.Length * Unsafe.SizeOf<T>());
    }

    /// <summary>
    /// Refuses a kernel whose launches, sized in y and z by the heads and head dims, would pass the accelerator's grid there
    /// (CUDA's: 65535 groups): ILGPU refuses such a launch only as it runs, naming the grid alone. <paramref name="shape"/>
    /// says what sets them, e.g. "q, k, v: 70000 heads, K = 1, V = 1".
    /// </summary>
    public void RequireGrid(long groupsY, long groupsZ, string shape)
    {
        if (GridRefusal(groupsY, groupsZ, shape) is { } refusal) throw new NotSupportedException(refusal);
    }

    /// <summary>Why launches of these groups in y and z do not fit the accelerator's grid (see <see cref="RequireGrid"/>); null when they do.</summary>
    public string? GridRefusal(long groupsY, long groupsZ, string shape)
    {
        var max = Accelerator.MaxGridSize;
        return groupsY > max.Y || groupsZ > max.Z
            ? $"{shape}: the GPU kernels would launch {groupsY} groups in a grid's y and {groupsZ} in its z, the accelerator takes at most {max.Y} and {max.Z} " +
              "(the CPU backend has no such limit)"
            : null;
    }

    /// <summary>A grid of (x, y, z) groups of <see cref="GroupSize"/> threads, with <paramref name="sharedFloats"/> floats of dynamic shared memory.</summary>
    public KernelConfig Groups(int x, int y, int z, int sharedFloats = 0)
    {
        var grid = new Index3D(x, y, z);
        var group = new Index3D(GroupSize, 1, 1);
        return sharedFloats > 0
            ? new KernelConfig(grid, group, SharedMemoryConfig.RequestDynamic<float>(sharedFloats))
            : new KernelConfig(grid, group);
    }

    /// <summary>A flat grid of at least <paramref name="count"/> threads, one per element (the kernel returns past the last).</summary>
    public KernelConfig Threads(long count) => Groups(checked((int)((count + GroupSize - 1) / GroupSize)), 1, 1);

    /// <summary>Waits for the call's launches (its one synchronize, so a failed launch surfaces here), then copies the result to the host.</summary>
    public void Download<T>(ArrayView<T> source, Span<T> destination) where T : unmanaged
    {
        Synchronize();
        CopyToHost(source, destination);
    }

    /// <summary>
    /// Copies device data to the host (counted in <see cref="Traffic"/>), ordered after the stream's work: an asynchronous
    /// copy into the staging area, a synchronize, then the host copy. Under <see cref="Enter"/>.
    /// </summary>
    public void CopyToHost<T>(ArrayView<T> source, Span<T> destination) where T : unmanaged
    {
        if (destination.IsEmpty) return;
        ReadBack(source, destination);
        Interlocked.Add(ref _bytesToHost, (long)destination.Length * Unsafe.SizeOf<T>());
    }

    /// <summary>
    /// Reads a call's check words (a few ints; see <see cref="GpuChecks"/>) after its launches: the call's one synchronize.
    /// Not counted in <see cref="Traffic"/>'s bytes, which count tensor data.
    /// </summary>
    public void ReadChecks(ArrayView<uint> source, Span<uint> destination) => ReadBack(source, destination);

    /// <summary>Waits for every launch and copy on the stream; the staging area is free again.</summary>
    public void Synchronize()
    {
        Accelerator.Synchronize();
        _stagingUsed = 0;
    }

    private void ReadBack<T>(ArrayView<T> source, Span<T> destination) where T : unmanaged
    {
        // Nothing to stage (a call with no check words: an empty batch); the synchronize is still the call's.
        if (destination.IsEmpty)
        {
            Synchronize();
            return;
        }
        var staged = Stage<T>(destination.Length, out var stagedSpan);
        staged.CopyFrom(Accelerator.DefaultStream, source.SubView(0, destination.Length));
        Synchronize();
        stagedSpan.CopyTo(destination);
    }

    /// <summary>
    /// Room for <paramref name="count"/> elements in the staging area, after the regions of copies still in flight; when
    /// the area is full the stream is synchronized first (and the area grown when one copy needs more than it holds).
    /// </summary>
    private ArrayView<T> Stage<T>(int count, out Span<T> span) where T : unmanaged
    {
        long bytes = (long)count * Unsafe.SizeOf<T>();
        long start = (_stagingUsed + StagingAlignment - 1) / StagingAlignment * StagingAlignment;
        if (start + bytes > _staging.Length)
        {
            Synchronize();
            start = 0;
            if (bytes > _staging.Length)
            {
                _staging.Dispose();
                _staging = Accelerator.AllocatePageLocked1D<byte>(Math.Max(bytes, 2 * _staging.Length));
            }
        }
        _stagingUsed = start + bytes;
        span = MemoryMarshal.Cast<byte, T>(_staging.Span.Slice(checked((int)start), checked((int)bytes)));
        return _staging.ArrayView.SubView(start, bytes).Cast<T>();
    }

    /// <summary>Staged regions start on 256 bytes, what CUDA's copies run fastest from.</summary>
    private const long StagingAlignment = 256;

    /// <summary>Under the lock: a call in flight on another thread finishes before the accelerator goes, and later ones are refused.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            _staging.Dispose();
            Accelerator.Dispose();
            Context.Dispose();
        }
    }
}

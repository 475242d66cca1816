using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;
using Launcher = System.Action<ILGPU.KernelConfig, Engine.Kernels.Lssl.LsslGpuArgs, ILGPU.Runtime.SpecializedValue<Engine.Kernels.Lssl.LsslGpuShape>>;

namespace Engine.Kernels.Lssl;

/// <summary>
/// LSSL on an ILGPU accelerator; the kernels are in <see cref="LsslGpuKernels"/>. The system's fp32 tables are
/// uploaded once per runtime and kept with the system; each call, under the runtime's lock, reads u and writes y
/// where the caller's device views lie (host data goes through buffers this instance owns) and launches. The state stays on the device: [B, H, N].
///   recurrent: one kernel, a group per (sequence, channel), one step after another.
///   scan:      chunk-local outputs and chunk end states (parallel over every chunk), the carry (sequential
///              over chunks, parallel over sequences, channels and state rows), the fix-up (parallel), and the
///              recurrence for a partial last chunk.
///   conv:      a direct causal convolution with K̄ (O(L²) per channel). ILGPU has no FFT of its own and
///              cuFFT (through ILGPU.Algorithms) cannot run on the CPU accelerator this code is tested on, so
///              an FFT path is left out; Auto never picks conv on the GPU. The state terms reuse the chunk kernels.
/// </summary>
public sealed class LsslGpu : IDisposable
{
    private readonly GpuBuffers _buffers;
    private readonly LsslGpuShape _shape;
    private readonly Launcher _recurrent, _carry, _localOutput, _chunkState, _fixUp, _convDirect;

    public LsslGpu(LsslConfig config, GpuRuntime runtime)
    {
        Config = config;
        Runtime = runtime;
        _shape = new LsslGpuShape(config, runtime.GroupSize);
        long limit = runtime.SharedMemoryPerGroup;
        long shared = (long)new RecurrentTiles(_shape).Floats * sizeof(float);
        if (shared > limit)
            throw new NotSupportedException($"LSSL GPU kernels keep the state of a channel in shared memory: N = {config.StateSize} needs {shared} bytes, more than the {limit} a group may use");
        _buffers = new GpuBuffers(runtime);
        _recurrent = Load(LsslGpuKernels.Recurrent);
        _carry = Load(LsslGpuKernels.Carry);
        _localOutput = Load(LsslGpuKernels.LocalOutput);
        _chunkState = Load(LsslGpuKernels.ChunkState);
        _fixUp = Load(LsslGpuKernels.FixUp);
        _convDirect = Load(LsslGpuKernels.ConvDirect);
    }

    public LsslConfig Config { get; }
    public GpuRuntime Runtime { get; }

    /// <summary>Same contract as <see cref="LsslCpu.Run"/>, with the state [B, H, N] in device memory: u uploaded into this instance's buffers, y downloaded.</summary>
    public void Run(LsslMode mode, LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, ArrayView<float> state,
        bool initialStateIsZero = false, bool needFinalState = true)
    {
        if (batch == 0 || length == 0) return;
        using (Runtime.Enter())
        {
            var output = _buffers.Get<float>(nameof(LsslGpuArgs.Y), y.Length);
            Run(mode, system, batch, length, _buffers.Upload(nameof(LsslGpuArgs.U), u), output, state, initialStateIsZero, needFinalState);
            Runtime.Download(output, y);
        }
    }

    /// <summary>Enqueues a call on device views u, y [B, L, H] (no copy, no synchronize); the caller holds the runtime's lock.</summary>
    public void Run(LsslMode mode, LsslSystem system, int batch, int length, ArrayView<float> u, ArrayView<float> y, ArrayView<float> state,
        bool initialStateIsZero, bool needFinalState)
    {
        if (system.Config != Config) throw new ArgumentException("the system was built for another configuration", nameof(system));
        if (batch == 0 || length == 0) return;
        Launch(mode, system, Upload(mode, system, batch, length, u, y, state), initialStateIsZero, needFinalState);
    }

    /// <summary>The instance's device buffers: host data is uploaded into those named after the arguments they become.</summary>
    public GpuBuffers Buffers => _buffers;

    public void Dispose() => _buffers.Dispose();

    private Launcher Load(Action<LsslGpuArgs, SpecializedValue<LsslGpuShape>> kernel) => Runtime.Kernel(kernel);

    /// <summary>Fills the arguments from the call's views and sizes the chunk buffers; the system's tables are uploaded once.</summary>
    private LsslGpuArgs Upload(LsslMode mode, LsslSystem system, int batch, int length, ArrayView<float> u, ArrayView<float> y, ArrayView<float> state)
    {
        var args = CopyOf(system).Tables.Args;
        var placeholder = _buffers.Placeholder<float>();
        args.ConvKernel = args.Z = args.Xprev = placeholder;
        args.U = u;
        args.Y = y;
        args.State = state;
        args.Batch = batch;
        args.Length = length;
        if (mode == LsslMode.Recurrent) return args;
        // A chunk's entries for every full chunk and the partial last one (the conv mode's zero-input carry covers it).
        long chunkFloats = (long)batch * _shape.Channels * ((length + _shape.Q - 1) / _shape.Q) * _shape.Np;
        args.Z = _buffers.Get<float>(nameof(LsslGpuArgs.Z), chunkFloats);
        args.Xprev = _buffers.Get<float>(nameof(LsslGpuArgs.Xprev), chunkFloats);
        return args;
    }

    private void Launch(LsslMode mode, LsslSystem system, LsslGpuArgs args, bool initialStateIsZero, bool needFinalState)
    {
        var shape = SpecializedValue.New(_shape);
        int q = _shape.Q, full = args.Length / q, rest = args.Length - full * q;
        switch (mode)
        {
            case LsslMode.Recurrent:
                Recurrent(args, 0, args.Length, writeOutput: true);
                break;
            case LsslMode.Scan:
                if (full > 0)
                {
                    args.Chunks = full;
                    _localOutput(Runtime.Threads((long)args.Batch * full * q * _shape.Channels), args, shape);
                    _chunkState(Runtime.Threads((long)args.Batch * _shape.Channels * full * _shape.Np), args, shape);
                    Carry(args, useZ: true, writeState: true);
                    _fixUp(Runtime.Threads((long)args.Batch * full * q * _shape.Channels), args, shape);
                }
                if (rest > 0) Recurrent(args, full * q, rest, writeOutput: true);
                break;
            case LsslMode.Conv:
                args.ConvKernel = CopyOf(system).ConvKernel(args.Length, out args.KernelStride);
                _convDirect(Runtime.Threads((long)args.Batch * args.Length * _shape.Channels), args, shape);
                if (!initialStateIsZero)
                {
                    // The zero-input response C Ā^(t+1) x₀: carry x₀ alone, then the fix-up, the partial chunk included.
                    args.Chunks = full + (rest > 0 ? 1 : 0);
                    Carry(args, useZ: false, writeState: false);
                    _fixUp(Runtime.Threads((long)args.Batch * args.Chunks * q * _shape.Channels), args, shape);
                }
                if (needFinalState)
                {
                    if (full > 0)
                    {
                        args.Chunks = full;
                        _chunkState(Runtime.Threads((long)args.Batch * _shape.Channels * full * _shape.Np), args, shape);
                        Carry(args, useZ: true, writeState: true);
                    }
                    if (rest > 0) Recurrent(args, full * q, rest, writeOutput: false);
                }
                break;
            default:
                throw new ArgumentException($"mode {mode} must be resolved before it reaches a kernel", nameof(mode));
        }
    }

    /// <summary>One group per (sequence, channel) with the given dynamic shared memory.</summary>
    private KernelConfig PerChannel(int batch, int sharedFloats) => Runtime.Groups(batch * _shape.Channels, 1, 1, sharedFloats);

    private void Recurrent(LsslGpuArgs args, int start, int count, bool writeOutput)
    {
        args.Start = start;
        args.Count = count;
        args.WriteOutput = writeOutput;
        _recurrent(PerChannel(args.Batch, new RecurrentTiles(_shape).Floats), args, SpecializedValue.New(_shape));
    }

    private void Carry(LsslGpuArgs args, bool useZ, bool writeState)
    {
        args.UseZ = useZ;
        args.WriteState = writeState;
        _carry(PerChannel(args.Batch, new CarryTiles(_shape).Floats), args, SpecializedValue.New(_shape));
    }

    /// <summary>The system's copy on this runtime, uploaded on first use.</summary>
    private DeviceCopy CopyOf(LsslSystem system) => system.DeviceCopy(Runtime, () => new DeviceCopy(Runtime, system));

    /// <summary>A system's data on one accelerator: its tables, and K̄ in fp32 for the longest length asked so far.</summary>
    private sealed class DeviceCopy(GpuRuntime runtime, LsslSystem system) : IDisposable
    {
        private readonly object _lock = new();
        private GpuArray? _convKernel;

        public GpuTables Tables { get; } = new(runtime, system);

        /// <summary>K̄ for at least <paramref name="length"/> steps (a longer one already made serves as well).</summary>
        public ArrayView<float> ConvKernel(int length, out int stride)
        {
            lock (_lock)
            {
                if (_convKernel is null || _convKernel.Stride < length)
                {
                    var (k64, s) = system.ConvKernel(length);
                    var k32 = new float[k64.Length];
                    for (int i = 0; i < k32.Length; i++) k32[i] = (float)k64[i];
                    _convKernel?.Dispose();
                    _convKernel = new GpuArray(runtime, k32, s);
                }
                stride = _convKernel.Stride;
                return _convKernel.View;
            }
        }

        public void Dispose()
        {
            Tables.Dispose();
            _convKernel?.Dispose();
        }
    }

    /// <summary>
    /// A device copy of a host array, released with the system (or never touched again once the accelerator is gone).
    /// Allocated and uploaded through the runtime, so that <see cref="GpuRuntime.Traffic"/> counts the tables and K̄.
    /// </summary>
    private sealed class GpuArray : IDisposable
    {
        private readonly Accelerator _accelerator;
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _buffer;

        public GpuArray(GpuRuntime runtime, float[] data, int stride = 0)
        {
            _accelerator = runtime.Accelerator;
            _buffer = runtime.Allocate<float>(Math.Max(data.Length, 1), "an LSSL operand");
            runtime.Upload(_buffer.View, data.Length == 0 ? [0f] : data);
            Stride = stride;
        }

        public int Stride { get; }
        public ArrayView<float> View => _buffer.View;

        public void Dispose()
        {
            if (!_accelerator.IsDisposed) _buffer.Dispose();
        }
    }

    private sealed class GpuTables : IDisposable
    {
        private readonly GpuArray[] _arrays;

        public GpuTables(GpuRuntime runtime, LsslSystem s)
        {
            _arrays = [.. new[] { s.StepT, s.StepKeep, s.Bbar, s.C, s.D, s.Taps, s.OutputWeights, s.StateColsT, s.ChunkCarryT, s.ChunkCarryKeep }
                .Select(a => new GpuArray(runtime, a))];
            Args = new LsslGpuArgs
            {
                StepT = _arrays[0].View, StepKeep = _arrays[1].View, Bbar = _arrays[2].View, C = _arrays[3].View, D = _arrays[4].View,
                Taps = _arrays[5].View, OutputWeights = _arrays[6].View, StateColsT = _arrays[7].View,
                ChunkCarryT = _arrays[8].View, ChunkCarryKeep = _arrays[9].View,
            };
        }

        /// <summary>Arguments with the tables set and nothing else.</summary>
        public LsslGpuArgs Args { get; }

        public void Dispose()
        {
            foreach (var a in _arrays) a.Dispose();
        }
    }
}

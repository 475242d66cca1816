using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine.Kernels.Lssl;

/// <summary>
/// LSSL on an ILGPU accelerator; the kernels are in <see cref="LsslGpuKernels"/>. The system's fp32 tables are
/// uploaded once per runtime and kept with the system; each call uploads u into buffers this instance owns,
/// launches under the runtime's lock and downloads y. The state stays on the device: [B, H, N].
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
    private readonly Action<KernelConfig, LsslGpuViews, LsslGpuCall, SpecializedValue<LsslGpuShape>> _recurrent, _carry, _localOutput, _chunkState, _fixUp, _convDirect;

    public LsslGpu(LsslConfig config, GpuRuntime runtime)
    {
        Config = config;
        Runtime = runtime;
        _shape = new LsslGpuShape(config, runtime.GroupSize);
        long limit = runtime.SharedMemoryPerGroup;
        long shared = (long)LsslGpuKernels.RecurrentSharedFloats(_shape) * sizeof(float);
        if (shared > limit)
            throw new NotSupportedException($"LSSL GPU kernels keep the state of a channel in shared memory: N = {config.StateSize} needs {shared} bytes, more than the {limit} a group may use");
        _buffers = new GpuBuffers(runtime.Accelerator);
        _recurrent = Load("lssl.recurrent", LsslGpuKernels.Recurrent);
        _carry = Load("lssl.carry", LsslGpuKernels.Carry);
        _localOutput = Load("lssl.local_output", LsslGpuKernels.LocalOutput);
        _chunkState = Load("lssl.chunk_state", LsslGpuKernels.ChunkState);
        _fixUp = Load("lssl.fix_up", LsslGpuKernels.FixUp);
        _convDirect = Load("lssl.conv_direct", LsslGpuKernels.ConvDirect);
    }

    public LsslConfig Config { get; }
    public GpuRuntime Runtime { get; }

    /// <summary>Same contract as <see cref="LsslCpu.Run"/>, with the state [B, H, N] in device memory.</summary>
    public void Run(LsslMode mode, LsslSystem system, int batch, int length, ReadOnlySpan<float> u, Span<float> y, ArrayView<float> state,
        bool initialStateIsZero = false, bool needFinalState = true)
    {
        if (system.Config != Config) throw new ArgumentException("the system was built for another configuration", nameof(system));
        if (batch == 0 || length == 0) return;
        lock (Runtime.Lock)
        {
            var v = Tables(system).Views;
            v.U = _buffers.Upload("u", u);
            v.Y = _buffers.Get<float>("y", y.Length);
            v.State = state;
            var call = new LsslGpuCall { Batch = batch, Length = length };
            int q = _shape.Q, full = length / q, rest = length - full * q;
            switch (mode)
            {
                case LsslMode.Recurrent:
                    Recurrent(v, call, 0, length, writeOutput: true);
                    break;
                case LsslMode.Scan:
                    if (full > 0)
                    {
                        ChunkBuffers(ref v, batch, full);
                        call.Chunks = full;
                        _localOutput(Flat((long)batch * full * q * _shape.Channels), v, call, Spec);
                        _chunkState(Flat((long)batch * _shape.Channels * full * _shape.Np), v, call, Spec);
                        Carry(v, call, useZ: true, writeState: true);
                        _fixUp(Flat((long)batch * full * q * _shape.Channels), v, call, Spec);
                    }
                    if (rest > 0) Recurrent(v, call, full * q, rest, writeOutput: true);
                    break;
                case LsslMode.Conv:
                    v.ConvKernel = ConvKernel(system, length, out call.KernelStride);
                    _convDirect(Flat((long)batch * length * _shape.Channels), v, call, Spec);
                    if (!initialStateIsZero)
                    {
                        // The zero-input response C Ā^(t+1) x₀: carry x₀ alone, then the fix-up, the partial chunk included.
                        int chunks = full + (rest > 0 ? 1 : 0);
                        ChunkBuffers(ref v, batch, chunks);
                        call.Chunks = chunks;
                        Carry(v, call, useZ: false, writeState: false);
                        _fixUp(Flat((long)batch * chunks * q * _shape.Channels), v, call, Spec);
                    }
                    if (needFinalState)
                    {
                        if (full > 0)
                        {
                            ChunkBuffers(ref v, batch, full);
                            call.Chunks = full;
                            _chunkState(Flat((long)batch * _shape.Channels * full * _shape.Np), v, call, Spec);
                            Carry(v, call, useZ: true, writeState: true);
                        }
                        if (rest > 0) Recurrent(v, call, full * q, rest, writeOutput: false);
                    }
                    break;
                default:
                    throw new ArgumentException($"mode {mode} must be resolved before it reaches a kernel", nameof(mode));
            }
            v.Y.SubView(0, y.Length).CopyToCPU(y);
            Runtime.Accelerator.DefaultStream.Synchronize();
        }
    }

    public void Dispose() => _buffers.Dispose();

    private SpecializedValue<LsslGpuShape> Spec => SpecializedValue.New(_shape);

    private Action<KernelConfig, LsslGpuViews, LsslGpuCall, SpecializedValue<LsslGpuShape>> Load(string key,
        Action<LsslGpuViews, LsslGpuCall, SpecializedValue<LsslGpuShape>> kernel)
        => Runtime.Kernel(key, a => a.LoadStreamKernel(kernel));

    /// <summary>One group per (sequence, channel) with the given dynamic shared memory.</summary>
    private KernelConfig PerChannel(int batch, int sharedFloats) =>
        new(new Index1D(batch * _shape.Channels), new Index1D(_shape.GroupSize), SharedMemoryConfig.RequestDynamic<float>(sharedFloats));

    /// <summary>A flat grid of <paramref name="threads"/> threads in groups of the runtime's size.</summary>
    private KernelConfig Flat(long threads) =>
        new(new Index1D(checked((int)((threads + _shape.GroupSize - 1) / _shape.GroupSize))), new Index1D(_shape.GroupSize));

    private void Recurrent(LsslGpuViews v, LsslGpuCall call, int start, int count, bool writeOutput)
    {
        call.Start = start;
        call.Count = count;
        call.WriteOutput = writeOutput ? 1 : 0;
        _recurrent(PerChannel(call.Batch, LsslGpuKernels.RecurrentSharedFloats(_shape)), v, call, Spec);
    }

    private void Carry(LsslGpuViews v, LsslGpuCall call, bool useZ, bool writeState)
    {
        call.UseZ = useZ ? 1 : 0;
        call.WriteState = writeState ? 1 : 0;
        _carry(PerChannel(call.Batch, LsslGpuKernels.CarrySharedFloats(_shape)), v, call, Spec);
    }

    private void ChunkBuffers(ref LsslGpuViews v, int batch, int chunks)
    {
        long floats = (long)batch * _shape.Channels * chunks * _shape.Np;
        v.Z = _buffers.Get<float>("z", floats);
        v.Xprev = _buffers.Get<float>("xprev", floats);
    }

    /// <summary>The system's tables on this runtime, uploaded on first use.</summary>
    private GpuTables Tables(LsslSystem system) =>
        system.Attachment(("lssl-gpu-tables", Runtime), _ => true, () => new GpuTables(Runtime.Accelerator, system));

    /// <summary>K̄ in fp32 for at least <paramref name="length"/> steps, on this runtime (a longer cached one serves as well).</summary>
    private ArrayView<float> ConvKernel(LsslSystem system, int length, out int stride)
    {
        var kernel = system.Attachment(("lssl-gpu-conv-kernel", Runtime), k => k.Stride >= length, () =>
        {
            var (k64, s) = system.ConvKernel(length);
            var k32 = new float[k64.Length];
            for (int i = 0; i < k32.Length; i++) k32[i] = (float)k64[i];
            return new GpuArray(Runtime.Accelerator, k32, s);
        });
        stride = kernel.Stride;
        return kernel.View;
    }

    /// <summary>A device copy of a host array, released with the system (or never touched again once the accelerator is gone).</summary>
    private sealed class GpuArray(Accelerator accelerator, float[] data, int stride = 0) : IDisposable
    {
        private readonly MemoryBuffer1D<float, Stride1D.Dense> _buffer = accelerator.Allocate1D(data.Length == 0 ? [0f] : data);

        public int Stride { get; } = stride;
        public ArrayView<float> View => _buffer.View;

        public void Dispose()
        {
            if (!accelerator.IsDisposed) _buffer.Dispose();
        }
    }

    private sealed class GpuTables : IDisposable
    {
        private readonly GpuArray[] _arrays;

        public GpuTables(Accelerator accelerator, LsslSystem s)
        {
            _arrays = [.. new[] { s.AbarMinusIT, s.Bbar, s.C, s.D, s.Taps, s.OutputWeights, s.StateColsT, s.ChunkPowMinusIT }
                .Select(a => new GpuArray(accelerator, a))];
            var placeholder = _arrays[3].View;
            Views = new LsslGpuViews
            {
                AbarMinusIT = _arrays[0].View, Bbar = _arrays[1].View, C = _arrays[2].View, D = _arrays[3].View,
                Taps = _arrays[4].View, OutputWeights = _arrays[5].View, StateColsT = _arrays[6].View, ChunkPowMinusIT = _arrays[7].View,
                U = placeholder, Y = placeholder, State = placeholder, ConvKernel = placeholder, Z = placeholder, Xprev = placeholder,
            };
        }

        public LsslGpuViews Views { get; }

        public void Dispose()
        {
            foreach (var a in _arrays) a.Dispose();
        }
    }
}

using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;

namespace Engine.Kernels.Gla;

/// <summary>
/// GLA on an ILGPU accelerator; the kernels and their geometry are in <see cref="GlaGpuKernels"/>. Each call
/// uploads q, k, v, g and a chunk table into buffers this instance owns (grown on demand, reused), launches
/// under the runtime's lock, and downloads the output. The state stays on the device: [N, Hkv, K, V] fp32,
/// initial on entry, final on return.
/// </summary>
public sealed class GlaGpu : IDisposable
{
    private readonly GpuBuffers _buffers;
    private readonly ChunkTable _chunks = new();
    private readonly GlaGpuShape _shape;
    private readonly string? _recurrentTooLarge;
    private readonly Action<KernelConfig, GlaGpuViews, SpecializedValue<GlaGpuShape>> _cumulativeGates, _chunkStates, _intraScores, _output, _recurrent;
    private readonly Action<KernelConfig, GlaGpuViews, int, SpecializedValue<GlaGpuShape>> _scan;
    private bool _constantDecayUploaded;

    public GlaGpu(GlaConfig config, GpuRuntime runtime)
    {
        Config = config;
        Runtime = runtime;
        int groupSize = runtime.GroupSize;
        if (groupSize < 16 || !int.IsPow2(groupSize))
            throw new NotSupportedException($"GLA GPU kernels need a power-of-two group size >= 16, the runtime has {groupSize}");
        if (config.ChunkSize < 16 || !int.IsPow2(config.ChunkSize))
            throw new NotSupportedException($"GLA GPU kernels need a power-of-two chunk size >= 16, got {config.ChunkSize}");
        long limit = runtime.SharedMemoryPerGroup;

        // The recurrent state tile is K × cols floats: narrow the tile until it fits the shared memory.
        int cols = Math.Min(32, groupSize);
        while (cols > 1 && SharedBytes(new RecurrentTiles(new GlaGpuShape(config, groupSize, cols)).Floats) > limit) cols /= 2;
        _shape = new GlaGpuShape(config, groupSize, cols);
        long recurrentBytes = SharedBytes(new RecurrentTiles(_shape).Floats);
        if (recurrentBytes > limit)
        {
            // With one column the tile needs K·(G + 3) + 1 + G·groupSize floats.
            int group = _shape.Group;
            long maxKeyDim = (limit / sizeof(float) - 1 - (long)group * groupSize) / (group + 3);
            _recurrentTooLarge = $"GLA recurrent mode on the GPU keeps the state of a key/value head and its {group} query rows in shared memory: " +
                $"K = {config.Heads.KeyDim} needs {recurrentBytes} bytes, more than the {limit} a group may use; with {group} query heads per " +
                $"key/value head K can be at most {maxKeyDim} (the chunked mode has no such limit)";
        }
        long chunkedBytes = SharedBytes(Math.Max(IntraScoreTiles.Floats, Math.Max(new ChunkStateTiles(_shape).Floats, new OutputTiles(_shape).Floats)));
        if (chunkedBytes > limit)
            throw new NotSupportedException($"GLA chunked kernels need {chunkedBytes} bytes of shared memory per group with group size {groupSize}, more than the {limit} available");

        _buffers = new GpuBuffers(runtime.Accelerator);
        _cumulativeGates = Load("gla.cumulative_gates", GlaGpuKernels.CumulativeGates);
        _chunkStates = Load("gla.chunk_states", GlaGpuKernels.ChunkStates);
        _intraScores = Load("gla.intra_scores", GlaGpuKernels.IntraScores);
        _output = Load("gla.output", GlaGpuKernels.Output);
        _recurrent = Load("gla.recurrent", GlaGpuKernels.Recurrent);
        _scan = runtime.Kernel("gla.scan_chunk_states",
            a => a.LoadStreamKernel<GlaGpuViews, int, SpecializedValue<GlaGpuShape>>(GlaGpuKernels.ScanChunkStates));
    }

    public GlaConfig Config { get; }
    public GpuRuntime Runtime { get; }

    /// <summary>
    /// Runs the chunked form (prefill) or the recurrent form (decode, token by token). q [T, Hq, K], k [T, Hkv, K],
    /// v [T, Hkv, V], g [T, Hkv, K] or [T, Hkv] or empty, output [T, Hq, V]; state [N, Hkv, K, V] on the device.
    /// </summary>
    public void Run(bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, ArrayView<float> state)
    {
        if (!chunked && _recurrentTooLarge is not null) throw new NotSupportedException(_recurrentTooLarge);
        if (sequences.TotalTokens == 0) return;
        lock (Runtime.Lock)
        {
            var io = Upload(q, k, v, g, output.Length, state);
            if (chunked) LaunchChunked(sequences, io);
            else LaunchRecurrent(sequences, io);
            io.Output.SubView(0, output.Length).CopyToCPU(output);
            Runtime.Accelerator.DefaultStream.Synchronize();
        }
    }

    public void Dispose() => _buffers.Dispose();

    private static long SharedBytes(int floats) => (long)floats * sizeof(float);

    private Action<KernelConfig, GlaGpuViews, SpecializedValue<GlaGpuShape>> Load(string key, Action<GlaGpuViews, SpecializedValue<GlaGpuShape>> kernel)
        => Runtime.Kernel(key, a => a.LoadStreamKernel(kernel));

    private KernelConfig Launch(int x, int y, int z, int sharedFloats = 0)
    {
        var group = new Index3D(_shape.GroupSize, 1, 1);
        return sharedFloats > 0
            ? new KernelConfig(new Index3D(x, y, z), group, SharedMemoryConfig.RequestDynamic<float>(sharedFloats))
            : new KernelConfig(new Index3D(x, y, z), group);
    }

    private GlaGpuViews Upload(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, ReadOnlySpan<float> g,
        int outputLength, ArrayView<float> state)
    {
        var placeholder = _buffers.Get<float>("placeholder", 1);
        var io = new GlaGpuViews
        {
            Q = _buffers.Upload("q", q),
            K = _buffers.Upload("k", k),
            V = _buffers.Upload("v", v),
            G = _shape.GatePerToken > 0 ? _buffers.Upload("g", g) : placeholder,
            CumulativeGate = placeholder,
            ConstantDecay = placeholder,
            Scores = placeholder,
            ChunkStates = placeholder,
            Output = _buffers.Get<float>("output", outputLength),
            State = state,
        };
        if (_shape.Constant)
        {
            if (!_constantDecayUploaded) _buffers.Upload<float>("constant_decay", Config.ConstantLogDecay!);
            _constantDecayUploaded = true;
            io.ConstantDecay = _buffers.Get<float>("constant_decay", _shape.KvHeads);
        }
        return io;
    }

    private void LaunchChunked(SequenceLayout sequences, GlaGpuViews io)
    {
        var s = _shape;
        var table = _buffers.Upload("chunk_table", _chunks.Build(sequences, s.Chunk));
        int chunks = _chunks.Chunks, tokens = sequences.TotalTokens, gs = s.GroupSize;
        io.ChunkStart = table.SubView(0, chunks);
        io.ChunkLength = table.SubView(chunks, chunks);
        io.FirstChunk = table.SubView(2 * chunks, sequences.Count + 1);
        io.SequenceStart = io.FirstChunk;
        var spec = SpecializedValue.New(s);

        if (s.GatePerToken > 0)
        {
            io.CumulativeGate = _buffers.Get<float>("cumulative_gate", (long)tokens * s.GatePerToken);
            _cumulativeGates(Launch(chunks, DivUp(s.GatePerToken, gs), 1), io, spec);
        }
        io.ChunkStates = _buffers.Get<float>("chunk_states", chunks * s.KvHeads * (long)s.KeyDim * s.ValueDim);
        _chunkStates(Launch(chunks, s.KvHeads, DivUp(s.KeyDim, s.StateRows) * DivUp(s.ValueDim, s.StateCols), new ChunkStateTiles(s).Floats), io, spec);
        long stateEntries = sequences.Count * (long)s.KvHeads * s.KeyDim * s.ValueDim;
        _scan(Launch(checked((int)((stateEntries + gs - 1) / gs)), 1, 1), io, sequences.Count, spec);
        io.Scores = _buffers.Get<float>("scores", (long)tokens * s.QHeads * s.Chunk);
        _intraScores(Launch(chunks, s.QHeads, s.Chunk / GlaGpuShape.SubChunk, IntraScoreTiles.Floats), io, spec);
        _output(Launch(chunks, s.QHeads, s.Chunk / s.OutputRows * DivUp(s.ValueDim, s.OutputCols), new OutputTiles(s).Floats), io, spec);
    }

    private void LaunchRecurrent(SequenceLayout sequences, GlaGpuViews io)
    {
        var s = _shape;
        io.SequenceStart = _buffers.Upload("sequence_starts", sequences.Offsets);
        io.ChunkStart = io.ChunkLength = io.FirstChunk = io.SequenceStart;
        _recurrent(Launch(sequences.Count, s.KvHeads, DivUp(s.ValueDim, s.RecurrentCols), new RecurrentTiles(s).Floats), io, SpecializedValue.New(s));
    }

    private static int DivUp(int a, int b) => (a + b - 1) / b;
}

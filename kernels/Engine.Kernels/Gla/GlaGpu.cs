using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;
using Launcher = System.Action<ILGPU.KernelConfig, Engine.Kernels.Gla.GlaGpuArgs, ILGPU.Runtime.SpecializedValue<Engine.Kernels.Gla.GlaGpuShape>>;

namespace Engine.Kernels.Gla;

/// <summary>
/// GLA on an ILGPU accelerator; the kernels and their geometry are in <see cref="GlaGpuKernels"/>. Each call, under
/// the runtime's lock, reads q, k, v, g and writes the output where the caller's device views lie (host data is first
/// uploaded into buffers this instance owns, <see cref="AttentionGpuHost"/>), uploads a chunk table when the layout
/// changed, and launches; scratch buffers are grown on demand and reused. The state stays on the device:
/// [N, Hv, K, V] fp32 (or [N, Hv, V, K] value-major, which the kernels index where they load and store it), initial on entry, final on return.
/// </summary>
public sealed class GlaGpu : IAttentionGpu
{
    private readonly GpuBuffers _buffers;
    private readonly ChunkTable _chunks = new();
    private readonly GlaGpuShape _shape;
    private readonly string? _recurrentTooLarge;
    /// <summary>Why the recurrent or the chunked launches pass the accelerator's grid; null when they fit.</summary>
    private readonly string? _recurrentGrid, _chunkedGrid;
    private readonly Launcher _chunkDeltas, _stateScan, _output, _recurrent;
    private bool _constantDecayUploaded;

    public GlaGpu(GlaConfig config, GpuRuntime runtime)
    {
        Config = config;
        Runtime = runtime;
        int groupSize = runtime.GroupSize;
        if (config.ChunkSize < 16 || !int.IsPow2(config.ChunkSize))
            throw new NotSupportedException($"GLA GPU kernels need a power-of-two chunk size >= 16, got {config.ChunkSize}");
        long limit = runtime.SharedMemoryPerGroup;

        _shape = Shape(config, groupSize, limit);
        // y: a row of groups per head; z: a head's value columns (recurrent), or its state tiles (chunk deltas) and entries (state scan).
        var heads = config.Heads;
        string shape = $"q, k, v: {heads.OutputHeads} heads, K = {heads.KeyDim}, V = {heads.ValueDim}";
        _recurrentGrid = runtime.GridRefusal(heads.ValueHeads, DivUp(heads.ValueDim, _shape.RecurrentCols), shape);
        _chunkedGrid = runtime.GridRefusal(heads.OutputHeads, Math.Max((long)DivUp(heads.KeyDim, _shape.StateRows) * DivUp(heads.ValueDim, _shape.StateCols),
            ((long)heads.KeyDim * heads.ValueDim + groupSize - 1) / groupSize), shape);
        long recurrentBytes = SharedBytes(new RecurrentTiles(_shape).Floats);
        if (recurrentBytes > limit)
        {
            // With one column the tile needs K·(G + 3) + 1 + G·groupSize floats.
            int group = _shape.Group;
            long maxKeyDim = (limit / sizeof(float) - 1 - (long)group * groupSize) / (group + 3);
            _recurrentTooLarge = $"GLA recurrent mode on the GPU keeps the state of a value head and its {group} query rows in shared memory: " +
                $"K = {config.Heads.KeyDim} needs {recurrentBytes} bytes, more than the {limit} a group may use; with {group} query heads per " +
                $"value head K can be at most {maxKeyDim} (the chunked mode has no such limit)";
        }
        long chunkedBytes = SharedBytes(Math.Max(new ChunkDeltaTiles(_shape).Floats, new OutputTiles(_shape).Floats));
        if (chunkedBytes > limit)
            throw new NotSupportedException($"GLA chunked kernels need {chunkedBytes} bytes of shared memory per group with group size {groupSize}, more than the {limit} available");
        if (_shape.TensorCores && runtime.Accelerator.WarpSize != MmaTf32.WarpSize)
            throw new NotSupportedException($"GLA's {config.GpuPrecision} precision runs on tensor cores, whose products need warps of {MmaTf32.WarpSize} threads; the accelerator's warps have {runtime.Accelerator.WarpSize}");
        if (_shape.TensorCores && (_shape.OutputRows % 16 != 0 || _shape.OutputCols % 32 != 0 || _shape.StateRows % 16 != 0 || _shape.StateCols % 32 != 0))
            throw new NotSupportedException($"GLA's {config.GpuPrecision} tiles are warp blocks of 16 × 32: group size {groupSize} with chunk {config.ChunkSize} gives output tiles of " +
                $"{_shape.OutputRows} × {_shape.OutputCols} and state tiles of {_shape.StateRows} × {_shape.StateCols}");

        _buffers = new GpuBuffers(runtime);
        _chunkDeltas = Load(GlaGpuKernels.ChunkDeltas);
        _stateScan = Load(GlaGpuKernels.StateScan);
        _output = Load(GlaGpuKernels.Output);
        _recurrent = Load(GlaGpuKernels.Recurrent);
    }

    /// <summary>The kernels' shape: the recurrent state tile is K × cols floats, narrowed until it fits <paramref name="sharedLimit"/> bytes.</summary>
    public static GlaGpuShape Shape(GlaConfig config, int groupSize, long sharedLimit)
    {
        int cols = Math.Min(32, groupSize);
        while (cols > 1 && SharedBytes(new RecurrentTiles(new GlaGpuShape(config, groupSize, cols)).Floats) > sharedLimit) cols /= 2;
        return new GlaGpuShape(config, groupSize, cols);
    }

    public GlaConfig Config { get; }
    public GpuRuntime Runtime { get; }

    /// <summary>
    /// Runs the chunked form (prefill) or the recurrent form (decode, token by token) on host data: uploaded into this
    /// instance's buffers, then <see cref="Run(bool, SequenceLayout, in AttentionGpuViews)"/>, then the output downloaded.
    /// q [T, Hq, K], k [T, Hk, K], v [T, Hv, V], g [T, Hv, K] or [T, Hv] or empty, output [T, max(Hq, Hv), V]; state [N, Hv, K, V] on the device.
    /// </summary>
    public void Run(bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> g, Span<float> output, ArrayView<float> state)
    {
        RequireMode(chunked);
        AttentionGpuHost.Run(this, chunked, sequences, q, k, v, g, default, output, state);
    }

    /// <summary>Enqueues a call on device views (no copy, no synchronize); the caller holds the runtime's lock.</summary>
    public void Run(bool chunked, SequenceLayout sequences, in AttentionGpuViews views)
    {
        RequireMode(chunked);
        if (sequences.TotalTokens == 0) return;
        Launch(chunked, Upload(sequences, chunked, views));
    }

    public GpuBuffers Buffers => _buffers;

    public void Dispose() => _buffers.Dispose();

    private static long SharedBytes(int floats) => (long)floats * sizeof(float);

    private void RequireMode(bool chunked)
    {
        if (!chunked && _recurrentTooLarge is not null) throw new NotSupportedException(_recurrentTooLarge);
        if ((chunked ? _chunkedGrid : _recurrentGrid) is { } grid) throw new NotSupportedException(grid);
    }

    private Launcher Load(Action<GlaGpuArgs, SpecializedValue<GlaGpuShape>> kernel) => Runtime.Kernel(kernel);

    /// <summary>Fills the arguments from the call's views, uploads the chunk table or the sequence offsets (when they changed) and sizes every scratch buffer.</summary>
    private GlaGpuArgs Upload(SequenceLayout sequences, bool chunked, in AttentionGpuViews views)
    {
        var s = _shape;
        long tokens = sequences.TotalTokens;
        var placeholder = _buffers.Placeholder<float>();
        var indexPlaceholder = _buffers.Placeholder<int>();
        var args = new GlaGpuArgs
        {
            Q = views.Q,
            K = views.K,
            V = views.V,
            G = s.GatePerToken > 0 ? views.G : placeholder,
            CumulativeGate = _buffers.Placeholder<CompensatedGateSum>(),
            ConstantDecay = placeholder,
            ChunkStates = placeholder,
            Output = views.Output,
            State = views.State,
            ChunkStart = indexPlaceholder,
            ChunkLength = indexPlaceholder,
            FirstChunk = indexPlaceholder,
            SequenceStart = indexPlaceholder,
            Sequences = sequences.Count,
        };
        if (s.Constant)
        {
            if (!_constantDecayUploaded) _buffers.Upload<float>(nameof(GlaGpuArgs.ConstantDecay), Config.ConstantLogDecay!);
            _constantDecayUploaded = true;
            args.ConstantDecay = _buffers.Get<float>(nameof(GlaGpuArgs.ConstantDecay), s.ValueHeads);
        }
        if (!chunked)
        {
            args.SequenceStart = _buffers.UploadTable(nameof(GlaGpuArgs.SequenceStart), sequences.Offsets);
            return args;
        }
        (args.ChunkStart, args.ChunkLength, args.FirstChunk) = _buffers.UploadChunkTable(_chunks, sequences, s.Chunk);
        if (s.GatePerToken > 0) args.CumulativeGate = _buffers.Get<CompensatedGateSum>(nameof(GlaGpuArgs.CumulativeGate), tokens * s.GatePerToken);
        args.ChunkStates = _buffers.Get<float>(nameof(GlaGpuArgs.ChunkStates), _chunks.Chunks * s.ValueHeads * (long)s.KeyDim * s.ValueDim);
        return args;
    }

    /// <summary>Chunked: the three launches of <see cref="GlaGpuKernels"/> in order; recurrent: one launch.</summary>
    private void Launch(bool chunked, GlaGpuArgs args)
    {
        var s = _shape;
        var shape = SpecializedValue.New(s);
        if (!chunked)
        {
            _recurrent(Runtime.Groups(args.Sequences, s.ValueHeads, DivUp(s.ValueDim, s.RecurrentCols), new RecurrentTiles(s).Floats), args, shape);
            return;
        }
        int chunks = _chunks.Chunks;
        _chunkDeltas(Runtime.Groups(chunks, s.ValueHeads, DivUp(s.KeyDim, s.StateRows) * DivUp(s.ValueDim, s.StateCols), new ChunkDeltaTiles(s).Floats), args, shape);
        _stateScan(Runtime.Groups(args.Sequences, s.ValueHeads, DivUp(s.KeyDim * s.ValueDim, s.GroupSize)), args, shape);
        _output(Runtime.Groups(chunks * s.OutputGroupsPerChunk, s.OutputHeads, 1, new OutputTiles(s).Floats), args, shape);
    }

    private static int DivUp(int a, int b) => (a + b - 1) / b;
}

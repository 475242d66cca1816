using ILGPU;
using ILGPU.Runtime;
using Engine.Kernels.Common;
using Launcher = System.Action<ILGPU.KernelConfig, Engine.Kernels.DeltaRule.DeltaRuleGpuArgs, ILGPU.Runtime.SpecializedValue<Engine.Kernels.DeltaRule.DeltaRuleGpuShape>>;

namespace Engine.Kernels.DeltaRule;

/// <summary>
/// DeltaNet / Gated DeltaNet on an ILGPU accelerator; the kernels and their geometry are in
/// <see cref="DeltaRuleGpuKernels"/>. Each call, under the runtime's lock, reads q, k, v, β, g and writes the output
/// where the caller's device views lie (host data is first uploaded into buffers this instance owns,
/// <see cref="AttentionGpuHost"/>), uploads a chunk table (or the sequence offsets) when the layout changed, and launches;
/// scratch buffers are grown on demand and reused. The state stays on the device: [N, Hv, K, V] fp32 (or [N, Hv, V, K],
/// <see cref="StateLayout.ValueMajor"/>, which the kernels index transposed where they load and store it), initial on
/// entry, final on return.
/// </summary>
public sealed class DeltaRuleGpu : IAttentionGpu
{
    private readonly GpuBuffers _buffers;
    private readonly ChunkTable _chunks = new();
    private readonly DeltaRuleGpuShape _shape;
    private readonly Launcher _prepare, _statePass, _output, _recurrent;

    public DeltaRuleGpu(DeltaRuleConfig config, GpuRuntime runtime)
    {
        Config = config;
        Runtime = runtime;
        // The config's limits (K <= 256, chunk <= 64) keep every tile within 48 KB: Prepare's is the largest, 45.8 KB at chunk 64 with a per-key gate.
        _shape = new DeltaRuleGpuShape(config, runtime.GroupSize);
        // y: a row of groups per head; z: a head's value columns in tiles (V <= 256 keeps them few).
        runtime.RequireGrid(config.Heads.OutputHeads, Math.Max(_shape.ValueTiles, Math.Max(_shape.StateTiles, _shape.OutputTiles)),
            $"q, k, v: {config.Heads.OutputHeads} heads, K = {config.Heads.KeyDim}, V = {config.Heads.ValueDim}");
        if (_shape.TensorCores) RequireTensorCoreTiles(_shape, runtime);
        _buffers = new GpuBuffers(runtime);
        _prepare = Load(DeltaRuleGpuKernels.Prepare);
        _statePass = Load(DeltaRuleGpuKernels.StatePass);
        _output = Load(DeltaRuleGpuKernels.Output);
        _recurrent = Load(DeltaRuleGpuKernels.Recurrent);
    }

    /// <summary>The tensor-core products are warp blocks of 16 × 32 (<see cref="MmaTile{TMma}"/>) over the chunk's rows, staged within the shared memory of a group.</summary>
    private static void RequireTensorCoreTiles(DeltaRuleGpuShape shape, GpuRuntime runtime)
    {
        if (runtime.Accelerator.WarpSize != MmaTf32.WarpSize)
            throw new NotSupportedException($"the delta rule's {shape.Precision} precision runs on tensor cores, whose products need warps of {MmaTf32.WarpSize} threads; " +
                $"the accelerator's warps have {runtime.Accelerator.WarpSize}");
        if (shape.GroupSize * 16 % shape.Chunk != 0 || shape.ProductCols % 32 != 0)
            throw new NotSupportedException($"the delta rule's {shape.Precision} tiles are warp blocks of 16 × 32 over the chunk's rows: chunk {shape.Chunk} needs a group " +
                $"size that is a multiple of {2 * shape.Chunk}, the runtime has {shape.GroupSize}");
        long bytes = sizeof(float) * (long)Math.Max(new PrepareTiles(shape).Floats, new OutputTiles(shape).Floats);
        if (bytes > runtime.SharedMemoryPerGroup)
            throw new NotSupportedException($"the delta rule's {shape.Precision} kernels need {bytes} bytes of shared memory per group with group size {shape.GroupSize} " +
                $"and chunk {shape.Chunk}, more than the {runtime.SharedMemoryPerGroup} available");
    }

    public DeltaRuleConfig Config { get; }
    public GpuRuntime Runtime { get; }

    /// <summary>
    /// Runs the chunked form (prefill) or the recurrent form (decode, token by token) on host data: uploaded into this
    /// instance's buffers, then <see cref="Run(bool, SequenceLayout, in AttentionGpuViews)"/>, then the output downloaded.
    /// q [T, Hq, K], k [T, Hk, K], v [T, Hv, V], β [T, Hv], g [T, Hv, K] or [T, Hv] or empty, output [T, max(Hq, Hv), V];
    /// state [N, Hv, K, V] on the device.
    /// </summary>
    public void Run(bool chunked, SequenceLayout sequences, ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v,
        ReadOnlySpan<float> beta, ReadOnlySpan<float> g, Span<float> output, ArrayView<float> state)
        => AttentionGpuHost.Run(this, chunked, sequences, q, k, v, g, beta, output, state);

    /// <summary>Enqueues a call on device views (no copy, no synchronize); the caller holds the runtime's lock.</summary>
    public void Run(bool chunked, SequenceLayout sequences, in AttentionGpuViews views)
    {
        if (sequences.TotalTokens == 0) return;
        Launch(chunked, sequences.Count, Upload(sequences, chunked, views));
    }

    public GpuBuffers Buffers => _buffers;

    public void Dispose() => _buffers.Dispose();

    private Launcher Load(Action<DeltaRuleGpuArgs, SpecializedValue<DeltaRuleGpuShape>> kernel) => Runtime.Kernel(kernel);

    /// <summary>Fills the arguments from the call's views, uploads the chunk table or the sequence offsets (when they changed) and sizes every scratch buffer.</summary>
    private DeltaRuleGpuArgs Upload(SequenceLayout sequences, bool chunked, in AttentionGpuViews views)
    {
        var s = _shape;
        long tokens = sequences.TotalTokens;
        var placeholder = _buffers.Placeholder<float>();
        var indexPlaceholder = _buffers.Placeholder<int>();
        var args = new DeltaRuleGpuArgs
        {
            Q = views.Q,
            K = views.K,
            V = views.V,
            Beta = views.Beta,
            G = s.Gate == GateKind.None ? placeholder : views.G,
            Output = views.Output,
            State = views.State,
            W = placeholder,
            DecayedKeys = placeholder,
            U = placeholder,
            GatedQueries = placeholder,
            Scores = placeholder,
            ChunkDecay = placeholder,
            CumulativeGate = _buffers.Placeholder<CompensatedGateSum>(),
            ChunkStates = placeholder,
            ChunkStart = indexPlaceholder,
            ChunkLength = indexPlaceholder,
            FirstChunk = indexPlaceholder,
            SequenceStart = indexPlaceholder,
        };
        if (!chunked)
        {
            args.SequenceStart = _buffers.UploadTable(nameof(DeltaRuleGpuArgs.SequenceStart), sequences.Offsets);
            return args;
        }
        (args.ChunkStart, args.ChunkLength, args.FirstChunk) = _buffers.UploadChunkTable(_chunks, sequences, s.Chunk);
        args.W = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.W), tokens * s.ValueHeads * s.KeyDim);
        args.DecayedKeys = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.DecayedKeys), tokens * s.ValueHeads * s.KeyDim);
        args.WAddress = DeviceAddress.Of(args.W);
        args.DecayedKeysAddress = DeviceAddress.Of(args.DecayedKeys);
        args.U = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.U), tokens * s.ValueHeads * s.ValueDim);
        args.GatedQueries = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.GatedQueries), tokens * s.OutputHeads * s.KeyDim);
        args.Scores = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.Scores), tokens * s.OutputHeads * s.Chunk);
        args.ChunkDecay = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.ChunkDecay), (long)_chunks.Chunks * s.ValueHeads * (s.PerKey ? s.KeyDim : 1));
        args.ChunkStates = _buffers.Get<float>(nameof(DeltaRuleGpuArgs.ChunkStates), (long)_chunks.Chunks * s.ValueHeads * s.KeyDim * s.ValueDim);
        if (s.PerKey) args.CumulativeGate = _buffers.Get<CompensatedGateSum>(nameof(DeltaRuleGpuArgs.CumulativeGate), tokens * s.ValueHeads * s.KeyDim);
        return args;
    }

    /// <summary>
    /// Chunked, three launches: Prepare over every (chunk, value head); the state pass, the one sequential part, a group per
    /// (sequence, value head, 4 value columns); the output over every (chunk, output head, 16 value columns, or a tensor-core tile's width). Recurrent: one
    /// launch, a group per (sequence, value head, 16 value columns).
    /// </summary>
    private void Launch(bool chunked, int sequences, DeltaRuleGpuArgs args)
    {
        var s = _shape;
        var shape = SpecializedValue.New(s);
        if (chunked)
        {
            _prepare(Runtime.Groups(_chunks.Chunks, s.ValueHeads, 1, new PrepareTiles(s).Floats), args, shape);
            _statePass(Runtime.Groups(sequences, s.ValueHeads, s.StateTiles, new StatePassTiles(s).Floats), args, shape);
            _output(Runtime.Groups(_chunks.Chunks, s.OutputHeads, s.OutputTiles, new OutputTiles(s).Floats), args, shape);
        }
        else
        {
            _recurrent(Runtime.Groups(sequences, s.ValueHeads, s.ValueTiles, new RecurrentTiles(s).Floats), args, shape);
        }
    }
}

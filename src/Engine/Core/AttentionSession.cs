using System.Numerics.Tensors;

namespace Engine;

/// <summary>
/// A linear-attention layer with its recurrent state kept on the device: prefill a prompt (chunked), then decode
/// token by token (recurrent), the state [N, Hv, K, V] (or [N, Hv, V, K], <see cref="StateLayout"/>) carried between calls. The op's session
/// (<see cref="GlaSession"/>, <see cref="LightningSession"/>, <see cref="DeltaRuleSession"/>) names its tensors.
/// </summary>
public abstract class AttentionSession : StatefulSession
{
    private readonly IWorkScheduler? _scheduler;

    private protected AttentionSession(EngineDevice device, int sequences, AttentionOp op, AttentionOptions options)
        : base(device, op.StateShape(sequences), op.StateAxes)
    {
        Op = op;
        _scheduler = options.Scheduler;
    }

    /// <summary>Heads and head dims the session was made for.</summary>
    public HeadLayout Heads => Op.Heads;

    /// <summary>The gate form every call gives.</summary>
    public GateKind Gate => Op.Gate;

    private protected AttentionOp Op { get; }

    /// <summary>
    /// The heads a session is made for, refused when they are <c>default(HeadLayout)</c>, which no constructor makes: without
    /// heads the session held an empty state that refused every call, or its default scale came out infinite.
    /// </summary>
    private protected static HeadLayout Checked(HeadLayout heads) => heads.QHeads >= 1 ? heads
        : throw new ArgumentException("heads: default(HeadLayout) has no heads; make one with its constructor (heads and head dims >= 1)", nameof(heads));

    private protected void Run<T>(AttentionMode mode, in AttentionTensors<T> tensors, ReadOnlySpan<int> cuSeqlens) where T : unmanaged
    {
        using var use = Use();
        AttentionCall.Run(Device, Op, Sequences, States, mode, tensors, cuSeqlens, _scheduler);
    }

    private protected void Run<T>(AttentionMode mode, in DeviceAttentionTensors<T> tensors, ReadOnlySpan<int> cuSeqlens) where T : unmanaged
    {
        using var use = Use();
        AttentionCall.Run(Device, Op, Sequences, States, mode, tensors, cuSeqlens);
    }
}

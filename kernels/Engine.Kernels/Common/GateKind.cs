namespace Engine;

/// <summary>How the log-space decay of a gated rule (GLA, Gated DeltaNet) is given.</summary>
public enum GateKind
{
    /// <summary>No decay: plain causal linear attention.</summary>
    None,
    /// <summary>One log gate per token and key/value head, g [T, Hkv] (simple GLA, RetNet, Mamba-2, Gated DeltaNet).</summary>
    PerHead,
    /// <summary>One log gate per token, head and key dim, g [T, Hkv, K] (GLA; the delta rule with a per-key decay, as in Kimi Delta Attention).</summary>
    PerKey,
    /// <summary>A constant log decay per key/value head (Lightning attention: -slope).</summary>
    Constant,
}

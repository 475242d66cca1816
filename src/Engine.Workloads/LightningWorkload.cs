namespace Engine.Workloads;

/// <summary>Lightning attention on random inputs (ALiBi slopes for the head count), with its model flop count.</summary>
public sealed class LightningWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, int seed = 0)
    : AttentionWorkload(batch, tokens, heads, keyDim, valueDim, seed, queryStd: 1 / Math.Sqrt(keyDim))
{
    /// <summary>Per token and head 2·B·(K+V) + 4·K·V for blocks of B tokens (T mod B in a last, shorter one), 4·K·V recurrent: the GLA count.</summary>
    public double ModelFlops(AttentionMode mode, int blockSize) => GlaWorkload.ModelFlops(Batch, Tokens, Heads, KeyDim, ValueDim, mode, blockSize);

    public void Run(EngineDevice device, LightningOptions options) =>
        Lightning.Forward(device, Q, K, V, O, finalState: FinalState, options: options);
}

namespace Engine;

/// <summary>Where an op runs.</summary>
public enum Backend
{
    /// <summary>float64 loops written to be read: the oracle every test compares against. Slow.</summary>
    Reference,
    /// <summary>SIMD (Vector512/256) and threads on this machine's CPU.</summary>
    Cpu,
    /// <summary>ILGPU kernels: CUDA when a GPU is present, otherwise ILGPU's CPU accelerator (correctness only, slow).</summary>
    Gpu,
}

/// <summary>How an attention op walks the sequence. Both give the same result within tolerance.</summary>
public enum AttentionMode
{
    /// <summary>Chunks of tokens as small matrix products: the prefill path.</summary>
    Chunked,
    /// <summary>One token at a time with the carried state: the decode path.</summary>
    Recurrent,
}

/// <summary>An attention op's output [B,T,Hq,V] and final state [N,Hkv,K,V] (fp32).</summary>
public sealed record AttentionResult<T>(System.Numerics.Tensors.Tensor<T> Output, System.Numerics.Tensors.Tensor<float> FinalState);

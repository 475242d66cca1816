using System.Numerics.Tensors;

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

/// <summary>An attention op's output [B,T,max(Hq,Hv),V] and final state [N,Hv,K,V] (fp32).</summary>
public sealed record AttentionResult<T>(Tensor<T> Output, Tensor<float> FinalState)
{
    /// <summary>Uninitialized output and final state for the convenience forms; the call they feed checks every shape.</summary>
    internal static (Tensor<T> Output, Tensor<float> FinalState) Allocate(Tensor<T> q, Tensor<T> k, Tensor<T> v, int[]? cuSeqlens)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        TensorArgs.RequireRank(q.Lengths, "q", 4, "(B, T, Hq, K)");
        TensorArgs.RequireRank(k.Lengths, "k", 4, "(B, T, Hk, K)");
        TensorArgs.RequireRank(v.Lengths, "v", 4, "(B, T, Hv, V)");
        nint sequences = cuSeqlens is { Length: > 0 } ? cuSeqlens.Length - 1 : q.Lengths[0];
        return (Tensor.CreateFromShapeUninitialized<T>([q.Lengths[0], q.Lengths[1], Math.Max(q.Lengths[2], v.Lengths[2]), v.Lengths[3]]),
            Tensor.CreateFromShapeUninitialized<float>([sequences, v.Lengths[2], k.Lengths[3], v.Lengths[3]]));
    }
}

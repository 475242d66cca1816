using System.Numerics.Tensors;
using Engine.Kernels.Common;

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

/// <summary>An attention op's output [B,T,max(Hq,Hv),V] and final state [N,Hv,K,V] (fp32; [N,Hv,V,K] value-major).</summary>
public sealed record AttentionResult<T>(Tensor<T> Output, Tensor<float> FinalState)
{
    /// <summary>
    /// An uninitialized output and final state for a call on q, k, v of these shapes (the convenience forms' own);
    /// the call they feed checks every shape. The final state is laid out as <paramref name="layout"/> says.
    /// </summary>
    public static AttentionResult<T> Allocate(ReadOnlySpan<nint> q, ReadOnlySpan<nint> k, ReadOnlySpan<nint> v, ReadOnlySpan<int> cuSeqlens = default,
        StateLayout layout = StateLayout.KeyMajor)
    {
        TensorArgs.RequireRank(q, "q", 4, "(B, T, Hq, K)");
        TensorArgs.RequireRank(k, "k", 4, "(B, T, Hk, K)");
        TensorArgs.RequireRank(v, "v", 4, "(B, T, Hv, V)");
        RequireLengths(q, "q");
        RequireLengths(k, "k");
        RequireLengths(v, "v");
        // An undefined layout was given the key-major shape, which no call with that layout takes.
        if (!Enum.IsDefined(layout)) throw new ArgumentException($"state layout must be KeyMajor or ValueMajor, got {(int)layout}", nameof(layout));
        nint sequences = cuSeqlens.Length > 0 ? cuSeqlens.Length - 1 : q[0];
        nint[] outputShape = [q[0], q[1], Math.Max(q[2], v[2]), v[3]];
        nint[] stateShape = layout == StateLayout.ValueMajor ? [sequences, v[2], v[3], k[3]] : [sequences, v[2], k[3], v[3]];
        // Neither is bounded by q's, k's or v's length: heads and head dims of tensors of one token or none may ask for any size.
        TensorArgs.RequireArrayHolds(outputShape, "output", "(B, T, max(Hq, Hv), V)", "fewer tokens or heads");
        TensorArgs.RequireArrayHolds(stateShape, "final_state", layout == StateLayout.ValueMajor ? "the state (N, Hv, V, K)" : "the state (N, Hv, K, V)",
            "fewer sequences or smaller heads");
        return new AttentionResult<T>(Tensor.CreateFromShapeUninitialized<T>(outputShape), Tensor.CreateFromShapeUninitialized<float>(stateShape));
    }

    internal static AttentionResult<T> Allocate(Tensor<T> q, Tensor<T> k, Tensor<T> v, int[]? cuSeqlens, AttentionOptions? options)
    {
        ArgumentNullException.ThrowIfNull(q);
        ArgumentNullException.ThrowIfNull(k);
        ArgumentNullException.ThrowIfNull(v);
        return Allocate(q.Lengths, k.Lengths, v.Lengths, cuSeqlens, options?.CheckedStateLayout ?? StateLayout.KeyMajor);
    }

    /// <summary>Refuses a negative length by the tensor's name, which allocating would refuse naming none.</summary>
    private static void RequireLengths(ReadOnlySpan<nint> lengths, string name)
    {
        foreach (nint n in lengths)
            if (n < 0) throw new ArgumentException($"{name}: lengths must be >= 0, got {TensorArgs.Format(lengths)}", name);
    }
}

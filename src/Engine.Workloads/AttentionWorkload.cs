using System.Numerics.Tensors;
using Engine.Kernels.Common;

namespace Engine.Workloads;

/// <summary>
/// What the attention workloads share: random q, k (unit rows), v of shape [B, T, H, dim], and output and
/// state buffers made once and reused by every run.
/// </summary>
public abstract class AttentionWorkload
{
    private readonly float[] _q, _k, _v, _o, _state;

    private protected AttentionWorkload(int batch, int tokens, int heads, int keyDim, int valueDim, int seed, double queryStd = 1.0)
    {
        RequireSizes(batch, [tokens], heads, keyDim, valueDim);
        Batch = batch; Tokens = tokens; Heads = heads; KeyDim = keyDim; ValueDim = valueDim;
        Data = new WorkloadData(seed);
        long rows = (long)batch * tokens * heads;
        _q = Data.Normal(rows * keyDim, queryStd);
        _k = Data.UnitRows(rows, keyDim);
        _v = Data.Normal(rows * valueDim);
        _o = new float[rows * valueDim];
        _state = new float[(long)batch * heads * keyDim * valueDim];
    }

    /// <summary>
    /// Refuses, before anything is allocated, sizes past what one array holds and workloads of <paramref name="lengths"/>
    /// (a bench makes one per T and holds them all) past the machine's memory: q, k, v, the output and the state, with a
    /// per-key gate and beta (what the largest workload adds).
    /// </summary>
    public static void RequireSizes(int batch, IReadOnlyCollection<int> lengths, int heads, int keyDim, int valueDim)
    {
        foreach (int tokens in lengths)
        {
            ArraySize.Require($"B {batch}, T {tokens}, H {heads}, K {keyDim}: q [B, T, H, K]", batch, tokens, heads, keyDim);
            ArraySize.Require($"B {batch}, T {tokens}, H {heads}, V {valueDim}: v [B, T, H, V]", batch, tokens, heads, valueDim);
        }
        ArraySize.Require($"B {batch}, H {heads}, K {keyDim}, V {valueDim}: the state [B, H, K, V]", batch, heads, keyDim, valueDim);
        double floats = lengths.Sum(tokens => (double)batch * tokens * heads * (3.0 * keyDim + 2.0 * valueDim + 1) + (double)batch * heads * keyDim * valueDim);
        ArraySize.RequireMemory($"B {batch}, T {ArraySize.Lengths(lengths)}, H {heads}, K {keyDim}, V {valueDim}: q, k, v, gates, output and state", floats * sizeof(float));
    }

    public int Batch { get; }
    public int Tokens { get; }
    public int Heads { get; }
    public int KeyDim { get; }
    public int ValueDim { get; }

    public ReadOnlySpan<float> Output => _o;

    /// <summary>Rows of q, k, v: B·T·H.</summary>
    private protected long Rows => (long)Batch * Tokens * Heads;

    /// <summary>The generator, for the inputs a subclass adds (gates, beta).</summary>
    private protected WorkloadData Data { get; }

    private protected ReadOnlyTensorSpan<float> Q => new(_q, [Batch, Tokens, Heads, KeyDim]);
    private protected ReadOnlyTensorSpan<float> K => new(_k, [Batch, Tokens, Heads, KeyDim]);
    private protected ReadOnlyTensorSpan<float> V => new(_v, [Batch, Tokens, Heads, ValueDim]);
    private protected TensorSpan<float> O => new(_o, [Batch, Tokens, Heads, ValueDim]);
    private protected TensorSpan<float> FinalState => new(_state, [Batch, Heads, KeyDim, ValueDim]);
    private protected nint[] PerHead => [Batch, Tokens, Heads];

    /// <summary>
    /// The call's inputs by the names the op commands give them (q, k, v, then the op's own g, beta), with their
    /// shapes: what `engine inputs` writes, so a file-based run times the data the bench times.
    /// </summary>
    public IEnumerable<(string Name, float[] Values, nint[] Shape)> Inputs() =>
        new (string, float[], nint[])[]
        {
            ("q", _q, [Batch, Tokens, Heads, KeyDim]),
            ("k", _k, [Batch, Tokens, Heads, KeyDim]),
            ("v", _v, [Batch, Tokens, Heads, ValueDim]),
        }.Concat(OpInputs());

    /// <summary>The inputs a subclass adds (gates, beta); none by default.</summary>
    private protected virtual IEnumerable<(string Name, float[] Values, nint[] Shape)> OpInputs() => [];

    /// <summary>A gate's shape by its form: [B,T,H,K] per key dim, [B,T,H] per head.</summary>
    private protected nint[] GateShape(GateKind gate) => gate == GateKind.PerKey ? [Batch, Tokens, Heads, KeyDim] : PerHead;
}

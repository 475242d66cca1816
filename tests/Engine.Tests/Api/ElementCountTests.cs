using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests.Api;

/// <summary>
/// Tensors of more elements than one array holds, as tensor spans over native memory may be (here views that repeat one
/// row, so nothing of their size is allocated): refused naming the tensor, as a call holds each tensor as one span.
/// Before, the calls threw an OverflowException ("Arithmetic operation resulted in an overflow") from inside.
/// </summary>
[TestFixture]
public sealed unsafe class ElementCountTests
{
    private const int K = 8;
    /// <summary>Tokens whose q [1, T, 1, K] holds 2^31 elements: T itself fits an int.</summary>
    private const int Tokens = 1 << 28;

    private static readonly float[] Row = [.. Enumerable.Repeat(0.1f, 64)];

    /// <summary>A tensor of these lengths whose every token repeats one row (its last two dims, or its last).</summary>
    private static TensorSpan<float> Repeated(float* row, params nint[] lengths)
    {
        var strides = new nint[lengths.Length];
        strides[^1] = 1;
        nint width = lengths[^1];
        if (lengths.Length == 4 && lengths[2] > 1)
        {
            strides[2] = lengths[3];
            width *= lengths[2];
        }
        if (lengths[^1] == 1) strides[^1] = 0;
        return new TensorSpan<float>(row, width, lengths, strides);
    }

    private static ArgumentException Refusal(Action<nint> call)
    {
        fixed (float* row = Row)
        {
            nint address = (nint)row;
            return Assert.Throws<ArgumentException>(() => call(address))!;
        }
    }

    [TestCase(Backend.Reference)]
    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void AttentionTensorsOfMoreElementsThanAnArrayHoldsAreRefusedByName(Backend backend)
    {
        var device = TestDevices.Of(backend);
        var e = Refusal(row =>
        {
            var big = Repeated((float*)row, 1, Tokens, 1, K);
            Engine.Gla.Forward<float>(device, big, big, big, default, big);
        });
        Assert.That(e.ParamName, Is.EqualTo("q"));
        Assert.That(e.Message, Does.StartWith($"q: shape [1, {Tokens}, 1, {K}] holds more than {Array.MaxLength} elements"));

        using var session = new GlaSession(device, 1, new HeadLayout(1, 1, K, K), GateKind.None);
        e = Refusal(row =>
        {
            var big = Repeated((float*)row, 1, Tokens, 1, K);
            session.Prefill<float>(big, big, big, default, Repeated((float*)row, 1, Tokens, 1, K));
        });
        Assert.That(e.ParamName, Is.EqualTo("q"));

        // A per-key gate of eight value heads over one query head holds eight times q's elements.
        e = Refusal(row =>
        {
            const int tokens = Tokens / 4;
            var q = Repeated((float*)row, 1, tokens, 1, K);
            Engine.Gla.Forward<float>(device, q, q, Repeated((float*)row, 1, tokens, 8, 1), Repeated((float*)row, 1, tokens, 8, K),
                Repeated((float*)row, 1, tokens, 8, 1));
        });
        Assert.That(e.ParamName, Is.EqualTo("g"));
    }

    /// <summary>
    /// A state of more floats than one array holds, from q, k and v of no token or one: its size comes from the heads, which no
    /// tensor's length bounds. Before, the call threw an OverflowException from inside.
    /// </summary>
    [TestCase(Backend.Reference, 0)]
    [TestCase(Backend.Cpu, 0)]
    [TestCase(Backend.Cpu, 1)]
    [TestCase(Backend.Gpu, 1)]
    public void AStateOfMoreFloatsThanAnArrayHoldsIsRefusedAsTheFinalState(Backend backend, int tokens)
    {
        var device = TestDevices.Of(backend);
        const int dim = 1 << 16;
        var q = new float[tokens * dim];
        var output = new float[q.Length];
        var e = Assert.Throws<ArgumentException>(() =>
        {
            var rows = new ReadOnlyTensorSpan<float>(q, [1, tokens, 1, dim], []);
            Engine.Gla.Forward<float>(device, rows, rows, rows, default, new TensorSpan<float>(output, [1, tokens, 1, dim], []));
        })!;
        Assert.That(e.ParamName, Is.EqualTo("final_state"));
        Assert.That(e.Message, Does.StartWith($"final_state: the state (N, Hv, K, V) = [1, 1, {dim}, {dim}] would hold {(long)dim * dim} elements"));
    }

    [Test]
    public void CapturedTransitionsOfAStateOfMoreFloatsThanAnArrayHoldsAreRefusedAsTheFinalState()
    {
        const int valueHeads = 40000, dim = 256;
        static Tensor<float> Empty(params nint[] shape) => Tensor.Create<float>([], shape);
        var (keys, values, heads) = (Empty(1, 0, 1, dim), Empty(1, 0, valueHeads, dim), Empty(1, 0, valueHeads));
        var e = Assert.Throws<ArgumentException>(() => Engine.DeltaRule.CaptureTransitions<float>(keys, values, heads, default, default, [0],
            Empty(1, 0, valueHeads), Empty(1, 0, 1, dim), Empty(1, 0, valueHeads, dim)))!;
        Assert.That(e.ParamName, Is.EqualTo("final_state"));
        Assert.That(e.Message, Does.Contain("would hold 2621440000 elements"));
    }

    /// <summary>
    /// The convenience forms' output and final state, allocated from q, k and v of one token or none, of more elements than one
    /// array holds: refused naming them. Before, the allocation threw an OverflowException.
    /// </summary>
    [Test]
    public void AnAllocatedOutputOrStateOfMoreElementsThanAnArrayHoldsIsRefusedByName()
    {
        const int wide = 1 << 16;
        var device = TestDevices.Reference;
        static Tensor<float> Zeros(nint[] shape) => Tensor.CreateFromShape<float>(shape);
        // 65536 query heads of one key dim over one value head of 65536 dims: an output of 2^32 elements from q and v of 2^16.
        var e = Assert.Throws<ArgumentException>(() => Engine.Gla.Forward(device, Zeros([1, 1, wide, 1]),
            Zeros([1, 1, 1, 1]), Zeros([1, 1, 1, wide]), null))!;
        Assert.That(e.ParamName, Is.EqualTo("output"));
        Assert.That(e.Message, Does.StartWith($"output: (B, T, max(Hq, Hv), V) = [1, 1, {wide}, {wide}] would hold {(long)wide * wide} elements"));

        e = Assert.Throws<ArgumentException>(() => Engine.Lightning.Forward(device, Zeros([1, 0, 1, wide]),
            Zeros([1, 0, 1, wide]), Zeros([1, 0, 1, wide])))!;
        Assert.That(e.ParamName, Is.EqualTo("final_state"));
        Assert.That(e.Message, Does.StartWith($"final_state: the state (N, Hv, K, V) = [1, 1, {wide}, {wide}] would hold"));

        e = Assert.Throws<ArgumentException>(() => AttentionResult<float>.Allocate([1, 0, 1, wide], [1, 0, 1, wide], [1, 0, 1, wide], layout: StateLayout.ValueMajor))!;
        Assert.That(e.ParamName, Is.EqualTo("final_state"));
        Assert.That(e.Message, Does.StartWith("final_state: the state (N, Hv, V, K)"));
    }

    [TestCase(Backend.Cpu)]
    [TestCase(Backend.Gpu)]
    public void AnLsslInputOfMoreElementsThanAnArrayHoldsIsRefusedByName(Backend backend)
    {
        var device = TestDevices.Of(backend);
        static Tensor<float> Filled(float value, params nint[] shape) =>
            Tensor.Create(Enumerable.Repeat(value, (int)shape.Aggregate((nint)1, (a, d) => a * d)).ToArray(), shape);
        using var layer = new LsslLayer(Filled(-1f, 2, 4), Filled(1f, 2, 4), Filled(1f, 2, 4), Filled(2f, 2), Filled(0.01f, 2),
            new LsslOptions { StateMatrix = LsslStateMatrix.Diagonal });
        using var session = layer.CreateSession(device, 1);
        var e = Refusal(row => layer.Forward<float>(device, Repeated((float*)row, 1, 1 << 30, 2), Repeated((float*)row, 1, 1 << 30, 2)));
        Assert.That(e.ParamName, Is.EqualTo("u"));
        Assert.That(e.Message, Does.Contain("holds more than"));
        e = Refusal(row => session.Prefill<float>(Repeated((float*)row, 1, 1 << 30, 2), Repeated((float*)row, 1, 1 << 30, 2)));
        Assert.That(e.ParamName, Is.EqualTo("u"));
    }
}

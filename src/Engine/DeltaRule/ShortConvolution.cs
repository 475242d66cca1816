using System.Buffers;
using System.Numerics.Tensors;
using Engine.Kernels.Common;
using Engine.Kernels.Conv;

namespace Engine;

/// <summary>
/// The short causal depthwise convolution over time that q, k and v pass through before the delta rule, as Gated DeltaNet
/// (Qwen3-Next/3.5) applies it to its q|k|v projection: channel c at token t is
///   act(bias_c + Σ_j Weight[c, j] · x[t − (W − 1) + j, c]),  j = 0..W−1,
/// with x the rows of q, k and v side by side (C = Hq·K + Hk·K + Hv·V channels: q's heads, then k's, then v's) and positions
/// before a sequence's first token read from <see cref="InitialState"/>. Set in <see cref="DeltaRuleOptions.Convolution"/>, q,
/// k and v are the rows before the convolution: the CPU kernels convolve each head's rows as they load them, so the convolved
/// rows are never written out; the reference backend convolves them first in float64, the GPU backend on the host with the
/// CPU kernels' row loads (fp32), before the upload.
/// Whole-sequence host calls only (<see cref="DeltaRule.Forward{T}(EngineDevice, System.Numerics.Tensors.ReadOnlyTensorSpan{T}, System.Numerics.Tensors.ReadOnlyTensorSpan{T}, System.Numerics.Tensors.ReadOnlyTensorSpan{T}, System.Numerics.Tensors.ReadOnlyTensorSpan{T}, System.Numerics.Tensors.ReadOnlyTensorSpan{T}, System.Numerics.Tensors.TensorSpan{T}, System.Numerics.Tensors.ReadOnlyTensorSpan{float}, System.Numerics.Tensors.TensorSpan{float}, ReadOnlySpan{int}, DeltaRuleOptions?)"/>).
/// </summary>
public sealed record ShortConvolution
{
    /// <summary>[C, W] taps per channel (ONNX's (C, 1, W) weight), W = <see cref="Width"/>; finite.</summary>
    public required ReadOnlyMemory<float> Weight { get; init; }

    /// <summary>Taps per channel W, 1 to <see cref="CausalConvConfig.MaxKernelSize"/> (4096) (Gated DeltaNet: 4); the carried state holds W − 1 positions.</summary>
    public required int Width { get; init; }

    /// <summary>[C], or empty for none; finite.</summary>
    public ReadOnlyMemory<float> Bias { get; init; }

    /// <summary>SiLU after the sum (the default, as Gated DeltaNet), or the sum itself.</summary>
    public bool Silu { get; init; } = true;

    /// <summary>[N, C, W − 1], channels first: the W − 1 input positions before each sequence; empty for zeros.</summary>
    public ReadOnlyMemory<float> InitialState { get; init; }

    /// <summary>
    /// [N, C, W − 1]: written with the last W − 1 positions of [initial state | input] of each sequence; may be the memory of
    /// <see cref="InitialState"/>; empty when not wanted. It, <see cref="Weight"/>, <see cref="Bias"/> and
    /// <see cref="InitialState"/> lie apart from the call's output and final state: a call whose output or final state shares
    /// memory with one of them is refused.
    /// </summary>
    public Memory<float> FinalState { get; init; }
}

/// <summary>One call's short convolution, checked against the call's heads and sequences, its taps transposed for the kernels.</summary>
internal sealed class ConvolutionCall : IDisposable
{
    private readonly ShortConvolution _conv;
    private float[]? _taps;
    private float[]? _final;

    private ConvolutionCall(ShortConvolution conv, int channels, SequenceLayout sequences)
    {
        _conv = conv;
        Channels = channels;
        Sequences = sequences;
    }

    public int Channels { get; }
    public SequenceLayout Sequences { get; }
    public int Width => _conv.Width;
    public bool Silu => _conv.Silu;
    public ReadOnlySpan<float> Bias => _conv.Bias.Span;
    public ReadOnlySpan<float> InitialState => _conv.InitialState.Span;

    /// <summary>The weights [C, W] as given, channels first.</summary>
    public ReadOnlySpan<float> Weights => _conv.Weight.Span;

    /// <summary>
    /// Taps [W, C], tap-major: a tap's channels adjacent, as the kernels read 16 channels at a time past the initial state's
    /// reach; empty where no sequence reaches past it (decode), whose rows the kernels convolve from <see cref="Weights"/>.
    /// </summary>
    public ReadOnlySpan<float> Taps => _taps is null ? default : _taps.AsSpan(0, Channels * Width);

    /// <summary>The convolution of a call with these heads and sequences, every shape and value checked; null when none.</summary>
    public static ConvolutionCall? Check(ShortConvolution? conv, HeadLayout heads, SequenceLayout sequences)
    {
        if (conv is null) return null;
        int width = conv.Width;
        if (width < 1 || width > CausalConvConfig.MaxKernelSize)
            throw new ArgumentException($"convolution: width must be in [1, {CausalConvConfig.MaxKernelSize}] (a short convolution), got {width}", "options");
        long channels = (long)(heads.QHeads + heads.KeyHeads) * heads.KeyDim + (long)heads.ValueHeads * heads.ValueDim;
        string layout = $"C = Hq·K + Hk·K + Hv·V = ({heads.QHeads} + {heads.KeyHeads})·{heads.KeyDim} + {heads.ValueHeads}·{heads.ValueDim} = {channels}";
        if (conv.Weight.Length != channels * width)
            throw new ArgumentException($"convolution weight: expected (C, W) = ({channels}, {width}), {channels * width} floats, with {layout}; got {conv.Weight.Length}", "options");
        if (!conv.Bias.IsEmpty && conv.Bias.Length != channels)
            throw new ArgumentException($"convolution bias: expected {channels} floats (one per channel, {layout}) or none, got {conv.Bias.Length}", "options");
        long state = sequences.Count * channels * (width - 1);
        if (!conv.InitialState.IsEmpty && conv.InitialState.Length != state)
            throw new ArgumentException($"convolution initial state: expected (N, C, W − 1) = ({sequences.Count}, {channels}, {width - 1}), {state} floats, or none; got {conv.InitialState.Length}", "options");
        if (!conv.FinalState.IsEmpty && conv.FinalState.Length != state)
            throw new ArgumentException($"convolution final state: expected (N, C, W − 1) = ({sequences.Count}, {channels}, {width - 1}), {state} floats, or none; got {conv.FinalState.Length}", "options");
        TensorArgs.RequireFinite(conv.Weight.Span, "convolution weight");
        TensorArgs.RequireFinite(conv.Bias.Span, "convolution bias");
        TensorArgs.RequireFinite(conv.InitialState.Span, "convolution initial state");

        var call = new ConvolutionCall(conv, (int)channels, sequences);
        if (sequences.MaxLength > width - 1) call._taps = TapMajor(conv.Weight.Span, (int)channels, width);
        return call;
    }

    /// <summary>
    /// Refuses an output or a final state sharing memory with the convolution's weight, bias or states: the CPU kernels write
    /// them while they convolve the rows, and the convolution's final state is written over them once the call ran.
    /// </summary>
    public void RequireApart<T>(ReadOnlyTensorSpan<T> output, ReadOnlyTensorSpan<float> finalState)
    {
        Apart(output, finalState, _conv.Weight.Span, "convolution weight");
        Apart(output, finalState, _conv.Bias.Span, "convolution bias");
        Apart(output, finalState, _conv.InitialState.Span, "convolution initial state");
        Apart(output, finalState, _conv.FinalState.Span, "convolution final state");

        static void Apart(ReadOnlyTensorSpan<T> output, ReadOnlyTensorSpan<float> finalState, ReadOnlySpan<float> memory, string name)
        {
            var read = new ReadOnlyTensorSpan<float>(memory);
            TensorArgs.RequireApart(output, "output", read, name);
            TensorArgs.RequireApart(finalState, DeviceCall.FinalState, read, name);
        }
    }

    private static unsafe float[] TapMajor(ReadOnlySpan<float> weight, int channels, int width)
    {
        var taps = ArrayPool<float>.Shared.Rent(channels * width);
        fixed (float* from = weight, to = taps)
            for (int j = 0; j < width; j++)
            {
                float* tap = to + (long)j * channels;
                for (int c = 0; c < channels; c++) tap[c] = from[(long)c * width + j];
            }
        return taps;
    }

    /// <summary>
    /// Keeps the final state of the raw rows q, k and v (token rows <paramref name="rows"/> apart) for <see cref="CommitState"/>:
    /// taken before the kernels run, since the final state may be the initial state's memory, which they read.
    /// </summary>
    public unsafe void KeepFinalState(ReadOnlySpan<float> q, ReadOnlySpan<float> k, ReadOnlySpan<float> v, TokenRows rows, HeadLayout heads)
    {
        if (_conv.FinalState.IsEmpty) return;
        _final = ArrayPool<float>.Shared.Rent(Math.Max(_conv.FinalState.Length, 1));
        fixed (float* pq = q, pk = k, pv = v, final = _final, initial = InitialState)
        {
            var convolution = Rows(null, null, null, initial);
            int kw = heads.KeyDim;
            convolution.WriteState(final, pq, rows.Q, 0, heads.QHeads * kw);
            convolution.WriteState(final, pk, rows.K, heads.QHeads * kw, heads.KeyHeads * kw);
            convolution.WriteState(final, pv, rows.V, (heads.QHeads + heads.KeyHeads) * kw, heads.ValueHeads * heads.ValueDim);
        }
    }

    /// <summary>Writes the kept final state (after a call that ran to the end).</summary>
    public void CommitState()
    {
        if (_final is not null) _final.AsSpan(0, _conv.FinalState.Length).CopyTo(_conv.FinalState.Span);
    }

    /// <summary>The kernels' view, on pinned <see cref="Weights"/>, <see cref="Taps"/>, bias and initial state.</summary>
    public unsafe ShortConvRows Rows(float* weights, float* taps, float* bias, float* initial) =>
        new(weights, taps, Bias.IsEmpty ? null : bias, InitialState.IsEmpty ? null : initial, Channels, Width, Silu, Sequences);

    /// <summary>
    /// One part (q, k or v: <paramref name="heads"/> of <paramref name="dim"/> from channel <paramref name="channel"/>) of the raw
    /// rows <paramref name="x"/> convolved into a dense [tokens, heads, dim] buffer, for the backends whose kernels do not
    /// convolve: <paramref name="exact"/> (the reference) sums in float64, one obvious loop per value; otherwise (the GPU
    /// backend) the CPU kernels' own row loads do it.
    /// </summary>
    public unsafe void ConvolveDense(ReadOnlySpan<float> x, int rowStride, int channel, int heads, int dim, Span<float> dense, bool exact)
    {
        if (!exact)
        {
            fixed (float* weights = Weights, taps = Taps, pb = Bias, pi = InitialState, px = x, pd = dense)
            {
                var rows = Rows(weights, taps, pb, pi);
                for (int n = 0; n < Sequences.Count; n++)
                    for (int h = 0; h < heads; h++)
                    {
                        int start = Sequences.Start(n);
                        rows.Load(pd + (long)start * heads * dim + h * dim, heads * dim, dim, new HeadRows(px, rowStride, dim, h, start),
                            channel + h * dim, start, Sequences.Length(n));
                    }
            }
            return;
        }
        int width = Width, carry = width - 1, partWidth = heads * dim;
        var weight = _conv.Weight.Span;
        var bias = Bias;
        var initial = InitialState;
        for (int n = 0; n < Sequences.Count; n++)
        {
            int start = Sequences.Start(n);
            for (int p = 0; p < Sequences.Length(n); p++)
                for (int c = 0; c < partWidth; c++)
                {
                    int ch = channel + c;
                    double sum = bias.IsEmpty ? 0 : bias[ch];
                    for (int j = 0; j < width; j++)
                    {
                        int position = p - carry + j;
                        double value = position >= 0 ? x[(start + position) * rowStride + c]
                            : initial.IsEmpty ? 0 : initial[(n * Channels + ch) * carry + carry + position];
                        sum += (double)weight[ch * width + j] * value;
                    }
                    dense[(start + p) * partWidth + c] = (float)(Silu ? sum * Sigmoid(sum) : sum);
                }
        }
    }

    /// <summary>1 / (1 + e^−x) with the exponent ≤ 0.</summary>
    private static double Sigmoid(double x) => x >= 0 ? 1 / (1 + Math.Exp(-x)) : Math.Exp(x) / (1 + Math.Exp(x));

    public void Dispose()
    {
        if (_taps is not null) ArrayPool<float>.Shared.Return(_taps);
        if (_final is not null) ArrayPool<float>.Shared.Return(_final);
        _taps = _final = null;
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Conv;

/// <summary>
/// The short causal depthwise convolution q, k and v pass through before the delta rule (Gated DeltaNet's conv1d over its
/// q|k|v projection), applied by the kernel as it loads a head's rows, so the convolved rows are never written out. Channel c
/// of the token at local position p of a sequence is act(bias_c + Σ_j w[c, j] · x[p − (K − 1) + j, c]); positions before
/// the sequence's first token read its initial state [sequences, channels, K − 1] (zeros when null). The weights w [channels, K]
/// and the initial state are channels first, as ONNX Runtime keeps them: the rows that reach into the initial state (at decode,
/// every row) are convolved channel by channel from them. The rows past that reach are convolved 16 channels at a time from
/// <paramref name="taps"/>, the weights tap-major [K, channels], which may be null where no sequence is longer than K − 1.
/// Channels are q's heads, then k's, then v's (dilation 1). A default instance is no convolution.
/// </summary>
public readonly unsafe struct ShortConvRows(float* weights, float* taps, float* bias, float* initialState, int channels, int kernelSize, bool silu, SequenceLayout sequences)
{
    private const int Lanes = 16;
    private readonly float* _weights = weights, _taps = taps, _bias = bias, _initial = initialState;
    private readonly int _channels = channels, _k = kernelSize, _carry = kernelSize - 1;
    private readonly bool _silu = silu;
    private readonly SequenceLayout _sequences = sequences;

    public bool Active => _weights != null;

    /// <summary>
    /// dst row i (stride <paramref name="ld"/>) = the convolved channels [channel, channel + rows.Dim) of the rows.Row(i) token,
    /// zero-padded to <paramref name="padded"/> floats, for i in 0..len; the rows start at packed token <paramref name="start"/>,
    /// all in one sequence, whose earlier rows (Row(i) for i &lt; 0) the first taps read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void Load(float* dst, int ld, int padded, HeadRows rows, int channel, int start, int len)
    {
        int sequence = _sequences.SequenceOf(start), first = start - _sequences.Start(sequence), dim = rows.Dim;
        int vectorEnd = dim / Lanes * Lanes;
        // Rows whose first taps reach into the initial state (at decode, every row), then the rest 16 channels at a time.
        int inSequence = Math.Clamp(_carry - first, 0, len);
        for (int i = 0; i < inSequence; i++) ReachRow(dst + (long)i * ld, rows, i, first + i, sequence, channel, dim);
        for (int c = 0; c < vectorEnd; c += Lanes)
        {
            if (_k <= 4) Window(dst + c, ld, rows, inSequence, len, channel + c, c);
            else Taps(dst + c, ld, rows, inSequence, len, channel + c, c);
        }
        for (int i = inSequence; i < len; i++)
            for (int c = vectorEnd; c < dim; c++) dst[(long)i * ld + c] = Scalar(rows, i, first + i, sequence, channel, c);
        for (int i = 0; i < len; i++)
        {
            float* row = dst + (long)i * ld;
            if (_silu) SimdMath.Sigmoid(row, row, dim, silu: true);
            for (int c = dim; c < padded; c++) row[c] = 0f;
        }
    }

    /// <summary>
    /// 16 channels of rows [from, to) for W &lt;= 4: the taps and the last three input rows held in registers, one new row
    /// loaded per output row, before the activation (a width under 4 is the same sum with its leading taps zero, whose rows are never read).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Window(float* dst, int ld, HeadRows rows, int from, int to, int channel, int c)
    {
        // No rows past the initial state's reach (a sequence shorter than K − 1): the rows before `from` may lie before the sequence.
        if (from >= to) return;
        var w3 = Vector512.Load(_taps + (long)_carry * _channels + channel);
        var w2 = _k >= 2 ? Vector512.Load(_taps + (long)(_carry - 1) * _channels + channel) : Vector512<float>.Zero;
        var w1 = _k >= 3 ? Vector512.Load(_taps + (long)(_carry - 2) * _channels + channel) : Vector512<float>.Zero;
        var w0 = _k >= 4 ? Vector512.Load(_taps + (long)(_carry - 3) * _channels + channel) : Vector512<float>.Zero;
        var b = _bias == null ? Vector512<float>.Zero : Vector512.Load(_bias + channel);
        var x0 = _k >= 4 ? Vector512.Load(rows.Row(from - 3) + c) : Vector512<float>.Zero;
        var x1 = _k >= 3 ? Vector512.Load(rows.Row(from - 2) + c) : Vector512<float>.Zero;
        var x2 = _k >= 2 ? Vector512.Load(rows.Row(from - 1) + c) : Vector512<float>.Zero;
        float* x = rows.Row(from) + c, y = dst + (long)from * ld;
        for (int i = from; i < to; i++, x += rows.Stride, y += ld)
        {
            var x3 = Vector512.Load(x);
            var acc = Vector512.MultiplyAddEstimate(w3, x3, Vector512.MultiplyAddEstimate(w2, x2, Vector512.MultiplyAddEstimate(w1, x1, Vector512.MultiplyAddEstimate(w0, x0, b))));
            acc.Store(y);
            (x0, x1, x2) = (x1, x2, x3);
        }
    }

    /// <summary>16 channels of rows [from, to) before the activation, every tap read for every row (widths over 4).</summary>
    private void Taps(float* dst, int ld, HeadRows rows, int from, int to, int channel, int c)
    {
        for (int i = from; i < to; i++)
        {
            float* x0 = rows.Row(i - _carry) + c;
            var acc = _bias == null ? Vector512<float>.Zero : Vector512.Load(_bias + channel);
            for (int j = 0; j < _k; j++)
                acc = Vector512.MultiplyAddEstimate(Vector512.Load(_taps + (long)j * _channels + channel), Vector512.Load(x0 + (long)j * rows.Stride), acc);
            acc.Store(dst + (long)i * ld);
        }
    }

    /// <summary>Row i (local position <paramref name="position"/>, within the initial state's reach) before the activation.</summary>
    private void ReachRow(float* y, HeadRows rows, int i, int position, int sequence, int channel, int dim)
    {
        var taps = stackalloc ReachRows.Tap[_k];
        for (int j = 0; j < _k; j++)
        {
            int p = position - _carry + j;
            taps[j] = p >= 0 ? ReachRows.Tap.Row(rows.Row(i - _carry + j))
                : _initial == null ? default
                : new ReachRows.Tap(_initial + ((long)sequence * _channels + channel) * _carry, _carry, _carry + p);
        }
        ReachRows.Compute(y, dim, _bias == null ? null : _bias + channel, _weights + (long)channel * _k, _k, taps);
    }

    /// <summary>
    /// One convolved channel before the activation: channel + c of row i, the token at local position <paramref name="position"/>;
    /// the sum in <see cref="Window"/>'s order.
    /// </summary>
    private float Scalar(HeadRows rows, int i, int position, int sequence, int channel, int c)
    {
        float sum = _bias == null ? 0f : _bias[channel + c];
        float* w = _weights + (long)(channel + c) * _k;
        for (int j = 0; j < _k; j++)
        {
            int p = position - _carry + j;
            float x = p >= 0 ? rows.Row(i - _carry + j)[c] : Initial(sequence, channel + c, _carry + p);
            sum = float.MultiplyAddEstimate(w[j], x, sum);
        }
        return sum;
    }

    private float Initial(int sequence, int channel, int column) =>
        _initial == null ? 0f : _initial[((long)sequence * _channels + channel) * _carry + column];

    /// <summary>
    /// The carried state after the call for the channels [channel, channel + width) of one part: per sequence, the last K − 1
    /// rows of [initial state | rows], into <paramref name="final"/> [sequences, channels, K − 1], which may be the initial
    /// state itself (column j reads column j + length, so it is read before it is overwritten).
    /// </summary>
    public void WriteState(float* final, float* part, long rowStride, int channel, int width)
    {
        for (int n = 0; n < _sequences.Count; n++)
        {
            int length = _sequences.Length(n);
            float* rows = part + (long)_sequences.Start(n) * rowStride;
            float* target = final + ((long)n * _channels + channel) * _carry;
            if (length >= _carry)
            {
                for (int c = 0; c < width; c++, target += _carry)
                    for (int j = 0; j < _carry; j++) target[j] = rows[(length - _carry + j) * rowStride + c];
                continue;
            }
            // Shorter than the reach (decode): each channel's carried positions move up by the length, its rows follow. One
            // move of the part's block by the length (memmove, so in place too) moves them all, and fills the positions the
            // rows then overwrite.
            int kept = _carry - length;
            long moved = (long)width * _carry - length;
            if (_initial == null) new Span<float>(target, (int)moved).Clear();
            else Buffer.MemoryCopy(_initial + ((long)n * _channels + channel) * _carry + length, target, moved * sizeof(float), moved * sizeof(float));
            for (int c = 0; c < width; c++, target += _carry)
                for (int j = kept; j < _carry; j++) target[j] = rows[(j - kept) * rowStride + c];
        }
    }
}

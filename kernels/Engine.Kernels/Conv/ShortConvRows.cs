using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Conv;

/// <summary>
/// The short causal depthwise convolution q, k and v pass through before the delta rule (Gated DeltaNet's conv1d over its
/// q|k|v projection), applied by the kernel as it loads a head's rows, so the convolved rows are never written out. Channel c
/// of the token at local position p of a sequence is act(bias_c + Σ_j taps[j, c] · x[p − (K − 1) + j, c]); positions before
/// the sequence's first token read its initial state [sequences, channels, K − 1] (channels first, as ONNX Runtime keeps it;
/// zeros when null). Channels are q's heads, then k's, then v's; taps are tap-major [K, channels] (dilation 1).
/// A default instance is no convolution.
/// </summary>
public readonly unsafe struct ShortConvRows(float* taps, float* bias, float* initialState, int channels, int kernelSize, bool silu, SequenceLayout sequences)
{
    private const int Lanes = 16;
    private readonly float* _taps = taps, _bias = bias, _initial = initialState;
    private readonly int _channels = channels, _k = kernelSize, _carry = kernelSize - 1;
    private readonly bool _silu = silu;
    private readonly SequenceLayout _sequences = sequences;

    public bool Active => _taps != null;

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
        for (int i = 0; i < len; i++)
        {
            float* y = dst + (long)i * ld;
            int position = first + i;
            if (position >= _carry)
            {
                float* x0 = rows.Row(i - _carry);
                for (int c = 0; c < vectorEnd; c += Lanes)
                {
                    var acc = _bias == null ? Vector512<float>.Zero : Vector512.Load(_bias + channel + c);
                    for (int j = 0; j < _k; j++)
                        acc = Vector512.FusedMultiplyAdd(Vector512.Load(_taps + (long)j * _channels + channel + c), Vector512.Load(x0 + (long)j * rows.Stride + c), acc);
                    (_silu ? SimdMath.Silu(acc) : acc).Store(y + c);
                }
                for (int c = vectorEnd; c < dim; c++) y[c] = Scalar(rows, i, position, sequence, channel, c);
            }
            else
            {
                for (int c = 0; c < dim; c++) y[c] = Scalar(rows, i, position, sequence, channel, c);
            }
            for (int c = dim; c < padded; c++) y[c] = 0f;
        }
    }

    /// <summary>One convolved channel: channel + c of row i, the token at local position <paramref name="position"/>.</summary>
    private float Scalar(HeadRows rows, int i, int position, int sequence, int channel, int c)
    {
        float sum = _bias == null ? 0f : _bias[channel + c];
        for (int j = 0; j < _k; j++)
        {
            int p = position - _carry + j;
            float x = p >= 0 ? rows.Row(i - _carry + j)[c] : Initial(sequence, channel + c, _carry + p);
            sum = MathF.FusedMultiplyAdd(_taps[(long)j * _channels + channel + c], x, sum);
        }
        return _silu ? SimdMath.Silu(sum) : sum;
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
            for (int j = 0; j < _carry; j++)
            {
                int p = length - _carry + j;
                for (int c = 0; c < width; c++)
                    final[((long)n * _channels + channel + c) * _carry + j] = p >= 0 ? rows[p * rowStride + c] : Initial(n, channel + c, _carry + p);
            }
        }
    }
}

using System.Runtime.Intrinsics;
using Engine.Kernels.Common;

namespace Engine.Kernels.Conv;

/// <summary>
/// The causal depthwise convolution on the CPU, memory bound: every input and output element is touched once.
/// Channels-last activations ([tokens, channels]) run 16 channels to a Vector512 register: a work item is a block of
/// tokens of the packed axis × a block of channels, walked token by token so each tap reads a contiguous stretch of a
/// row (the rows a later token reads again are still in L1), the block's taps transposed once per item. Channels-first activations ([channels, positions] per sequence) run
/// 16 positions to a register along each channel's row. Positions before a sequence's first token come from its carry
/// state in either layout. The carry state is written after every output, so past and present state may be one buffer.
/// </summary>
public static unsafe class CausalConvCpu
{
    private const int Lanes = 16;
    /// <summary>Channels-last: tokens per work item, and floats of the item's taps (channels × K, at most 256 channels).</summary>
    private const int TokenBlock = 128, TapFloats = 4096;
    /// <summary>Channels-first: channel rows per work item.</summary>
    private const int RowBlock = 32;

    /// <param name="sequences">sequence s's activations start at element Start(s) · channels of input and output.</param>
    /// <param name="weight">[channels, K] (ONNX's (channels, 1, K)).</param>
    /// <param name="bias">[channels], or empty.</param>
    /// <param name="pastState">[sequences, channels × StateLength] in the config's state layout, or empty for zeros.</param>
    /// <param name="presentState">the state after the call, same shape; empty when not wanted. May be <paramref name="pastState"/>.</param>
    public static void Forward(CausalConvConfig config, SequenceLayout sequences, ReadOnlySpan<float> input, ReadOnlySpan<float> weight,
        ReadOnlySpan<float> bias, ReadOnlySpan<float> pastState, Span<float> output, Span<float> presentState, IWorkScheduler scheduler)
    {
        long activations = (long)sequences.TotalTokens * config.Channels, states = (long)sequences.Count * config.Channels * config.StateLength;
        Require(input.Length == activations && output.Length == activations, "input and output hold tokens × channels floats");
        Require(weight.Length == (long)config.Channels * config.KernelSize, "weight holds channels × K floats");
        Require(bias.IsEmpty || bias.Length == config.Channels, "bias holds one float per channel");
        Require(pastState.IsEmpty || pastState.Length == states, "past state holds sequences × channels × state length floats");
        Require(presentState.IsEmpty || presentState.Length == states, "present state holds sequences × channels × state length floats");
        fixed (float* x = input, w = weight, b = bias, past = pastState, y = output, present = presentState)
        {
            var call = new Call(config, sequences, x, w, bias.IsEmpty ? null : b, pastState.IsEmpty ? null : past, y);
            if (config.Activations == ConvLayout.ChannelsLast) call.RunChannelsLast(scheduler);
            else call.RunChannelsFirst(scheduler);
            if (!presentState.IsEmpty) call.WriteState(present);
        }
    }

    private static void Require(bool holds, string what)
    {
        if (!holds) throw new ArgumentException($"causal convolution: {what}");
    }

    private sealed class Call(CausalConvConfig config, SequenceLayout sequences, float* x, float* w, float* bias, float* past, float* y)
    {
        private readonly int _c = config.Channels, _k = config.KernelSize, _d = config.Dilation, _s = config.StateLength;
        private readonly bool _silu = config.Activation == ConvActivation.Silu;

        /// <summary>Work items: blocks of the packed token axis × blocks of channels; a token block may span sequences.</summary>
        public void RunChannelsLast(IWorkScheduler scheduler)
        {
            int channelBlock = Math.Clamp(TapFloats / _k / Lanes * Lanes, Lanes, 256);
            int tokenBlocks = (sequences.TotalTokens + TokenBlock - 1) / TokenBlock, channelBlocks = (_c + channelBlock - 1) / channelBlock;
            scheduler.Run(tokenBlocks * channelBlocks, (item, _) =>
            {
                int a = item / channelBlocks * TokenBlock, end = Math.Min(a + TokenBlock, sequences.TotalTokens);
                int c0 = item % channelBlocks * channelBlock, c1 = Math.Min(c0 + channelBlock, _c);
                for (int s = sequences.SequenceOf(a); a < end; s++)
                {
                    int start = sequences.Start(s), stop = Math.Min(start + sequences.Length(s), end);
                    if (stop > a) ChannelsLastSegment(s, start, a - start, stop - start, c0, c1);
                    a = Math.Max(a, stop);
                }
            });
        }

        /// <summary>
        /// Local positions [t0, t1) of sequence s starting at packed token <paramref name="start"/>, channels [c0, c1): token by
        /// token. Tokens past the carry state's reach stream each row's channels 16 at a time against the block's taps,
        /// transposed to [K, channels] on the stack; tokens within its reach (every token at decode) run channel by channel.
        /// </summary>
        private void ChannelsLastSegment(int s, int start, int t0, int t1, int c0, int c1)
        {
            float* xs = x + (long)start * _c, ys = y + (long)start * _c;
            int width = c1 - c0, vectorEnd = c0 + width / Lanes * Lanes;
            float* taps = stackalloc float[_k * width];
            if (t1 > _s)
                for (int j = 0; j < _k; j++)
                    for (int i = 0; i < width; i++) taps[j * width + i] = w[(long)(c0 + i) * _k + j];
            long tapStride = (long)_d * _c;
            for (int t = t0; t < t1; t++)
            {
                float* yRow = ys + (long)t * _c;
                if (t >= _s)
                {
                    float* first = xs + (long)(t - _s) * _c;
                    for (int c = c0; c < vectorEnd; c += Lanes)
                    {
                        var acc = bias is null ? Vector512<float>.Zero : Vector512.Load(bias + c);
                        float* tap = taps + (c - c0);
                        for (int j = 0; j < _k; j++) acc = Vector512.MultiplyAddEstimate(Vector512.Load(tap + j * width), Vector512.Load(first + j * tapStride + c), acc);
                        acc.Store(yRow + c);
                    }
                    for (int c = vectorEnd; c < c1; c++) yRow[c] = Scalar(s, c, t, xs + c, _c);
                }
                else ReachRow(s, xs, t, c0, c1, yRow);
                if (_silu) SimdMath.Sigmoid(yRow + c0, yRow + c0, width, silu: true);
            }
        }

        /// <summary>Channels [c0, c1) of channels-last row t, within the carry state's reach, before the activation.</summary>
        private void ReachRow(int s, float* xs, int t, int c0, int c1, float* yRow)
        {
            var taps = stackalloc ReachRows.Tap[_k];
            float* state = past is null ? null : past + (long)s * _c * _s;
            for (int j = 0; j < _k; j++)
            {
                int p = t - (_k - 1 - j) * _d;
                taps[j] = p >= 0 ? ReachRows.Tap.Row(xs + (long)p * _c + c0)
                    : state is null ? default
                    : config.State == ConvLayout.ChannelsFirst ? new ReachRows.Tap(state + (long)c0 * _s, _s, _s + p)
                    : ReachRows.Tap.Row(state + (long)(_s + p) * _c + c0);
            }
            ReachRows.Compute(yRow + c0, c1 - c0, bias is null ? null : bias + c0, w + (long)c0 * _k, _k, taps);
        }

        /// <summary>One output before the activation: channel c at local position t; the channel's position p of the input is xc[p · stride].</summary>
        private float Scalar(int s, int c, int t, float* xc, long stride)
        {
            float sum = bias is null ? 0f : bias[c];
            for (int j = 0; j < _k; j++)
            {
                int p = t - (_k - 1 - j) * _d;
                sum = float.MultiplyAddEstimate(w[(long)c * _k + j], p >= 0 ? xc[p * stride] : StateAt(s, c, _s + p), sum);
            }
            return sum;
        }

        private float StateAt(int s, int c, int position) =>
            past is null ? 0f : past[(long)s * _c * _s + CausalConvConfig.Offset(config.State, _c, _s, c, position)];

        /// <summary>Work items: (sequence, block of channel rows); each row's positions from the state's reach on run 16 to a register.</summary>
        public void RunChannelsFirst(IWorkScheduler scheduler)
        {
            int rowBlocks = (_c + RowBlock - 1) / RowBlock;
            scheduler.Run(sequences.Count * rowBlocks, (item, _) =>
            {
                int s = item / rowBlocks, c0 = item % rowBlocks * RowBlock, c1 = Math.Min(c0 + RowBlock, _c);
                for (int c = c0; c < c1; c++) ChannelsFirstRow(s, c);
            });
        }

        private void ChannelsFirstRow(int s, int c)
        {
            int length = sequences.Length(s);
            long rowStart = (long)sequences.Start(s) * _c + (long)c * length;
            float* xr = x + rowStart, yr = y + rowStart;
            int head = Math.Min(_s, length), t = head;
            for (int i = 0; i < head; i++) yr[i] = Scalar(s, c, i, xr, 1);
            float* wc = w + (long)c * _k;
            var b0 = Vector512.Create(bias is null ? 0f : bias[c]);
            for (; t + Lanes <= length; t += Lanes)
            {
                var acc = b0;
                for (int j = 0; j < _k; j++) acc = Vector512.MultiplyAddEstimate(Vector512.Create(wc[j]), Vector512.Load(xr + t - (_k - 1 - j) * _d), acc);
                acc.Store(yr + t);
            }
            for (; t < length; t++) yr[t] = Scalar(s, c, t, xr, 1);
            if (_silu) SimdMath.Sigmoid(yr, yr, length, silu: true);
        }

        /// <summary>
        /// The last StateLength positions of [state | x] per sequence, written in ascending position order: position j reads
        /// position j + length, so a state updated in place is read before it is overwritten.
        /// </summary>
        public void WriteState(float* present)
        {
            // Strides of a channel and of a position in the state's and the activations' layouts.
            (long stateChannel, long statePosition) = config.State == ConvLayout.ChannelsFirst ? ((long)_s, 1L) : (1L, (long)_c);
            for (int s = 0; s < sequences.Count; s++)
            {
                int length = sequences.Length(s);
                (long inputChannel, long inputPosition) = config.Activations == ConvLayout.ChannelsFirst ? ((long)length, 1L) : (1L, (long)_c);
                long stateBase = (long)s * _c * _s;
                int first = 0;
                if (length < _s && past is not null)
                {
                    // The kept positions move up by the length: in either layout one move of the block by length positions
                    // (memmove, so in place too), which also fills the positions the rows then overwrite.
                    long shift = length * statePosition;
                    Buffer.MemoryCopy(past + stateBase + shift, present + stateBase, ((long)_c * _s - shift) * sizeof(float), ((long)_c * _s - shift) * sizeof(float));
                    first = _s - length;
                }
                for (int j = first; j < _s; j++)
                {
                    int p = length - _s + j;
                    float* target = present + stateBase + j * statePosition;
                    float* source = p >= 0 ? x + (long)sequences.Start(s) * _c + p * inputPosition : past is null ? null : past + stateBase + (_s + p) * statePosition;
                    long stride = p >= 0 ? inputChannel : stateChannel;
                    if (source is null)
                        for (int c = 0; c < _c; c++) target[c * stateChannel] = 0f;
                    else
                        for (int c = 0; c < _c; c++) target[c * stateChannel] = source[c * stride];
                }
            }
        }
    }
}

namespace Engine.Kernels.Conv;

/// <summary>The activation fused after the convolution.</summary>
public enum ConvActivation
{
    None,
    /// <summary>x · sigmoid(x) (SiLU, Swish).</summary>
    Silu,
}

/// <summary>How one sequence's [channels × positions] block lies in memory.</summary>
public enum ConvLayout
{
    /// <summary>[channels, positions]: a channel's positions adjacent.</summary>
    ChannelsFirst,
    /// <summary>[positions, channels]: a position's channels adjacent (token-major).</summary>
    ChannelsLast,
}

/// <summary>
/// A stateful causal depthwise 1-D convolution: each channel c convolved along time with its own K taps,
///   y[c, t] = act(bias[c] + Σ_j w[c, j] · x[c, t − (K − 1 − j) · dilation]),
/// positions before a sequence's first token read its carry state, which holds the last
/// (K − 1) · dilation positions of [state | x] after the call.
/// </summary>
public sealed record CausalConvConfig
{
    public CausalConvConfig(int channels, int kernelSize, int dilation = 1, ConvActivation activation = ConvActivation.None,
        ConvLayout activations = ConvLayout.ChannelsFirst, ConvLayout state = ConvLayout.ChannelsFirst)
    {
        if (channels < 1) throw new ArgumentOutOfRangeException(nameof(channels), channels, "channels must be >= 1");
        if (kernelSize < 1 || kernelSize > MaxKernelSize)
            throw new ArgumentOutOfRangeException(nameof(kernelSize), kernelSize, $"kernel size must be in [1, {MaxKernelSize}] (a short convolution)");
        if (dilation < 1) throw new ArgumentOutOfRangeException(nameof(dilation), dilation, "dilation must be >= 1");
        if ((long)(kernelSize - 1) * dilation > int.MaxValue / 2)
            throw new ArgumentOutOfRangeException(nameof(dilation), dilation, "(kernel size - 1) · dilation is too large");
        Channels = channels;
        KernelSize = kernelSize;
        Dilation = dilation;
        Activation = activation;
        Activations = activations;
        State = state;
    }

    /// <summary>
    /// The longest kernel the CPU kernels take: a work item keeps its taps (K · 16 to 256 floats) and a row's K input rows on
    /// its worker's stack. Short convolutions have K of 2 to 8; a kernel of thousands of taps is a job for an FFT.
    /// </summary>
    public const int MaxKernelSize = 4096;

    public int Channels { get; }
    public int KernelSize { get; }
    public int Dilation { get; }
    public ConvActivation Activation { get; }
    /// <summary>Layout of the input and output of each sequence.</summary>
    public ConvLayout Activations { get; }
    /// <summary>Layout of each sequence's carry state [channels × StateLength].</summary>
    public ConvLayout State { get; }

    /// <summary>Positions the carry state holds: (K − 1) · dilation.</summary>
    public int StateLength => (KernelSize - 1) * Dilation;

    /// <summary>Offset of (channel, position) inside one sequence's block of <paramref name="positions"/> positions.</summary>
    public static long Offset(ConvLayout layout, int channels, int positions, int channel, int position) => layout == ConvLayout.ChannelsFirst
        ? (long)channel * positions + position
        : (long)position * channels + channel;
}

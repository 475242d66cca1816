using Engine.Kernels.Common;

namespace Engine.Kernels.Conv;

/// <summary>The causal convolution in float64, tap by tap: the oracle of the tests.</summary>
public static class CausalConvReference
{
    /// <param name="sequences">where each sequence lies: sequence s's activations start at element Start(s) · channels.</param>
    /// <param name="weight">[channels, K] (ONNX's (channels, 1, K)).</param>
    /// <param name="bias">[channels], or empty.</param>
    /// <param name="pastState">[sequences, channels × StateLength] in the config's state layout, or empty for zeros.</param>
    /// <param name="presentState">[sequences, channels × StateLength]: the carry state after each sequence.</param>
    public static void Forward(CausalConvConfig config, SequenceLayout sequences, ReadOnlySpan<float> input, ReadOnlySpan<float> weight,
        ReadOnlySpan<float> bias, ReadOnlySpan<float> pastState, Span<double> output, Span<double> presentState)
    {
        int channels = config.Channels, k = config.KernelSize, d = config.Dilation, stateLength = config.StateLength;
        for (int s = 0; s < sequences.Count; s++)
        {
            long activationBase = (long)sequences.Start(s) * channels, stateBase = (long)s * channels * stateLength;
            int length = sequences.Length(s);
            for (int c = 0; c < channels; c++)
            {
                // Position p of [state | x] with p < 0 in the state.
                double At(int p, ReadOnlySpan<float> x, ReadOnlySpan<float> past) => p >= 0
                    ? x[(int)(activationBase + CausalConvConfig.Offset(config.Activations, channels, length, c, p))]
                    : past.IsEmpty ? 0 : past[(int)(stateBase + CausalConvConfig.Offset(config.State, channels, stateLength, c, stateLength + p))];

                for (int t = 0; t < length; t++)
                {
                    double sum = bias.IsEmpty ? 0 : bias[c];
                    for (int j = 0; j < k; j++) sum += (double)weight[c * k + j] * At(t - (k - 1 - j) * d, input, pastState);
                    output[(int)(activationBase + CausalConvConfig.Offset(config.Activations, channels, length, c, t))] =
                        config.Activation == ConvActivation.Silu ? sum * Sigmoid(sum) : sum;
                }
                for (int j = 0; j < stateLength; j++)
                    presentState[(int)(stateBase + CausalConvConfig.Offset(config.State, channels, stateLength, c, j))] = At(length - stateLength + j, input, pastState);
            }
        }
    }

    /// <summary>1 / (1 + e^−x) with the exponent kept &lt;= 0.</summary>
    public static double Sigmoid(double x)
    {
        double e = Math.Exp(-Math.Abs(x));
        return x >= 0 ? 1 / (1 + e) : e / (1 + e);
    }
}

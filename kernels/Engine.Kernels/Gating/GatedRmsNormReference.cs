namespace Engine.Kernels.Gating;

/// <summary>
/// Gated RMS normalization (Mamba2, Gated DeltaNet outputs) over rows of C elements (C = scale's length):
///   y = x · (mean(x²) + ε)^−½ · scale · act(z)
/// A zero row with ε = 0 gives 0 (the limit as ε goes to 0), not 0/0.
/// </summary>
public static class GatedRmsNormReference
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> gate, ReadOnlySpan<float> scale, double epsilon, GateActivation activation, Span<double> output)
    {
        int c = scale.Length;
        for (int row = 0; row < x.Length / c; row++)
        {
            double sum = 0;
            for (int i = 0; i < c; i++) sum += (double)x[row * c + i] * x[row * c + i];
            double inverse = sum == 0 && epsilon == 0 ? 0 : 1 / Math.Sqrt(sum / c + epsilon);
            for (int i = 0; i < c; i++)
            {
                double z = gate[row * c + i], sigmoid = Conv.CausalConvReference.Sigmoid(z);
                output[row * c + i] = x[row * c + i] * inverse * scale[i] * (activation == GateActivation.Silu ? z * sigmoid : sigmoid);
            }
        }
    }
}

using System.Buffers;

namespace Engine;

/// <summary>
/// The float64 reference as a backend, for every op: the state and the output go through pooled double buffers, the
/// initial state read in, the results rounded back to fp32 when the run ends.
/// </summary>
internal ref struct Float64Run
{
    private double[]? _state, _output;

    public Span<double> State { get; private set; }
    public Span<double> Output { get; private set; }

    public static Float64Run Begin(ReadOnlySpan<float> initialState, int outputLength)
    {
        var run = new Float64Run
        {
            _state = ArrayPool<double>.Shared.Rent(Math.Max(initialState.Length, 1)),
            _output = ArrayPool<double>.Shared.Rent(Math.Max(outputLength, 1)),
        };
        run.State = run._state.AsSpan(0, initialState.Length);
        run.Output = run._output.AsSpan(0, outputLength);
        for (int i = 0; i < initialState.Length; i++) run.State[i] = initialState[i];
        return run;
    }

    /// <summary>Writes the results as fp32.</summary>
    public readonly void End(Span<float> output, Span<float> state)
    {
        for (int i = 0; i < output.Length; i++) output[i] = (float)Output[i];
        for (int i = 0; i < state.Length; i++) state[i] = (float)State[i];
    }

    public void Dispose()
    {
        if (_state is not null) ArrayPool<double>.Shared.Return(_state);
        if (_output is not null) ArrayPool<double>.Shared.Return(_output);
        _state = _output = null;
    }
}

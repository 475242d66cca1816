using System.Numerics.Tensors;

namespace Engine;

/// <summary>
/// What every op's session shares: an fp32 state kept on the device between calls, and reading, writing and
/// clearing it. The op's own session adds Prefill (chunked) and Step (recurrent).
/// </summary>
public abstract class StatefulSession : IDisposable
{
    private readonly string _stateAxes;

    private protected StatefulSession(EngineDevice device, nint[] stateShape, string stateAxes)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (stateShape[0] < 1) throw new ArgumentOutOfRangeException("sequences", stateShape[0], "at least one sequence");
        Device = device;
        StateShape = stateShape;
        _stateAxes = stateAxes;
        State = DeviceState.Create(device, stateShape.Aggregate(1L, (a, d) => a * d));
    }

    /// <summary>How many sequences the state holds (the batch, or the packed sequence count).</summary>
    public int Sequences => (int)StateShape[0];

    /// <summary>The state's shape, sequences first.</summary>
    public nint[] StateShape { get; }

    private protected EngineDevice Device { get; }
    private protected DeviceState State { get; }

    public void GetState(TensorSpan<float> destination)
    {
        TensorArgs.RequireShape(destination.Lengths, "state", _stateAxes, StateShape);
        State.Store(TensorArgs.DenseSpan(destination, "state"));
    }

    public void SetState(ReadOnlyTensorSpan<float> source)
    {
        TensorArgs.RequireShape(source.Lengths, "state", _stateAxes, StateShape);
        using var input = FloatInput.From(source);
        TensorArgs.RequireFinite(input.Span, "state");
        State.Load(input.Span);
    }

    public void ResetState() => State.Clear();

    public void Dispose()
    {
        State.Dispose();
        GC.SuppressFinalize(this);
    }
}

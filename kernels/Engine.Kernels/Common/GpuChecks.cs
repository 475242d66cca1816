using ILGPU;
using ILGPU.Runtime;
using Launcher = System.Action<ILGPU.KernelConfig, Engine.Kernels.Common.TensorGpuArgs, ILGPU.Runtime.SpecializedValue<Engine.Kernels.Common.TensorGpuShape>>;

namespace Engine.Kernels.Common;

/// <summary>
/// The value checks of a call whose tensors are on the device: each checked tensor gets a check word that a
/// <see cref="TensorGpuKernels.Check"/> launch lowers to its first offending flat index; the words are read once,
/// after the call's launches (<see cref="Read"/>, its one synchronize), and the first tensor found refused names itself
/// and its offender with the message the host check gives (<see cref="ValueRules.Refusal"/>).
/// Also converts float16 tensors to and from the fp32 the kernels read and write, on the device.
/// </summary>
public sealed class GpuChecks
{
    /// <summary>
    /// A word no check lowered: every byte 0xFF, what a byte fill can write, above every flat index a tensor has (0x7F7F7F7F,
    /// an int's, was below the last 8.4 million of a tensor of Array.MaxLength elements, whose faults then went unrefused).
    /// </summary>
    public const uint None = uint.MaxValue;

    private const int MaxSlots = 12;

    private readonly GpuRuntime _runtime;
    private readonly GpuBuffers _buffers;
    private readonly Launcher _check, _halfToFloat, _floatToHalf;
    private readonly (string Name, ValueRule Rule, ArrayView<float> Values)[] _slots = new (string, ValueRule, ArrayView<float>)[MaxSlots];
    private int _used;
    private ArrayView<uint> _words;

    public GpuChecks(GpuRuntime runtime, GpuBuffers buffers)
    {
        _runtime = runtime;
        _buffers = buffers;
        _check = runtime.Kernel<TensorGpuArgs, TensorGpuShape>(TensorGpuKernels.Check);
        _halfToFloat = runtime.Kernel<TensorGpuArgs, TensorGpuShape>(TensorGpuKernels.HalfToFloat);
        _floatToHalf = runtime.Kernel<TensorGpuArgs, TensorGpuShape>(TensorGpuKernels.FloatToHalf);
    }

    /// <summary>Starts a call: every check word reset, on the stream.</summary>
    public void Begin()
    {
        _used = 0;
        _words = _buffers.Get<uint>(nameof(TensorGpuArgs.FirstBad), MaxSlots);
        _words.MemSet(_runtime.Accelerator.DefaultStream, 0xFF);
    }

    /// <summary>Launches the check of <paramref name="values"/> against <paramref name="rule"/>; nothing is read back yet.</summary>
    public void Check(ArrayView<float> values, string name, ValueRule rule)
    {
        if (values.Length == 0) return;
        if (_used == MaxSlots) throw new InvalidOperationException($"a call checks at most {MaxSlots} tensors on the device");
        _slots[_used] = (name, rule, values);
        var args = new TensorGpuArgs { Floats = values, Halves = _buffers.Placeholder<ILGPU.Half>(), FirstBad = _words, Slot = _used, Count = checked((int)values.Length) };
        _check(_runtime.Threads(values.Length), args, SpecializedValue.New(new TensorGpuShape(rule)));
        _used++;
    }

    /// <summary>Checks one tensor now, after what the stream holds: a launch, then its word read back (the caller holds the runtime's lock).</summary>
    public GpuCheckFailure? CheckNow(ArrayView<float> values, string name, ValueRule rule)
    {
        Begin();
        Check(values, name, rule);
        return Read();
    }

    /// <summary>
    /// Waits for the call's launches and reads the check words: the first tensor checked that broke its rule (its
    /// offending value read back to name it), or null when every value passed.
    /// </summary>
    public GpuCheckFailure? Read()
    {
        Span<uint> words = stackalloc uint[MaxSlots];
        _runtime.ReadChecks(_words, words[.._used]);
        for (int slot = 0; slot < _used; slot++)
        {
            if (words[slot] == None) continue;
            var (name, rule, values) = _slots[slot];
            Span<float> value = stackalloc float[1];
            _runtime.CopyToHost(values.SubView(words[slot], 1), value);
            return new GpuCheckFailure(name, rule, value[0], (int)words[slot]);
        }
        return null;
    }

    /// <summary>floats = halves, element by element, on the stream.</summary>
    public void HalfToFloat(ArrayView<ILGPU.Half> halves, ArrayView<float> floats) => Convert(_halfToFloat, halves, floats);

    /// <summary>halves = floats, element by element, on the stream (check the range first: <see cref="ValueRule.HalfRange"/>).</summary>
    public void FloatToHalf(ArrayView<float> floats, ArrayView<ILGPU.Half> halves) => Convert(_floatToHalf, halves, floats);

    private void Convert(Launcher kernel, ArrayView<ILGPU.Half> halves, ArrayView<float> floats)
    {
        if (floats.Length == 0) return;
        var args = new TensorGpuArgs { Floats = floats, Halves = halves, FirstBad = _buffers.Placeholder<uint>(), Count = checked((int)floats.Length) };
        kernel(_runtime.Threads(floats.Length), args, SpecializedValue.New(new TensorGpuShape(ValueRule.Finite)));
    }
}

/// <summary>A value a device check refused: the tensor's name, the rule, the first offending value and its flat index.</summary>
public readonly record struct GpuCheckFailure(string Name, ValueRule Rule, float Value, int Index)
{
    /// <summary>The exception the host check gives for the same value.</summary>
    public ArgumentException Refusal() => ValueRules.Refusal(Rule, Name, Value, Index);
}

/// <summary>The refusal of a value that breaks a <see cref="ValueRule"/>: one message for the host checks and the device's.</summary>
public static class ValueRules
{
    public static ArgumentException Refusal(ValueRule rule, string name, float value, long index) => new(rule switch
    {
        ValueRule.LogGate => $"{name}: log gates must be finite and <= 0, got {value} at flat index {index}",
        ValueRule.HalfRange when float.IsFinite(value) =>
            $"{name}: value {value} at flat index {index} is outside float16's range (magnitude < {HalfRange.Overflow}): it would be written as infinity",
        ValueRule.HalfRange => $"{name}: value {value} at flat index {index} is not finite",
        _ => $"{name}: values must be finite, got {value} at flat index {index}",
    }, name);
}

using System.Numerics;
using System.Runtime.InteropServices;
using Engine.IO;
using Engine.Onnx.Ops;
using Microsoft.ML.OnnxRuntime;

namespace Engine.Onnx;

/// <summary>Model inputs and outputs to and from NumPy .npy arrays, and random inputs for timing a model.</summary>
public static class ModelInputs
{
    /// <summary>
    /// An .npy array as the element type the model declares for the input: where it lies when it holds that type
    /// (<see cref="TensorData.Over"/>, valid while the array is: a file's array is its mapped data), else float types
    /// converted (float64 inputs take float32 and float16 files exactly) and int32 widened to int64; any other pair of types is refused, naming the input, the file and both.
    /// </summary>
    public static TensorData FromNpy(NpyArray array, TensorElementType wanted, string name)
    {
        ArgumentNullException.ThrowIfNull(array);
        long[] shape = Array.ConvertAll(array.Shape, d => (long)d);
        bool floats = array.Type is NpyType.Float32 or NpyType.Float16 or NpyType.Float64;
        return (wanted, array.Type) switch
        {
            _ when NpyTypes.TryGetValue(wanted, out var same) && same == array.Type => TensorData.Over(wanted, shape, array.Data),
            (TensorElementType.Float, _) when floats => TensorData.Create(array.ToFloat32(), shape),
            (TensorElementType.Float16, _) when floats => TensorData.Create(array.ToFloat16(), shape),
            (TensorElementType.BFloat16, NpyType.Float64) => TensorData.Create(array.Narrowed(MemoryMarshal.Cast<byte, double>(array.Data.Span), ToBFloat16, double.IsFinite, b => float.IsFinite(b.ToFloat()), "bfloat16"), shape),
            (TensorElementType.BFloat16, _) when floats => TensorData.Create(array.Narrowed<float, BFloat16>(array.ToFloat32(), f => (BFloat16)f, float.IsFinite, b => float.IsFinite(b.ToFloat()), "bfloat16"), shape),
            // float32 and float16 widen to float64 exactly.
            (TensorElementType.Double, _) when floats => TensorData.Create(Array.ConvertAll(array.ToFloat32(), f => (double)f), shape),
            (TensorElementType.Int64, NpyType.Int32) => TensorData.Create(Array.ConvertAll(array.ToInt32(), i => (long)i), shape),
            _ => throw new ArgumentException($"{name}: the model takes {wanted}, {array.SourceFile ?? "the file"} holds {array.Type}", name),
        };
    }

    /// <summary>
    /// A float64 rounded once to the nearest bfloat16 (ties to even). Rounded to float32 first, a value just past a tie
    /// between two bfloat16s would become the tie and then go to the even one: the float32 is rounded to odd instead
    /// (truncated, its last bit set when inexact), which float32's 16 more bits make exact for the second rounding.
    /// </summary>
    private static BFloat16 ToBFloat16(double value)
    {
        float single = (float)value;
        if (double.IsFinite(value) && single != value)
        {
            uint bits = BitConverter.SingleToUInt32Bits(single);
            if (Math.Abs((double)single) > Math.Abs(value)) bits--;
            single = BitConverter.UInt32BitsToSingle(bits | 1);
        }
        return (BFloat16)single;
    }

    /// <summary>
    /// An output's values as a .npy file holds them, and their .npy type: the bytes themselves, or for bfloat16, which .npy has
    /// no type for, float32 (widened exactly).
    /// </summary>
    public static ReadOnlySpan<byte> NpyBytes(TensorElementType type, ReadOnlySpan<byte> bytes, string name, out NpyType npyType)
    {
        if (type != TensorElementType.BFloat16)
        {
            npyType = NpyTypes.TryGetValue(type, out var npy) ? npy : throw new NotSupportedException($"{name}: {type} tensors cannot be written as .npy");
            return bytes;
        }
        npyType = NpyType.Float32;
        var widened = new float[bytes.Length / sizeof(ushort)];
        BFloat16Values.ToSingle(MemoryMarshal.Cast<byte, ushort>(bytes), widened);
        return MemoryMarshal.AsBytes(widened.AsSpan());
    }

    private static readonly Dictionary<TensorElementType, NpyType> NpyTypes = new()
    {
        [TensorElementType.Float] = NpyType.Float32,
        [TensorElementType.Float16] = NpyType.Float16,
        [TensorElementType.Double] = NpyType.Float64,
        [TensorElementType.Int32] = NpyType.Int32,
        [TensorElementType.Int64] = NpyType.Int64,
        [TensorElementType.Bool] = NpyType.Bool,
        [TensorElementType.Int8] = NpyType.Int8,
        [TensorElementType.UInt8] = NpyType.UInt8,
        [TensorElementType.Int16] = NpyType.Int16,
        [TensorElementType.UInt16] = NpyType.UInt16,
        [TensorElementType.UInt32] = NpyType.UInt32,
        [TensorElementType.UInt64] = NpyType.UInt64,
    };

    public static NpyArray ToNpy(TensorData tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        var shape = Array.ConvertAll(tensor.Shape, d => checked((nint)d));
        var bytes = NpyBytes(tensor.ElementType, tensor.Bytes, name, out var type);
        return new NpyArray(type, shape, bytes.ToArray());
    }

    /// <summary>
    /// Random inputs for every graph input but those named in <paramref name="except"/> (given otherwise), symbolic
    /// dims taken from <paramref name="dims"/>. Values follow the inputs' roles by name: *state* zeros (a carried state;
    /// *hidden_state* names a layer's activations, which are N(0, 1)), *decay* log gates (&lt;= 0), *beta* in (0, 1), *key* rows of unit
    /// length (what the delta rule needs to stay bounded), other floats N(0, 1); integers zeros, but *mask* ones (every
    /// position attended, as a GenAI model's attention_mask of a full sequence); bools likewise false, but *mask* true (an
    /// If's condition takes its else branch).
    /// </summary>
    public static Dictionary<string, TensorData> Random(OnnxModel model, IReadOnlyDictionary<string, long> dims, int seed = 1, IReadOnlyCollection<string>? except = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var random = new Random(seed);
        var inputs = new Dictionary<string, TensorData>();
        foreach (var input in model.Inputs)
        {
            if (except?.Contains(input.Name) == true) continue;
            if (input.Dims is null) throw new ArgumentException($"input '{input.Name}' has no shape in the model: give it as a file", nameof(model));
            var shape = input.Dims.Select(d => long.TryParse(d, out long n) ? n
                : dims.TryGetValue(d, out long v) ? v
                : throw new ArgumentException($"input '{input.Name}' has the symbolic dim '{d}': give its value", nameof(dims))).ToArray();
            if (shape.Any(d => d < 0))
                throw new ArgumentException($"input '{input.Name}' of shape [{string.Join(", ", shape)}]: dims must be >= 0", nameof(model));
            var elements = shape.Aggregate(BigInteger.One, (a, d) => a * d);
            if (elements > Array.MaxLength)
                throw new ArgumentException($"input '{input.Name}' of shape [{string.Join(", ", shape)}] would hold {elements} elements; a random input holds at most {Array.MaxLength}", nameof(dims));
            long count = (long)elements;
            try
            {
                inputs[input.Name] = input.ElementType switch
                {
                    TensorElementType.Float => TensorData.Create(Values(input.Name, shape, count, random), shape),
                    TensorElementType.Float16 => TensorData.Create(Array.ConvertAll(Values(input.Name, shape, count, random), f => (Half)f), shape),
                    TensorElementType.BFloat16 => TensorData.Create(Array.ConvertAll(Values(input.Name, shape, count, random), f => (BFloat16)f), shape),
                    TensorElementType.Int64 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, 1L), shape),
                    TensorElementType.Int32 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, 1), shape),
                    TensorElementType.Int16 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, (short)1), shape),
                    TensorElementType.Int8 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, (sbyte)1), shape),
                    TensorElementType.UInt64 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, 1UL), shape),
                    TensorElementType.UInt32 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, 1U), shape),
                    TensorElementType.UInt16 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, (ushort)1), shape),
                    TensorElementType.UInt8 => TensorData.Create(ZerosOrMaskOnes(input.Name, count, (byte)1), shape),
                    TensorElementType.Bool => TensorData.Create(ZerosOrMaskOnes(input.Name, count, true), shape),
                    var other => throw new NotSupportedException($"input '{input.Name}': random {other} values are not supported"),
                };
            }
            catch (OutOfMemoryException e)
            {
                throw new InsufficientMemoryException($"input '{input.Name}' of shape [{string.Join(", ", shape)}]: its {count} random values do not fit in memory", e);
            }
        }
        return inputs;
    }

    /// <summary>Zeros (false), or for a *mask* all <paramref name="one"/>.</summary>
    private static T[] ZerosOrMaskOnes<T>(string name, long count, T one) where T : struct
    {
        var values = new T[count];
        if (name.Contains("mask", StringComparison.OrdinalIgnoreCase)) Array.Fill(values, one);
        return values;
    }

    private static float[] Values(string name, long[] shape, long count, Random random)
    {
        var values = new float[count];
        string role = name.ToLowerInvariant();
        if (role.Contains("state") && !role.Contains("hidden_state")) return values;
        for (long i = 0; i < count; i++)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            double normal = Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
            values[i] = role.Contains("decay") ? (float)(-0.05 * Math.Abs(normal))
                : role.Contains("beta") ? (float)(1 / (1 + Math.Exp(-normal)))
                : (float)normal;
        }
        if (role.Contains("key") && shape.Length > 0 && shape[^1] > 0)
        {
            int width = (int)shape[^1];
            for (long row = 0; row < count / width; row++)
            {
                var r = values.AsSpan((int)(row * width), width);
                float norm = MathF.Sqrt(System.Numerics.Tensors.TensorPrimitives.SumOfSquares<float>(r));
                if (norm > 0) System.Numerics.Tensors.TensorPrimitives.Divide(r, norm, r);
            }
        }
        return values;
    }
}

using System.Runtime.InteropServices;
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>Random model inputs: those given otherwise are left out, and the rest are what they would be without them.</summary>
[TestFixture]
public sealed class ModelInputsTests
{
    [Test]
    public void RandomLeavesOutTheExceptedInputsAndMakesTheOthersAsIfTheyWereAbsent()
    {
        var all = new ModelBuilder();
        all.Input("query", F.Float, 2, "T");
        all.Input("given", F.Float, "G");
        all.Input("decay", F.Float, 2, 3);
        all.Output("query", F.Float, null);
        var without = new ModelBuilder();
        without.Input("query", F.Float, 2, "T");
        without.Input("decay", F.Float, 2, 3);
        without.Output("query", F.Float, null);
        var dims = new Dictionary<string, long> { ["T"] = 4 };

        var made = ModelInputs.Random(all.Build(), dims, seed: 5, except: ["given"]);
        var expected = ModelInputs.Random(without.Build(), dims, seed: 5);

        Assert.That(made.Keys, Is.EquivalentTo(new[] { "query", "decay" }), "no value for the excepted input, whose dim 'G' is not given");
        foreach (var name in expected.Keys)
            Assert.That(made[name].As<float>(), Is.EqualTo(expected[name].As<float>()), name);
    }

    /// <summary>Half-precision inputs hold the float32 values they are made from, rounded (ONNX Runtime's conversions).</summary>
    [Test]
    public void HalfPrecisionInputsAreTheFloatValuesRounded()
    {
        var builder = new ModelBuilder();
        builder.Input("query", F.Float, 2, 8);
        builder.Output("query", F.Float, null);
        var floats = ModelInputs.Random(builder.Build(), new Dictionary<string, long>(), seed: 3)["query"].As<float>();
        foreach (var type in new[] { F.Float16, F.Bfloat16 })
        {
            var half = new ModelBuilder();
            half.Input("query", type, 2, 8);
            half.Output("query", type, null);
            var made = ModelInputs.Random(half.Build(), new Dictionary<string, long>(), seed: 3)["query"];
            Assert.That(OnnxAssert.Floats(made), Is.EqualTo(type == F.Float16 ? TestData.RoundToHalf(floats)
                : TestData.FromBFloat16(TestData.ToBFloat16(floats))), type.ToString());
        }
    }

    /// <summary>
    /// A float64 file for a float16 or bfloat16 input rounds once to the nearest value: through float32, a value just past a
    /// tie became the tie and went to the even neighbour, and 65519.999 (float16 65504) was refused as 65520.
    /// </summary>
    [Test]
    public void Float64FilesRoundOnceToHalfPrecisionInputs()
    {
        var wide = Engine.IO.NpyArray.From([1 + Math.Pow(2, -11) + Math.Pow(2, -40), 65519.999, 1 + Math.Pow(2, -8) + Math.Pow(2, -40), -(1 + Math.Pow(2, -8)), 1e-300], [5]);
        var half = ModelInputs.FromNpy(wide, TensorElementType.Float16, "x");
        Assert.That(MemoryMarshal.Cast<byte, Half>(half.Bytes).ToArray(), Is.EqualTo(new[] { (Half)1.0009765625, (Half)65504, (Half)1.00390625, (Half)(-1.00390625), (Half)0 }));
        var brain = ModelInputs.FromNpy(wide, TensorElementType.BFloat16, "x");
        Assert.That(MemoryMarshal.Cast<byte, ushort>(brain.Bytes).ToArray(), Is.EqualTo(new ushort[] { 0x3F80, 0x4780, 0x3F81, 0xBF80, 0x0000 }),
            "1 + 2^-8 + 2^-40 rounds up to 0x3F81; the tie -(1 + 2^-8) goes to the even 0xBF80; 1e-300 underflows to 0");
        var past = Engine.IO.NpyArray.From([3.3962e38], [1]);
        Assert.That(() => ModelInputs.FromNpy(past, TensorElementType.BFloat16, "x"), Throws.InstanceOf<InvalidDataException>().With.Message.Contain("outside bfloat16's range"));
    }

    /// <summary>A float64 input takes a float32 or float16 file, widened exactly (it was refused, though any float file converts).</summary>
    [Test]
    public void Float32AndFloat16FilesWidenToAFloat64Input()
    {
        float[] values = [1.1f, -3.4e38f, 1e-45f, 0f];
        var single = ModelInputs.FromNpy(Engine.IO.NpyArray.From(values, [2, 2]), TensorElementType.Double, "x");
        Assert.That(single.Shape, Is.EqualTo(new long[] { 2, 2 }));
        Assert.That(MemoryMarshal.Cast<byte, double>(single.Bytes).ToArray(), Is.EqualTo(values.Select(v => (double)v).ToArray()));
        Half[] halves = [(Half)0.333f, (Half)(-65504f)];
        var half = ModelInputs.FromNpy(Engine.IO.NpyArray.From(halves, [2]), TensorElementType.Double, "x");
        Assert.That(MemoryMarshal.Cast<byte, double>(half.Bytes).ToArray(), Is.EqualTo(halves.Select(h => (double)h).ToArray()));
    }

    /// <summary>
    /// Carried states start at zero; a layer's hidden states are activations, N(0, 1): all zeros there made the sample
    /// layers' projections multiply zeros (which ran at half speed on some CPUs) and their mixers see only biases.
    /// </summary>
    [Test]
    public void StatesAreZerosButHiddenStatesAreNormal()
    {
        var builder = new ModelBuilder();
        builder.Input("hidden_states", F.Float, 1, 256);
        builder.Input("past_recurrent_state", F.Float, 1, 4);
        builder.Input("initial_state", F.Float, 1, 4);
        builder.Output("hidden_states", F.Float, null);
        var made = ModelInputs.Random(builder.Build(), new Dictionary<string, long>());
        var hidden = made["hidden_states"].As<float>();
        double mean = hidden.Average(), variance = hidden.Average(v => (v - mean) * (v - mean));
        Assert.Multiple(() =>
        {
            Assert.That(mean, Is.EqualTo(0).Within(0.2), "N(0, 1): the mean of 256 values within 3 standard errors");
            Assert.That(variance, Is.EqualTo(1).Within(0.3), "N(0, 1): the variance of 256 values");
            Assert.That(made["past_recurrent_state"].As<float>(), Is.All.Zero);
            Assert.That(made["initial_state"].As<float>(), Is.All.Zero);
        });
    }

    /// <summary>Integer inputs are zeros (token ids, positions), but a mask attends to every position.</summary>
    [Test]
    public void IntegerInputsAreZerosAndMasksOnes()
    {
        var builder = new ModelBuilder();
        builder.Input("input_ids", F.Int64, 1, 3);
        builder.Input("attention_mask", F.Int64, 1, 4);
        builder.Input("seq_mask", F.Int32, 2);
        builder.Output("input_ids", F.Int64, null);
        var made = ModelInputs.Random(builder.Build(), new Dictionary<string, long>());
        Assert.Multiple(() =>
        {
            Assert.That(made["input_ids"].As<long>(), Is.EqualTo(new long[3]));
            Assert.That(made["attention_mask"].As<long>(), Is.EqualTo(new long[] { 1, 1, 1, 1 }));
            Assert.That(made["seq_mask"].As<int>(), Is.EqualTo(new[] { 1, 1 }));
        });
    }

    /// <summary>The narrower and unsigned integers follow int64's roles; bools are false, but a mask attends to every position (true).</summary>
    [Test]
    public void OtherIntegerAndBoolInputsAreZerosAndMasksOnes()
    {
        var builder = new ModelBuilder();
        builder.Input("pixels", F.Uint8, 3);
        builder.Input("byte_mask", F.Uint8, 2);
        builder.Input("offsets", F.Int8, 2);
        builder.Input("short_mask", F.Int16, 2);
        builder.Input("counts", F.Uint16, 2);
        builder.Input("ids", F.Uint32, 2);
        builder.Input("long_mask", F.Uint64, 2);
        builder.Input("cond", F.Bool);
        builder.Input("attention_mask", F.Bool, 1, 3);
        builder.Output("pixels", F.Uint8, null);
        var made = ModelInputs.Random(builder.Build(), new Dictionary<string, long>());
        Assert.Multiple(() =>
        {
            Assert.That(made["pixels"].As<byte>(), Is.EqualTo(new byte[3]));
            Assert.That(made["byte_mask"].As<byte>(), Is.EqualTo(new byte[] { 1, 1 }));
            Assert.That(made["offsets"].As<sbyte>(), Is.EqualTo(new sbyte[2]));
            Assert.That(made["short_mask"].As<short>(), Is.EqualTo(new short[] { 1, 1 }));
            Assert.That(made["counts"].As<ushort>(), Is.EqualTo(new ushort[2]));
            Assert.That(made["ids"].As<uint>(), Is.EqualTo(new uint[2]));
            Assert.That(made["long_mask"].As<ulong>(), Is.EqualTo(new ulong[] { 1, 1 }));
            Assert.That(made["cond"].As<bool>(), Is.EqualTo(new[] { false }));
            Assert.That(made["cond"].Shape, Is.Empty, "a scalar");
            Assert.That(made["attention_mask"].As<bool>(), Is.EqualTo(new[] { true, true, true }));
        });
    }
}

/// <summary>Model inputs from .npy arrays of bool and the integer types, and outputs of those types back to .npy.</summary>
[TestFixture]
public sealed class IntegerAndBoolModelInputsTests
{
    private static IEnumerable<TestCaseData> SameTypes()
    {
        yield return new TestCaseData(Engine.IO.NpyArray.From([true, false], [2]), TensorElementType.Bool, new byte[] { 1, 0 }).SetName("bool");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new sbyte[] { -1, 2 }, [2]), TensorElementType.Int8, new byte[] { 0xff, 2 }).SetName("int8");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new byte[] { 200, 3 }, [2]), TensorElementType.UInt8, new byte[] { 200, 3 }).SetName("uint8");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new short[] { -2 }, [1]), TensorElementType.Int16, new byte[] { 0xfe, 0xff }).SetName("int16");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new ushort[] { 258 }, [1]), TensorElementType.UInt16, new byte[] { 2, 1 }).SetName("uint16");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new uint[] { 0x01020304 }, [1]), TensorElementType.UInt32, new byte[] { 4, 3, 2, 1 }).SetName("uint32");
        yield return new TestCaseData(Engine.IO.NpyArray.From(new ulong[] { 0x0102030405060708 }, [1]), TensorElementType.UInt64, new byte[] { 8, 7, 6, 5, 4, 3, 2, 1 }).SetName("uint64");
    }

    /// <summary>An array of the type the model declares is taken where it lies, and an output of that type is written as that .npy type.</summary>
    [TestCaseSource(nameof(SameTypes))]
    public void AnArrayOfTheDeclaredTypeIsTakenInPlaceAndWrittenBackAsIs(Engine.IO.NpyArray array, TensorElementType type, byte[] bytes)
    {
        var input = ModelInputs.FromNpy(array, type, "x");
        Assert.That(input.ElementType, Is.EqualTo(type));
        Assert.That(input.IsReadOnly, "over the array's data, not copied");
        Assert.That(input.Shape, Is.EqualTo(Array.ConvertAll(array.Shape, d => (long)d)));
        Assert.That(input.Bytes.ToArray(), Is.EqualTo(bytes));

        var output = ModelInputs.ToNpy(TensorData.FromBytes(type, input.Shape, bytes), "y");
        Assert.That(output.Type, Is.EqualTo(array.Type));
        Assert.That(output.Shape, Is.EqualTo(array.Shape));
        Assert.That(output.Data.ToArray(), Is.EqualTo(bytes));
    }

    /// <summary>Only int32 widens (to int64), as before: any other pair of integer or bool types is refused naming the input and both types.</summary>
    [TestCase(TensorElementType.UInt8, TensorElementType.Int64)]
    [TestCase(TensorElementType.Bool, TensorElementType.UInt8)]
    [TestCase(TensorElementType.UInt8, TensorElementType.Bool)]
    [TestCase(TensorElementType.Int16, TensorElementType.Int32)]
    [TestCase(TensorElementType.UInt32, TensorElementType.Int64)]
    public void AnotherTypeIsRefusedNamingBoth(TensorElementType held, TensorElementType wanted)
    {
        var array = ModelInputs.ToNpy(TensorData.FromBytes(held, [1], new byte[TensorData.ElementSize(held)]), "held");
        var e = Assert.Throws<ArgumentException>(() => ModelInputs.FromNpy(array, wanted, "x"));
        Assert.That(e!.Message, Does.StartWith($"x: the model takes {wanted}, the file holds {array.Type}"));
    }
}

/// <summary>Inputs from .npy files read where they lie (TensorData.Over), outputs read where ORT holds them.</summary>
[TestFixture]
public sealed class MappedModelInputsTests
{
    private static readonly LinearAttentionBlockSpec Spec = new() { Hidden = 16, QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8, Rule = UpdateRule.Gated, Decay = DecayForm.PerKey };

    [Test]
    public void FileInputsRunInPlaceAndGiveWhatArraysGive()
    {
        var folder = Directory.CreateTempSubdirectory("engine-mapped-inputs-").FullName;
        try
        {
            var model = SampleModels.LinearAttentionBlock(Spec);
            var arrays = ModelInputs.Random(model, new Dictionary<string, long> { ["B"] = 1, ["T"] = 40 });
            var opened = new List<Engine.IO.NpyArray>();
            var mapped = new Dictionary<string, TensorData>();
            foreach (var (name, tensor) in arrays)
            {
                string path = Path.Combine(folder, name + ".npy");
                Engine.IO.Npy.Write(path, ModelInputs.ToNpy(tensor, name));
                var file = Engine.IO.Npy.Read(path);
                opened.Add(file);
                mapped[name] = ModelInputs.FromNpy(file, tensor.ElementType, name);
                Assert.That(mapped[name].IsReadOnly, name + " lies in its file");
                Assert.Throws<InvalidOperationException>(() => _ = mapped[name].Values);
            }
            using var session = ModelSession.Open(model);
            var expected = session.Run(arrays);
            var seen = new List<string>();
            session.Run(mapped, (name, type, shape, bytes) =>
            {
                seen.Add(name);
                Assert.That(type, Is.EqualTo(expected[name].ElementType), name);
                Assert.That(shape, Is.EqualTo(expected[name].Shape), name);
                Assert.That(bytes.SequenceEqual(expected[name].Bytes), name + ": the same bytes as from arrays");
            });
            Assert.That(seen, Is.EqualTo(session.OutputNames));

            var outputs = expected.ToDictionary(p => p.Key, p => TensorData.FromBytes(p.Value.ElementType, p.Value.Shape, p.Value.Bytes));
            string first = session.OutputNames[0];
            outputs[first] = mapped.Values.First(t => t.ElementType == outputs[first].ElementType && t.Shape.SequenceEqual(outputs[first].Shape));
            var e = Assert.Throws<ArgumentException>(() => session.RunInto(mapped, outputs));
            Assert.That(e!.Message, Does.Contain($"{first}: lies in read-only memory"));
            foreach (var file in opened) file.Dispose();
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}

using System.Text;

namespace Engine.Onnx.Interop;

/// <summary>What the model says about one node input: present or not, element type and dims when known.</summary>
internal sealed record NodeInputInfo(string Name, int ElementType, long[]? Dims)
{
    public bool Present => Name.Length > 0;
    public int? Rank => Dims?.Length;

    /// <summary>The dim at <paramref name="axis"/> when the model fixes it, else null.</summary>
    public long? Dim(int axis) => Dims is not null && axis < Dims.Length && Dims[axis] >= 0 ? Dims[axis] : null;
}

/// <summary>
/// A node as ORT describes it while creating its kernel: name, attributes, inputs (with the types and
/// shapes the graph declares) and constant inputs. Valid only inside the create-kernel callback.
/// </summary>
internal readonly unsafe struct KernelInfo(nint info)
{
    public string NodeName => ReadString(Ort.KernelInfoGetNodeName) ?? "?";

    public int InputCount
    {
        get
        {
            nuint n;
            Ort.Check(Ort.KernelInfoGetInputCount(info, &n));
            return (int)n;
        }
    }

    public int OutputCount
    {
        get
        {
            nuint n;
            Ort.Check(Ort.KernelInfoGetOutputCount(info, &n));
            return (int)n;
        }
    }

    /// <summary>Input <paramref name="index"/>; an absent optional input has an empty name.</summary>
    public NodeInputInfo Input(int index)
    {
        if (index >= InputCount) return new NodeInputInfo("", 0, null);
        var name = ReadIndexedString(Ort.KernelInfoGetInputName, index) ?? "";
        if (name.Length == 0) return new NodeInputInfo("", 0, null);
        nint typeInfo;
        if (!Ort.Succeeded(Ort.KernelInfoGetInputTypeInfo(info, (nuint)index, &typeInfo)) || typeInfo == 0)
            return new NodeInputInfo(name, 0, null);
        try
        {
            nint tensorInfo;
            if (!Ort.Succeeded(Ort.CastTypeInfoToTensorInfo(typeInfo, &tensorInfo)) || tensorInfo == 0)
                return new NodeInputInfo(name, 0, null);
            int elementType;
            Ort.Check(Ort.GetTensorElementType(tensorInfo, &elementType));
            nuint rank;
            Ort.Check(Ort.GetDimensionsCount(tensorInfo, &rank));
            var dims = new long[rank];
            fixed (long* p = dims) Ort.Check(Ort.GetDimensions(tensorInfo, p, rank));
            // A model without shape information reports rank 0 for a tensor it knows nothing about.
            return new NodeInputInfo(name, elementType, rank == 0 ? null : dims);
        }
        finally
        {
            Ort.ReleaseTypeInfo(typeInfo);
        }
    }

    public string OutputName(int index) => index < OutputCount ? ReadIndexedString(Ort.KernelInfoGetOutputName, index) ?? "" : "";

    public long? Int(string name)
    {
        long value;
        fixed (byte* n = Ort.Utf8(name))
            return Ort.Succeeded(Ort.KernelInfoGetAttributeInt64(info, n, &value)) ? value : null;
    }

    public float? Float(string name)
    {
        float value;
        fixed (byte* n = Ort.Utf8(name))
            return Ort.Succeeded(Ort.KernelInfoGetAttributeFloat(info, n, &value)) ? value : null;
    }

    public string? String(string name)
    {
        fixed (byte* n = Ort.Utf8(name))
        {
            nuint size = 0;
            if (!Ort.Succeeded(Ort.KernelInfoGetAttributeString(info, n, null, &size))) return null;
            var buffer = new byte[size];
            fixed (byte* p = buffer)
                if (!Ort.Succeeded(Ort.KernelInfoGetAttributeString(info, n, p, &size))) return null;
            return Encoding.UTF8.GetString(buffer, 0, Math.Max(0, (int)size - 1));
        }
    }

    public float[]? Floats(string name)
    {
        fixed (byte* n = Ort.Utf8(name))
        {
            nuint size = 0;
            if (!Ort.Succeeded(Ort.KernelInfoGetAttributeArrayFloat(info, n, null, &size))) return null;
            var values = new float[size];
            fixed (float* p = values)
                if (!Ort.Succeeded(Ort.KernelInfoGetAttributeArrayFloat(info, n, p, &size))) return null;
            return values;
        }
    }

    /// <summary>The values of a float input the model fixes (an initializer), copied; null when it is not constant.</summary>
    public float[]? ConstantFloats(int index, out long[] dims)
    {
        dims = [];
        int isConstant;
        nint value;
        if (!Ort.Succeeded(Ort.KernelInfoGetConstantInputTensor(info, (nuint)index, &isConstant, &value)) || isConstant == 0 || value == 0)
            return null;
        var tensor = new OrtTensorView(value);
        dims = tensor.Dims;
        if (tensor.ElementType != Ort.ElementFloat) return null;
        return tensor.AsReadOnlySpan<float>().ToArray();
    }

    private string? ReadString(delegate* unmanaged[Cdecl]<nint, byte*, nuint*, nint> read)
    {
        nuint size = 0;
        if (!Ort.Succeeded(read(info, null, &size))) return null;
        var buffer = new byte[size];
        fixed (byte* p = buffer)
            if (!Ort.Succeeded(read(info, p, &size))) return null;
        return Encoding.UTF8.GetString(buffer, 0, Math.Max(0, (int)size - 1));
    }

    private string? ReadIndexedString(delegate* unmanaged[Cdecl]<nint, nuint, byte*, nuint*, nint> read, int index)
    {
        nuint size = 0;
        if (!Ort.Succeeded(read(info, (nuint)index, null, &size))) return null;
        var buffer = new byte[size];
        fixed (byte* p = buffer)
            if (!Ort.Succeeded(read(info, (nuint)index, p, &size))) return null;
        return Encoding.UTF8.GetString(buffer, 0, Math.Max(0, (int)size - 1));
    }
}

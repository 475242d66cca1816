using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML.OnnxRuntime;

namespace Engine.Onnx.Interop;

/// <summary>
/// ONNX Runtime's C function table (OrtApi), reached through OrtGetApiBase of the native library the
/// managed package loads. Only the entries the custom-op binding needs are typed here.
/// </summary>
internal static unsafe class Ort
{
    /// <summary>The API version asked of GetApi: the package's own (1.32). The table is append-only, so the slots used are those of 1.31.</summary>
    public const uint ApiVersion = 32;

    public const int ErrorFail = 1;
    public const int ErrorInvalidArgument = 2;
    public const int ErrorRuntimeException = 6;

    /// <summary>An untyped custom-op input: any element type is accepted (the kernel checks it).</summary>
    public const int ElementUndefined = 0;
    public const int ElementFloat = 1;
    public const int ElementInt32 = 6;
    public const int ElementFloat16 = 10;
    public const int ElementBFloat16 = 16;

    [StructLayout(LayoutKind.Sequential)]
    private struct OrtApiBase
    {
        public nint GetApi;
        public nint GetVersionString;
    }

    [DllImport("onnxruntime", CallingConvention = CallingConvention.Cdecl)]
    private static extern OrtApiBase* OrtGetApiBase();

    public static readonly nint Table;
    public static readonly string Version;

    public static readonly delegate* unmanaged[Cdecl]<int, byte*, nint> CreateStatus;
    public static readonly delegate* unmanaged[Cdecl]<nint, int> GetErrorCode;
    public static readonly delegate* unmanaged[Cdecl]<nint, byte*> GetErrorMessage;
    public static readonly delegate* unmanaged[Cdecl]<nint, void> ReleaseStatus;

    public static readonly delegate* unmanaged[Cdecl]<byte*, nint*, nint> CreateCustomOpDomain;
    public static readonly delegate* unmanaged[Cdecl]<nint, nint, nint> CustomOpDomainAdd;
    public static readonly delegate* unmanaged[Cdecl]<nint, nint, nint> AddCustomOpDomain;
    public static readonly delegate* unmanaged[Cdecl]<nint, void> ReleaseCustomOpDomain;

    public static readonly delegate* unmanaged[Cdecl]<nint, byte*, float*, nint> KernelInfoGetAttributeFloat;
    public static readonly delegate* unmanaged[Cdecl]<nint, byte*, long*, nint> KernelInfoGetAttributeInt64;
    public static readonly delegate* unmanaged[Cdecl]<nint, byte*, byte*, nuint*, nint> KernelInfoGetAttributeString;
    public static readonly delegate* unmanaged[Cdecl]<nint, byte*, float*, nuint*, nint> KernelInfoGetAttributeArrayFloat;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint*, nint> KernelInfoGetInputCount;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint*, nint> KernelInfoGetOutputCount;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, byte*, nuint*, nint> KernelInfoGetInputName;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, byte*, nuint*, nint> KernelInfoGetOutputName;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, nint*, nint> KernelInfoGetInputTypeInfo;
    public static readonly delegate* unmanaged[Cdecl]<nint, byte*, nuint*, nint> KernelInfoGetNodeName;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, int*, nint*, nint> KernelInfoGetConstantInputTensor;

    public static readonly delegate* unmanaged[Cdecl]<nint, nint*, nint> CastTypeInfoToTensorInfo;
    public static readonly delegate* unmanaged[Cdecl]<nint, void> ReleaseTypeInfo;
    public static readonly delegate* unmanaged[Cdecl]<nint, int*, nint> GetTensorElementType;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint*, nint> GetDimensionsCount;
    public static readonly delegate* unmanaged[Cdecl]<nint, long*, nuint, nint> GetDimensions;
    public static readonly delegate* unmanaged[Cdecl]<nint, void**, nint> GetTensorMutableData;
    /// <summary>A tensor's element type and its own dims array, read without the shape object GetTensorTypeAndShape allocates (API 24).</summary>
    public static readonly delegate* unmanaged[Cdecl]<nint, int*, long**, nuint*, nint> GetTensorElementTypeAndShapeDataReference;

    public static readonly delegate* unmanaged[Cdecl]<nint, nuint*, nint> KernelContextGetInputCount;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint*, nint> KernelContextGetOutputCount;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, nint*, nint> KernelContextGetInput;
    public static readonly delegate* unmanaged[Cdecl]<nint, nuint, long*, nuint, nint*, nint> KernelContextGetOutput;
    public static readonly delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<void*, nuint, void>, nuint, nuint, void*, nint> KernelContextParallelFor;

    static Ort()
    {
        // Let the managed package load (and initialize) the native library first: both then share one copy.
        _ = OrtEnv.Instance();
        var apiBase = OrtGetApiBase();
        var getApi = (delegate* unmanaged[Cdecl]<uint, nint>)apiBase->GetApi;
        Table = getApi(ApiVersion);
        if (Table == 0) throw new InvalidOperationException($"the ONNX Runtime library does not offer C API version {ApiVersion}");
        Version = Marshal.PtrToStringUTF8(((delegate* unmanaged[Cdecl]<nint>)apiBase->GetVersionString)()) ?? "?";
        var api = Marshal.PtrToStructure<OrtApi>(Table);

        CreateStatus = (delegate* unmanaged[Cdecl]<int, byte*, nint>)api.CreateStatus;
        GetErrorCode = (delegate* unmanaged[Cdecl]<nint, int>)api.GetErrorCode;
        GetErrorMessage = (delegate* unmanaged[Cdecl]<nint, byte*>)api.GetErrorMessage;
        ReleaseStatus = (delegate* unmanaged[Cdecl]<nint, void>)api.ReleaseStatus;

        CreateCustomOpDomain = (delegate* unmanaged[Cdecl]<byte*, nint*, nint>)api.CreateCustomOpDomain;
        CustomOpDomainAdd = (delegate* unmanaged[Cdecl]<nint, nint, nint>)api.CustomOpDomain_Add;
        AddCustomOpDomain = (delegate* unmanaged[Cdecl]<nint, nint, nint>)api.AddCustomOpDomain;
        ReleaseCustomOpDomain = (delegate* unmanaged[Cdecl]<nint, void>)api.ReleaseCustomOpDomain;

        KernelInfoGetAttributeFloat = (delegate* unmanaged[Cdecl]<nint, byte*, float*, nint>)api.KernelInfoGetAttribute_float;
        KernelInfoGetAttributeInt64 = (delegate* unmanaged[Cdecl]<nint, byte*, long*, nint>)api.KernelInfoGetAttribute_int64;
        KernelInfoGetAttributeString = (delegate* unmanaged[Cdecl]<nint, byte*, byte*, nuint*, nint>)api.KernelInfoGetAttribute_string;
        KernelInfoGetAttributeArrayFloat = (delegate* unmanaged[Cdecl]<nint, byte*, float*, nuint*, nint>)api.KernelInfoGetAttributeArray_float;
        KernelInfoGetInputCount = (delegate* unmanaged[Cdecl]<nint, nuint*, nint>)api.KernelInfo_GetInputCount;
        KernelInfoGetOutputCount = (delegate* unmanaged[Cdecl]<nint, nuint*, nint>)api.KernelInfo_GetOutputCount;
        KernelInfoGetInputName = (delegate* unmanaged[Cdecl]<nint, nuint, byte*, nuint*, nint>)api.KernelInfo_GetInputName;
        KernelInfoGetOutputName = (delegate* unmanaged[Cdecl]<nint, nuint, byte*, nuint*, nint>)api.KernelInfo_GetOutputName;
        KernelInfoGetInputTypeInfo = (delegate* unmanaged[Cdecl]<nint, nuint, nint*, nint>)api.KernelInfo_GetInputTypeInfo;
        KernelInfoGetNodeName = (delegate* unmanaged[Cdecl]<nint, byte*, nuint*, nint>)api.KernelInfo_GetNodeName;
        KernelInfoGetConstantInputTensor = (delegate* unmanaged[Cdecl]<nint, nuint, int*, nint*, nint>)api.KernelInfoGetConstantInput_tensor;

        CastTypeInfoToTensorInfo = (delegate* unmanaged[Cdecl]<nint, nint*, nint>)api.CastTypeInfoToTensorInfo;
        ReleaseTypeInfo = (delegate* unmanaged[Cdecl]<nint, void>)api.ReleaseTypeInfo;
        GetTensorElementType = (delegate* unmanaged[Cdecl]<nint, int*, nint>)api.GetTensorElementType;
        GetDimensionsCount = (delegate* unmanaged[Cdecl]<nint, nuint*, nint>)api.GetDimensionsCount;
        GetDimensions = (delegate* unmanaged[Cdecl]<nint, long*, nuint, nint>)api.GetDimensions;
        GetTensorMutableData = (delegate* unmanaged[Cdecl]<nint, void**, nint>)api.GetTensorMutableData;
        GetTensorElementTypeAndShapeDataReference = (delegate* unmanaged[Cdecl]<nint, int*, long**, nuint*, nint>)api.GetTensorElementTypeAndShapeDataReference;

        KernelContextGetInputCount = (delegate* unmanaged[Cdecl]<nint, nuint*, nint>)api.KernelContext_GetInputCount;
        KernelContextGetOutputCount = (delegate* unmanaged[Cdecl]<nint, nuint*, nint>)api.KernelContext_GetOutputCount;
        KernelContextGetInput = (delegate* unmanaged[Cdecl]<nint, nuint, nint*, nint>)api.KernelContext_GetInput;
        KernelContextGetOutput = (delegate* unmanaged[Cdecl]<nint, nuint, long*, nuint, nint*, nint>)api.KernelContext_GetOutput;
        KernelContextParallelFor = (delegate* unmanaged[Cdecl]<nint, delegate* unmanaged[Cdecl]<void*, nuint, void>, nuint, nuint, void*, nint>)api.KernelContext_ParallelFor;
    }

    /// <summary>Throws the status's message when it is an error, and releases it.</summary>
    public static void Check(nint status)
    {
        if (status == 0) return;
        var message = Marshal.PtrToStringUTF8((nint)GetErrorMessage(status)) ?? "unknown error";
        int code = GetErrorCode(status);
        ReleaseStatus(status);
        throw new OrtCallException(message) { OrtErrorCode = code };
    }

    /// <summary>Whether the call succeeded; a failure status is released.</summary>
    public static bool Succeeded(nint status)
    {
        if (status == 0) return true;
        ReleaseStatus(status);
        return false;
    }

    /// <summary>A new error status for ORT to own.</summary>
    public static nint Status(int code, string message)
    {
        var bytes = Utf8(message);
        fixed (byte* p = bytes) return CreateStatus(code, p);
    }

    /// <summary>NUL-terminated UTF-8.</summary>
    public static byte[] Utf8(string text)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }
}

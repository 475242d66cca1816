using Engine.Onnx.Interop;
using Microsoft.ML.OnnxRuntime;

namespace Engine.Onnx;

/// <summary>The ONNX Runtime library in use.</summary>
public static class OrtInfo
{
    public static string Version
    {
        get
        {
            RequireNativeLibrary();
            return Ort.Version;
        }
    }

    /// <summary>
    /// Loads ONNX Runtime's native library (once). Engine.Onnx takes ORT's managed API only, so an application that
    /// lacks the native package gets this error, which names the package, instead of a type initializer's.
    /// </summary>
    internal static void RequireNativeLibrary()
    {
        try
        {
            _ = OrtEnv.Instance();
        }
        catch (Exception e) when (MissingNativeLibrary(e) is { } missing)
        {
            throw missing;
        }
    }

    /// <summary>The error to give for <paramref name="e"/> when its cause is a native library that could not be loaded, else null.</summary>
    internal static DllNotFoundException? MissingNativeLibrary(Exception e)
    {
        for (var cause = e; cause is not null; cause = cause.InnerException)
        {
            if (cause is DllNotFoundException)
                return new DllNotFoundException("ONNX Runtime's native library could not be loaded: add the package Microsoft.ML.OnnxRuntime " +
                    "(or Microsoft.ML.OnnxRuntime.Gpu) to the application; Engine.Onnx references only ORT's managed API, so the " +
                    $"application chooses the native one ({cause.Message})", e);
        }
        return null;
    }
}

namespace Engine.Onnx.Ops;

/// <summary>The scheduler of calls too small to wake ORT's pool for.</summary>
internal static class CallingThread
{
    public static readonly IWorkScheduler Instance = new ThreadPoolScheduler(1);
}

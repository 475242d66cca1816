using System.Runtime.InteropServices;
using Engine.Kernels.Common;
using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Workloads;
using Microsoft.ML.OnnxRuntime;

namespace Engine.Cli;

/// <summary>
/// ONNX Runtime's own CUDA kernel of an op, timed beside the engine's GPU kernels: the op's node alone in a model (B and T
/// symbolic), opened once on ORT's CUDA provider, run on each workload's own arrays. Like the engine's timed call, a run
/// takes its inputs from host memory and leaves its outputs (the output and the final state) there.
/// </summary>
internal sealed class OrtCudaPeer : IDisposable
{
    private readonly ModelSession _session;
    private readonly Func<AttentionWorkload, Dictionary<string, TensorData>> _inputs;

    private OrtCudaPeer(string variant, ModelSession session, Func<AttentionWorkload, Dictionary<string, TensorData>> inputs)
    {
        Variant = variant;
        _session = session;
        _inputs = inputs;
    }

    /// <summary>The row's label, e.g. "ort-cuda linear-attention".</summary>
    public string Variant { get; }

    /// <summary>
    /// ORT's com.microsoft.LinearAttention node for the engine's GLA (linear without a gate, gated with one) or delta rule
    /// (delta, gated_delta): q, k, v, g (as decay) and beta as the workload holds them, [B, T, H·dim].
    /// </summary>
    public static (string Variant, OnnxModel Model, Func<AttentionWorkload, Dictionary<string, TensorData>> Inputs) LinearAttention(
        BenchShape shape, GateKind gate, bool delta)
    {
        var rule = (delta, gate == GateKind.None) switch
        {
            (false, true) => UpdateRule.Linear,
            (false, false) => UpdateRule.Gated,
            (true, true) => UpdateRule.Delta,
            (true, false) => UpdateRule.GatedDelta,
        };
        var model = SampleModels.LinearAttentionNode(new LinearAttentionBlockSpec
        {
            QHeads = shape.H, KvHeads = shape.H, KeyDim = shape.K, ValueDim = shape.V, Rule = rule,
            Decay = gate == GateKind.PerKey ? DecayForm.PerKey : DecayForm.PerHead, PastState = false, Scale = DefaultScale(shape),
        });
        return ("ort-cuda linear-attention", model, work => Named(work, new()
        {
            ["q"] = "query", ["k"] = "key", ["v"] = "value", ["g"] = "decay", ["beta"] = "beta",
        }, flattenHeads: true));
    }

    /// <summary>
    /// ORT's com.microsoft.GatedDeltaNet node for the engine's delta rule: q, k, v [B, T, H, dim], decay (the log gates) and
    /// beta as the workload holds them, a zero initial state [B, H, V, K] (value-major, as the node keeps it).
    /// </summary>
    public static (string Variant, OnnxModel Model, Func<AttentionWorkload, Dictionary<string, TensorData>> Inputs) GatedDeltaNet(
        BenchShape shape, GateKind gate)
    {
        var model = SampleModels.GatedDeltaNetNode(new GatedDeltaNetNodeSpec
        {
            Layout = GatedDeltaNetLayout.Batched, QHeads = shape.H, ValueHeads = shape.H, KeyDim = shape.K, ValueDim = shape.V,
            UpdateRule = gate == GateKind.None ? "delta" : "gated_delta", DecayPerKey = gate == GateKind.PerKey, Scale = DefaultScale(shape),
        });
        return ("ort-cuda gated-delta-net", model, work =>
        {
            var inputs = Named(work, new() { ["q"] = "query", ["k"] = "key", ["v"] = "value", ["g"] = "decay", ["beta"] = "beta" }, flattenHeads: false);
            inputs["initial_state"] = TensorData.Create(new float[(long)work.Batch * work.Heads * work.ValueDim * work.KeyDim],
                work.Batch, work.Heads, work.ValueDim, work.KeyDim);
            return inputs;
        });
    }

    /// <summary>
    /// Opens every model on ORT's CUDA provider; where the provider cannot run (no CUDA device, its library or CUDA's
    /// missing, a node it has no CUDA kernel for), none and the first line of ORT's reason, with the loader's reason where
    /// ORT only says that the provider's library did not load. ORT's own log is silenced: its errors reach us as exceptions.
    /// </summary>
    public static (IReadOnlyList<OrtCudaPeer> Peers, string? Unavailable) Open(
        IEnumerable<(string Variant, OnnxModel Model, Func<AttentionWorkload, Dictionary<string, TensorData>> Inputs)> models)
    {
        OrtEnv.Instance().EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
        var peers = new List<OrtCudaPeer>();
        try
        {
            foreach (var (variant, model, inputs) in models)
                peers.Add(new OrtCudaPeer(variant, ModelSession.Open(model, new ModelSessionOptions { Backend = HandoverBackend.None, Provider = OrtProvider.Cuda }), inputs));
            return (peers, null);
        }
        catch (ModelRunException e)
        {
            foreach (var peer in peers) peer.Dispose();
            return ([], LoaderReason() is string missing ? $"{Reason(e)} ({missing})" : Reason(e));
        }
    }

    /// <summary>
    /// Where the CUDA provider's library does not load, the loader's first reason (e.g. a CUDA library it needs that is not
    /// installed); null where it loads.
    /// </summary>
    private static string? LoaderReason()
    {
        try
        {
            NativeLibrary.Free(NativeLibrary.Load(CudaProviderLibrary, typeof(InferenceSession).Assembly, DllImportSearchPath.AssemblyDirectory));
            return null;
        }
        catch (DllNotFoundException e)
        {
            // The message's first line names the library; the next says why the first place it was found could not load it.
            return e.Message.Split('\n').Skip(1).Select(line => line.Trim()).FirstOrDefault(line => line.Length > 0);
        }
    }

    private static string CudaProviderLibrary => OperatingSystem.IsWindows() ? "onnxruntime_providers_cuda.dll" : "libonnxruntime_providers_cuda.so";

    /// <summary>
    /// The call to time on <paramref name="work"/>, after one run that sizes the outputs it then writes into (kept across
    /// runs); a <see cref="ModelRunException"/> where ORT's kernel refuses the call.
    /// </summary>
    public Action Prepare(AttentionWorkload work)
    {
        var inputs = _inputs(work);
        var outputs = _session.Run(inputs).ToDictionary(p => p.Key, p => TensorData.FromBytes(p.Value.ElementType, p.Value.Shape, p.Value.Bytes));
        return () => _session.RunInto(inputs, outputs);
    }

    /// <summary>The first line of an exception's message: ORT's reasons can run to several.</summary>
    public static string Reason(Exception e) => e.Message.Split('\n', 2)[0].TrimEnd('\r');

    public void Dispose() => _session.Dispose();

    private static float DefaultScale(BenchShape shape) => 1f / MathF.Sqrt(shape.K);

    /// <summary>The workload's inputs under the node's names, over the workload's arrays (no copy); [B, T, rest] when heads are flattened.</summary>
    private static Dictionary<string, TensorData> Named(AttentionWorkload work, Dictionary<string, string> names, bool flattenHeads) =>
        work.Inputs().Where(input => names.ContainsKey(input.Name)).ToDictionary(input => names[input.Name], input => flattenHeads
            ? TensorData.Create(input.Values, work.Batch, work.Tokens, input.Values.LongLength / ((long)work.Batch * work.Tokens))
            : TensorData.Create(input.Values, [.. input.Shape.Select(d => (long)d)]));
}

using System.Buffers;
using System.Numerics.Tensors;
using Engine.Onnx.Interop;
using Microsoft.ML.OnnxRuntime;
using OrtElementType = Microsoft.ML.OnnxRuntime.Tensors.TensorElementType;

namespace Engine.Onnx;

/// <summary>Options of <see cref="ModelSession.Open(OnnxModel, ModelSessionOptions?)"/>.</summary>
public sealed record ModelSessionOptions
{
    /// <summary>Where the hot nodes run: the engine's CPU or GPU kernels, or nowhere (plain ONNX Runtime).</summary>
    public HandoverBackend Backend { get; init; } = HandoverBackend.Cpu;

    /// <summary>The host owning the engine's kernels; <see cref="KernelHost.Shared"/> when null.</summary>
    public KernelHost? Host { get; init; }

    /// <summary>Whether ORT's intra-op threads spin while waiting for work (null: ORT's default, which spins).</summary>
    public bool? AllowSpinning { get; init; }

    public GraphOptimizationLevel OptimizationLevel { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;

    /// <summary>Records ORT's per-node profile to a JSON file starting with this prefix (see <see cref="ModelSession.EndProfiling"/>).</summary>
    public string? ProfilePrefix { get; init; }

    /// <summary>What ORT logs to the console. Errors already reach the caller as exceptions, so by default only fatal ones.</summary>
    public OrtLoggingLevel LogLevel { get; init; } = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;

    /// <summary>
    /// The execution provider ONNX Runtime runs the model's nodes on. <see cref="OrtProvider.Cuda"/> is for ORT alone
    /// (<see cref="Backend"/> = <see cref="HandoverBackend.None"/>): the engine's nodes are CPU-provider custom ops, which a
    /// CUDA session refuses to open with.
    /// </summary>
    public OrtProvider Provider { get; init; } = OrtProvider.Cpu;
}

/// <summary>ONNX Runtime's execution provider for the nodes it runs itself.</summary>
public enum OrtProvider
{
    /// <summary>ORT's CPU kernels.</summary>
    Cpu,
    /// <summary>
    /// ORT's CUDA kernels on device 0 (Microsoft.ML.OnnxRuntime.Gpu 1.32: CUDA 13 and cuDNN 9). A node the provider has no
    /// CUDA kernel for is refused when the session opens instead of falling back to the CPU unnoticed.
    /// </summary>
    Cuda,
}

/// <summary>An error ONNX Runtime raised while loading or running a model, restated with the model's context.</summary>
public sealed class ModelRunException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// An ONNX model running in ONNX Runtime with its hot nodes handed to the engine's kernels (or not, with
/// <see cref="HandoverBackend.None"/>). Run it with named tensors from any number of threads; decode by
/// feeding present_state back as past_state. Dispose it before its host: Dispose waits for the runs in progress to end.
/// </summary>
public sealed class ModelSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly KernelHost? _host;
    private readonly Dictionary<string, ModelValueInfo> _declaredInputs;
    // Inputs and outputs that are not tensors of a type TensorData holds (String, sequences, maps), with what they are.
    private readonly Dictionary<string, string> _valuesNotHeld;
    // The runs in progress, by thread: Dispose waits for them, so ORT's session is never released under a run.
    private readonly List<int> _runningThreads = [];
    private bool _disposed, _released;

    private ModelSession(OnnxModel model, HandoverPlan plan, InferenceSession session, KernelHost? host, HandoverBackend backend)
    {
        Model = model;
        Handover = plan;
        _session = session;
        _host = host;
        Backend = backend;
        InputNames = session.InputNames.ToArray();
        OutputNames = session.OutputNames.ToArray();
        // Every graph input, initializers listed as inputs too (a run may override those).
        _declaredInputs = model.Graph.Input.Select(ModelValueInfo.From).ToDictionary(i => i.Name);
        _valuesNotHeld = session.InputMetadata.Concat(session.OutputMetadata)
            .Select(p => (p.Key, What: NotHeld(p.Value))).Where(p => p.What is not null).ToDictionary(p => p.Key, p => p.What!);
    }

    /// <summary>What a value is when <see cref="TensorData"/> cannot hold it; null when it can.</summary>
    private static string? NotHeld(NodeMetadata value) =>
        value.OnnxValueType != OnnxValueType.ONNX_TYPE_TENSOR ? $"a {value.OnnxValueType} value, not a tensor"
        : TensorData.Holds((TensorElementType)value.ElementDataType) ? null
        : $"a {(TensorElementType)value.ElementDataType} tensor";

    /// <summary>
    /// Loads the model file (external data resolved next to it, <see cref="OnnxModel.Load(string)"/>), rewrites it for the
    /// hand-over and opens it in ONNX Runtime; <paramref name="options"/> default to the engine's CPU kernels
    /// (<see cref="HandoverBackend.Cpu"/>) on <see cref="KernelHost.Shared"/>.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not an ONNX model.</exception>
    /// <exception cref="DllNotFoundException">ONNX Runtime's native library is missing (the message names the package to add).</exception>
    /// <exception cref="ModelRunException">ONNX Runtime could not load the model (or, with <see cref="OrtProvider.Cuda"/>, its CUDA provider).</exception>
    /// <exception cref="ModelNodeException">A node the hand-over refuses, or, with <see cref="HandoverBackend.None"/>, an engine op (ai.engine), which ORT alone cannot run.</exception>
    public static ModelSession Open(string path, ModelSessionOptions? options = null) => Open(OnnxModel.Load(path), options);

    /// <summary>Opens a model from its bytes, as <see cref="Open(string, ModelSessionOptions?)"/> does; a model with external data needs its path or <see cref="OnnxModel.Load(byte[], string?)"/> with its folder.</summary>
    /// <exception cref="InvalidDataException">The bytes are not an ONNX model.</exception>
    /// <exception cref="InvalidOperationException">The model keeps initializers in external files.</exception>
    public static ModelSession Open(byte[] model, ModelSessionOptions? options = null) => Open(OnnxModel.Load(model), options);

    /// <summary>Opens a loaded model, as <see cref="Open(string, ModelSessionOptions?)"/> does.</summary>
    /// <exception cref="InvalidOperationException">The model keeps initializers in external files and was loaded without its folder.</exception>
    /// <exception cref="InvalidDataException">An initializer's external data is not a file inside the model's folder holding its bytes.</exception>
    /// <exception cref="ModelRunException">ONNX Runtime could not load the model.</exception>
    public static ModelSession Open(OnnxModel model, ModelSessionOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        OrtInfo.RequireNativeLibrary();
        options ??= new ModelSessionOptions();
        if (model.BaseDirectory is null && model.HasExternalData)
            throw new InvalidOperationException("the model keeps initializers in external files: open it from its path, or load its bytes with the folder of its data");
        model.CheckExternalData();
        var host = options.Backend == HandoverBackend.None ? null : options.Host ?? KernelHost.Shared;
        if (host is null) RequireNoEngineOps(model);
        var plan = host is null ? new HandoverPlan(model, [], []) : HandoverRewriter.Rewrite(model, host.Capabilities);
        var domain = host?.Acquire(options.Backend);
        var sessionOptions = new SessionOptions();
        try
        {
            sessionOptions.GraphOptimizationLevel = options.OptimizationLevel;
            sessionOptions.LogSeverityLevel = options.LogLevel;
            if (options.ProfilePrefix is not null)
            {
                // The prefix first: the package hands ORT the prefix it holds when profiling is enabled, and a prefix set after
                // is never read (the profile went to the working directory under ORT's default name).
                sessionOptions.ProfileOutputPathPrefix = options.ProfilePrefix;
                sessionOptions.EnableProfiling = true;
            }
            sessionOptions.IntraOpNumThreads = (options.Host ?? KernelHost.Shared).IntraOpThreads;
            if (options.AllowSpinning is bool spin) sessionOptions.AddSessionConfigEntry("session.intra_op.allow_spinning", spin ? "1" : "0");
            if (model.BaseDirectory is not null)
                sessionOptions.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", model.BaseDirectory);
            domain?.AddTo(sessionOptions);
            if (options.Provider == OrtProvider.Cuda) AddCuda(sessionOptions);
            var session = new InferenceSession(plan.Model.ToBytes(), sessionOptions);
            return new ModelSession(model, plan, session, host, options.Backend);
        }
        catch (OnnxRuntimeException e)
        {
            host?.Release();
            throw new ModelRunException($"ONNX Runtime could not load the model: {e.Message}", e);
        }
        catch
        {
            host?.Release();
            throw;
        }
        finally
        {
            // ORT copies what it needs from the options at session creation.
            sessionOptions.Dispose();
        }
    }

    private static void AddCuda(SessionOptions sessionOptions)
    {
        try
        {
            sessionOptions.AppendExecutionProvider_CUDA(0);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelRunException($"ONNX Runtime's CUDA execution provider is not available: {e.Message}", e);
        }
        catch (EntryPointNotFoundException e)
        {
            throw new ModelRunException("ONNX Runtime's CUDA execution provider is not available: this ONNX Runtime is a CPU build " +
                "(the provider comes with Microsoft.ML.OnnxRuntime.Gpu)", e);
        }
        sessionOptions.AddSessionConfigEntry("session.disable_cpu_ep_fallback", "1");
    }

    /// <summary>The model as loaded (before the rewrite).</summary>
    public OnnxModel Model { get; }

    /// <summary>The rewritten model and the nodes the engine took over.</summary>
    public HandoverPlan Handover { get; }

    /// <summary>Where the engine's nodes run (<see cref="ModelSessionOptions.Backend"/>); <see cref="HandoverBackend.None"/>: ONNX Runtime alone.</summary>
    public HandoverBackend Backend { get; }

    /// <summary>ONNX Runtime's session, for runs that hand ORT values from one run to the next (<see cref="Generator"/>), inside <see cref="EnterRun"/>.</summary>
    internal InferenceSession Inference => _session;

    /// <summary>Holds the session open until the scope ends: a Dispose meanwhile waits for it; a disposed session refuses.</summary>
    internal RunScope EnterRun()
    {
        lock (_runningThreads)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _runningThreads.Add(Environment.CurrentManagedThreadId);
        }
        return new RunScope(this);
    }

    internal readonly struct RunScope(ModelSession session) : IDisposable
    {
        public void Dispose()
        {
            lock (session._runningThreads)
            {
                session._runningThreads.Remove(Environment.CurrentManagedThreadId);
                if (session._runningThreads.Count == 0) Monitor.PulseAll(session._runningThreads);
            }
        }
    }

    /// <summary>The inputs every run must give (graph inputs without an initializer).</summary>
    public IReadOnlyList<string> InputNames { get; }

    /// <summary>The model's outputs, in the graph's order: what <see cref="Run(IReadOnlyDictionary{string, TensorData}, IReadOnlyCollection{string}?)"/> returns by default.</summary>
    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>
    /// Runs the model. Inputs are passed to ORT without copies; returns the requested outputs (all by default).
    /// Inputs the model does not take (a required one missing, an unknown name, another element type or rank), and outputs
    /// it does not have or an empty list of them, are an <see cref="ArgumentException"/> naming the tensor and the model, as is an input or output that
    /// <see cref="TensorData"/> does not hold (a String tensor, a sequence: name the outputs wanted); errors ORT raises while running
    /// are a <see cref="ModelRunException"/>; an output over 2 GiB, which one array cannot hold, a <see cref="NotSupportedException"/> naming it.
    /// </summary>
    public IReadOnlyDictionary<string, TensorData> Run(IReadOnlyDictionary<string, TensorData> inputs, IReadOnlyCollection<string>? outputs = null)
    {
        var map = new Dictionary<string, TensorData>();
        Run(inputs, (name, type, shape, bytes) => map[name] = TensorData.FromBytes(type, shape, bytes), outputs);
        return map;
    }

    /// <summary>What reads one output where ORT holds it: its bytes are valid only during the call.</summary>
    public delegate void OutputReader(string name, TensorElementType type, long[] shape, ReadOnlySpan<byte> bytes);

    /// <summary>
    /// Runs the model as <see cref="Run(IReadOnlyDictionary{string, TensorData}, IReadOnlyCollection{string}?)"/> does and
    /// hands each requested output (all by default), in order, to <paramref name="read"/> in ORT's own memory: no copy
    /// of an output of any size up to 2 GiB, what one span holds (e.g. written to a file straight from there). A larger
    /// output is a <see cref="NotSupportedException"/> naming it. <paramref name="check"/>, when given, sees every output the
    /// same way before <paramref name="read"/> sees any: what it throws leaves every output unread (e.g. no file written
    /// when one output is refused).
    /// </summary>
    public void Run(IReadOnlyDictionary<string, TensorData> inputs, OutputReader read, IReadOnlyCollection<string>? outputs = null,
        OutputReader? check = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(read);
        using var run = EnterRun();
        CheckInputs(inputs);
        using var bound = new BoundTensors(inputs);
        var wanted = (outputs ?? OutputNames).ToArray();
        if (wanted.Length == 0) throw new ArgumentException("no output asked for: name at least one, or give null for all of them", nameof(outputs));
        foreach (string name in wanted) RequireOutput(name);
        IDisposableReadOnlyCollection<OrtValue> results;
        try
        {
            using var runOptions = new RunOptions();
            results = _session.Run(runOptions, bound.Names, bound.Values, wanted);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelRunException($"running the model failed: {e.Message}", e);
        }
        using (results)
        {
            if (check is not null) HandOn(results, wanted, check);
            HandOn(results, wanted, read);
        }
    }

    /// <summary>Each of a run's outputs to <paramref name="reader"/>, in ORT's memory.</summary>
    private void HandOn(IReadOnlyCollection<OrtValue> results, string[] wanted, OutputReader reader)
    {
        int i = 0;
        foreach (var result in results)
        {
            var info = result.GetTensorTypeAndShape();
            string name = wanted[i++];
            var type = (TensorElementType)info.ElementDataType;
            // The reader takes a span, which holds at most 2 GiB; the package's own would wrap past 4 GiB, not throw.
            long bytes = info.ElementCount * TensorData.ElementSize(type);
            if (bytes > OrtValueMemory.MaxSpanBytes)
                throw new NotSupportedException($"{Model.DisplayName}: output '{name}' ({type} {TensorData.Format(info.Shape)}) is {bytes} bytes; " +
                    $"a run hands each output on as one span, which holds at most {OrtValueMemory.MaxSpanBytes} bytes");
            reader(name, type, info.Shape, result.GetTensorDataAsSpan<byte>());
        }
    }

    /// <summary>
    /// Runs the model and writes the named outputs into the caller's tensors (of the type and shape the model
    /// gives), with no copy and no allocation of their size: a decode loop alternates two state tensors, the
    /// present_state of one step being the past_state of the next. An output may not share its array with an input or
    /// another output.
    /// Inputs are checked as <see cref="Run(IReadOnlyDictionary{string, TensorData}, IReadOnlyCollection{string}?)"/> checks them.
    /// </summary>
    public void RunInto(IReadOnlyDictionary<string, TensorData> inputs, IReadOnlyDictionary<string, TensorData> outputs)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(outputs);
        using var run = EnterRun();
        CheckInputs(inputs);
        var placed = new List<(string Name, TensorData Data)>(outputs.Count);
        foreach (var (name, data) in outputs)
        {
            if (data is null) throw new ArgumentNullException(nameof(outputs), $"output '{name}' is null; give it a tensor");
            if (!data.ShapeHoldsValues) throw new ArgumentException($"{name}: {ShapeChanged(data)}", nameof(outputs));
            RequireOutput(name);
            if (data.IsReadOnly)
                throw new ArgumentException($"{name}: lies in read-only memory (TensorData.Over); give it a tensor of its own", nameof(outputs));
            foreach (var (inputName, input) in inputs)
                if (input.Bytes.Overlaps(data.Bytes))
                    throw new ArgumentException($"{name}: shares its array with the input {inputName}; give it a tensor of its own", nameof(outputs));
            foreach (var (otherName, other) in placed)
                if (other.Bytes.Overlaps(data.Bytes))
                    throw new ArgumentException($"{name}: shares its array with the output {otherName}; give each output a tensor of its own", nameof(outputs));
            placed.Add((name, data));
        }
        using var boundInputs = new BoundTensors(inputs);
        using var boundOutputs = new BoundTensors(outputs);
        try
        {
            using var runOptions = new RunOptions();
            _session.Run(runOptions, boundInputs.Names, boundInputs.Values, boundOutputs.Names, boundOutputs.Values);
        }
        catch (OnnxRuntimeException e)
        {
            throw new ModelRunException($"running the model failed: {e.Message}", e);
        }
    }

    private void RequireOutput(string name)
    {
        if (!OutputNames.Contains(name))
            throw new ArgumentException($"{name}: {Model.DisplayName} has no such output (outputs: {string.Join(", ", OutputNames)})", "outputs");
        if (_valuesNotHeld.TryGetValue(name, out var what))
            throw new ArgumentException($"{name}: {Model.DisplayName}'s output is {what}, which TensorData does not hold: name the outputs to run " +
                $"(those it holds: {string.Join(", ", OutputNames.Where(o => !_valuesNotHeld.ContainsKey(o)))})", "outputs");
    }

    /// <summary>Runs a model whose inputs and outputs are all float32.</summary>
    public IReadOnlyDictionary<string, Tensor<float>> Run(IReadOnlyDictionary<string, Tensor<float>> inputs, IReadOnlyCollection<string>? outputs = null)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var data = inputs.ToDictionary(p => p.Key, p => TensorData.FromTensor(p.Value));
        return Run(data, outputs).ToDictionary(p => p.Key, p => p.Value.ToTensor<float>());
    }

    /// <summary>Ends ORT's profiling (enabled with <see cref="ModelSessionOptions.ProfilePrefix"/>) and returns the profile file.</summary>
    public string EndProfiling()
    {
        using var run = EnterRun();
        return _session.EndProfiling();
    }

    /// <summary>
    /// Waits for the runs in progress to end, then releases ORT's session; later runs throw <see cref="ObjectDisposedException"/>.
    /// A Dispose on another thread meanwhile returns once the session is released, as the first one does.
    /// </summary>
    public void Dispose()
    {
        lock (_runningThreads)
        {
            bool inRun = _runningThreads.Contains(Environment.CurrentManagedThreadId);
            if (_disposed)
            {
                // A second disposer that returned at once let its caller free what the runs still read; one inside a run
                // would wait for itself.
                while (!_released && !inRun) Monitor.Wait(_runningThreads);
                return;
            }
            if (inRun)
                throw new InvalidOperationException("the session cannot be disposed from inside one of its runs (an output reader or a generation's callback): dispose it after the run");
            _disposed = true;
            while (_runningThreads.Count > 0) Monitor.Wait(_runningThreads);
        }
        try
        {
            _session.Dispose();
            _host?.Release();
        }
        finally
        {
            lock (_runningThreads)
            {
                _released = true;
                Monitor.PulseAll(_runningThreads);
            }
        }
    }

    /// <summary>ONNX Runtime alone has no kernel for the engine's own ops (ai.engine): such a node is named before ORT refuses it without.</summary>
    private static void RequireNoEngineOps(OnnxModel model)
    {
        var node = OnnxModel.AllGraphs(model.Proto.Graph).SelectMany(g => g.Node).FirstOrDefault(n => n.Domain == HandoverRewriter.EngineDomain);
        if (node is not null)
            throw new ModelNodeException($"{model.DisplayName}: node '{node.Name}' ({HandoverRewriter.EngineDomain} {node.OpType}) runs on the engine's kernels only; " +
                "ONNX Runtime alone (backend none) has no kernel for it: open the model with the cpu or gpu backend");
    }

    /// <summary>
    /// Refuses inputs the model does not take before ORT runs, naming the input and the model: ORT names
    /// neither the model nor, for an element type, the input, and lets a missing input reach the engine's
    /// kernels (which declare every input optional) as an empty value.
    /// </summary>
    private void CheckInputs(IReadOnlyDictionary<string, TensorData> inputs)
    {
        foreach (var name in InputNames)
            if (!inputs.ContainsKey(name))
                throw new ArgumentException(_valuesNotHeld.TryGetValue(name, out var what)
                    ? $"{Model.DisplayName}: the required input '{name}' is {what}, which TensorData does not hold: ModelSession cannot give it, so it cannot run this model"
                    : $"{Model.DisplayName}: the required input '{name}' is missing (inputs: {string.Join(", ", InputNames)})", nameof(inputs));
        foreach (var (name, data) in inputs)
        {
            if (data is null) throw new ArgumentNullException(nameof(inputs), $"{Model.DisplayName}: input '{name}' is null; give it a tensor");
            if (!data.ShapeHoldsValues) throw new ArgumentException($"{Model.DisplayName}: input '{name}' {ShapeChanged(data)}", nameof(inputs));
            if (!_declaredInputs.TryGetValue(name, out var declared))
                throw new ArgumentException($"{Model.DisplayName}: the model has no input '{name}' (inputs: {string.Join(", ", _declaredInputs.Keys)})", nameof(inputs));
            if (declared.ElementType != TensorElementType.Undefined && data.ElementType != declared.ElementType)
                throw new ArgumentException($"{Model.DisplayName}: input '{name}' must be {declared.ElementType}, got {data.ElementType}", nameof(inputs));
            if (declared.Dims is { } dims && data.Shape.Length != dims.Count)
                throw new ArgumentException($"{Model.DisplayName}: input '{name}' must have rank {dims.Count} [{string.Join(", ", dims)}], got {TensorData.Format(data.Shape)}", nameof(inputs));
        }
    }

    /// <summary>The refusal of a tensor whose shape no longer holds its values (<see cref="TensorData.ShapeHoldsValues"/>).</summary>
    private static string ShapeChanged(TensorData data) =>
        $"has the shape {TensorData.Format(data.Shape)} but holds {data.ElementCount} values: its Shape array was changed after it was made; make a tensor of the shape wanted";

    /// <summary>Named tensors pinned and wrapped as ORT values over their own memory, for the length of one run.</summary>
    private sealed unsafe class BoundTensors : IDisposable
    {
        private readonly List<MemoryHandle> _pins;

        public BoundTensors(IReadOnlyDictionary<string, TensorData> tensors)
        {
            Names = new List<string>(tensors.Count);
            Values = new List<OrtValue>(tensors.Count);
            _pins = new List<MemoryHandle>(tensors.Count);
            try
            {
                foreach (var (name, data) in tensors)
                {
                    var pin = data.Pin();
                    _pins.Add(pin);
                    Names.Add(name);
                    Values.Add(OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, (OrtElementType)data.ElementType,
                        data.Shape, (nint)pin.Pointer, data.ElementCount * TensorData.ElementSize(data.ElementType)));
                }
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public List<string> Names { get; }
        public List<OrtValue> Values { get; }

        public void Dispose()
        {
            foreach (var v in Values) v.Dispose();
            foreach (var p in _pins) p.Dispose();
            Values.Clear();
            _pins.Clear();
        }
    }
}

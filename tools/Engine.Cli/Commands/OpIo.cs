using System.Diagnostics;
using System.Numerics.Tensors;
using System.Text.Json;
using Engine.IO;

namespace Engine.Cli.Commands;

/// <summary>What every op command shares: the device option.</summary>
internal static class OpIo
{
    public const string BackendUsage = "[--backend reference|cpu|gpu] [--threads N]";

    public static EngineDevice Device(CommandLine args, Backend fallback = Backend.Cpu)
    {
        var backend = args.Choice("backend", fallback);
        int threads = args.Int("threads", Environment.ProcessorCount, min: 1);
        return EngineDevice.Create(backend, new EngineDeviceOptions { CpuThreads = threads });
    }

    /// <summary>One line per written file, as `engine op`, `run` and `inputs` print them: name: dtype [shape] -> path.</summary>
    public static string Wrote(string name, NpyType type, IEnumerable<long> shape, string path) =>
        $"{name}: {DType(type)} [{string.Join(", ", shape)}] -> {path}";

    /// <summary>NumPy's name of the element type: float32, float16...</summary>
    public static string DType(NpyType type) => type.ToString().ToLowerInvariant();
}

/// <summary>
/// The .npy files of one op command: inputs memory-mapped (kept until the command ends, then unmapped), outputs
/// written straight from the tensors the op wrote, the op's call timed; on success it reports what it wrote and
/// how long the call took, as text or (--json) one JSON object.
/// </summary>
internal class OpFiles(CommandLine args) : IDisposable
{
    private readonly List<NpyArray> _opened = [];
    private readonly List<(string Name, string Path, NpyType Type, long[] Shape)> _written = [];
    private TimeSpan _call;

    protected CommandLine Args { get; } = args;

    public NpyArray Required(string option) => Open(Args.Require(option));

    public NpyArray? Optional(string option) => Args.Value(option) is { } path ? Open(path) : null;

    /// <summary>A .npy file memory-mapped until the command ends.</summary>
    public NpyArray Open(string path)
    {
        var array = Npy.Read(path);
        _opened.Add(array);
        return array;
    }

    /// <summary>Runs the op's call, timed.</summary>
    public void Time(Action call)
    {
        var clock = Stopwatch.StartNew();
        call();
        _call = clock.Elapsed;
    }

    public void Write<T>(string name, string path, Tensor<T> tensor) where T : unmanaged
    {
        Npy.Write(path, tensor.AsReadOnlyTensorSpan());
        _written.Add((name, path, Npy.TypeOf<T>(), Array.ConvertAll(tensor.Lengths.ToArray(), d => (long)d)));
    }

    /// <summary>Writes bytes held elsewhere (an ONNX Runtime output) straight from where they lie.</summary>
    public void Write(string name, string path, NpyType type, long[] shape, ReadOnlySpan<byte> bytes)
    {
        Npy.Write(path, type, Array.ConvertAll(shape, d => checked((nint)d)), bytes);
        _written.Add((name, path, type, shape));
    }

    /// <summary>
    /// The files written and the call's time on <paramref name="device"/>; <paramref name="extra"/> adds what the
    /// command reports of its own (LSSL's mode).
    /// </summary>
    public void Report(CliContext context, string op, string device, IReadOnlyDictionary<string, string>? extra = null)
    {
        if (Args.Flag("json"))
        {
            var report = new Dictionary<string, object>
            {
                ["op"] = op,
                ["device"] = device,
                ["milliseconds"] = Math.Round(_call.TotalMilliseconds, 3),
                ["outputs"] = _written.Select(w => new Dictionary<string, object>
                {
                    ["name"] = w.Name, ["file"] = w.Path, ["dtype"] = OpIo.DType(w.Type), ["shape"] = w.Shape,
                }).ToArray(),
            };
            foreach (var (key, value) in extra ?? new Dictionary<string, string>()) report[key.Replace(' ', '_')] = value;
            context.Out.WriteLine(JsonSerializer.Serialize(report));
            return;
        }
        foreach (var (key, value) in extra ?? new Dictionary<string, string>()) context.Out.WriteLine($"{key}: {value}");
        foreach (var w in _written) context.Out.WriteLine(OpIo.Wrote(w.Name, w.Type, w.Shape, w.Path));
        context.Out.WriteLine($"{op}: {_call.TotalMilliseconds:F1} ms ({device})");
    }

    public void Dispose()
    {
        foreach (var array in _opened) array.Dispose();
        _opened.Clear();
    }
}

/// <summary>
/// The files every attention op command shares: q, k, v, the optional initial state and packed-sequence
/// offsets in; the output and the optional final state out. The element type follows q (float16 runs fp16).
/// </summary>
internal sealed class AttentionFiles : OpFiles
{
    private readonly NpyArray? _initialState;

    private AttentionFiles(CommandLine args) : base(args)
    {
        try
        {
            Q = Required("q");
            K = Required("k");
            V = Required("v");
            _initialState = Optional("h0");
            CuSeqlens = Optional("cu-seqlens")?.ToInt32();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Options every attention op command takes, besides its own.</summary>
    public static readonly string[] Options = ["q", "k", "v", "h0", "cu-seqlens", "o", "ht", "backend", "threads", "json"];

    public NpyArray Q { get; } = null!;
    public NpyArray K { get; } = null!;
    public NpyArray V { get; } = null!;
    public int[]? CuSeqlens { get; }

    /// <summary>The initial state where it lies in its file (float32), or converted once; empty when not given.</summary>
    public ReadOnlyTensorSpan<float> InitialState => _initialState is null ? default : _initialState.AsTensorSpan<float>();

    /// <summary>q is float16: run the op in System.Half.</summary>
    public bool Half => Q.Type == NpyType.Float16;

    public static AttentionFiles Read(CommandLine args) => new(args);

    /// <summary>The op's call into an output and final state allocated once.</summary>
    public delegate void Call<T>(TensorSpan<T> output, TensorSpan<float> finalState);

    /// <summary>Allocates the output and final state, runs the op (timed) and writes them (--o, and --ht when given).</summary>
    public void Run<T>(Call<T> call) where T : unmanaged
    {
        var result = AttentionResult<T>.Allocate(Q.Shape, K.Shape, V.Shape, CuSeqlens);
        string outputPath = Args.Require("o");
        string? statePath = Args.Value("ht");
        Time(() => call(result.Output.AsTensorSpan(), result.FinalState.AsTensorSpan()));
        Write("o", outputPath, result.Output);
        if (statePath is not null) Write("ht", statePath, result.FinalState);
    }
}

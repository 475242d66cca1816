using System.Diagnostics;
using System.Numerics.Tensors;
using System.CommandLine;
using System.Text.Json;
using Engine.IO;
using Engine.Onnx;

namespace Engine.Cli.Commands;

/// <summary>The device options every op and bench command shares: --backend and --threads.</summary>
internal sealed class DeviceOptions
{
    public Option<Backend> Backend { get; } = Opt.Choice("--backend", Engine.Backend.Cpu, "where the op runs (gpu: CUDA, else ILGPU's CPU accelerator)");
    public Option<int?> Threads { get; } = Opt.Threads();

    public IEnumerable<Option> All => [Backend, Threads];

    /// <param name="tensorCores">
    /// a tensor-core precision is asked for: ILGPU's CPU accelerator, where there is no CUDA, then runs in CUDA's geometry
    /// (groups of 128 in warps of 32), which the emulated products need.
    /// </param>
    public EngineDevice Create(ParseResult args, bool tensorCores = false)
    {
        // Refused, not ignored: the reference's float64 loops run on the calling thread.
        if (args.GetValue(Backend) == Engine.Backend.Reference && Opt.Given(args, Threads))
            throw new UsageException("--threads applies to --backend cpu and gpu: the reference runs on one thread");
        return EngineDevice.Create(args.GetValue(Backend), new EngineDeviceOptions
        {
            CpuThreads = args.GetValue(Threads),
            CpuAcceleratorGroupSize = tensorCores ? 128 : 16,
            CpuAcceleratorWarpSize = tensorCores ? 32 : 4,
        });
    }
}

/// <summary>How the op and model commands print what they wrote.</summary>
internal static class OpIo
{
    /// <summary>One line per written file, as `engine op`, `run` and `inputs` print them: name: dtype [shape] -> path.</summary>
    public static string Wrote(string name, NpyType type, IEnumerable<long> shape, string path) =>
        $"{name}: {DType(type)} [{string.Join(", ", shape)}] -> {path}";

    /// <summary>The JSON object of one written file: name, file, dtype, shape.</summary>
    public static Dictionary<string, object> WroteJson(string name, NpyType type, IEnumerable<long> shape, string path) => new()
    {
        ["name"] = name, ["file"] = path, ["dtype"] = DType(type), ["shape"] = shape.ToArray(),
    };

    /// <summary>NumPy's name of the element type: float32, float16...</summary>
    public static string DType(NpyType type) => type.ToString().ToLowerInvariant();

    /// <summary>Paths of one file compare equal: case counts on Linux only (Windows' and macOS's default file systems ignore it).</summary>
    public static StringComparer PathComparer { get; } = OperatingSystem.IsLinux() ? StringComparer.Ordinal : StringComparer.OrdinalIgnoreCase;
}

/// <summary>
/// The .npy files of one op command: inputs memory-mapped (kept until the command ends, then unmapped), outputs
/// written straight from the tensors the op wrote, the op's call timed; on success it reports what it wrote and
/// how long the call took, as text or (--json) one JSON object.
/// </summary>
internal class OpFiles : IDisposable
{
    private readonly List<NpyArray> _opened = [];
    private readonly List<(string Name, string Path, NpyType Type, long[] Shape)> _written = [];
    // By real path: the input files as named, and the outputs' names.
    private readonly Dictionary<string, string> _inputFiles = new(OpIo.PathComparer);
    private readonly Dictionary<string, string> _outputFiles = new(OpIo.PathComparer);
    // The op's name of each file given by an option ("initial_state") → how the user gave it ("--h0 (h0.npy)").
    private readonly Dictionary<string, string> _givenAs = [];
    private TimeSpan _call;

    /// <summary>The file <paramref name="option"/> names, memory-mapped until the command ends; null when the option is not given.</summary>
    public NpyArray? Optional(ParseResult args, Option<string> option) => args.GetValue(option) is { } path ? Open(path, option.Name) : null;

    /// <summary>The file a required <paramref name="option"/> names, memory-mapped until the command ends.</summary>
    public NpyArray Open(ParseResult args, Option<string> option) => Open(args.GetValue(option)!, option.Name);

    /// <summary>
    /// A .npy file memory-mapped until the command ends. A missing file is named by <paramref name="givenAs"/> (the
    /// option, or "--input x") and the path as given: .NET's own message has the full path and no option.
    /// </summary>
    public NpyArray Open(string path, string givenAs)
    {
        string real = FilePaths.Real(path);
        if (_outputFiles.TryGetValue(real, out var output)) throw OverwritesInput(output, path, path);
        NpyArray array;
        try
        {
            array = Npy.Read(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new FileNotFoundException($"{givenAs}: file not found: {path}", path, e);
        }
        _opened.Add(array);
        _inputFiles.TryAdd(real, path);
        if (givenAs.StartsWith("--", StringComparison.Ordinal) && !givenAs.Contains(' ')) _givenAs[OpName(givenAs)] = $"{givenAs} ({path})";
        return array;
    }

    /// <summary>The op's name of the tensor an option's file holds: the option's own name but for the states, the output and cu_seqlens.</summary>
    private static string OpName(string option) => option switch
    {
        "--h0" or "--x0" => "initial_state",
        "--ht" or "--xt" => "final_state",
        "--o" => "output",
        "--cu-seqlens" => "cu_seqlens",
        _ => option[2..],
    };

    /// <summary>
    /// Takes <paramref name="path"/> for the output <paramref name="name"/>, refusing one that is an input file (writing it
    /// would replace the user's input) or another output's file.
    /// </summary>
    public void Claim(string name, string path)
    {
        string real = FilePaths.Real(path);
        if (_inputFiles.TryGetValue(real, out var input)) throw OverwritesInput(name, path, input);
        if (_outputFiles.TryGetValue(real, out var other) && other != name)
            throw new ArgumentException($"outputs {other} and {name} would both be written to {path}: give each its own file");
        _outputFiles[real] = name;
        if (name is "o" or "ht" or "y" or "xt") _givenAs[OpName("--" + name)] = $"--{name} ({path})";
    }

    private static ArgumentException OverwritesInput(string output, string outputPath, string inputPath) =>
        new($"output {output} would be written to {outputPath}, which is the input file {inputPath}: write it elsewhere");

    /// <summary>Runs the op's call, timed; a tensor it refuses is named as the user gave it (<see cref="Named{T}"/>).</summary>
    public void Time(Action call)
    {
        var clock = Stopwatch.StartNew();
        Named(() => { call(); return 0; });
        _call = clock.Elapsed;
    }

    /// <summary>
    /// Runs <paramref name="work"/>, an op's tensor it refuses named as the user gave it: "--h0 (h0.npy): ..." rather than the
    /// op's "initial_state: ...".
    /// </summary>
    public T Named<T>(Func<T> work)
    {
        try
        {
            return work();
        }
        catch (ArgumentException e) when (e.ParamName is { } name && _givenAs.TryGetValue(name, out var file))
        {
            string message = Cli.OneLine(e);
            throw new ArgumentException(message.StartsWith(name + ":", StringComparison.Ordinal) ? file + message[name.Length..] : $"{file}: {message}", e);
        }
    }

    public void Write<T>(string name, string path, Tensor<T> tensor) where T : unmanaged
    {
        Claim(name, path);
        Npy.Write(path, tensor.AsReadOnlyTensorSpan());
        _written.Add((name, path, Npy.TypeOf<T>(), Array.ConvertAll(tensor.Lengths.ToArray(), d => (long)d)));
    }

    /// <summary>Writes bytes held elsewhere (an ONNX Runtime output) straight from where they lie.</summary>
    public void Write(string name, string path, NpyType type, long[] shape, ReadOnlySpan<byte> bytes)
    {
        Claim(name, path);
        Npy.Write(path, type, Array.ConvertAll(shape, d => checked((nint)d)), bytes);
        _written.Add((name, path, type, shape));
    }

    /// <summary>
    /// The files written and the call's time on <paramref name="device"/>; <paramref name="extra"/> adds what the
    /// command reports of its own (LSSL's mode, the model's engine nodes): strings, or numbers that JSON keeps as numbers.
    /// </summary>
    public void Report(CliContext context, bool json, string op, string device, IReadOnlyDictionary<string, object>? extra = null)
    {
        if (json)
        {
            var report = new Dictionary<string, object>
            {
                ["op"] = op,
                ["device"] = device,
                ["milliseconds"] = Math.Round(_call.TotalMilliseconds, 3),
                ["outputs"] = _written.Select(w => OpIo.WroteJson(w.Name, w.Type, w.Shape, w.Path)).ToArray(),
            };
            foreach (var (key, value) in extra ?? new Dictionary<string, object>()) report[key.Replace(' ', '_')] = value;
            context.Out.WriteLine(JsonSerializer.Serialize(report));
            return;
        }
        foreach (var (key, value) in extra ?? new Dictionary<string, object>()) context.Out.WriteLine(FormattableString.Invariant($"{key}: {value}"));
        foreach (var w in _written) context.Out.WriteLine(OpIo.Wrote(w.Name, w.Type, w.Shape, w.Path));
        context.Out.WriteLine($"{op}: {_call.TotalMilliseconds:F1} ms ({device})");
    }

    public void Dispose()
    {
        foreach (var array in _opened) array.Dispose();
        _opened.Clear();
    }
}

/// <summary>The options every attention op command shares: q, k, v, h0, cu-seqlens in; o, ht out; the device; --json.</summary>
internal sealed class AttentionOptions
{
    public Option<string> Q { get; } = Opt.Text("--q", "queries [B,T,Hq,K] (.npy)", "q.npy", required: true);
    public Option<string> K { get; } = Opt.Text("--k", "keys [B,T,Hk,K] (.npy)", "k.npy", required: true);
    public Option<string> V { get; } = Opt.Text("--v", "values [B,T,Hv,V] (.npy)", "v.npy", required: true);
    public Option<string> H0 { get; } = Opt.Text("--h0", "initial state [N,Hv,K,V] float32 (.npy)", "h0.npy");
    public Option<string> CuSeqlens { get; } = Opt.Text("--cu-seqlens", "int32/int64 offsets of packed sequences (then B = 1)", "c.npy");
    public Option<string> O { get; } = Opt.Text("--o", "the output [B,T,max(Hq,Hv),V] to write", "o.npy", required: true);
    public Option<string> Ht { get; } = Opt.Text("--ht", "the final state [N,Hv,K,V] float32 to write", "ht.npy");
    public DeviceOptions Device { get; } = new();
    public Option<bool> Json { get; } = Opt.Json();

    public IEnumerable<Option> All => [Q, K, V, H0, CuSeqlens, O, Ht, .. Device.All, Json];
}

/// <summary>
/// The files of one attention op command: q, k, v, the optional initial state and packed-sequence offsets in; the
/// output and the optional final state out. The element type follows q (float16 runs fp16).
/// </summary>
internal sealed class AttentionFiles : OpFiles
{
    private readonly NpyArray? _initialState;
    private readonly string _outputPath;
    private readonly string? _statePath;

    public AttentionFiles(AttentionOptions options, ParseResult args)
    {
        try
        {
            Q = Open(args, options.Q);
            K = Open(args, options.K);
            V = Open(args, options.V);
            _initialState = Optional(args, options.H0);
            CuSeqlens = Offsets(args, options.CuSeqlens);
            _outputPath = args.GetValue(options.O)!;
            _statePath = args.GetValue(options.Ht);
            Claim("o", _outputPath);
            if (_statePath is not null) Claim("ht", _statePath);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>
    /// The packed sequences' offsets: a file of rank 1 with a start and an end at least; an empty or multi-dimensional
    /// array would be taken for no packing or flattened into offsets it does not hold.
    /// </summary>
    private int[]? Offsets(ParseResult args, Option<string> option)
    {
        if (Optional(args, option) is not { } offsets) return null;
        if (offsets.Shape.Length != 1 || offsets.Shape[0] < 2)
            throw new ArgumentException($"{offsets.SourceFile}: expected --cu-seqlens offsets of rank 1 with at least 2 values (0, ..., T), got shape [{string.Join(", ", offsets.Shape)}]");
        if (offsets.Type is not (NpyType.Int32 or NpyType.Int64))
            throw new ArgumentException($"{offsets.SourceFile}: expected --cu-seqlens offsets of int32 or int64, got {Npy.Descr(offsets.Type)}");
        return offsets.ToInt32();
    }

    public NpyArray Q { get; } = null!;
    public NpyArray K { get; } = null!;
    public NpyArray V { get; } = null!;
    public int[]? CuSeqlens { get; }

    /// <summary>The initial state where it lies in its file (float32), or converted once; empty when not given.</summary>
    public ReadOnlyTensorSpan<float> InitialState => _initialState is null ? default : _initialState.AsTensorSpan<float>();

    /// <summary>q is float16: run the op in System.Half.</summary>
    public bool Half => Q.Type == NpyType.Float16;

    /// <summary>The op's call into an output and final state allocated once.</summary>
    public delegate void Call<T>(TensorSpan<T> output, TensorSpan<float> finalState);

    /// <summary>Allocates the output and final state, runs the op (timed) and writes them (--o, and --ht when given).</summary>
    public void Run<T>(Call<T> call) where T : unmanaged
    {
        var result = Named(() => AttentionResult<T>.Allocate(Q.Shape, K.Shape, V.Shape, CuSeqlens));
        Time(() => call(result.Output.AsTensorSpan(), result.FinalState.AsTensorSpan()));
        Write("o", _outputPath, result.Output);
        if (_statePath is not null) Write("ht", _statePath, result.FinalState);
    }
}

// A user's first program on the packed packages: pack-check.sh builds it in a new console app that references
// Engine, Engine.Onnx and ONNX Runtime's CPU package from a local feed. It prints OK, or what disagreed (exit 1).
using System.IO.Compression;
using System.Numerics.Tensors;
using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using Engine;
using Engine.Onnx;

var random = new Random(1);
float[] Uniform(int n, double low, double high) => [.. Enumerable.Range(0, n).Select(_ => (float)(low + (high - low) * random.NextDouble()))];

// GLA with a per-key gate on the CPU, against the recurrence written out:
// S = diag(exp g_t) S + k_t v_tᵀ, o_t = Sᵀ q_t / √K.
const int T = 37, H = 2, K = 8, V = 4;
float[] q = Uniform(T * H * K, -1, 1), k = Uniform(T * H * K, -1, 1), v = Uniform(T * H * V, -1, 1), g = Uniform(T * H * K, -1, 0);
using var device = EngineDevice.Create(Backend.Cpu);
var result = Gla.Forward(device, Tensor.Create(q, [1, T, H, K]), Tensor.Create(k, [1, T, H, K]), Tensor.Create(v, [1, T, H, V]),
    Tensor.Create(g, [1, T, H, K]));
var output = new float[T * H * V];
result.Output.FlattenTo(output);

var expected = new double[T * H * V];
for (int h = 0; h < H; h++)
{
    var s = new double[K, V];
    for (int t = 0; t < T; t++)
    {
        int row = t * H + h;
        for (int i = 0; i < K; i++)
        {
            for (int j = 0; j < V; j++) s[i, j] = Math.Exp(g[row * K + i]) * s[i, j] + k[row * K + i] * v[row * V + j];
        }
        for (int i = 0; i < K; i++)
        {
            for (int j = 0; j < V; j++) expected[row * V + j] += s[i, j] * q[row * K + i] / Math.Sqrt(K);
        }
    }
}
Check("Gla.Forward on the CPU against the recurrence", output, expected);

// An ONNX model (args[0]): ONNX Runtime with the GLA node on the engine's kernels, against ONNX Runtime alone.
var inputs = new Dictionary<string, TensorData>
{
    ["x"] = TensorData.Create(Uniform(16 * 32, -1, 1), 1, 16, 32),
    ["past_state"] = TensorData.Create(Uniform(2 * 16 * 16, -1, 1), 1, 2, 16, 16),
};
using var handedOver = ModelSession.Open(args[0]);
using var ortAlone = ModelSession.Open(args[0], new ModelSessionOptions { Backend = HandoverBackend.None });
if (!handedOver.Handover.EngineNodes.Any()) Fail($"the engine takes over no node of {args[0]}");
var byEngine = handedOver.Run(inputs);
var byOrt = ortAlone.Run(inputs);
foreach (var name in handedOver.OutputNames)
{
    Check($"{name} of {Path.GetFileName(args[0])} with the hand-over against ONNX Runtime alone",
        byEngine[name].As<float>(), Array.ConvertAll(byOrt[name].As<float>(), x => (double)x));
}

// The symbol packages (in the feed, args[1]): each PDB carries every source file it names, so a debugger steps into the
// packages' code without fetching anything. Source paths are mapped (/_/): no file names the folder the packages were
// packed in, here or in the assemblies' debug directories.
var embeddedSource = new Guid("0E8A571B-6926-466E-B4AD-8AB04611F5FE");
foreach (var symbols in Directory.GetFiles(args[1], "*.snupkg"))
{
    using var archive = ZipFile.OpenRead(symbols);
    foreach (var entry in archive.Entries.Where(e => e.FullName.EndsWith(".pdb", StringComparison.Ordinal)))
    {
        var pdb = new MemoryStream();
        using (var stream = entry.Open()) stream.CopyTo(pdb);
        pdb.Position = 0;
        using var provider = MetadataReaderProvider.FromPortablePdbStream(pdb);
        var reader = provider.GetMetadataReader();
        var missing = reader.Documents
            .Where(d => !reader.GetCustomDebugInformation(d).Any(c => reader.GetGuid(reader.GetCustomDebugInformation(c).Kind) == embeddedSource))
            .Select(d => reader.GetString(reader.GetDocument(d).Name)).ToList();
        if (reader.Documents.Count == 0 || missing.Count > 0)
            Fail($"{Path.GetFileName(symbols)}/{entry.FullName}: {reader.Documents.Count} source files, {missing.Count} not embedded ({string.Join(", ", missing.Take(3))})");
        var unmapped = reader.Documents.Select(d => reader.GetString(reader.GetDocument(d).Name))
            .Where(name => !name.StartsWith("/_/", StringComparison.Ordinal)).ToList();
        if (unmapped.Count > 0)
            Fail($"{Path.GetFileName(symbols)}/{entry.FullName}: {unmapped.Count} source paths not mapped to /_/ ({string.Join(", ", unmapped.Take(3))})");
    }
}
foreach (var package in Directory.GetFiles(args[1], "*.nupkg"))
{
    using var archive = ZipFile.OpenRead(package);
    foreach (var entry in archive.Entries.Where(e => e.Name.StartsWith("Engine.", StringComparison.OrdinalIgnoreCase) && e.Name.EndsWith(".dll", StringComparison.Ordinal)))
    {
        var image = new MemoryStream();
        using (var stream = entry.Open()) stream.CopyTo(image);
        image.Position = 0;
        using var pe = new PEReader(image);
        foreach (var debug in pe.ReadDebugDirectory().Where(d => d.Type == DebugDirectoryEntryType.CodeView))
        {
            string pdbPath = pe.ReadCodeViewDebugDirectoryData(debug).Path;
            if (!pdbPath.StartsWith("/_/", StringComparison.Ordinal) && Path.IsPathRooted(pdbPath))
                Fail($"{Path.GetFileName(package)}/{entry.FullName}: its PDB path {pdbPath} names the machine it was packed on");
        }
    }
}
Console.WriteLine("OK");

// Relative RMS error within the fp32 tolerance (1e-5); NaN fails.
static void Check(string what, float[] actual, double[] expected)
{
    if (actual.Length != expected.Length) Fail($"{what}: {actual.Length} values, expected {expected.Length}");
    double error = 0, norm = 0;
    for (int i = 0; i < actual.Length; i++)
    {
        error += (actual[i] - expected[i]) * (actual[i] - expected[i]);
        norm += expected[i] * expected[i];
    }
    double relative = Math.Sqrt(error / norm);
    if (!(relative <= 1e-5)) Fail($"{what}: relative RMS error {relative:g3} over {actual.Length} values");
}

static void Fail(string message)
{
    Console.Error.WriteLine($"pack check: {message}");
    Environment.Exit(1);
}

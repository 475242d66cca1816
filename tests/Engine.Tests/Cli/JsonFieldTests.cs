using System.Text.Json;
using Engine.IO;
using Engine.Tests.Harness;
using NUnit.Framework;
using DataType = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Cli;

/// <summary>
/// Every command's --json document holds the fields the README's table lists for it, each spelled there as here
/// (snake_case, `milliseconds`, `dtype`, `shape`, `device`).
/// </summary>
[TestFixture]
public sealed class JsonFieldTests : CliFixture
{
    private static readonly string[] WrittenFile = ["name", "file", "dtype", "shape"];

    private static readonly Lazy<string> Readme = new(() => File.ReadAllText(Path.Combine(Repository.Root, "README.md")));

    /// <summary>The command's JSON document, after a run that succeeded.</summary>
    private static JsonElement Json(params string[] args)
    {
        var (code, stdout, stderr) = Engine([.. args, "--json"]);
        Assert.That(code, Is.Zero, stderr);
        return JsonDocument.Parse(stdout).RootElement.Clone();
    }

    /// <summary>The object has each field, and the README names each.</summary>
    private static void AssertFields(JsonElement element, params string[] fields)
    {
        Assert.That(element.ValueKind, Is.EqualTo(JsonValueKind.Object));
        var names = element.EnumerateObject().Select(p => p.Name).ToArray();
        Assert.That(names, Is.SupersetOf(fields));
        foreach (var field in fields) Assert.That(Readme.Value, Does.Contain($"`{field}`"), $"{field} is documented");
    }

    private static JsonElement First(JsonElement list)
    {
        Assert.That(list.ValueKind, Is.EqualTo(JsonValueKind.Array));
        Assert.That(list.GetArrayLength(), Is.GreaterThan(0));
        return list[0];
    }

    private string WriteInputs()
    {
        var (code, _, stderr) = Engine("inputs", "gla", "--T", "8", "--H", "1", "--K", "16", "--V", "16", "--out-dir", Directory);
        Assert.That(code, Is.Zero, stderr);
        return Directory;
    }

    [Test]
    public void Op()
    {
        WriteInputs();
        var json = Json("op", "gla", "--q", PathOf("q.npy"), "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), "--g", PathOf("g.npy"), "--o", PathOf("o.npy"));
        AssertFields(json, "op", "device", "milliseconds", "outputs");
        AssertFields(First(json.GetProperty("outputs")), WrittenFile);
    }

    [Test]
    public void OpLssl()
    {
        var (code, _, stderr) = Engine("lssl-init", "--H", "2", "--N", "4", "--out-dir", Directory);
        Assert.That(code, Is.Zero, stderr);
        string u = Save("u.npy", NpyArray.From(new float[1 * 8 * 2], [1, 8, 2]));
        var json = Json("op", "lssl", "--u", u, "--A", PathOf("A.npy"), "--B", PathOf("B.npy"), "--C", PathOf("C.npy"), "--D", PathOf("D.npy"),
            "--dt", PathOf("dt.npy"), "--y", PathOf("y.npy"));
        AssertFields(json, "op", "device", "milliseconds", "outputs", "mode");
    }

    [Test]
    public void Run()
    {
        string model = SaveModel("identity.onnx", builder =>
        {
            builder.Input("x", DataType.Float, 2, 3);
            builder.Output("x", DataType.Float, 2, 3);
        });
        string x = Save("x.npy", NpyArray.From(new float[6], [2, 3]));
        var json = Json("run", model, "--input", $"x={x}", "--output-dir", PathOf("out"));
        AssertFields(json, "op", "device", "milliseconds", "outputs", "engine_kernel_nodes");
        AssertFields(First(json.GetProperty("outputs")), WrittenFile);
    }

    [Test]
    public void Inputs()
    {
        var json = Json("inputs", "gla", "--T", "8", "--H", "1", "--K", "16", "--V", "16", "--out-dir", Directory);
        AssertFields(json, "op", "outputs");
        AssertFields(First(json.GetProperty("outputs")), WrittenFile);
    }

    [Test]
    public void Bench()
    {
        var row = First(Json("bench", "gla", "--T", "16", "--H", "1", "--K", "16", "--V", "16", "--best-of", "1"));
        AssertFields(row, "op", "variant", "device", "b", "t", "h", "k", "v", "timing", "milliseconds", "tokens_per_s", "model_gflops", "peak_gflops",
            "fraction_of_peak", "gpu_launches", "gpu_bytes_to_device", "gpu_bytes_to_host", "gpu_kernels", "gpu_kernels_ms", "peer_of", "ratio_to_engine");
    }

    [Test]
    public void BenchPeak() =>
        AssertFields(Json("bench", "peak", "--threads", "1", "--rounds", "1"), "threads", "peak_gflops_one_thread", "peak_gflops", "simd");

    [Test]
    public void BenchModel()
    {
        var row = First(Json("bench-model", "--sample", "linear", "--T", "16", "--repeats", "1", "--threads", "1"));
        AssertFields(row, "model", "case", "engine_kernel_nodes", "device", "ort_spinning", "engine_ms", "ort_ms", "speedup", "engine_node_ms", "ort_node_ms",
            "node_speedup", "engine_matmul_share");
    }

    [Test]
    public void Generate()
    {
        var (code, _, stderr) = Engine("samples", Directory, "--vocab", "64", "--hidden", "32", "--context", "256");
        Assert.That(code, Is.Zero, stderr);
        var json = Json("generate", PathOf("hybrid_decoder"), "--prompt-tokens", "4", "--new-tokens", "2", "--repeats", "1", "--threads", "1");
        AssertFields(json, "model", "device", "prompt_tokens", "new_tokens", "search", "runs", "same_tokens", "first_different_token",
            "genai_version", "genai_same_tokens", "genai_first_different_token", "engine", "ort", "genai");
        foreach (var path in new[] { "engine", "ort", "genai" }) AssertFields(json.GetProperty(path), "ttft_ms", "decode_tokens_per_s", "median_step_ms");
    }

    [Test]
    public void Inspect()
    {
        string model = PathOf("gla_block.onnx");
        Workloads.SampleModels.Samples()["gla_block.onnx"].Save(model);
        var json = Json("inspect", model);
        AssertFields(json, "model", "ir_version", "producer", "producer_version", "opsets", "inputs", "outputs", "node_counts", "engine_nodes",
            "engine_kernel_nodes", "ort_nodes", "notes");
        AssertFields(First(json.GetProperty("opsets")), "domain", "version");
        AssertFields(First(json.GetProperty("inputs")), "name", "dtype", "shape");
        AssertFields(First(json.GetProperty("engine_nodes")), "name", "op_type", "from_domain", "to_domain", "detail");
    }

    [Test]
    public void Devices() =>
        AssertFields(Json("devices"), "cpu_cores", "simd", "vector512_accelerated", "vector256_accelerated", "vector128_accelerated", "cuda_devices",
            "gpu_backend_runs_on");

    [Test]
    public void Ptx()
    {
        var json = Json("ptx", PathOf("ptx"));
        AssertFields(json, "arch", "kernels");
        AssertFields(First(json.GetProperty("kernels")), "kernel", "variant", "file");
    }

    /// <summary>Every op on every backend (some seconds, most of them the GPU kernels on ILGPU's CPU accelerator).</summary>
    [Test]
    public void Demo()
    {
        var json = Json("demo", "--quick");
        AssertFields(json, "cpu", "gpu", "gpu_simulated", "ops", "onnx", "ok");
        AssertFields(First(json.GetProperty("ops")), "op", "backend", "shape", "relative_error", "milliseconds", "tokens_per_s", "model_gflops");
        AssertFields(json.GetProperty("onnx"), "ort_version", "t", "opset27_notes", "models");
        AssertFields(First(json.GetProperty("onnx").GetProperty("models")), "model", "engine_ms", "ort_ms", "relative_difference");
    }
}

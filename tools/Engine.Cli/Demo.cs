using System.Text.Json;
using Engine.Kernels.Common;
using Engine.Kernels.Gla;
using Engine.Kernels.Lssl;
using Engine.Workloads;

namespace Engine.Cli;

/// <summary>
/// The README's main command: each op on each backend at a realistic shape, its agreement with the
/// float64 reference (relative RMS error) and its speed. On a machine without a CUDA GPU the GPU kernels
/// run on ILGPU's CPU accelerator, at a small shape, to show they agree (not to show speed).
/// </summary>
public static class Demo
{
    /// <summary>One demo line: an op variant on a backend.</summary>
    private sealed record Row(string Op, string Backend, string Shape, double RelativeError, double Seconds, double ModelFlops, double Tokens);

    private sealed record Workload(string Op, string Shape, double Tokens, Func<AttentionMode, double> Flops,
        Action<EngineDevice, AttentionMode> Run, Func<float[]> Output);

    public static int Run(CliContext context, bool quick, bool json)
    {
        using var reference = EngineDevice.Create(Backend.Reference);
        using var cpu = EngineDevice.Create(Backend.Cpu);
        using var gpu = EngineDevice.Create(Backend.Gpu);
        bool simulated = !gpu.Description.Contains("CUDA", StringComparison.Ordinal);
        var w = context.Out;
        if (!json)
        {
            w.WriteLine("engine demo");
            w.WriteLine($"  {cpu.Description}");
            w.WriteLine($"  {gpu.Description}");
            w.WriteLine();
        }

        int t = quick ? 512 : 2048;
        // Each comparison is made when its turn comes: the workloads hold their inputs and outputs.
        var comparisons = new List<(string Label, Func<IEnumerable<Row>> Rows)>();
        AttentionMode[] modes = [AttentionMode.Chunked, AttentionMode.Recurrent];
        foreach (var gate in new[] { GateKind.PerKey, GateKind.PerHead })
        {
            comparisons.Add(($"gla {Opt.Kebab(gate)} cpu", () => Compare(Gla(1, t, 8, 128, 128, gate), reference, cpu, modes)));
            comparisons.Add(($"gla {Opt.Kebab(gate)} gpu", () => Compare(simulated ? Gla(1, 64, 2, 32, 32, gate) : Gla(1, t, 8, 128, 128, gate), reference, gpu, modes)));
        }
        foreach (var gate in new[] { GateKind.None, GateKind.PerHead, GateKind.PerKey })
        {
            comparisons.Add(($"delta rule {Opt.Kebab(gate)} cpu", () => Compare(Delta(1, t, 8, 128, 128, gate), reference, cpu, modes)));
            comparisons.Add(($"delta rule {Opt.Kebab(gate)} gpu", () => Compare(simulated ? Delta(1, 64, 2, 32, 32, gate) : Delta(1, t, 8, 128, 128, gate), reference, gpu, modes)));
        }
        comparisons.Add(("lightning cpu", () => Compare(Lightning(1, t, 8, 128, 128), reference, cpu, modes)));
        comparisons.Add(("lightning gpu", () => Compare(simulated ? Lightning(1, 64, 2, 32, 32) : Lightning(1, t, 8, 128, 128), reference, gpu, modes)));
        comparisons.Add(("lssl cpu", () => Lssl(reference, cpu, 1, t, 64, 64)));
        comparisons.Add(("lssl gpu", () => simulated ? Lssl(reference, gpu, 1, 64, 4, 16) : Lssl(reference, gpu, 1, t, 64, 64)));

        var (rows, onnx) = context.Progress.Run(w, progress =>
        {
            var step = progress.Add("demo: ops against the float64 reference", comparisons.Count);
            var rows = new List<Row>();
            foreach (var (label, compare) in comparisons)
            {
                step.Describe($"demo: {label}");
                rows.AddRange(compare());
                step.Advance();
            }
            return (rows, OnnxDemo.Measure(quick, progress));
        });
        bool ok = rows.All(r => r.RelativeError <= 1e-5) && onnx.Ok;
        // The exit code's reason on stderr too, where a script reading --json or the table looks for it.
        if (!ok) context.Error.WriteLine("engine: error: some outputs disagree with the reference (see the report)");
        if (json)
        {
            w.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
            {
                ["cpu"] = cpu.Description, ["gpu"] = gpu.Description, ["gpu_simulated"] = simulated,
                ["ops"] = rows.Select(r => new Dictionary<string, object?>
                {
                    ["op"] = r.Op, ["backend"] = r.Backend, ["shape"] = r.Shape, ["relative_error"] = Finite(r.RelativeError), ["milliseconds"] = r.Seconds * 1e3,
                    ["tokens_per_s"] = r.Tokens / r.Seconds, ["model_gflops"] = r.ModelFlops / r.Seconds / 1e9,
                }).ToArray(),
                ["onnx"] = onnx.Json(), ["ok"] = ok,
            }, new JsonSerializerOptions { WriteIndented = true }));
            return ok ? 0 : 1;
        }
        w.WriteLine($"{"op",-33} {"backend",-10} {"shape",-22} {"rel. error",10} {"ms",9} {"tokens/s",11} {"GFLOP/s",8}");
        foreach (var r in rows)
            w.WriteLine($"{r.Op,-33} {r.Backend,-10} {r.Shape,-22} {r.RelativeError,10:E1} {r.Seconds * 1e3,9:F1} {r.Tokens / r.Seconds,11:F0} {r.ModelFlops / r.Seconds / 1e9,8:F1}");
        w.WriteLine();
        w.WriteLine("rel. error: relative RMS error of the output against the float64 reference (fp32 tolerance 1e-5).");
        if (simulated) w.WriteLine("gpu rows ran on ILGPU's CPU accelerator (no CUDA device here): they show agreement, not GPU speed.");
        w.WriteLine(rows.All(r => r.RelativeError <= 1e-5) ? "all outputs agree with the reference." : "SOME OUTPUTS DISAGREE WITH THE REFERENCE.");
        onnx.Print(w);
        return ok ? 0 : 1;
    }

    /// <summary>A relative error as JSON can hold it: +∞ (a non-finite output) as null.</summary>
    internal static double? Finite(double value) => double.IsFinite(value) ? value : null;

    private static Workload Gla(int b, int t, int h, int k, int v, GateKind gate)
    {
        var work = new GlaWorkload(b, t, h, k, v, gate);
        return new Workload($"gla {(gate == GateKind.PerKey ? "per-key gate" : "per-head gate")}", $"B{b} T{t} H{h} K{k} V{v}", (double)b * t,
            mode => work.ModelFlops(mode, 64),
            (device, mode) => work.Run(device, new GlaOptions { Mode = mode }),
            () => work.Output.ToArray());
    }

    private static Workload Delta(int b, int t, int h, int k, int v, GateKind gate)
    {
        var work = new DeltaRuleWorkload(b, t, h, k, v, gate);
        return new Workload(gate switch { GateKind.PerHead => "gated deltanet", GateKind.PerKey => "gated deltanet per-key", _ => "deltanet" }, $"B{b} T{t} H{h} K{k} V{v}", (double)b * t,
            _ => work.ModelFlops(DeltaRuleOptions.DefaultChunkSize),
            (device, mode) => work.Run(device, new DeltaRuleOptions { Mode = mode }),
            () => work.Output.ToArray());
    }

    private static Workload Lightning(int b, int t, int h, int k, int v)
    {
        var work = new LightningWorkload(b, t, h, k, v);
        return new Workload("lightning", $"B{b} T{t} H{h} K{k} V{v}", (double)b * t,
            mode => work.ModelFlops(mode, 64),
            (device, mode) => work.Run(device, new LightningOptions { Mode = mode }),
            () => work.Output.ToArray());
    }

    /// <summary>LSSL (HiPPO-LegS, bilinear): the recurrence, the chunked scan and the convolution against the float64 recurrence.</summary>
    private static IEnumerable<Row> Lssl(EngineDevice reference, EngineDevice device, int b, int l, int h, int n)
    {
        using var work = new LsslWorkload(b, l, h, n);
        work.Run(reference, LsslMode.Recurrent);
        var expected = work.Output.ToArray();
        string backend = device.Backend == Backend.Gpu ? "gpu" : "cpu";
        foreach (var mode in new[] { LsslMode.Recurrent, LsslMode.Scan, LsslMode.Conv })
        {
            double seconds = BenchTimer.Median(() => work.Run(device, mode), repeats: 3, warmupSeconds: 0.2);
            yield return new Row($"lssl legs {Opt.Kebab(mode)}", backend, $"B{b} L{l} H{h} N{n}",
                RelativeRms(work.Output.ToArray(), expected), seconds, work.ModelFlops(mode), (double)b * l);
        }
    }

    private static IEnumerable<Row> Compare(Workload work, EngineDevice reference, EngineDevice device, AttentionMode[] modes)
    {
        work.Run(reference, AttentionMode.Recurrent);
        var expected = work.Output();
        string backend = device.Backend == Backend.Gpu ? "gpu" : "cpu";
        foreach (var mode in modes)
        {
            double seconds = BenchTimer.Median(() => work.Run(device, mode), repeats: 3, warmupSeconds: 0.2);
            yield return new Row($"{work.Op} {(mode == AttentionMode.Chunked ? "chunked" : "recurrent")}", backend, work.Shape,
                RelativeRms(work.Output(), expected), seconds, work.Flops(mode), work.Tokens);
        }
    }

    /// <summary>sqrt(Σ (a − e)² / Σ e²); NaN or infinity in <paramref name="actual"/> gives +∞.</summary>
    internal static double RelativeRms(float[] actual, float[] expected)
    {
        double err = 0, norm = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            if (!float.IsFinite(actual[i])) return double.PositiveInfinity;
            double d = (double)actual[i] - expected[i];
            err += d * d;
            norm += (double)expected[i] * expected[i];
        }
        return norm == 0 ? Math.Sqrt(err) : Math.Sqrt(err / norm);
    }
}

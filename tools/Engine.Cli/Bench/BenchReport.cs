using System.Globalization;
using System.Text.Json;
using Engine.Kernels.Common;

namespace Engine.Cli;

/// <summary>Batch, tokens, heads and head dims of a timed call.</summary>
public sealed record BenchShape(int B, int T, int H, int K, int V)
{
    public override string ToString() => $"B{B} T{T} H{H} K{K} V{V}";
}

/// <summary>How a bench command times: the median of --repeats after warm-up, or the best of --best-of interleaved rounds.</summary>
public sealed record BenchTiming(int Rounds, bool Interleaved)
{
    public override string ToString() => Interleaved
        ? $"best of {Rounds} rounds, every configuration once per round in turn"
        : $"median of {Rounds} runs after a one-second warm-up";
}

/// <summary>One timed configuration.</summary>
/// <param name="Traffic">GPU backend: the kernel launches and host↔device bytes of one call (null on the CPU).</param>
public sealed record BenchResult(string Op, string Variant, string Device, BenchShape Shape, double Seconds, double ModelFlops, GpuTraffic? Traffic)
{
    public double TokensPerSecond => Shape.B * (double)Shape.T / Seconds;
    public double GFlops => ModelFlops / Seconds / 1e9;
}

/// <summary>Prints bench results as a table or JSON, with the fraction of the measured FMA peak.</summary>
public static class BenchReport
{
    /// <summary>
    /// Times every length and variant a bench command asks for: a workload is made per length, each variant is a
    /// label, its model flops and the call to time. By default each call is warmed up and its median of the
    /// rounds taken; interleaved, every call runs once per round in turn and keeps its best time, which on a
    /// shared, noisy machine compares configurations far more steadily.
    /// </summary>
    /// <remarks>Progress: a bar per configuration over its repeats; interleaved, one bar over the rounds.</remarks>
    public static List<BenchResult> Sweep<TWork>(CliContext context, string op, EngineDevice device, BenchShape shape, IEnumerable<int> lengths,
        BenchTiming timing, Func<int, TWork> make, Func<TWork, IEnumerable<(string Variant, double Flops, Action Run)>> variants)
    {
        var works = new List<TWork>();
        try
        {
            var cases = new List<(int T, string Variant, double Flops, Action Run)>();
            var seconds = new List<double>();
            context.Progress.Run(context.Out, progress =>
            {
                foreach (int t in lengths)
                {
                    var work = make(t);
                    works.Add(work);
                    foreach (var (variant, flops, run) in variants(work))
                    {
                        cases.Add((t, variant, flops, run));
                        if (timing.Interleaved)
                        {
                            seconds.Add(double.MaxValue);
                            continue;
                        }
                        var step = progress.Add($"{op} {variant} T={t}", timing.Rounds);
                        seconds.Add(BenchTimer.Median(run, timing.Rounds, afterRun: () => step.Advance()));
                    }
                }
                if (timing.Interleaved)
                {
                    var step = progress.Add($"{op}: {cases.Count} configurations, {timing.Rounds} rounds", timing.Rounds);
                    foreach (var c in cases) BenchTimer.Median(c.Run, 1);
                    var clock = new System.Diagnostics.Stopwatch();
                    for (int round = 0; round < timing.Rounds; round++)
                    {
                        for (int i = 0; i < cases.Count; i++)
                        {
                            clock.Restart();
                            cases[i].Run();
                            seconds[i] = Math.Min(seconds[i], clock.Elapsed.TotalSeconds);
                        }
                        step.Advance();
                    }
                }
            });
            return cases.Select((c, i) => new BenchResult(op, c.Variant, device.Description, shape with { T = c.T }, seconds[i], c.Flops,
                device.Backend == Backend.Gpu ? TrafficOf(device, c.Run) : null)).ToList();
        }
        finally
        {
            foreach (var work in works) (work as IDisposable)?.Dispose();
        }
    }

    /// <summary>What one more, untimed call launches and moves on the GPU.</summary>
    private static GpuTraffic TrafficOf(EngineDevice device, Action run)
    {
        var before = device.GpuTraffic;
        run();
        return device.GpuTraffic.Since(before);
    }

    /// <summary>
    /// Prints the results, with the fraction of the FMA peak measured now when the device is the CPU, and draws them
    /// to <paramref name="chart"/> (see <see cref="BenchChart.Target"/>) when given: time per call against T, one line per variant.
    /// </summary>
    public static void Report(CliContext context, IReadOnlyList<BenchResult> results, EngineDevice device, BenchTiming timing, bool json, string? chart)
    {
        double? peak = device.Backend == Backend.Cpu ? FmaPeak.Measure(Math.Min(device.Threads, Environment.ProcessorCount)) : null;
        Print(context.Out, results, peak, timing, json);
        if (chart is null) return;
        var series = results.GroupBy(r => r.Variant)
            .Select(g => new ChartSeries(g.Key, g.Select(r => ((double)r.Shape.T, r.Seconds * 1e3)).ToArray())).ToArray();
        string op = results.Count > 0 ? results[0].Op : "";
        var shape = results.Count > 0 ? results[0].Shape : null;
        string title = $"engine bench {op}: {(shape is null ? "" : $"B{shape.B} H{shape.H} K{shape.K} V{shape.V}, ")}{timing}";
        BenchChart.Save(chart, BenchChart.Caption(device.Description, peak), [BenchChart.Panel(title, "ms per call", series)]);
        BenchChart.Report(context, chart, json);
    }

    private static void Print(TextWriter w, IReadOnlyList<BenchResult> results, double? peakGFlops, BenchTiming timing, bool json)
    {
        if (json)
        {
            var rows = results.Select(r => new Dictionary<string, object?>
            {
                ["op"] = r.Op, ["variant"] = r.Variant, ["device"] = r.Device,
                ["B"] = r.Shape.B, ["T"] = r.Shape.T, ["H"] = r.Shape.H, ["K"] = r.Shape.K, ["V"] = r.Shape.V,
                ["timing"] = timing.ToString(), ["ms"] = r.Seconds * 1e3, ["tokens_per_s"] = r.TokensPerSecond, ["model_gflops"] = r.GFlops,
                ["peak_gflops"] = peakGFlops, ["fraction_of_peak"] = peakGFlops is null ? null : r.GFlops / peakGFlops,
                ["gpu_launches"] = r.Traffic?.Launches, ["gpu_bytes_to_device"] = r.Traffic?.BytesToDevice, ["gpu_bytes_to_host"] = r.Traffic?.BytesToHost,
            });
            w.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        w.WriteLine(results.Count > 0 ? $"device: {results[0].Device}; {timing}" : "no results");
        if (results.Count > 0 && results[0].Device.Contains("CPU accelerator", StringComparison.Ordinal))
            w.WriteLine("note: no CUDA device, the GPU kernels ran on ILGPU's CPU accelerator: these times say nothing about GPU speed");
        if (peakGFlops is not null) w.WriteLine($"fp32 FMA peak (measured now): {peakGFlops:F1} GFLOP/s");
        bool gpu = results.Any(r => r.Traffic is not null);
        w.WriteLine($"{"op",-12} {"variant",-22} {"shape",-26} {"ms",10} {"tokens/s",12} {"GFLOP/s",9} {"of peak",8}" +
            (gpu ? $" {"launches",8} {"MB to GPU",10} {"MB to host",10}" : ""));
        foreach (var r in results)
        {
            string frac = peakGFlops is null ? "" : (r.GFlops / peakGFlops.Value).ToString("P1", CultureInfo.InvariantCulture);
            string traffic = r.Traffic is GpuTraffic t ? $" {t.Launches,8} {t.BytesToDevice / 1e6,10:F2} {t.BytesToHost / 1e6,10:F2}" : "";
            w.WriteLine($"{r.Op,-12} {r.Variant,-22} {r.Shape,-26} {r.Seconds * 1e3,10:F2} {r.TokensPerSecond,12:F0} {r.GFlops,9:F1} {frac,8}{traffic}");
        }
        if (gpu) w.WriteLine("launches and MB: one call's kernel launches and host-device copies (EngineDevice.GpuTraffic)");
    }
}

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

/// <summary>One configuration to time: its label, model flops and call.</summary>
/// <param name="PeerOf">for a peer (ONNX Runtime's own kernel on the same data), the engine's variant it is compared with.</param>
public sealed record BenchCase(string Variant, double Flops, Action Run, string? PeerOf = null);

/// <summary>One GPU kernel of a call: its launches per call and the median over the profiled calls of its summed device time.</summary>
public sealed record BenchKernelTime(string Kernel, long Launches, double Seconds);

/// <summary>One timed configuration.</summary>
/// <param name="Traffic">GPU backend: the kernel launches and host↔device bytes of one call (null on the CPU and for peers).</param>
/// <param name="Kernels">GPU backend: each kernel of one call, from the device's GPU profile of separate calls (null on the CPU and for peers).</param>
/// <param name="KernelSeconds">GPU backend: the median over the profiled calls of their kernels' summed device time.</param>
/// <param name="PeerOf">for a peer, the engine's variant it is compared with (the row of the same T).</param>
public sealed record BenchResult(string Op, string Variant, string Device, BenchShape Shape, double Seconds, double ModelFlops, GpuTraffic? Traffic,
    IReadOnlyList<BenchKernelTime>? Kernels = null, double? KernelSeconds = null, string? PeerOf = null)
{
    public double TokensPerSecond => Shape.B * (double)Shape.T / Seconds;
    public double GFlops => ModelFlops / Seconds / 1e9;
}

/// <summary>Prints bench results as a table or JSON, with the fraction of the measured FMA peak.</summary>
public static class BenchReport
{
    /// <summary>
    /// Times every length and variant a bench command asks for: a workload is made per length, each variant (a
    /// <see cref="BenchCase"/>) is a label, its model flops and the call to time. By default each call is warmed up and
    /// its median of the rounds taken; interleaved, every call runs once per round in turn and keeps its best time,
    /// which on a shared, noisy machine compares configurations far more steadily. On the GPU backend each of the
    /// engine's calls is then run as many times again under the device's GPU profile: the profile's markers stay out of
    /// the timed calls.
    /// </summary>
    /// <remarks>
    /// Progress: a bar per configuration over its repeats; interleaved, one bar over the rounds. Where the GPU kernels run on
    /// ILGPU's CPU accelerator, which takes long, a note on stderr says so before anything is timed.
    /// </remarks>
    public static List<BenchResult> Sweep<TWork>(CliContext context, string op, EngineDevice device, BenchShape shape, IEnumerable<int> lengths,
        BenchTiming timing, Func<int, TWork> make, Func<TWork, IEnumerable<BenchCase>> variants)
    {
        if (OnCpuAccelerator(device.Description)) context.Error.WriteLine($"note: {CpuAcceleratorNote}");
        var works = new List<TWork>();
        try
        {
            var cases = new List<(int T, BenchCase Case)>();
            var seconds = new List<double>();
            context.Progress.Run(context.Out, progress =>
            {
                foreach (int t in lengths)
                {
                    var work = make(t);
                    works.Add(work);
                    foreach (var c in variants(work).ToList())
                    {
                        cases.Add((t, c));
                        if (timing.Interleaved)
                        {
                            seconds.Add(double.MaxValue);
                            continue;
                        }
                        var step = progress.Add($"{op} {c.Variant} T={t}", timing.Rounds);
                        seconds.Add(BenchTimer.Median(c.Run, timing.Rounds, afterRun: () => step.Advance()));
                    }
                }
                if (timing.Interleaved)
                {
                    var step = progress.Add($"{op}: {cases.Count} configurations, {timing.Rounds} rounds", timing.Rounds);
                    foreach (var (_, c) in cases) BenchTimer.Median(c.Run, 1);
                    var clock = new System.Diagnostics.Stopwatch();
                    for (int round = 0; round < timing.Rounds; round++)
                    {
                        for (int i = 0; i < cases.Count; i++)
                        {
                            clock.Restart();
                            cases[i].Case.Run();
                            seconds[i] = Math.Min(seconds[i], clock.Elapsed.TotalSeconds);
                        }
                        step.Advance();
                    }
                }
            });
            return cases.Select((c, i) =>
            {
                var result = new BenchResult(op, c.Case.Variant, device.Description, shape with { T = c.T }, seconds[i], c.Case.Flops, null, PeerOf: c.Case.PeerOf);
                return device.Backend == Backend.Gpu && c.Case.PeerOf is null ? Profile(result, device, c.Case.Run, timing.Rounds) : result;
            }).ToList();
        }
        finally
        {
            foreach (var work in works) (work as IDisposable)?.Dispose();
        }
    }

    /// <summary>
    /// <paramref name="result"/> with what its call launches and moves on the GPU and each kernel's time: <paramref name="calls"/>
    /// more, untimed calls, each under the device's GPU profile; per kernel the median of its device time per call.
    /// </summary>
    private static BenchResult Profile(BenchResult result, EngineDevice device, Action run, int calls)
    {
        var profiles = new List<IReadOnlyList<GpuKernelTime>>(calls);
        GpuTraffic traffic = default;
        for (int i = 0; i < calls; i++)
        {
            var before = device.GpuTraffic;
            device.StartGpuProfile();
            try
            {
                run();
            }
            finally
            {
                profiles.Add(device.StopGpuProfile());
            }
            traffic = device.GpuTraffic.Since(before);
        }
        var kernels = profiles[0].Select(k => new BenchKernelTime(k.Kernel, k.Launches,
            BenchTimer.MedianOf(profiles.Select(p => p.Where(t => t.Kernel == k.Kernel).Sum(t => t.Elapsed.TotalSeconds))))).ToList();
        return result with { Traffic = traffic, Kernels = kernels, KernelSeconds = BenchTimer.MedianOf(profiles.Select(p => p.Sum(t => t.Elapsed.TotalSeconds))) };
    }

    /// <summary>The FMA peak of <paramref name="threads"/> threads, measured on at most <see cref="PeakThreads"/> of them.</summary>
    public static double Peak(int threads) => FmaPeak.Measure(PeakThreads(threads));

    /// <summary>Threads the peak is measured on: no more than the cores, as threads past them add no FMA throughput, only their start.</summary>
    public static int PeakThreads(int threads) => Math.Min(threads, Environment.ProcessorCount);

    /// <summary>
    /// Prints the results, with the fraction of the FMA peak measured now when the device is the CPU, and draws them
    /// to <paramref name="chart"/> (see <see cref="BenchChart.Target"/>) when given: time per call against T, one line per variant.
    /// </summary>
    /// <param name="notes">lines about what was left out and why: with the table on stdout, beside a JSON document on stderr.</param>
    public static void Report(CliContext context, IReadOnlyList<BenchResult> results, EngineDevice device, BenchTiming timing, bool json, string? chart,
        IReadOnlyList<string>? notes = null)
    {
        double? peak = device.Backend == Backend.Cpu ? Peak(device.Threads) : null;
        // The chart first: a chart that cannot be written is an error, and an error leaves stdout empty (no report, no JSON).
        if (chart is not null)
        {
            var series = results.GroupBy(r => r.Variant)
                .Select(g => new ChartSeries(g.Key, g.Select(r => ((double)r.Shape.T, r.Seconds * 1e3)).ToArray())).ToArray();
            string op = results.Count > 0 ? results[0].Op : "";
            var shape = results.Count > 0 ? results[0].Shape : null;
            string title = $"engine bench {op}: {(shape is null ? "" : $"B{shape.B} H{shape.H} K{shape.K} V{shape.V}, ")}{timing}";
            BenchChart.Save(chart, BenchChart.Caption(device.Description, peak), [BenchChart.Panel(title, "ms per call", series)]);
        }
        Print(context.Out, results, peak, timing, json);
        foreach (var note in notes ?? []) (json ? context.Error : context.Out).WriteLine($"note: {note}");
        if (chart is not null) BenchChart.Report(context, chart, json);
    }

    private const string CpuAcceleratorNote =
        "no CUDA device, the GPU kernels run on ILGPU's CPU accelerator (slowly, for correctness): these times say nothing about GPU speed";

    private static bool OnCpuAccelerator(string device) => device.Contains("CPU accelerator", StringComparison.Ordinal);

    /// <summary>A peer's time over the time of the engine's variant it is compared with (same T); null for the engine's rows.</summary>
    private static double? RatioToEngine(BenchResult peer, IReadOnlyList<BenchResult> results) =>
        peer.PeerOf is null ? null : results.FirstOrDefault(r => r.PeerOf is null && r.Variant == peer.PeerOf && r.Shape == peer.Shape) is { } engine
            ? peer.Seconds / engine.Seconds : null;

    private static void Print(TextWriter w, IReadOnlyList<BenchResult> results, double? peakGFlops, BenchTiming timing, bool json)
    {
        if (json)
        {
            var rows = results.Select(r => new Dictionary<string, object?>
            {
                ["op"] = r.Op, ["variant"] = r.Variant, ["device"] = r.Device,
                ["b"] = r.Shape.B, ["t"] = r.Shape.T, ["h"] = r.Shape.H, ["k"] = r.Shape.K, ["v"] = r.Shape.V,
                ["timing"] = timing.ToString(), ["milliseconds"] = r.Seconds * 1e3, ["tokens_per_s"] = r.TokensPerSecond, ["model_gflops"] = r.GFlops,
                ["peak_gflops"] = peakGFlops, ["fraction_of_peak"] = peakGFlops is null ? null : r.GFlops / peakGFlops,
                ["gpu_launches"] = r.Traffic?.Launches, ["gpu_bytes_to_device"] = r.Traffic?.BytesToDevice, ["gpu_bytes_to_host"] = r.Traffic?.BytesToHost,
                ["gpu_kernels"] = r.Kernels?.Select(k => new Dictionary<string, object> { ["kernel"] = k.Kernel, ["launches"] = k.Launches, ["milliseconds"] = k.Seconds * 1e3 }),
                ["gpu_kernels_ms"] = r.KernelSeconds * 1e3,
                ["peer_of"] = r.PeerOf, ["ratio_to_engine"] = RatioToEngine(r, results),
            });
            w.WriteLine(JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
            return;
        }
        w.WriteLine(results.Count > 0 ? $"device: {results[0].Device}; {timing}" : "no results");
        if (results.Count > 0 && OnCpuAccelerator(results[0].Device)) w.WriteLine($"note: {CpuAcceleratorNote}");
        if (peakGFlops is not null) w.WriteLine($"fp32 FMA peak (measured now): {peakGFlops:F1} GFLOP/s");
        bool gpu = results.Any(r => r.Traffic is not null);
        bool peers = results.Any(r => r.PeerOf is not null);
        w.WriteLine($"{"op",-12} {"variant",-26} {"shape",-26} {"ms",10} {"tokens/s",12} {"GFLOP/s",9} {"of peak",8}" +
            (gpu ? $" {"launches",8} {"MB to GPU",10} {"MB to host",10}" : "") + (peers ? $" {"vs engine",9}" : ""));
        foreach (var r in results)
        {
            string frac = peakGFlops is null ? "" : (r.GFlops / peakGFlops.Value).ToString("P1", CultureInfo.InvariantCulture);
            string traffic = r.Traffic is GpuTraffic t ? $" {t.Launches,8} {t.BytesToDevice / 1e6,10:F2} {t.BytesToHost / 1e6,10:F2}"
                : gpu ? $" {"",8} {"",10} {"",10}" : "";
            string ratio = RatioToEngine(r, results) is double x ? $" {x,8:F2}x" : "";
            w.WriteLine($"{r.Op,-12} {r.Variant,-26} {r.Shape,-26} {r.Seconds * 1e3,10:F2} {r.TokensPerSecond,12:F0} {r.GFlops,9:F1} {frac,8}{traffic}{ratio}");
            foreach (var k in r.Kernels ?? [])
                w.WriteLine($"{"",12}   {k.Kernel,-30} {k.Launches,4} launch{(k.Launches == 1 ? "" : "es"),-3} {k.Seconds * 1e3,10:F3} ms");
            if (r.KernelSeconds is double all) w.WriteLine($"{"",12}   {"all kernels",-30} {r.Kernels!.Sum(k => k.Launches),4} {"",9} {all * 1e3,10:F3} ms");
        }
        if (gpu)
        {
            w.WriteLine("launches and MB: one call's kernel launches and host-device copies (EngineDevice.GpuTraffic)");
            w.WriteLine($"kernels: launches per call and the median device time per call, from the GPU profile of {timing.Rounds} more calls, not the timed ones");
        }
        if (peers)
            w.WriteLine("ort-cuda: ONNX Runtime's own CUDA kernel on the same data, inputs from and outputs to host memory as the engine's call; " +
                "vs engine: its ms over the engine's first variant's at the same T (above 1: the engine is faster)");
    }
}

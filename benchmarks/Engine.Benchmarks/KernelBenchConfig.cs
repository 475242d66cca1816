using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Engine.Kernels.Common;

namespace Engine.Benchmarks;

/// <summary>A benchmark class that knows the model flops of each of its cases.</summary>
public interface IModelFlops
{
    /// <summary>Model flops of one invocation with the case's parameters.</summary>
    static abstract double ModelFlops(IReadOnlyDictionary<string, object> parameters);
}

/// <summary>
/// Short runs (the kernels take milliseconds to seconds) with model GFLOP/s and the fraction of the FMA peak. Ten
/// warm-up calls let tiered compilation settle on the code around the kernels (the hot loops are compiled fully
/// optimized on first use).
/// </summary>
public sealed class KernelBenchConfig : ManualConfig
{
    public KernelBenchConfig()
    {
        AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(10).WithIterationCount(7).WithInvocationCount(1).WithUnrollFactor(1));
        AddColumn(new ModelFlopsColumn(peak: false), new ModelFlopsColumn(peak: true));
    }
}

/// <summary>Model GFLOP/s of a case (from its mean time), or that as a fraction of the FMA peak measured once in the host.</summary>
public sealed class ModelFlopsColumn(bool peak) : IColumn
{
    private static readonly Lazy<double> Peak = new(() => FmaPeak.Measure(Environment.ProcessorCount));

    public string Id => peak ? "FractionOfPeak" : "ModelGFlops";
    public string ColumnName => peak ? "of FMA peak" : "GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => peak ? 1 : 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    // The peak read is in the legend: one read on a busy host would move every fraction in the table.
    public string Legend => peak
        ? $"model GFLOP/s over the fp32 FMA peak of all cores, {Peak.Value.ToString("F1", CultureInfo.InvariantCulture)} GFLOP/s as measured after the run"
        : "model flops / mean time";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var report = summary[benchmarkCase];
        var method = benchmarkCase.Descriptor.Type.GetMethod(nameof(IModelFlops.ModelFlops));
        if (report?.ResultStatistics is null || method is null) return "-";
        var parameters = benchmarkCase.Parameters.Items.ToDictionary(p => p.Name, p => p.Value);
        double flops = (double)method.Invoke(null, [parameters])!;
        double gflops = flops / (report.ResultStatistics.Mean * 1e-9) / 1e9;
        return peak ? (gflops / Peak.Value).ToString("P1", CultureInfo.InvariantCulture) : gflops.ToString("F1", CultureInfo.InvariantCulture);
    }
}

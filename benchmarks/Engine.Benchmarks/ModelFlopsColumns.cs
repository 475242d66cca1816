using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Engine.Benchmarks;

/// <summary>
/// Model GFLOP/s of a benchmark (its model flop count over the mean time) and, when the environment
/// variable ENGINE_PEAK_GFLOPS holds the machine's measured FMA peak (`engine bench peak`), the
/// fraction of that peak.
/// </summary>
public sealed class ModelFlopsColumn(Func<BenchmarkCase, double> modelFlops, bool fractionOfPeak) : IColumn
{
    public const string PeakVariable = "ENGINE_PEAK_GFLOPS";

    public string Id => fractionOfPeak ? "ModelFlops.Peak" : "ModelFlops.Rate";
    public string ColumnName => fractionOfPeak ? "% of peak" : "model GFLOP/s";
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => fractionOfPeak ? 1 : 0;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => fractionOfPeak
        ? $"model GFLOP/s as a percentage of {PeakVariable}"
        : "model floating-point operations (the op's stated formula) per second, in billions";

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public bool IsAvailable(Summary summary) => true;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (meanNs is not > 0) return "NA";
        double gflops = modelFlops(benchmarkCase) / meanNs.Value;
        if (!fractionOfPeak) return gflops.ToString("F1", CultureInfo.InvariantCulture);
        return double.TryParse(Environment.GetEnvironmentVariable(PeakVariable), NumberStyles.Float, CultureInfo.InvariantCulture, out double peak) && peak > 0
            ? (100 * gflops / peak).ToString("F0", CultureInfo.InvariantCulture) + "%"
            : $"set {PeakVariable}";
    }

    public override string ToString() => ColumnName;
}

using System.Buffers.Binary;
using System.Xml.Linq;
using NUnit.Framework;
using SkiaSharp;

namespace Engine.Tests.Cli;

/// <summary>--plot on the bench commands: the chart is written, valid, labelled; bad paths are refused before anything is timed.</summary>
[TestFixture]
public sealed class ChartTests : CliFixture
{
    private static readonly string[] TinyGla = ["bench", "gla", "--T", "64,128", "--H", "1", "--K", "16", "--V", "16", "--repeats", "1", "--mode", "both"];

    /// <summary>With --json the rows are stdout's JSON and the chart's line goes to stderr (without it, to stdout: the other charts' tests).</summary>
    [Test]
    public void BenchDrawsAnSvgWithEveryVariantAndTheCaptionAndWithJsonReportsItOnStderr()
    {
        string chart = PathOf("gla.svg");
        var (code, stdout, stderr) = Engine([.. TinyGla, "--json", "--plot", chart]);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(System.Text.Json.JsonDocument.Parse(stdout).RootElement.GetArrayLength(), Is.EqualTo(4));
        Assert.That(stderr, Does.Contain($"chart written to {chart}"));
        var texts = SvgTexts(chart);
        Assert.That(texts, Does.Contain("per-key chunked").And.Contain("per-key recurrent").And.Contain("T (tokens)"));
        Assert.That(texts.Any(t => t.StartsWith("fp32 FMA peak ", StringComparison.Ordinal) && t.Contains("GFLOP/s (measured in this run); ONNX Runtime ")), string.Join(" | ", texts));
    }

    [Test]
    public void BenchLsslDrawsAPng()
    {
        string chart = PathOf("lssl.png");
        var (code, stdout, stderr) = Engine("bench", "lssl", "--T", "64", "--H", "2", "--N", "4", "--mode", "all", "--repeats", "1", "--plot", chart);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"chart written to {chart}"));
        AssertPng(chart, width: 900, height: 640);
    }

    /// <summary>
    /// Log axes over a range that holds no power of ten get labels still (the y axis had none), and a series with no point
    /// a log axis can draw (at T = 0, or a time of 0) has no legend entry (it had one, with no point).
    /// </summary>
    [Test]
    public void LogAxesAreLabelledOverAnyRangeAndUndrawnSeriesLeftOutOfTheLegend()
    {
        string chart = PathOf("chart.svg");
        var panel = global::Engine.Cli.BenchChart.Panel("chart", "ms per call",
            [new("drawn", [(64, 0.021), (1024, 0.35)]), new("only at T = 0", [(0, 0.01)]), new("only a time of 0", [(64, 0)])]);
        global::Engine.Cli.BenchChart.Save(chart, ["caption"], [panel]);
        var texts = SvgTexts(chart);
        Assert.That(texts, Does.Contain("drawn"));
        Assert.That(texts, Has.None.StartWith("only"), "the series with no point to draw");
        var yLabels = texts.SkipWhile(t => !t.StartsWith("ms per call", StringComparison.Ordinal)).Skip(1)
            .Where(t => double.TryParse(t, System.Globalization.CultureInfo.InvariantCulture, out _)).ToArray();
        Assert.That(yLabels, Has.Length.GreaterThanOrEqualTo(2), string.Join(" | ", texts));
    }

    /// <summary>
    /// The ticks of a log axis, from the values alone (the timings of a run vary): two labels at least over any two values
    /// (0.021 to 0.028 holds not even two multiples of a power of ten), every label inside the values' range or on a
    /// power of ten's multiple.
    /// </summary>
    [TestCase(0.021, 0.028)]
    [TestCase(0.004, 0.009)]
    [TestCase(0.02, 0.05)]
    [TestCase(0.5, 400.0)]
    public void ALogAxisHasTwoLabelsInTheRangeOfAnyTwoValues(double low, double high)
    {
        var plot = global::Engine.Cli.BenchChart.Panel("t", "ms", [new("series", [(64, low), (1024, high)])]);
        XNamespace svg = "http://www.w3.org/2000/svg";
        var texts = XDocument.Parse(plot.GetSvgXml(900, 640)).Root!.Descendants(svg + "text").Select(t => t.Value.Trim()).ToList();
        var yLabels = texts.SkipWhile(t => !t.StartsWith("ms (log scale)", StringComparison.Ordinal)).Skip(1)
            .Select(t => double.TryParse(t, System.Globalization.CultureInfo.InvariantCulture, out double v) ? v : double.NaN)
            .Where(v => v >= low * (1 - 1e-9) && v <= high * (1 + 1e-9)).ToArray();
        Assert.That(yLabels, Has.Length.GreaterThanOrEqualTo(2), string.Join(" | ", texts));
    }

    [Test]
    public void BenchModelDrawsBothPanelsPerSampleModel()
    {
        string chart = PathOf("model.svg");
        var (code, stdout, stderr) = Engine("bench-model", "--sample", "linear", "--T", "64", "--repeats", "1", "--threads", "1", "--plot", chart);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain($"chart written to {chart}"));
        var texts = SvgTexts(chart);
        foreach (var label in new[] { "linear block: engine", "linear block: ORT", "linear node: engine", "linear node: ORT" })
            Assert.That(texts.Count(t => t == label), Is.EqualTo(2), $"{label} in both panels' legends");
        Assert.That(texts.Any(t => t.StartsWith("engine bench-model: whole model", StringComparison.Ordinal)), Is.True);
        Assert.That(texts.Any(t => t.StartsWith("taken-over nodes", StringComparison.Ordinal)), Is.True);
        Assert.That(texts.Any(t => t.Contains("fp32 FMA peak ") && t.Contains("; ONNX Runtime ")), Is.True, string.Join(" | ", texts));
    }

    [Test]
    public void BenchModelPanelsStandSideBySide()
    {
        string chart = PathOf("model.png");
        var (code, _, stderr) = Engine("bench-model", "--sample", "linear", "--T", "64", "--repeats", "1", "--threads", "1", "--plot", chart);
        Assert.That(code, Is.Zero, stderr);
        AssertPng(chart, width: 1800, height: 640);
        // The series' colors (legend and markers) in each panel's half: the second panel drawn leaves the first standing.
        using var image = SKBitmap.Decode(chart);
        foreach (int left in new[] { 0, 900 })
        {
            int colored = 0;
            for (int y = 0; y < 560; y++)
                for (int x = left; x < left + 900; x++)
                {
                    var c = image.GetPixel(x, y);
                    if (Math.Max(Math.Abs(c.Red - c.Green), Math.Abs(c.Green - c.Blue)) > 60) colored++;
                }
            Assert.That(colored, Is.GreaterThan(50), $"the panel at x = {left}");
        }
    }

    [TestCase("missing/chart.svg", "does not exist")]
    [TestCase("chart.txt", "written as .svg or .png, got '.txt'")]
    [TestCase("chart", "got 'no extension'")]
    public void BadChartPathsAreRefusedBeforeTiming(string name, string message)
    {
        foreach (var command in new[] { TinyGla, ["bench-model", "--sample", "linear", "--T", "64"] })
        {
            // Nothing on stdout (the error contract): no table, so nothing was timed.
            AssertOneLineError(Engine([.. command, "--plot", PathOf(name)]), 2, message);
        }
        Assert.That(System.IO.Directory.GetFiles(Directory), Is.Empty);
    }

    /// <summary>
    /// A chart that passes the checks before timing but cannot be written (here a symbolic link into a missing folder) is an
    /// error, and an error leaves stdout empty: no JSON document or table beside exit code 1.
    /// </summary>
    [Test]
    public void AChartThatCannotBeWrittenLeavesNoReportOnStdout()
    {
        string chart = PathOf("chart.svg");
        File.CreateSymbolicLink(chart, PathOf("missing/chart.svg"));
        foreach (var command in new[] { TinyGla, ["bench-model", "--sample", "linear", "--T", "16", "--repeats", "1", "--threads", "1"] })
            foreach (var json in new[] { true, false })
                AssertOneLineError(Engine([.. command, .. json ? new[] { "--json" } : [], "--plot", chart]), 1, $"--plot {chart}: cannot be written");
    }

    [Test]
    public void BenchModelChartsOnlySampleRuns()
    {
        AssertOneLineError(Engine("bench-model", PathOf("model.onnx"), "--plot", PathOf("chart.svg")), 2, "--plot draws the --sample runs against T");
    }

    /// <summary>The SVG parsed as XML: the text of each text element.</summary>
    private static List<string> SvgTexts(string path)
    {
        XNamespace svg = "http://www.w3.org/2000/svg";
        var root = XDocument.Load(path).Root!;
        Assert.That(root.Name, Is.EqualTo(svg + "svg"));
        return root.Descendants(svg + "text").Select(t => t.Value.Trim()).ToList();
    }

    /// <summary>The PNG signature, an IHDR chunk first with the expected size, and an IEND chunk last.</summary>
    private static void AssertPng(string path, int width, int height)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Assert.That(bytes.Take(8), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }));
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, 12, 4), Is.EqualTo("IHDR"));
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(16)), Is.EqualTo(width));
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(bytes.AsSpan(20)), Is.EqualTo(height));
        Assert.That(System.Text.Encoding.ASCII.GetString(bytes, bytes.Length - 8, 4), Is.EqualTo("IEND"));
    }
}

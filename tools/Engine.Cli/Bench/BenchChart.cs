using System.Globalization;
using Engine.IO;
using Engine.Onnx;
using ScottPlot;
using SkiaSharp;

namespace Engine.Cli;

/// <summary>
/// One line of a chart: its legend label, its points (T, value), filled circles or open squares at the points (not dashes:
/// Skia's SVG output draws no dashed lines); lines with the same color key share a color.
/// </summary>
public sealed record ChartSeries(string Label, IReadOnlyList<(double X, double Y)> Points, bool OpenMarkers = false, string? ColorKey = null);

/// <summary>--plot FILE.svg|FILE.png: the bench commands' results drawn against T, one panel per measure, side by side.</summary>
public static class BenchChart
{
    private const int PanelWidth = 900, Height = 640;

    /// <summary>
    /// The --plot path, checked before anything is timed: an .svg or .png file in a folder that exists; null without --plot.
    /// Another is a bad option value (exit code 2).
    /// </summary>
    public static string? Target(string? path)
    {
        if (path is null) return null;
        string extension = Path.GetExtension(path).ToLowerInvariant();
        if (extension is not (".svg" or ".png"))
            throw new UsageException($"--plot {path}: the chart is written as .svg or .png, got '{(extension.Length == 0 ? "no extension" : extension)}'");
        if (Directory.Exists(path)) throw new UsageException($"--plot {path}: is a folder; give an .svg or .png file to write");
        string folder = Path.GetDirectoryName(Path.GetFullPath(path))!;
        if (!Directory.Exists(folder)) throw new UsageException($"--plot {path}: the folder {folder} does not exist");
        return path;
    }

    /// <summary>The caption's lines: the machine; its fp32 FMA peak (or that it was not measured), ONNX Runtime's version, the date.</summary>
    public static string[] Caption(string machine, double? peakGFlops) =>
    [
        machine,
        "fp32 FMA peak " + (peakGFlops is null ? "not measured" : $"{peakGFlops:F1} GFLOP/s (measured in this run)") +
        $"; ONNX Runtime {OrtInfo.Version}; {DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)}",
    ];

    /// <summary>
    /// A panel: the series against T with markers at the measured points; log-log axes where T spans a decade or more
    /// (points at T = 0 or a value of 0 cannot be drawn there and are left out).
    /// </summary>
    public static Plot Panel(string title, string yLabel, IReadOnlyList<ChartSeries> series)
    {
        var xs = series.SelectMany(s => s.Points).Select(p => p.X).Where(x => x > 0).ToArray();
        bool log = xs.Length > 0 && xs.Max() >= 10 * xs.Min();
        var plot = new Plot();
        plot.Title(title, size: 14);
        plot.XLabel(log ? "T (tokens, log scale)" : "T (tokens)");
        plot.YLabel(log ? yLabel + " (log scale)" : yLabel);
        var colors = new Dictionary<string, Color>();
        var palette = new ScottPlot.Palettes.Category10();
        var drawn = new List<(double X, double Y)>();
        foreach (var s in series)
        {
            var points = s.Points.Where(p => !log || (p.X > 0 && p.Y > 0)).OrderBy(p => p.X).ToArray();
            // A series with no point to draw on log axes (measured only at T = 0, or as 0) gets no legend entry either.
            if (points.Length == 0) continue;
            drawn.AddRange(points.Select(p => (p.X, p.Y)));
            string key = s.ColorKey ?? s.Label;
            if (!colors.TryGetValue(key, out var color)) colors[key] = color = palette.GetColor(colors.Count);
            var line = plot.Add.Scatter(points.Select(p => log ? Math.Log10(p.X) : p.X).ToArray(), points.Select(p => log ? Math.Log10(p.Y) : p.Y).ToArray(), color);
            line.LegendText = s.Label;
            line.MarkerSize = 8;
            line.MarkerShape = s.OpenMarkers ? MarkerShape.OpenSquare : MarkerShape.FilledCircle;
        }
        if (log && drawn.Count > 0)
        {
            plot.Axes.Bottom.TickGenerator = LogTicks(drawn.Select(p => p.X));
            plot.Axes.Left.TickGenerator = LogTicks(drawn.Select(p => p.Y));
        }
        plot.Legend.Alignment = Alignment.UpperLeft;
        plot.ShowLegend();
        return plot;
    }

    /// <summary>Writes the panels side by side, the caption under them, as SVG or PNG (by the file's extension).</summary>
    public static void Save(string path, IReadOnlyList<string> caption, IReadOnlyList<Plot> panels)
    {
        const int lineHeight = 20;
        int width = PanelWidth * panels.Count, captionHeight = lineHeight * caption.Count + 12;
        // ScottPlot draws a panel a second time when the first draw moved its layout: settle it first, so the SVG holds it once.
        foreach (var panel in panels) panel.RenderInMemory(PanelWidth, Height - captionHeight);
        void Draw(SKCanvas canvas)
        {
            canvas.Clear(SKColors.White);
            for (int i = 0; i < panels.Count; i++)
            {
                // Each panel clears its figure first: clipped to its own place, so it leaves the others standing.
                canvas.Save();
                canvas.ClipRect(new SKRect(i * PanelWidth, 0, (i + 1) * PanelWidth, Height - captionHeight));
                panels[i].Render(canvas, new PixelRect(i * PanelWidth, (i + 1) * PanelWidth, Height - captionHeight, 0));
                canvas.Restore();
            }
            using var font = new SKFont(SKTypeface.Default, 14);
            using var paint = new SKPaint { Color = SKColors.Black, IsAntialias = true };
            for (int i = 0; i < caption.Count; i++)
                canvas.DrawText(caption[i], 12, Height - captionHeight + lineHeight * (i + 1), font, paint);
        }
        bool svg = Path.GetExtension(path).Equals(".svg", StringComparison.OrdinalIgnoreCase);
        try
        {
            OutputFile.Write(path, stream =>
            {
                if (svg)
                {
                    // The SVG is complete once the canvas is disposed, before the file is moved into place.
                    using var canvas = SKSvgCanvas.Create(new SKRect(0, 0, width, Height), stream);
                    Draw(canvas);
                    return;
                }
                using var surface = SKSurface.Create(new SKImageInfo(width, Height));
                Draw(surface.Canvas);
                using var image = surface.Snapshot();
                using var png = image.Encode(SKEncodedImageFormat.Png, 100);
                png.SaveTo(stream);
            });
        }
        // Named as the option gave it.
        catch (IOException e)
        {
            throw new IOException($"--plot {Cli.OneLine(e)}", e);
        }
    }

    /// <summary>Says where the chart went: on stdout, or on stderr where stdout carries JSON.</summary>
    public static void Report(CliContext context, string path, bool json) =>
        (json ? context.Error : context.Out).WriteLine($"chart written to {Path.GetFullPath(path)}");

    /// <summary>
    /// Ticks of a log10 axis over <paramref name="values"/>, labelled with the values themselves: at the powers of ten where
    /// the values span two decades or more, else at 1, 2 and 5 times them, else at every multiple, so that a range holding
    /// no power of ten (4 to 9 ms) still has labels, and at the lowest and highest values where not even two multiples fall
    /// between them (21 to 28 µs); minor ticks at the other multiples.
    /// </summary>
    private static ScottPlot.TickGenerators.NumericManual LogTicks(IEnumerable<double> values)
    {
        var logs = values.Select(Math.Log10).ToArray();
        double low = logs.Min(), high = logs.Max();
        int first = (int)Math.Floor(low) - 1, last = (int)Math.Ceiling(high) + 1;
        int[] LabelledIn(int[] mantissas) => Enumerable.Range(first, last - first + 1)
            .SelectMany(k => mantissas.Where(m => Math.Log10(m) + k >= low && Math.Log10(m) + k <= high)).ToArray();
        int[] labelled = high - low >= 2 ? [1] : LabelledIn([1, 2, 5]).Length >= 2 ? [1, 2, 5] : [1, 2, 3, 4, 5, 6, 7, 8, 9];
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (int k = first; k <= last; k++)
            for (int m = 1; m <= 9; m++)
            {
                double at = Math.Log10(m) + k;
                if (labelled.Contains(m)) ticks.AddMajor(at, (m * Math.Pow(10, k)).ToString("G4", CultureInfo.InvariantCulture));
                else ticks.AddMinor(at);
            }
        if (LabelledIn([1, 2, 3, 4, 5, 6, 7, 8, 9]).Length < 2)
            foreach (double end in (double[])(high > low ? [low, high] : [low])) ticks.AddMajor(end, Math.Pow(10, end).ToString("G3", CultureInfo.InvariantCulture));
        return ticks;
    }
}

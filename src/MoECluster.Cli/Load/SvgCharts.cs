using System.Globalization;
using System.Text;

namespace MoECluster.Cli.Load;

/// <summary>One line of a line chart: its legend name and its points (x, y), x ascending.</summary>
internal sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);

/// <summary>A point of a labelled line chart: its place and the text written beside it.</summary>
internal sealed record LabelledPoint(double X, double Y, string Label);

/// <summary>One line of a labelled line chart: its legend name and its points, joined in the order given (x need not rise).</summary>
internal sealed record LabelledSeries(string Name, IReadOnlyList<LabelledPoint> Points);

/// <summary>One group of bars of a bar chart: its label and one value per series (null: no bar).</summary>
internal sealed record BarGroup(string Label, IReadOnlyList<double?> Values, string? Note);

/// <summary>One row of a heatmap: its label and the value of each column in 0..1 (the colour), with the raw count shown on hover.</summary>
internal sealed record HeatmapRow(string Label, IReadOnlyList<double> Shares, IReadOnlyList<long> Counts);

/// <summary>
/// A small writer of self-contained SVG charts (line, bar, heatmap) for the HTML report: axes with tick labels,
/// legends, every text escaped, invariant number formatting, no script and no external resource.
/// </summary>
internal static class SvgCharts
{
    private const double Width = 720;
    private const double Height = 360;
    private const double Left = 70;
    private const double Right = 170;
    private const double Top = 36;
    private const double Bottom = 52;

    /// <summary>Escapes text for XML content and attribute values.</summary>
    public static string Escape(string text)
    {
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
        {
            sb.Append(c switch
            {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ when char.IsControl(c) && c is not '\n' and not '\t' => " ",
                _ => c.ToString(),
            });
        }

        return sb.ToString();
    }

    public static string Colour(int i) => (i % 8) switch
    {
        0 => "#1f77b4",
        1 => "#ff7f0e",
        2 => "#2ca02c",
        3 => "#d62728",
        4 => "#9467bd",
        5 => "#8c564b",
        6 => "#e377c2",
        _ => "#7f7f7f",
    };

    /// <summary>A number for a label: up to <paramref name="decimals"/> decimals, invariant.</summary>
    public static string Label(double v, int decimals = 2) =>
        v.ToString("0." + new string('#', Math.Max(decimals, 1)), CultureInfo.InvariantCulture);

    private static string N(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>Linear ticks at a 1, 2 or 5 times a power of ten step covering [min, max].</summary>
    public static IReadOnlyList<double> LinearTicks(double min, double max, int target = 5)
    {
        if (!(max > min))
        {
            max = min + 1;
        }

        double raw = (max - min) / target;
        double magnitude = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = NiceStep(raw, magnitude);
        var ticks = new List<double>();
        for (double t = Math.Ceiling(min / step) * step; t <= max + step * 1e-9; t += step)
        {
            ticks.Add(Math.Abs(t) < step * 1e-9 ? 0 : t);
        }

        return ticks;
    }

    private static double NiceStep(double raw, double magnitude)
    {
        double f = raw / magnitude;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * magnitude;
    }

    /// <summary>Log ticks at 1, 2, 5 times the powers of ten within [min, max] (both positive).</summary>
    public static IReadOnlyList<double> LogTicks(double min, double max)
    {
        var ticks = new List<double>();
        int lo = (int)Math.Floor(Math.Log10(min)), hi = (int)Math.Ceiling(Math.Log10(max));
        int[] mantissas = hi - lo > 4 ? [1] : [1, 2, 5];
        for (int e = lo; e <= hi; e++)
        {
            foreach (int m in mantissas)
            {
                double t = m * Math.Pow(10, e);
                if (t >= min * (1 - 1e-9) && t <= max * (1 + 1e-9))
                {
                    ticks.Add(t);
                }
            }
        }

        return ticks;
    }

    private static StringBuilder Open(string title, double height = Height)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{N(Width)}\" height=\"{N(height)}\" viewBox=\"0 0 {N(Width)} {N(height)}\" font-family=\"sans-serif\" font-size=\"11\">");
        sb.Append(CultureInfo.InvariantCulture, $"<title>{Escape(title)}</title>");
        sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"0\" y=\"0\" width=\"{N(Width)}\" height=\"{N(height)}\" fill=\"#ffffff\"/>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Width / 2)}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">{Escape(title)}</text>");
        return sb;
    }

    private static void Legend(StringBuilder sb, IReadOnlyList<string> names)
    {
        double x = Width - Right + 14;
        for (int i = 0; i < names.Count; i++)
        {
            double y = Top + 8 + i * 18;
            sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{N(x)}\" y=\"{N(y - 8)}\" width=\"12\" height=\"10\" fill=\"{Colour(i)}\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + 18)}\" y=\"{N(y + 1)}\">{Escape(names[i])}</text>");
        }
    }

    private static void AxisLabels(StringBuilder sb, string xLabel, string yLabel, double height)
    {
        double plotBottom = height - Bottom;
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Left + (Width - Left - Right) / 2)}\" y=\"{N(height - 10)}\" text-anchor=\"middle\">{Escape(xLabel)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"16\" y=\"{N(Top + (plotBottom - Top) / 2)}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {N(Top + (plotBottom - Top) / 2)})\">{Escape(yLabel)}</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(Left)}\" y1=\"{N(plotBottom)}\" x2=\"{N(Width - Right)}\" y2=\"{N(plotBottom)}\" stroke=\"#000000\"/>");
        sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(Left)}\" y1=\"{N(Top)}\" x2=\"{N(Left)}\" y2=\"{N(plotBottom)}\" stroke=\"#000000\"/>");
    }

    private static void YTicks(StringBuilder sb, IReadOnlyList<double> ticks, Func<double, double> toY, int decimals)
    {
        foreach (double t in ticks)
        {
            double y = toY(t);
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(Left - 4)}\" y1=\"{N(y)}\" x2=\"{N(Width - Right)}\" y2=\"{N(y)}\" stroke=\"#dddddd\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Left - 6)}\" y=\"{N(y + 4)}\" text-anchor=\"end\">{Escape(Label(t, decimals))}</text>");
        }
    }

    /// <summary>A line chart, x linear or logarithmic (only positive x are drawn then), y linear from <paramref name="yMin"/>.</summary>
    public static string LineChart(string title, string xLabel, string yLabel, IReadOnlyList<ChartSeries> series, bool logX, double yMin = 0, double? yMax = null)
    {
        var sb = Open(title);
        double plotBottom = Height - Bottom;
        var points = series.SelectMany(s => s.Points).Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!logX || p.X > 0)).ToList();
        if (points.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Width / 2)}\" y=\"{N(Height / 2)}\" text-anchor=\"middle\">no data</text></svg>");
            return sb.ToString();
        }

        double xMin = points.Min(p => p.X), xMax = points.Max(p => p.X);
        double top = yMax ?? Math.Max(points.Max(p => p.Y), yMin + 1e-9);
        IReadOnlyList<double> yTicks = LinearTicks(yMin, top);
        top = Math.Max(top, yTicks[^1]);
        IReadOnlyList<double> xTicks;
        Func<double, double> toX;
        if (logX)
        {
            xMin = Math.Pow(10, Math.Floor(Math.Log10(xMin) * 4) / 4);
            xMax = Math.Pow(10, Math.Ceiling(Math.Log10(xMax) * 4) / 4);
            if (xMax <= xMin)
            {
                xMax = xMin * 10;
            }

            double l0 = Math.Log10(xMin), l1 = Math.Log10(xMax);
            xTicks = LogTicks(xMin, xMax);
            toX = x => Left + (Math.Log10(x) - l0) / (l1 - l0) * (Width - Left - Right);
        }
        else
        {
            xTicks = LinearTicks(xMin, xMax);
            if (xMax <= xMin)
            {
                xMax = xMin + 1;
            }

            double a = Math.Min(xMin, xTicks[0]), b = Math.Max(xMax, xTicks[^1]);
            toX = x => Left + (x - a) / (b - a) * (Width - Left - Right);
        }

        double toY(double y) => plotBottom - (y - yMin) / (top - yMin) * (plotBottom - Top);
        YTicks(sb, yTicks, toY, 2);
        foreach (double t in xTicks)
        {
            double x = toX(t);
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(x)}\" y1=\"{N(Top)}\" x2=\"{N(x)}\" y2=\"{N(plotBottom + 4)}\" stroke=\"#eeeeee\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x)}\" y=\"{N(plotBottom + 16)}\" text-anchor=\"middle\">{Escape(Label(t, 3))}</text>");
        }

        AxisLabels(sb, xLabel, yLabel, Height);
        for (int i = 0; i < series.Count; i++)
        {
            var pts = series[i].Points.Where(p => double.IsFinite(p.X) && double.IsFinite(p.Y) && (!logX || p.X > 0))
                .Select(p => $"{N(toX(p.X))},{N(toY(p.Y))}").ToList();
            if (pts.Count == 1)
            {
                string[] xy = pts[0].Split(',');
                sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{xy[0]}\" cy=\"{xy[1]}\" r=\"3\" fill=\"{Colour(i)}\"/>");
            }
            else if (pts.Count > 1)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{Colour(i)}\" stroke-width=\"1.5\" points=\"{string.Join(' ', pts)}\"/>");
            }
        }

        Legend(sb, [.. series.Select(s => s.Name)]);
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>
    /// A line chart whose points are marked and labelled (a circle with a hover title and a text per point), both
    /// axes linear from 0, points joined in the order given: the throughput–latency curve of a sweep.
    /// </summary>
    public static string LabelledLineChart(string title, string xLabel, string yLabel, IReadOnlyList<LabelledSeries> series)
    {
        var sb = Open(title);
        double plotBottom = Height - Bottom;
        static bool Finite(LabelledPoint p) => double.IsFinite(p.X) && double.IsFinite(p.Y);
        var points = series.SelectMany(s => s.Points).Where(Finite).ToList();
        if (points.Count == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Width / 2)}\" y=\"{N(Height / 2)}\" text-anchor=\"middle\">no data</text></svg>");
            return sb.ToString();
        }

        double right = Math.Max(points.Max(p => p.X), 1e-9), top = Math.Max(points.Max(p => p.Y), 1e-9);
        var xTicks = LinearTicks(0, right);
        var yTicks = LinearTicks(0, top);
        right = Math.Max(right, xTicks[^1]);
        top = Math.Max(top, yTicks[^1]);
        double toX(double x) => Left + x / right * (Width - Left - Right);
        double toY(double y) => plotBottom - y / top * (plotBottom - Top);
        YTicks(sb, yTicks, toY, 2);
        foreach (double t in xTicks)
        {
            double x = toX(t);
            sb.Append(CultureInfo.InvariantCulture, $"<line x1=\"{N(x)}\" y1=\"{N(Top)}\" x2=\"{N(x)}\" y2=\"{N(plotBottom + 4)}\" stroke=\"#eeeeee\"/>");
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x)}\" y=\"{N(plotBottom + 16)}\" text-anchor=\"middle\">{Escape(Label(t, 3))}</text>");
        }

        AxisLabels(sb, xLabel, yLabel, Height);
        for (int i = 0; i < series.Count; i++)
        {
            var pts = series[i].Points.Where(Finite).ToList();
            if (pts.Count > 1)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{Colour(i)}\" stroke-width=\"1.5\" points=\"{string.Join(' ', pts.Select(p => $"{N(toX(p.X))},{N(toY(p.Y))}"))}\"/>");
            }

            foreach (var p in pts)
            {
                double x = toX(p.X), y = toY(p.Y);
                sb.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{N(x)}\" cy=\"{N(y)}\" r=\"3.5\" fill=\"{Colour(i)}\"><title>{Escape($"{series[i].Name} {p.Label}: ({Label(p.X, 1)}, {Label(p.Y, 3)})")}</title></circle>");
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + 5)}\" y=\"{N(y - 5)}\" fill=\"{Colour(i)}\">{Escape(p.Label)}</text>");
            }
        }

        Legend(sb, [.. series.Select(s => s.Name)]);
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>Grouped bars: one group per <see cref="BarGroup"/>, one bar per series; each group's note printed under its label, the subtitle under the legend.</summary>
    public static string BarChart(string title, string yLabel, IReadOnlyList<string> seriesNames, IReadOnlyList<BarGroup> groups, string? subtitle = null)
    {
        var sb = Open(title);
        if (subtitle is not null)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Width - Right + 14)}\" y=\"{N(Top + 8 + (seriesNames.Count + 1) * 18)}\">{Escape(subtitle)}</text>");
        }

        double plotBottom = Height - Bottom;
        var values = groups.SelectMany(g => g.Values).OfType<double>().Where(double.IsFinite).ToList();
        double top = values.Count == 0 ? 1 : Math.Max(values.Max(), 1e-9);
        var yTicks = LinearTicks(0, top);
        top = Math.Max(top, yTicks[^1]);
        double toY(double y) => plotBottom - y / top * (plotBottom - Top);
        YTicks(sb, yTicks, toY, 1);
        AxisLabels(sb, string.Empty, yLabel, Height);
        double groupWidth = (Width - Left - Right) / Math.Max(groups.Count, 1);
        double barWidth = groupWidth * 0.7 / Math.Max(seriesNames.Count, 1);
        for (int g = 0; g < groups.Count; g++)
        {
            double x0 = Left + g * groupWidth + groupWidth * 0.15;
            for (int i = 0; i < groups[g].Values.Count; i++)
            {
                if (groups[g].Values[i] is not double v || !double.IsFinite(v))
                {
                    continue;
                }

                double x = x0 + i * barWidth, y = toY(v);
                sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{N(x)}\" y=\"{N(y)}\" width=\"{N(barWidth * 0.92)}\" height=\"{N(plotBottom - y)}\" fill=\"{Colour(i)}\"><title>{Escape($"{groups[g].Label} {seriesNames[i]}: {Label(v, 1)}")}</title></rect>");
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x + barWidth * 0.46)}\" y=\"{N(y - 4)}\" text-anchor=\"middle\">{Escape(Label(v, 1))}</text>");
            }

            double cx = Left + (g + 0.5) * groupWidth;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(cx)}\" y=\"{N(plotBottom + 16)}\" text-anchor=\"middle\">{Escape(groups[g].Label)}</text>");
            if (groups[g].Note is { } note)
            {
                sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(cx)}\" y=\"{N(plotBottom + 30)}\" text-anchor=\"middle\" font-weight=\"bold\">{Escape(note)}</text>");
            }
        }

        Legend(sb, seriesNames);
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>A heatmap: one row per <see cref="HeatmapRow"/>, one cell per column, white (share 0) to dark blue (the largest share), with a colour scale.</summary>
    public static string Heatmap(string title, string xLabel, IReadOnlyList<HeatmapRow> rows)
    {
        const double rowHeight = 22;
        int columns = rows.Count == 0 ? 0 : rows.Max(r => r.Shares.Count);
        double height = Top + Math.Max(rows.Count, 1) * rowHeight + Bottom;
        var sb = Open(title, height);
        double plotBottom = height - Bottom;
        double left = 140;
        if (rows.Count == 0 || columns == 0)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(Width / 2)}\" y=\"{N(Top + 14)}\" text-anchor=\"middle\">no expert load</text></svg>");
            return sb.ToString();
        }

        double cellWidth = (Width - left - Right) / columns;
        double max = rows.SelectMany(r => r.Shares).DefaultIfEmpty(0).Max();
        double scale = max > 0 ? max : 1;
        for (int r = 0; r < rows.Count; r++)
        {
            double y = Top + r * rowHeight;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(left - 6)}\" y=\"{N(y + rowHeight / 2 + 4)}\" text-anchor=\"end\">{Escape(rows[r].Label)}</text>");
            for (int c = 0; c < rows[r].Shares.Count; c++)
            {
                double share = Math.Clamp(rows[r].Shares[c], 0, 1);
                long count = c < rows[r].Counts.Count ? rows[r].Counts[c] : 0;
                sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{N(left + c * cellWidth)}\" y=\"{N(y)}\" width=\"{N(cellWidth)}\" height=\"{N(rowHeight)}\" fill=\"{Shade(share / scale)}\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>{Escape($"{rows[r].Label} expert {c}: {count} tokens ({Label(share * 100, 1)} %)")}</title></rect>");
            }
        }

        foreach (double t in LinearTicks(0, columns - 1, Math.Min(columns, 8)).Where(t => t == Math.Floor(t)))
        {
            double x = left + (t + 0.5) * cellWidth;
            sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(x)}\" y=\"{N(plotBottom + 16)}\" text-anchor=\"middle\">{Escape(Label(t, 0))}</text>");
        }

        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(left + (Width - left - Right) / 2)}\" y=\"{N(height - 10)}\" text-anchor=\"middle\">{Escape(xLabel)}</text>");

        // Colour scale: share of the row's tokens, 0 to the largest share shown.
        double sx = Width - Right + 20;
        for (int i = 0; i <= 10; i++)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<rect x=\"{N(sx)}\" y=\"{N(Top + (10 - i) * 12)}\" width=\"16\" height=\"12\" fill=\"{Shade(i / 10.0)}\"/>");
        }

        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(sx + 22)}\" y=\"{N(Top + 10)}\">{Escape(Label(max * 100, 1))} % of tokens</text>");
        sb.Append(CultureInfo.InvariantCulture, $"<text x=\"{N(sx + 22)}\" y=\"{N(Top + 130)}\">0 %</text>");
        sb.Append("</svg>");
        return sb.ToString();
    }

    /// <summary>White at 0 to dark blue at 1.</summary>
    private static string Shade(double t)
    {
        t = Math.Clamp(double.IsFinite(t) ? t : 0, 0, 1);
        int r = (int)Math.Round(255 + (8 - 255) * t), g = (int)Math.Round(255 + (48 - 255) * t), b = (int)Math.Round(255 + (107 - 255) * t);
        return $"#{r:x2}{g:x2}{b:x2}";
    }
}

using System.Text.Json;

namespace Engine.Onnx;

/// <summary>Reads ONNX Runtime's profile (the JSON trace <see cref="ModelSession.EndProfiling"/> returns).</summary>
public static class OrtProfile
{
    /// <summary>
    /// Milliseconds per run spent in the kernels of nodes of the given op types (summed over those nodes; every node
    /// when <paramref name="opTypes"/> is null), one entry per run in order.
    /// </summary>
    public static double[] OpMillisecondsPerRun(string profileFile, IReadOnlySet<string>? opTypes)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(profileFile));
        var perNode = new Dictionary<string, List<double>>();
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            if (e.GetProperty("cat").GetString() != "Node") continue;
            string name = e.GetProperty("name").GetString() ?? "";
            if (!name.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
            if (!e.TryGetProperty("args", out var args) || !args.TryGetProperty("op_name", out var op) || !(opTypes?.Contains(op.GetString() ?? "") ?? true)) continue;
            if (!perNode.TryGetValue(name, out var times)) perNode[name] = times = [];
            times.Add(e.GetProperty("dur").GetInt64() / 1000.0);
        }
        int runs = perNode.Count == 0 ? 0 : perNode.Values.Min(t => t.Count);
        var total = new double[runs];
        foreach (var times in perNode.Values)
            for (int r = 0; r < runs; r++) total[r] += times[r];
        return total;
    }
}

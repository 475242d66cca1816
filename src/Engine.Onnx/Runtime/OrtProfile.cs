using System.Text.Json;

namespace Engine.Onnx;

/// <summary>A node as ORT's profile names it: its name in the model and its op type.</summary>
public readonly record struct ProfiledNode(string Name, string OpType);

/// <summary>Reads ONNX Runtime's profile (the JSON trace <see cref="ModelSession.EndProfiling"/> returns).</summary>
public static class OrtProfile
{
    private const string KernelTime = "_kernel_time";

    /// <summary>
    /// Milliseconds per run spent in the kernels of the nodes <paramref name="selects"/> picks (summed over those nodes; every
    /// node when it is null), one entry per run in order.
    /// </summary>
    public static double[] MillisecondsPerRun(string profileFile, Func<ProfiledNode, bool>? selects)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(profileFile));
        var perNode = new Dictionary<string, List<double>>();
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            if (e.GetProperty("cat").GetString() != "Node") continue;
            string name = e.GetProperty("name").GetString() ?? "";
            if (!name.EndsWith(KernelTime, StringComparison.Ordinal)) continue;
            if (!e.TryGetProperty("args", out var args) || !args.TryGetProperty("op_name", out var op)) continue;
            if (selects is not null && !selects(new ProfiledNode(name[..^KernelTime.Length], op.GetString() ?? ""))) continue;
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

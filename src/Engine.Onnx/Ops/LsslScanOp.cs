using System.Numerics.Tensors;
using Engine.Kernels.Lssl;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// ai.engine LsslScan: the Linear State-Space Layer, H independent channels each a single-input single-output
/// state-space model of state size N, discretized once when the model loads:
///   x_k = Ā x_(k−1) + B̄ u_k,   y_k = C x_k + D u_k
/// inputs u (B,L,H), past_state (B,H,N)?, and the parameters as initializers: A (N,N) shared, (H,N,N) per
/// channel or (H,N) diagonal; B (N) or (H,N); C (H,N); D (H); dt (H) (Δ, or log Δ with log_dt = 1);
/// outputs y (B,L,H), present_state (B,H,N)?; attributes discretization (bilinear | zoh | forward_euler |
/// backward_euler | gbt with alpha), alpha, log_dt, state_matrix (dense_shared | dense_per_channel | diagonal,
/// only needed when H = N and A is 2-D), chunk_length (16..256), mode (auto | recurrent | scan | conv).
/// </summary>
internal static class LsslScanSignature
{
    public const string OpType = "LsslScan";
    public static readonly string[] InputNames = ["u", "past_state", "A", "B", "C", "D", "dt"];
    public static readonly string[] OutputNames = ["y", "present_state"];
    public static readonly string[] AttributeNames = ["discretization", "alpha", "log_dt", "state_matrix", "chunk_length", "mode"];
    public const int U = 0, PastState = 1, A = 2, B = 3, C = 4, D = 5, Dt = 6;
}

/// <summary>The LSSL scan as an engine-domain op: the layer is built (and discretized) once per node.</summary>
internal sealed class LsslScanOp : EngineOp
{
    public override string Name => LsslScanSignature.OpType;

    public override IReadOnlyList<OpParameter> Inputs { get; } =
        LsslScanSignature.InputNames.Select(name => new OpParameter(name, Optional: true)).ToArray();

    public override IReadOnlyList<OpParameter> Outputs { get; } = [new("y", false), new("present_state", true)];

    public override IEngineKernel CreateKernel(KernelInfo info, EngineDevice device)
    {
        string node = $"LsslScan node '{info.NodeName}'";
        if (info.InputCount > LsslScanSignature.InputNames.Length)
            throw new ModelNodeException($"{node}: expected at most 7 inputs (u, past_state, A, B, C, D, dt), got {info.InputCount}");
        var u = info.Input(LsslScanSignature.U);
        if (!u.Present) throw new ModelNodeException($"{node}: the required input u is missing");
        if (u.Rank is int ru && ru != 3) throw new ModelNodeException($"{node}: input u ('{u.Name}') must have rank 3 (B, L, H), the model gives rank {ru}");
        var past = info.Input(LsslScanSignature.PastState);
        if (past.Present && past.Rank is int rp && rp != 3) throw new ModelNodeException($"{node}: input past_state ('{past.Name}') must have rank 3 (B, H, N), the model gives rank {rp}");

        var parameters = new Tensor<float>[5];
        for (int i = 0; i < 5; i++)
        {
            int index = LsslScanSignature.A + i;
            string name = LsslScanSignature.InputNames[index];
            if (!info.Input(index).Present) throw new ModelNodeException($"{node}: the required input {name} is missing");
            var values = info.ConstantFloats(index, out var dims)
                ?? throw new ModelNodeException($"{node}: input {name} ('{info.Input(index).Name}') must be a float32 initializer: the layer is discretized once, when the model loads");
            parameters[i] = Tensor.Create(values, Array.ConvertAll(dims, d => checked((nint)d)));
        }

        var options = new LsslOptions
        {
            Discretization = Discretization(info, node),
            LogDt = (info.Int("log_dt") ?? 0) switch
            {
                0 => false,
                1 => true,
                var other => throw new ModelNodeException($"{node}: log_dt must be 0 or 1, got {other}"),
            },
            StateMatrix = info.String("state_matrix") switch
            {
                null => null,
                "dense_shared" => LsslStateMatrix.DenseShared,
                "dense_per_channel" => LsslStateMatrix.DensePerChannel,
                "diagonal" => LsslStateMatrix.Diagonal,
                var other => throw new ModelNodeException($"{node}: state_matrix must be dense_shared, dense_per_channel or diagonal, got '{other}'"),
            },
            ChunkLength = info.Int("chunk_length") switch
            {
                null => null,
                // Checked here, against the value as given: one outside int's range would reach the layer's own check changed.
                long q when q is >= 0 and <= int.MaxValue && LsslConfig.ChunkLengths.Contains((int)q) => (int)q,
                var q => throw new ModelNodeException($"{node}: chunk_length must be one of {string.Join(", ", LsslConfig.ChunkLengths)}, got {q}"),
            },
        };
        var mode = info.String("mode") switch
        {
            null or "auto" => LsslMode.Auto,
            "recurrent" => LsslMode.Recurrent,
            "scan" => LsslMode.Scan,
            "conv" => LsslMode.Conv,
            var other => throw new ModelNodeException($"{node}: mode must be auto, recurrent, scan or conv, got '{other}'"),
        };
        LsslLayer layer;
        try
        {
            layer = new LsslLayer(parameters[0], parameters[1], parameters[2], parameters[3], parameters[4], options);
        }
        catch (ArgumentException e)
        {
            throw new ModelNodeException($"{node}: {NodeErrors.MessageOf(e)}");
        }
        if (u.Dim(2) is long h && h != layer.Channels)
        {
            layer.Dispose();
            throw new ModelNodeException($"{node}: u has {h} channels, C (H, N) has {layer.Channels}");
        }
        return new LsslScanKernel(node, layer, mode, device);
    }

    private static LsslDiscretization Discretization(KernelInfo info, string node)
    {
        float? alpha = info.Float("alpha");
        string method = info.String("discretization") ?? "bilinear";
        if (alpha is not null && method != "gbt") throw new ModelNodeException($"{node}: alpha is only used with discretization 'gbt', not '{method}'");
        return method switch
        {
            "bilinear" => LsslDiscretization.Bilinear,
            "zoh" => LsslDiscretization.ZeroOrderHold,
            "forward_euler" => LsslDiscretization.ForwardEuler,
            "backward_euler" => LsslDiscretization.BackwardEuler,
            "gbt" when alpha is float a && a >= 0f && a <= 1f => LsslDiscretization.Gbt(a),
            "gbt" => throw new ModelNodeException($"{node}: discretization 'gbt' needs alpha in [0, 1], got {(alpha?.ToString() ?? "none")}"),
            _ => throw new ModelNodeException($"{node}: discretization must be bilinear, zoh, forward_euler, backward_euler or gbt, got '{method}'"),
        };
    }
}

/// <summary>Runs a node's LSSL layer on ORT's tensors: u and y in place, the state through the layer's facade.</summary>
internal sealed class LsslScanKernel(string node, LsslLayer layer, LsslMode mode, EngineDevice device) : IEngineKernel
{
    public void Compute(KernelContext context)
    {
        var u = context.Input(LsslScanSignature.U) ?? throw new ArgumentException($"{node}: the required input u was not given", "u");
        if (u.Dims.Length != 3) throw new ArgumentException($"{node}: u: expected rank 3 (B, L, H), got shape {TensorData.Format(u.Dims)}", "u");
        long b = u.Dims[0], l = u.Dims[1], h = u.Dims[2];
        if (h != layer.Channels) throw new ArgumentException($"{node}: u: expected {layer.Channels} channels (B, L, H), got shape {TensorData.Format(u.Dims)}", "u");
        var past = context.Input(LsslScanSignature.PastState);
        var y = context.Output(0, [b, l, h]) ?? throw new ModelNodeException($"{node}: ORT gave no output tensor");
        var present = context.Output(1, [b, h, layer.StateSize]);
        if (past is OrtTensorView given && !given.Dims.SequenceEqual([b, h, (long)layer.StateSize]))
            throw new ArgumentException($"{node}: past_state: expected shape [{b}, {h}, {layer.StateSize}] (B, H, N), got {TensorData.Format(given.Dims)}", "past_state");
        var lengths = new nint[] { checked((nint)b), checked((nint)l), checked((nint)h) };
        var stateLengths = new nint[] { checked((nint)b), layer.Channels, layer.StateSize };
        NodeErrors.Guard(node, name => name switch { "initial_state" => "past_state", "final_state" => "present_state", null => "u", _ => name }, () =>
            layer.Forward(device, u.AsReadOnlyTensor<float>(lengths), y.AsTensor<float>(lengths),
                past is OrtTensorView p ? p.AsReadOnlyTensor<float>(stateLengths) : default,
                present is OrtTensorView s ? s.AsTensor<float>(stateLengths) : default, mode,
                new OrtParallelScheduler(context.Handle, device.Threads)));
    }

    public void Dispose() => layer.Dispose();
}

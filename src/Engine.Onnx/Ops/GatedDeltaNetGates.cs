using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Engine.Kernels.Common;
using Engine.Onnx.Interop;

namespace Engine.Onnx.Ops;

/// <summary>
/// A GatedDeltaNet call's log gate g and beta as the kernels take them ([B, T, Hv] or [B, T, Hv, dk], and
/// [B, T, Hv], fp32; each empty when the update rule takes none), computed once per call over whole rows, vectorized:
///   none      g = decay (ORT's memory itself when float32)
///   softplus  g = −exp(a_log)·softplus(decay + dt_bias),   softplus(x) = max(x, 0) + log1p(exp(−|x|))
///   sigmoid   g = gate_lower_bound·sigmoid(exp(a_log)·(decay + dt_bias))
///   beta      sigmoid(beta) with beta_activation sigmoid, else beta
/// sigmoid(y) = (y ≥ 0 ? 1 : e) / (1 + e) with e = exp(−|y|): every exponent of the data is ≤ 0. exp(a_log) is one
/// value per head; past float32 it saturates the gate as in ORT's kernel (a softplus gate of −∞ runs as the lowest finite
/// one, a factor of 0 either way; a decay of −∞ without one, <see cref="ResetNegativeInfinity"/>), and a gate of ∞·0, NaN
/// in ORT's kernel, is refused. Inputs that go through an activation are checked for NaN first, so a NaN never hides
/// behind a saturated sigmoid; ±∞ saturates it as in ORT's kernel (softplus(−∞) = 0, softplus(∞) a gate of −∞,
/// sigmoid(±∞) 1 or 0). The facade then checks g (finite, ≤ 0) and beta as for every call.
/// </summary>
internal ref struct GatedDeltaNetGates
{
    private float[]? _g, _beta, _scratch;
    private ResetGates<float> _gates;

    public readonly ReadOnlyTensorSpan<float> G => _gates.Tensor;
    public ReadOnlyTensorSpan<float> Beta { get; private set; }

    public static GatedDeltaNetGates From(GatedDeltaNetConfig config, in GatedDeltaNetCall call)
    {
        var gates = new GatedDeltaNetGates();
        try
        {
            nint b = call.ViewBatch, t = call.ViewTokens, hv = call.Hv;
            if (call.Decay is OrtTensorView decay)
            {
                int width = call.PerKeyDecay ? call.Hv * call.Dk : call.Hv;
                nint[] shape = call.PerKeyDecay ? [b, t, hv, call.Dk] : [b, t, hv];
                int n = checked((int)decay.ElementCount);
                gates._g = Copy(decay, config.Gate != DecayGateActivation.None);
                if (config.Gate != DecayGateActivation.None)
                {
                    var g = gates._g!.AsSpan(0, n);
                    RequireNotNaN(g, config, "decay");
                    gates._scratch = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
                    Activate(config, call, g, width, gates._scratch.AsSpan(0, n));
                }
                gates._gates = ResetGates<float>.Over(StridedView.Dense(gates._g is float[] copy ? copy.AsSpan(0, n) : decay.AsReadOnlySpan<float>(), shape));
            }
            if (call.Beta is not OrtTensorView beta) return gates;
            int betas = checked((int)beta.ElementCount);
            gates._beta = Copy(beta, config.BetaSigmoid);
            if (config.BetaSigmoid)
            {
                var values = gates._beta!.AsSpan(0, betas);
                RequireNotNaN(values, config, "beta");
                Sigmoid(values, values, 1f);
            }
            gates.Beta = StridedView.Dense(gates._beta is float[] copied ? copied.AsSpan(0, betas) : beta.AsReadOnlySpan<float>(), [b, t, hv]);
            return gates;
        }
        catch
        {
            gates.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A pooled fp32 copy of the tensor when it is float16, bfloat16 or <paramref name="writable"/> (an activation writes
    /// it); null when ORT's float32 memory is read where it lies.
    /// </summary>
    private static float[]? Copy(OrtTensorView x, bool writable)
    {
        if (x.ElementType == Ort.ElementFloat && !writable) return null;
        int n = checked((int)x.ElementCount);
        var rented = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
        var copy = rented.AsSpan(0, n);
        if (x.ElementType == Ort.ElementFloat16) TensorPrimitives.ConvertToSingle(x.AsReadOnlySpan<Half>(), copy);
        else if (x.ElementType == Ort.ElementBFloat16) BFloat16Values.ToSingle(x.AsReadOnlySpan<ushort>(), copy);
        else x.AsReadOnlySpan<float>().CopyTo(copy);
        return rented;
    }

    /// <summary>g in place from decay (rows of <paramref name="width"/>): the softplus or sigmoid gate with a_log and dt_bias.</summary>
    private static void Activate(GatedDeltaNetConfig config, in GatedDeltaNetCall call, Span<float> g, int width, Span<float> scratch)
    {
        var aLog = call.ALog!.Value.AsReadOnlySpan<float>();
        var dtBias = call.DtBias!.Value.AsReadOnlySpan<float>();
        RequireFinite(aLog, config, "a_log");
        RequireFinite(dtBias, config, "dt_bias");
        // Per column of a row: dt_bias (per head, repeated over the key dims of a per-key decay, or per key dim) and exp(a_log).
        int perHead = width / call.Hv;
        var bias = new float[width];
        var rate = new float[width];
        for (int i = 0; i < width; i++)
        {
            int h = i / perHead;
            float a = MathF.Exp(aLog[h]);
            bias[i] = dtBias.Length == width ? dtBias[i] : dtBias[h];
            rate[i] = config.Gate == DecayGateActivation.Softplus ? -a : a;
        }
        for (int row = 0; row < g.Length; row += width) TensorPrimitives.Add(g.Slice(row, width), bias, g.Slice(row, width));
        if (config.Gate == DecayGateActivation.Softplus)
        {
            // softplus(x) = max(x, 0) + log1p(exp(−|x|)), then times −exp(a_log).
            Log1pExpNegativeMagnitude(g, scratch);
            TensorPrimitives.Max(g, 0f, g);
            TensorPrimitives.Add(g, scratch, g);
            for (int row = 0; row < g.Length; row += width) TensorPrimitives.Multiply(g.Slice(row, width), rate, g.Slice(row, width));
            RefuseInfinityTimesZero(g, aLog, width, perHead, config);
            // exp(a_log) or the product past float32 is a gate of −∞, whose factor ORT's kernel takes as 0: so is the lowest
            // finite gate's, which the kernels take as a log gate (NaN stays NaN, refused above).
            TensorPrimitives.Max(g, float.MinValue, g);
        }
        else
        {
            // exp(a_log) or the product past float32 saturates the sigmoid, as in ORT's kernel.
            for (int row = 0; row < g.Length; row += width) TensorPrimitives.Multiply(g.Slice(row, width), rate, g.Slice(row, width));
            RefuseInfinityTimesZero(g, aLog, width, perHead, config);
            Sigmoid(g, g, config.GateLowerBound);
        }
    }

    /// <summary>
    /// dst = log1p(exp(−|x|)), softplus's far tail kept: a large exp(a_log) brings it back into range, so exp keeps its
    /// subnormals (below −87.3) and log1p its digits (TensorPrimitives.LogP1 is log(1 + e), 0 once e is under 6e-8).
    /// Every exponent ≤ 0.
    /// </summary>
    private static void Log1pExpNegativeMagnitude(ReadOnlySpan<float> x, Span<float> dst)
    {
        int i = 0;
        ref float src = ref MemoryMarshal.GetReference(x);
        ref float to = ref MemoryMarshal.GetReference(dst);
        var one = Vector512<float>.One;
        for (; i + 16 <= x.Length; i += 16)
        {
            var e = Vector512.Exp(-Vector512.Abs(Vector512.LoadUnsafe(ref src, (nuint)i)));
            var u = one + e;
            // ln(u) · e / (u − 1) cancels the rounding of u = 1 + e; where u rounds to 1, log1p(e) is e.
            Vector512.ConditionalSelect(Vector512.Equals(u, one), e, Vector512.Log(u) * (e / (u - one))).StoreUnsafe(ref to, (nuint)i);
        }
        for (; i < x.Length; i++) dst[i] = SimdMath.Softplus(-MathF.Abs(x[i]));
    }

    /// <summary>
    /// dst = factor · sigmoid(x) = factor · (x ≥ 0 ? 1 : e) / (1 + e), e = exp(−|x|) with its subnormals (below −87.3): a
    /// gate_lower_bound near −3e38 brings them back into range. x not NaN.
    /// </summary>
    private static void Sigmoid(ReadOnlySpan<float> x, Span<float> dst, float factor)
    {
        int i = 0;
        ref float src = ref MemoryMarshal.GetReference(x);
        ref float to = ref MemoryMarshal.GetReference(dst);
        var one = Vector512<float>.One;
        var f = Vector512.Create(factor);
        for (; i + 16 <= x.Length; i += 16)
        {
            var y = Vector512.LoadUnsafe(ref src, (nuint)i);
            var e = Vector512.Exp(-Vector512.Abs(y));
            var numerator = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(y, Vector512<float>.Zero), one, e);
            (f * numerator / (one + e)).StoreUnsafe(ref to, (nuint)i);
        }
        for (; i < x.Length; i++)
        {
            float e = MathF.Exp(-MathF.Abs(x[i]));
            dst[i] = factor * (x[i] >= 0f ? 1f : e) / (1f + e);
        }
    }

    /// <summary>
    /// Refuses a NaN product: exp(a_log) past float32 times a softplus or decay + dt_bias of 0, or decay + dt_bias past
    /// float32 times an exp(a_log) of 0. ∞·0 is NaN in ORT's kernel too, and no gate the engine could run instead.
    /// </summary>
    private static void RefuseInfinityTimesZero(ReadOnlySpan<float> product, ReadOnlySpan<float> aLog, int width, int perHead, GatedDeltaNetConfig config)
    {
        int i = FirstNaN(product);
        if (i < 0) return;
        int h = i % width / perHead;
        throw float.IsInfinity(MathF.Exp(aLog[h]))
            ? GatedDeltaNetCall.Bad(config, "a_log", $"exp(a_log) overflows float32 at head {h} (a_log = {aLog[h]}) where the gate's other factor is 0, at flat index {i}: the gate is ∞·0, NaN in ORT's kernel too")
            : GatedDeltaNetCall.Bad(config, "decay", $"decay + dt_bias overflows float32 at flat index {i} (head {h}) where exp(a_log) is 0: the gate is ∞·0, NaN in ORT's kernel too");
    }

    private static void RequireNotNaN(ReadOnlySpan<float> values, GatedDeltaNetConfig config, string name)
    {
        if (FirstNaN(values) is int i and >= 0)
            throw GatedDeltaNetCall.Bad(config, name, $"values must not be NaN, got NaN at flat index {i}");
    }

    /// <summary>The index of the first NaN, or −1.</summary>
    private static int FirstNaN(ReadOnlySpan<float> values)
    {
        int i = 0;
        ref float start = ref MemoryMarshal.GetReference(values);
        for (; i + 16 <= values.Length; i += 16)
        {
            var x = Vector512.LoadUnsafe(ref start, (nuint)i);
            if (!Vector512.EqualsAll(x, x)) break;
        }
        while (i < values.Length && !float.IsNaN(values[i])) i++;
        return i < values.Length ? i : -1;
    }

    /// <summary>a_log and dt_bias, one value per head or per key dim: a plain scan.</summary>
    private static void RequireFinite(ReadOnlySpan<float> values, GatedDeltaNetConfig config, string name)
    {
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw GatedDeltaNetCall.Bad(config, name, $"values must be finite, got {values[i]} at flat index {i}");
    }

    /// <summary>Whether g held −∞, which the kernels refuse: <see cref="G"/> then holds the lowest finite log gate there (<see cref="ResetGates{T}"/>).</summary>
    public bool ResetNegativeInfinity() => _gates.ResetNegativeInfinity();

    public void Dispose()
    {
        foreach (var a in new[] { _g, _beta, _scratch })
            if (a is not null) ArrayPool<float>.Shared.Return(a);
        _g = _beta = _scratch = null;
        _gates.Dispose();
    }
}

using Engine.Onnx;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;
using Engine.Tests.Harness;
using Engine.Workloads;
using NUnit.Framework;
using F = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Onnx;

/// <summary>
/// The engine-domain ops: Lightning attention against the float64 recurrence with the ALiBi slope schedule
/// written out here, and against ORT's own LinearAttention kernel given the same constant decay.
/// </summary>
[TestFixture]
public sealed class EngineOpTests
{
    /// <summary>s_h = 2^(−8(h+1)/H) for H a power of two, times (1 − l/(L−1) + 1e−5) for layer l of L.</summary>
    private static float[] AlibiSlopes(int heads, int? layer = null, int? layers = null)
    {
        double factor = layer is int l && layers is int n ? 1 - (double)l / (n - 1) + 1e-5 : 1;
        return Enumerable.Range(0, heads).Select(h => (float)(Math.Pow(2, -8.0 * (h + 1) / heads) * factor)).ToArray();
    }

    public static IEnumerable<TestCaseData> LightningCases()
    {
        yield return new TestCaseData(4, 4, null, null, true, 70).SetName("Lightning default slopes, past state");
        yield return new TestCaseData(4, 2, null, (3, 8), false, 70).SetName("Lightning layer 3 of 8, grouped heads");
        yield return new TestCaseData(2, 2, new[] { 0.3f, 0.01f }, null, true, 70).SetName("Lightning explicit slopes");
        yield return new TestCaseData(2, 4, null, null, true, 70).SetName("Lightning default slopes, grouped value heads");
        // Calls of at most CallScheduler.RecurrentUpTo tokens take the recurrent form: a decode step, and the longest such call.
        yield return new TestCaseData(4, 2, null, null, true, 1).SetName("Lightning decode step, past state");
        yield return new TestCaseData(2, 4, new[] { 50f, 1e-8f, 0.3f, 0f }, null, true, CallScheduler.RecurrentUpTo).SetName("Lightning recurrent form, strong and no decay");
    }

    [TestCaseSource(nameof(LightningCases))]
    public void LightningMatchesReferenceAndOrtWithTheSameDecay(int hq, int hkv, float[]? slopes, (int, int)? schedule, bool past, int tokens)
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead, Hq = hq, Hkv = hkv, PastState = past, Scale = 1f, T = tokens };
        var expectedSlopes = slopes ?? AlibiSlopes(hkv, schedule?.Item1, schedule?.Item2);
        var inputs = c.Inputs();
        // The same call as gated LinearAttention: decay −s_h at every token.
        var decay = new float[c.B * c.T * hkv];
        for (int i = 0; i < decay.Length; i++) decay[i] = -expectedSlopes[i % hkv];
        inputs["decay"] = TensorData.Create(decay, c.B, c.T, hkv);
        var reference = c.Reference(inputs);

        using var ort = OnnxTestHost.Open(c.Model(), HandoverBackend.None);
        var byOrt = ort.Run(inputs);
        var lightning = SampleModels.LightningAttentionNode(c.Spec, slopes, schedule);
        using var engine = OnnxTestHost.Open(lightning, HandoverBackend.Cpu);
        Assert.That(engine.Handover.EngineNodes.Single().OpType, Is.EqualTo("LightningAttention"));
        inputs.Remove("decay");
        var byEngine = engine.Run(inputs);

        OnnxAssert.Close(byEngine["output"], reference.Output, "engine Lightning output vs reference");
        OnnxAssert.Close(byEngine["present_state"], reference.State, "engine Lightning present_state vs reference");
        OnnxAssert.Close(byEngine["output"], byOrt["output"], "engine Lightning vs ORT LinearAttention with the same decay");
    }

    [Test]
    public void LightningBetweenOrtNodes()
    {
        // x → MatMul (q, k, v) → LightningAttention → Relu → MatMul → y, the attention on the engine, the rest in ORT.
        const int batch = 2, length = 25, hidden = 12, heads = 2, dk = 8, dv = 8;
        var data = new TestData(AttentionCase.StableSeed("lightning between ORT nodes"));
        var weights = new Dictionary<string, float[]>
        {
            ["wq"] = data.Normal(hidden * heads * dk, 0.3), ["wk"] = data.Normal(hidden * heads * dk, 0.3),
            ["wv"] = data.Normal(hidden * heads * dv, 0.3), ["wo"] = data.Normal(heads * dv * hidden, 0.3),
        };
        var b = new ModelBuilder(21).Import(HandoverRewriter.EngineDomain, 1);
        b.Input("x", F.Float, "B", "T", hidden);
        string Project(string w, int rows, int columns, string input) => b.Op("MatMul", input, b.Initializer(w, weights[w], rows, columns));
        var attention = b.Node("LightningAttention", [Project("wq", hidden, heads * dk, "x"), Project("wk", hidden, heads * dk, "x"), Project("wv", hidden, heads * dv, "x")],
            domain: HandoverRewriter.EngineDomain, name: "lightning", outputNames: ["attention"], attributes: [("q_num_heads", (long)heads), ("kv_num_heads", (long)heads)])[0];
        b.Node("MatMul", [b.Op("Relu", attention), b.Initializer("wo", weights["wo"], heads * dv, hidden)], outputNames: ["y"]);
        b.Output("y", F.Float, "B", "T", hidden);
        var x = data.Normal(batch * length * hidden);

        double[] MatMul(double[] a, float[] w, int rows, int inner, int columns)
        {
            var c = new double[rows * columns];
            for (int r = 0; r < rows; r++)
                for (int i = 0; i < inner; i++)
                    for (int j = 0; j < columns; j++) c[r * columns + j] += a[r * inner + i] * w[i * columns + j];
            return c;
        }
        var xd = TestData.ToDouble(x);
        int rowsCount = batch * length;
        var slopes = AlibiSlopes(heads);
        var decay = Enumerable.Range(0, rowsCount * heads).Select(i => (double)-slopes[i % heads]).ToArray();
        var attended = LinearAttentionReference.Run(UpdateRule.Gated, batch, length, heads, heads, dk, dv, 1.0,
            MatMul(xd, weights["wq"], rowsCount, hidden, heads * dk), MatMul(xd, weights["wk"], rowsCount, hidden, heads * dk),
            MatMul(xd, weights["wv"], rowsCount, hidden, heads * dv), null, decay, false, null, true).Output;
        var expected = MatMul(attended.Select(a => Math.Max(a, 0)).ToArray(), weights["wo"], rowsCount, heads * dv, hidden);

        using var session = OnnxTestHost.Open(b.Build(), HandoverBackend.Cpu);
        Assert.That(session.Handover.EngineNodes.Single().NodeName, Is.EqualTo("lightning"));
        var y = session.Run(new Dictionary<string, TensorData> { ["x"] = TensorData.Create(x, batch, length, hidden) })["y"];
        OnnxAssert.Close(y, expected, "y vs reference");
    }

    [Test]
    public void LightningRefusesSlopesOfTheWrongCount()
    {
        var spec = new LinearAttentionBlockSpec { QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 };
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(SampleModels.LightningAttentionNode(spec, [0.5f]), HandoverBackend.Cpu));
        Assert.That(e!.Message, Does.Contain("LightningAttention node 'lightning_attention'").And.Contain("one value per value head (kv_num_heads = 2), got 1"));
        e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(SampleModels.LightningAttentionNode(spec, schedule: (8, 8)), HandoverBackend.Cpu));
        Assert.That(e!.Message, Does.Contain("LightningAttention node 'lightning_attention'").And.Contain("layer"));
    }

    [Test]
    public void LightningRefusesALayerPast32Bits()
    {
        // 2^32 + 1 read as an int would be layer 1.
        var model = SampleModels.LightningAttentionNode(new LinearAttentionBlockSpec { QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 }, schedule: (1, 4));
        model.Proto.Graph.Node.Single(n => n.OpType == "LightningAttention").Attribute.Single(a => a.Name == "layer").I = (1L << 32) + 1;
        var e = Assert.Throws<ModelRunException>(() => OnnxTestHost.Open(model, HandoverBackend.Cpu));
        Assert.That(e!.Message, Does.Contain("LightningAttention node 'lightning_attention'").And.Contain("32-bit"));
    }

    [Test]
    public void AnEngineLinearAttentionIsListedAsAnEngineNode()
    {
        var spec = new LinearAttentionBlockSpec { QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8, Domain = HandoverRewriter.EngineDomain };
        var node = HandoverRewriter.Rewrite(SampleModels.LinearAttentionNode(spec)).EngineNodes.Single();
        Assert.That(node.OpType, Is.EqualTo("LinearAttention"));
        Assert.That(node.Detail, Is.EqualTo("engine op"));
    }

    /// <summary>ORT alone has no kernel for the engine's own ops: opening such a model without the engine names the node.</summary>
    [TestCase("LightningAttention")]
    [TestCase("LsslScan")]
    public void EngineOpsWithoutTheEngineAreRefusedNamingTheNode(string opType)
    {
        var model = opType == "LsslScan"
            ? SampleModels.LsslScanNode(channels: 4, stateSize: 8)
            : SampleModels.LightningAttentionNode(new LinearAttentionBlockSpec { QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 });
        string name = model.Proto.Graph.Node.Single(n => n.OpType == opType).Name;
        var e = Assert.Throws<ModelNodeException>(() => OnnxTestHost.Open(model, HandoverBackend.None))!;
        Assert.That(e.Message, Does.Contain($"node '{name}' (ai.engine {opType}) runs on the engine's kernels only"));
    }

    /// <summary>A misspelt attribute of the engine's own ops is refused naming it, not left unread.</summary>
    [TestCase("LightningAttention", "slope")]
    [TestCase("LsslScan", "discretisation")]
    [TestCase("LinearAttention", "update_rul")]
    public void EngineOpsRefuseAttributesTheyDoNotHave(string opType, string attribute)
    {
        var spec = new LinearAttentionBlockSpec { QHeads = 2, KvHeads = 2, KeyDim = 8, ValueDim = 8 };
        var model = opType switch
        {
            "LsslScan" => SampleModels.LsslScanNode(channels: 4, stateSize: 8),
            "LinearAttention" => SampleModels.LinearAttentionNode(spec with { Domain = HandoverRewriter.EngineDomain }),
            _ => SampleModels.LightningAttentionNode(spec),
        };
        model.Proto.Graph.Node.Single(n => n.OpType == opType).Attribute.Add(
            new AttributeProto { Name = attribute, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("zoh") });
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(model))!;
        Assert.That(e.Message, Does.StartWith($"{opType} node").And.Contain($"unknown attribute '{attribute}'"));
    }

    /// <summary>
    /// The companion ops and GatedDeltaNet written in the engine's domain refuse a misspelt attribute too: an ai.engine
    /// CausalConvWithState with "activaton" ran without its activation.
    /// </summary>
    [TestCase("CausalConvWithState", "activaton")]
    [TestCase("VarlenCausalConvWithState", "dilaton")]
    [TestCase("LinearAttentionGate", "decay_scale")]
    [TestCase("GatedRMSNorm", "epsillon")]
    [TestCase("GatedDeltaNet", "gate_activaton")]
    public void EngineDomainCompanionsRefuseAttributesTheyDoNotHave(string opType, string attribute)
    {
        var b = new ModelBuilder(21).Import(HandoverRewriter.EngineDomain, 1);
        b.Node(opType, [b.Input("x", F.Float, 1, 4, 8)], domain: HandoverRewriter.EngineDomain, name: "typo", outputNames: ["y"],
            attributes: [(attribute, "silu")]);
        b.Output("y", F.Float, null);
        var e = Assert.Throws<ModelNodeException>(() => HandoverRewriter.Rewrite(b.Build()))!;
        Assert.That(e.Message, Does.StartWith($"{opType} node 'typo'").And.Contain($"unknown attribute '{attribute}'"));
    }
}

/// <summary>
/// The gpu backend through the same custom-op interface with host tensors: here the GPU kernels run on
/// ILGPU's CPU accelerator (tiny shapes), on CUDA where a device is present.
/// </summary>
[TestFixture]
public sealed class GpuBackendTests
{
    public static IEnumerable<TestCaseData> Cases()
    {
        LinearAttentionNodeCase[] cases =
        [
            new() { Rule = UpdateRule.Gated, Decay = DecayForm.PerKey, B = 1, T = 20, Hq = 2, Hkv = 1, Dk = 16, Dv = 16, PastState = true },
            new() { Rule = UpdateRule.Linear, B = 1, T = 3, Hq = 2, Hkv = 2, Dk = 16, Dv = 16, PastState = true },
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerHead, BetaPerHead = false, B = 1, T = 20, Hq = 2, Hkv = 2, Dk = 16, Dv = 16 },
            new() { Rule = UpdateRule.GatedDelta, Decay = DecayForm.PerKey, B = 1, T = 20, Hq = 2, Hkv = 1, Dk = 16, Dv = 16, PastState = true, Half = true },
        ];
        return cases.Select(c => new TestCaseData(c).SetName($"Gpu backend {c.Name}"));
    }

    [TestCaseSource(nameof(Cases))]
    public void GpuBackendMatchesReference(LinearAttentionNodeCase c)
    {
        var inputs = c.Inputs();
        var reference = c.Reference(inputs);
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Gpu);
        Assert.That(session.Handover.EngineNodes.Count(), Is.EqualTo(1));
        Assert.That(OnnxTestHost.GpuHost.Describe(HandoverBackend.Gpu), Does.StartWith("gpu: ILGPU CPU accelerator").Or.Contain("CUDA"));
        var result = session.Run(inputs);
        OnnxAssert.Close(result["output"], reference.Output, "gpu-backend output vs reference", c.Tolerance);
        OnnxAssert.Close(result["present_state"], reference.State, "gpu-backend present_state vs reference", c.Tolerance);
    }

    [Test]
    public void EveryBackendSplitsItsCpuWorkOverTheHostsIntraOpThreads([Values(HandoverBackend.Cpu, HandoverBackend.Gpu)] HandoverBackend backend)
    {
        using var host = new KernelHost(new KernelHostOptions { IntraOpThreads = 1, Gpu = GpuPreference.CpuAccelerator });
        Assert.That(host.Backend(backend).Device.Threads, Is.EqualTo(1), "work items split over more slots than ORT's pool has threads");
    }

    /// <summary>
    /// Intra-op thread counts no machine uses are refused by name when the host is made: ORT started every thread when a
    /// session opened (5,000 on two cores took nearly 3 minutes to close), and int.MaxValue failed the open as std::bad_alloc.
    /// </summary>
    [Test]
    public void AnIntraOpThreadCountOutsideItsRangeIsRefusedByName()
    {
        int most = Math.Max(KernelHost.MaxIntraOpThreads, Environment.ProcessorCount);
        foreach (int threads in new[] { 0, -1, most + 1, int.MaxValue })
            Assert.That(() => new KernelHost(new KernelHostOptions { IntraOpThreads = threads }),
                Throws.InstanceOf<ArgumentOutOfRangeException>().With.Message.Contain($"IntraOpThreads must be 1..{most}"), $"{threads} threads");
        using var widest = new KernelHost(new KernelHostOptions { IntraOpThreads = most });
        Assert.That(widest.IntraOpThreads, Is.EqualTo(most));
    }

    [Test]
    public void LsslScanOnTheGpuBackend()
    {
        var model = SampleModels.LsslScanNode(channels: 4, stateSize: 8);
        var data = new TestData(AttentionCase.StableSeed("lssl on the gpu backend"));
        var u = data.Normal(2 * 10 * 4);
        var past = data.Normal(2 * 4 * 8, 0.3);
        var inputs = new Dictionary<string, TensorData> { ["u"] = TensorData.Create(u, 2, 10, 4), ["past_state"] = TensorData.Create(past, 2, 4, 8) };
        var expected = LsslScanTests.Reference(model, u, past, "bilinear", 2, 10);
        using var gpu = OnnxTestHost.Open(model, HandoverBackend.Gpu);
        gpu.Run(inputs);
        var before = OnnxTestHost.GpuHost.GpuTraffic;
        var result = gpu.Run(inputs);
        var call = OnnxTestHost.GpuHost.GpuTraffic.Since(before);
        OnnxAssert.Close(result["y"], expected.Y, "gpu-backend LSSL y vs reference");
        OnnxAssert.Close(result["present_state"], expected.State, "gpu-backend LSSL present_state vs reference");
        Assert.Multiple(() =>
        {
            Assert.That(call.Allocations, Is.Zero, "the second call allocates nothing on the device");
            Assert.That(call.BytesToDevice, Is.EqualTo((u.Length + past.Length) * sizeof(float)), "u and past_state");
            Assert.That(call.BytesToHost, Is.EqualTo((result["y"].ElementCount + result["present_state"].ElementCount) * sizeof(float)), "y and present_state");
        });
    }

    [Test]
    public void LightningOnTheGpuBackend()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, Decay = DecayForm.PerHead, B = 1, T = 20, Hq = 2, Hkv = 2, Dk = 16, Dv = 16, PastState = true, Scale = 1f };
        var slopes = new[] { 0.25f, 0.0625f };
        var inputs = c.Inputs();
        inputs["decay"] = TensorData.Create(Enumerable.Range(0, c.T * c.Hkv).Select(i => -slopes[i % c.Hkv]).ToArray(), 1, c.T, c.Hkv);
        var reference = c.Reference(inputs);
        inputs.Remove("decay");
        using var session = OnnxTestHost.Open(SampleModels.LightningAttentionNode(c.Spec, slopes), HandoverBackend.Gpu);
        var result = session.Run(inputs);
        OnnxAssert.Close(result["output"], reference.Output, "gpu-backend Lightning output vs reference");
        OnnxAssert.Close(result["present_state"], reference.State, "gpu-backend Lightning present_state vs reference");
    }
}

/// <summary>What a hand-over call moves on the GPU backend, read from the host's counters (ILGPU's CPU accelerator here).</summary>
[TestFixture]
public sealed class GpuHandoverTrafficTests
{
    [Test]
    public void ACallUploadsOrtsInputsOnceDownloadsItsOutputsAndAllocatesNothingOnTheDevice()
    {
        var c = new LinearAttentionNodeCase { Rule = UpdateRule.Gated, Decay = DecayForm.PerKey, B = 1, T = 20, Hq = 2, Hkv = 2, Dk = 16, Dv = 16, PastState = true };
        var inputs = c.Inputs();
        var reference = c.Reference(inputs);
        using var session = OnnxTestHost.Open(c.Model(), HandoverBackend.Gpu);
        session.Run(inputs);
        var before = OnnxTestHost.GpuHost.GpuTraffic;
        var result = session.Run(inputs);
        var call = OnnxTestHost.GpuHost.GpuTraffic.Since(before);
        long inputBytes = inputs.Values.Sum(t => t.ElementCount) * sizeof(float);
        long outputBytes = (result["output"].ElementCount + result["present_state"].ElementCount) * sizeof(float);
        Assert.Multiple(() =>
        {
            Assert.That(call.Allocations, Is.Zero, "the second call reuses the kernel instance's buffers");
            Assert.That(call.BytesToDevice, Is.EqualTo(inputBytes), "query, key, value, decay and past_state, once each");
            Assert.That(call.BytesToHost, Is.EqualTo(outputBytes), "output and present_state");
        });
        OnnxAssert.Close(result["output"], reference.Output, "gpu-backend output vs reference", c.Tolerance);
        OnnxAssert.Close(result["present_state"], reference.State, "gpu-backend present_state vs reference", c.Tolerance);
    }
}

using Engine.Kernels.DeltaRule;
using Engine.Onnx.Ops;
using Engine.Onnx.Proto;

namespace Engine.Onnx;

/// <summary>One node the rewrite moved: where it was, where it runs now, and why.</summary>
public sealed record HandoverNode(string NodeName, string OpType, string FromDomain, string ToDomain, string Detail)
{
    public bool ToEngine => ToDomain == HandoverRewriter.EngineDomain;

    public override string ToString() =>
        $"{NodeName} ({Show(FromDomain)}.{OpType}) -> {(ToEngine ? "engine" : Show(ToDomain))}: {Detail}";

    private static string Show(string domain) => domain.Length == 0 ? "ai.onnx" : domain;
}

/// <summary>The rewritten model and what changed.</summary>
public sealed record HandoverPlan(OnnxModel Model, IReadOnlyList<HandoverNode> Nodes, IReadOnlyList<string> Notes)
{
    /// <summary>The nodes the engine takes over, each as the model has it (a node folded into another is listed too).</summary>
    public IEnumerable<HandoverNode> EngineNodes => Nodes.Where(n => n.ToEngine);

    /// <summary>The rewritten model's nodes the engine's kernels run, subgraphs included: fewer than <see cref="EngineNodes"/> where folds merged them.</summary>
    public int EngineKernelNodes => KernelNodes().Count();

    /// <summary>The names of the rewritten model's nodes the engine's kernels run, subgraphs included (as ORT's profile names them).</summary>
    public IReadOnlySet<string> EngineKernelNodeNames => KernelNodes().Select(n => n.Name).Where(n => n.Length > 0).ToHashSet();

    private IEnumerable<NodeProto> KernelNodes() => OnnxModel.AllGraphs(Model.Graph).SelectMany(g => g.Node).Where(n => n.Domain == HandoverRewriter.EngineDomain);

    /// <summary>
    /// The names of the original model's nodes that ORT no longer runs: taken over by the engine, or folded into a node it
    /// takes (Transposes, Splits, normalizations, gate chains). Unnamed nodes are left out: ORT's profile cannot name them either.
    /// </summary>
    public IReadOnlySet<string> ReplacedNodeNames { get; init; } = new HashSet<string>();
}

/// <summary>What the engine can take over: the LinearAttention and GatedDeltaNet update rules it has kernels for, and its own ops.</summary>
public sealed record EngineCapabilities(IReadOnlySet<UpdateRule> UpdateRules, IReadOnlySet<string> EngineOps)
{
    /// <summary>Whether the engine runs a LinearAttention or GatedDeltaNet node with this rule (every decay form of it).</summary>
    public bool Takes(UpdateRule rule) => UpdateRules.Contains(rule);

    public static EngineCapabilities Current { get; } = new(
        new HashSet<UpdateRule> { UpdateRule.Linear, UpdateRule.Gated, UpdateRule.Delta, UpdateRule.GatedDelta },
        new HashSet<string>
        {
            LinearAttentionSignature.OpType, LightningAttentionSignature.OpType, LsslScanSignature.OpType, CausalConvSignature.OpType, VarlenCausalConvSignature.OpType,
            LinearAttentionGateSignature.OpType, GatedRmsNormSignature.OpType, GatedDeltaNetSignature.OpType,
        });
}

/// <summary>
/// Finds the hot nodes of a model and re-targets them to the engine's domain, where the engine's kernels
/// (registered as ORT custom ops) run them; ORT keeps every other node.
///   com.microsoft LinearAttention, ai.onnx LinearAttention (opset 27)  → engine, when the engine has its update rule;
///   ai.onnx LinearAttention with a rule the engine lacks                → com.microsoft (ORT's own kernel, same signature);
///   LinearAttention whose key heads ORT shares among the value heads
///   but do not divide min(q_num_heads, kv_num_heads), or with a
///   com.microsoft state_window (ORT: CUDA only)                         → com.microsoft;
///   com.microsoft CausalConvWithState, VarlenCausalConvWithState,
///   LinearAttentionGate, GatedRMSNorm, ai.onnx CausalConvWithState-27   → engine, unless a CUDA-only attribute, input or output,
///                                                                        or an element type other than float32/float16, leaves
///                                                                        it to ORT (the reason in the plan);
///   Transpose(0,2,1) → CausalConvWithState → Transpose(0,2,1)           → one channels-last engine node, the Transposes gone, when
///                                                                        nothing else reads the tensors between them;
///   com.microsoft GatedDeltaNet, float32, float16 or bfloat16           → engine; other types stay with ORT, the reason listed;
///   nodes already in the engine's domain (LSSL scan, Lightning, …)      → kept, the domain imported.
/// ONNX Runtime 1.32 runs ai.onnx LinearAttention-27 only as its Scan function body: when no node left in the model needs opset 27 (the
/// opset that added LinearAttention and CausalConvWithState, and changed nothing else) the import is lowered to 26.
/// </summary>
public static class HandoverRewriter
{
    public const string EngineDomain = "ai.engine";
    public const string MicrosoftDomain = "com.microsoft";
    public const long HighestOnnxOpsetOfRuntime = 26;

    /// <summary>The ai.onnx ops that first appear in opset 27.</summary>
    public static readonly IReadOnlySet<string> Opset27Ops = new HashSet<string> { "LinearAttention", "CausalConvWithState" };

    public static HandoverPlan Rewrite(OnnxModel model, EngineCapabilities? capabilities = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        capabilities ??= EngineCapabilities.Current;
        var rewritten = model.Clone();
        var nodes = new List<HandoverNode>();
        var notes = new List<string>();
        long onnxOpset = rewritten.OpsetOf(OnnxModel.OnnxDomain) ?? 0;

        foreach (var (graph, hints) in ShapeHints.OfEveryGraph(rewritten.Graph))
        {
            foreach (var node in graph.Node)
            {
                if (node.OpType == LinearAttentionSignature.OpType && node.Domain != EngineDomain)
                    RetargetLinearAttention(node, onnxOpset, capabilities, hints, nodes);
                else if (node.OpType == GatedDeltaNetSignature.OpType && node.Domain == MicrosoftDomain)
                    RetargetGatedDeltaNet(node, capabilities, hints, nodes);
                else if (CompanionOps.Contains(node.OpType) && node.Domain != EngineDomain)
                    RetargetCompanion(node, onnxOpset, hints, nodes);
                else if (node.Domain == EngineDomain)
                {
                    RequireKnownAttributes(node);
                    nodes.Add(new HandoverNode(NameOf(node), node.OpType, EngineDomain, EngineDomain,
                        capabilities.EngineOps.Contains(node.OpType) ? "engine op" : "engine op unknown to this build"));
                }
            }
        }

        var uses = Uses(rewritten.Graph);
        foreach (var graph in OnnxModel.AllGraphs(rewritten.Graph)) FoldTransposes(graph, uses, onnxOpset, nodes);
        uses = Uses(rewritten.Graph);
        foreach (var (graph, hints) in ShapeHints.OfEveryGraph(rewritten.Graph)) FoldQkPreparation(graph, hints, uses, onnxOpset, nodes);
        uses = Uses(rewritten.Graph);
        foreach (var graph in OnnxModel.AllGraphs(rewritten.Graph)) FoldConvolution(graph, uses, nodes);
        if (capabilities.EngineOps.Contains(GatedRmsNormSignature.OpType))
            foreach (var (graph, hints) in ShapeHints.OfEveryGraph(rewritten.Graph)) FoldGatedNorm(graph, hints, uses, onnxOpset, nodes, notes);
        uses = Uses(rewritten.Graph);
        foreach (var (graph, hints) in ShapeHints.OfEveryGraph(rewritten.Graph)) FoldOutputNorm(graph, hints, uses, nodes);

        if (nodes.Any(n => n.ToEngine)) Import(rewritten.Proto, EngineDomain, 1);
        if (nodes.Any(n => n.ToDomain == MicrosoftDomain)) Import(rewritten.Proto, MicrosoftDomain, 1);

        if (onnxOpset > HighestOnnxOpsetOfRuntime)
        {
            // Model-local functions count as the graph does: ORT inlines their bodies under the model's ai.onnx import.
            var functions = rewritten.Proto.Functions;
            var functionGraphs = functions.SelectMany(f => f.Node).SelectMany(n => n.Attribute)
                .SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)).SelectMany(OnnxModel.AllGraphs);
            var needs27 = OnnxModel.AllGraphs(rewritten.Graph).SelectMany(g => g.Node)
                .Concat(functions.SelectMany(f => f.Node)).Concat(functionGraphs.SelectMany(g => g.Node))
                .Where(n => OnnxModel.SameDomain(n.Domain, OnnxModel.OnnxDomain) && Opset27Ops.Contains(n.OpType))
                .Select(NameOf).ToArray();
            if (needs27.Length == 0 && onnxOpset == 27)
            {
                foreach (var o in rewritten.Proto.OpsetImport)
                    if (OnnxModel.SameDomain(o.Domain, OnnxModel.OnnxDomain)) o.Version = HighestOnnxOpsetOfRuntime;
                notes.Add($"ai.onnx opset lowered from 27 to {HighestOnnxOpsetOfRuntime}: no node left needs 27");
            }
            else
            {
                notes.Add(needs27.Length > 0 ? $"ai.onnx opset {onnxOpset} kept: still needed by {string.Join(", ", needs27)}"
                    : $"ai.onnx opset {onnxOpset} kept: the rewrite lowers opset 27 only, whose two new ops it knows, to {HighestOnnxOpsetOfRuntime}");
            }
        }
        var runByOrt = OnnxModel.AllGraphs(rewritten.Graph).SelectMany(g => g.Node).Where(n => n.Domain != EngineDomain).Select(n => n.Name).ToHashSet();
        var replaced = OnnxModel.AllGraphs(model.Graph).SelectMany(g => g.Node).Select(n => n.Name).Where(n => n.Length > 0 && !runByOrt.Contains(n)).ToHashSet();
        return new HandoverPlan(rewritten, nodes, notes) { ReplacedNodeNames = replaced };
    }

    private static void RetargetLinearAttention(NodeProto node, long onnxOpset, EngineCapabilities capabilities, ShapeHints hints, List<HandoverNode> nodes)
    {
        bool fromOnnx = OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain);
        if (!fromOnnx && node.Domain != MicrosoftDomain) return;
        // Kernel messages name the node: give an unnamed one the name the messages use.
        if (node.Name.Length == 0) node.Name = NameOf(node);
        if (fromOnnx && onnxOpset < 27)
            throw new ModelNodeException($"LinearAttention node '{NameOf(node)}': ai.onnx LinearAttention needs opset 27, the model imports ai.onnx opset {onnxOpset}");
        if (fromOnnx) RequirePresentState(node, $"LinearAttention node '{NameOf(node)}'", "LinearAttention");
        if (fromOnnx && onnxOpset > 27)
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, OnnxModel.OnnxDomain, OnnxModel.OnnxDomain, $"{LaterOpset(onnxOpset, "LinearAttention")}: left to ORT"));
            return;
        }
        foreach (var attribute in node.Attribute)
            if (!LinearAttentionSignature.AttributeNames.Contains(attribute.Name) && (fromOnnx || attribute.Name != LinearAttentionSignature.StateWindow))
                throw new ModelNodeException($"LinearAttention node '{NameOf(node)}': unknown attribute '{attribute.Name}' (LinearAttention has {string.Join(", ", LinearAttentionSignature.AttributeNames)})");
        RequireAttributeTypes(node, $"LinearAttention node '{NameOf(node)}'");

        var ruleAttribute = node.Attribute.FirstOrDefault(a => a.Name == "update_rule");
        string ruleText = ruleAttribute?.S.ToStringUtf8() ?? LinearAttentionSignature.DefaultUpdateRule;
        // A rule no LinearAttention has is refused here, so `inspect` never lists a node the kernel then refuses.
        var rule = LinearAttentionSignature.ParseRule(ruleText, $"LinearAttention node '{NameOf(node)}'");
        string from = fromOnnx ? OnnxModel.OnnxDomain : MicrosoftDomain;
        var decay = DecayFormOf(node, hints);
        string what = $"update_rule {ruleText}" + (decay is null ? "" : decay == DecayForm.PerKey ? ", per-key decay" : ", per-head decay");
        // com.microsoft's state_window W keeps the states after each of the last W tokens (ORT runs it on CUDA only); the
        // engine keeps the final state, so it takes the node only without one, the attribute then dropped.
        if (node.Attribute.FirstOrDefault(a => a.Name == LinearAttentionSignature.StateWindow) is AttributeProto window)
        {
            if (window.I != 0)
            {
                nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, MicrosoftDomain, $"{what}, state_window {window.I}: the engine keeps the final state only, left to ORT"));
                return;
            }
            node.Attribute.Remove(window);
        }
        // Inferred, not only declared: a Cast's output of another type bound for the engine's op fails ORT's type check at load.
        var elementType = node.Input.Count > 0 ? hints.InferredType(node.Input[0]) : null;
        if (elementType is not null and not TensorProto.Types.DataType.Float and not TensorProto.Types.DataType.Float16)
        {
            // The engine's LinearAttention takes float32 and float16; ORT keeps other types (or refuses them itself). An ai.onnx node
            // stays ai.onnx: ORT runs its function body in any type the schema allows, its com.microsoft kernel float32 and float16 only.
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, from, $"{what}, {elementType.Value.ToString().ToLowerInvariant()} tensors: left to ORT"));
            return;
        }
        // ORT multiplies the readout by any scale; the engine's kernels take finite ones (a node with another stays with ORT).
        if (node.Attribute.FirstOrDefault(a => a.Name == "scale") is AttributeProto scale && !float.IsFinite(scale.F))
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, from, $"{what}, scale {scale.F} (the engine takes a finite scale): left to ORT"));
            return;
        }
        // ai.onnx LinearAttention-27 types the state apart from the activations (S, T: float32, float16, bfloat16); the engine's op
        // takes one type for every tensor of a node, so a past_state of another type than the query's stays with ORT.
        var stateType = node.Input.Count > LinearAttentionSignature.PastState && node.Input[LinearAttentionSignature.PastState].Length > 0
            ? hints.InferredType(node.Input[LinearAttentionSignature.PastState]) : null;
        if (elementType is not null && stateType is not null && stateType != elementType)
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, from,
                $"{what}, {elementType.Value.ToString().ToLowerInvariant()} tensors with a {stateType.Value.ToString().ToLowerInvariant()} past_state: left to ORT"));
            return;
        }
        if (capabilities.Takes(rule))
        {
            if (SharedKeyHeads(node, fromOnnx, hints) is long keyHeads)
            {
                node.Domain = MicrosoftDomain;
                nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, MicrosoftDomain,
                    $"{what}, {keyHeads} key heads shared by the value heads: the engine's kernels take key heads dividing min(q_num_heads, kv_num_heads), left to ORT"));
                return;
            }
            var headDims = LinearAttentionHeadDims(node, hints);
            if (LinearAttentionSignature.UsesBeta(rule) && DeltaRuleHeadDimsProblem(headDims) is string dims)
            {
                node.Domain = MicrosoftDomain;
                nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, MicrosoftDomain, $"{what}, {dims}, left to ORT"));
                return;
            }
            node.Domain = EngineDomain;
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, EngineDomain,
                what + (LinearAttentionSignature.UsesBeta(rule) ? UndeclaredHeadDims(headDims) : "")));
        }
        else
        {
            node.Domain = MicrosoftDomain;
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, MicrosoftDomain,
                $"{what} has no engine kernel: {(fromOnnx ? "ORT's own kernel runs it" : "left to ORT")}"));
        }
    }

    private static void RetargetGatedDeltaNet(NodeProto node, EngineCapabilities capabilities, ShapeHints hints, List<HandoverNode> nodes)
    {
        if (node.Name.Length == 0) node.Name = NameOf(node);
        string name = $"GatedDeltaNet node '{NameOf(node)}'";
        foreach (var attribute in node.Attribute)
            if (!GatedDeltaNetSignature.AttributeNames.Contains(attribute.Name))
                throw new ModelNodeException($"{name}: unknown attribute '{attribute.Name}' (GatedDeltaNet has {string.Join(", ", GatedDeltaNetSignature.AttributeNames)})");
        RequireAttributeTypes(node, name);
        string ruleText = node.Attribute.FirstOrDefault(a => a.Name == "update_rule")?.S.ToStringUtf8() ?? LinearAttentionSignature.DefaultUpdateRule;
        var rule = LinearAttentionSignature.ParseRule(ruleText, name);
        string gate = node.Attribute.FirstOrDefault(a => a.Name == "gate_activation")?.S.ToStringUtf8() ?? "none";
        GatedDeltaNetSignature.ParseGateActivation(gate, name);
        var elementType = node.Input.Count > 0 ? hints.InferredType(node.Input[0]) : null;
        string what = $"update_rule {ruleText}" + (gate == "none" ? "" : $", gate_activation {gate}");
        var headDims = GatedDeltaNetHeadDims(node, hints);
        string? reason = !capabilities.EngineOps.Contains(GatedDeltaNetSignature.OpType) ? "no engine kernel in this build"
            : !capabilities.Takes(rule) ? "no engine kernel for this rule in this build"
            : GatedDeltaNetSignature.NotTaken(elementType?.ToString().ToLowerInvariant())
            ?? (LinearAttentionSignature.UsesBeta(rule) ? DeltaRuleHeadDimsProblem(headDims) : null);
        if (reason is null)
        {
            node.Domain = EngineDomain;
            string kernels = LinearAttentionSignature.UsesBeta(rule) ? "the delta rule's kernels" + UndeclaredHeadDims(headDims) : "GLA's kernels";
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, MicrosoftDomain, EngineDomain, $"{what}, value-major state, on {kernels}"));
        }
        else
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, MicrosoftDomain, MicrosoftDomain, $"{what}: {reason}, left to ORT"));
        }
    }

    /// <summary>
    /// Checks the heads of a node bound for the engine as its kernel will at load (the same checks, the same messages) so
    /// the plan never claims a node the kernel then refuses. Returns the key heads when the model's widths show a key
    /// whose heads ONNX Runtime shares among the value heads in a way the engine's kernels do not (dividing kv_num_heads,
    /// not min(q_num_heads, kv_num_heads)): ORT's own kernel runs such a node. Null when the engine takes it.
    /// </summary>
    private static long? SharedKeyHeads(NodeProto node, bool fromOnnx, ShapeHints hints)
    {
        string name = $"LinearAttention node '{NameOf(node)}'";
        var (qHeads, kvHeads) = LinearAttentionSignature.HeadCounts(IntAttribute(node, "q_num_heads"), IntAttribute(node, "kv_num_heads"), name);
        if (fromOnnx && qHeads < kvHeads)
            throw new ModelNodeException($"{name}: ai.onnx LinearAttention-27 needs q_num_heads ({qHeads}) to be a multiple of kv_num_heads ({kvHeads}); " +
                "grouped value heads (kv_num_heads a multiple of q_num_heads) are com.microsoft.LinearAttention's");
        if (node.Input.Count <= LinearAttentionSignature.Key) return null;
        string query = node.Input[LinearAttentionSignature.Query], key = node.Input[LinearAttentionSignature.Key];
        // Widths of packed (B, T, H·d) inputs only: the kernel refuses other ranks at load, naming them.
        if (hints.DeclaredRank(query) is not (null or 3) || hints.DeclaredRank(key) is not (null or 3)
            || hints.LastDim(query) is not long queryWidth || queryWidth % qHeads != 0 || hints.LastDim(key) is not long keyWidth)
            return null;
        long dk = queryWidth / qHeads;
        // ai.onnx LinearAttention-27's key has kv_num_heads heads of dk (ORT refuses other widths); fewer key heads, shared among
        // the value heads, are com.microsoft's.
        if (fromOnnx && keyWidth != kvHeads * dk)
            throw new ModelNodeException($"{name}: ai.onnx LinearAttention-27 needs a key of width kv_num_heads·dk = {kvHeads}·{dk} = {kvHeads * dk}, got {keyWidth}; " +
                "keys with fewer heads are com.microsoft.LinearAttention's");
        if (LinearAttentionSignature.KeyWidthProblem(qHeads, kvHeads, dk, keyWidth) is not string problem) return null;
        if (keyWidth % dk == 0 && keyWidth > 0 && kvHeads % (keyWidth / dk) == 0) return keyWidth / dk;
        throw new ModelNodeException($"{name}: {problem}");
    }

    /// <summary>
    /// The engine knows the ai.onnx ops as opset 27 defines them; a later opset may define them otherwise, so a node under a later
    /// import stays with ORT, which runs it as that opset's schema says.
    /// </summary>
    private static string LaterOpset(long onnxOpset, string op) =>
        $"ai.onnx opset {onnxOpset}: the engine runs {op} as opset 27 defines it, not a later opset's";

    /// <summary>
    /// ai.onnx LinearAttention-27 and CausalConvWithState-27 have two outputs, both required (ORT refuses a node without
    /// present_state); the engine's ops make present_state optional, so the rewrite refuses such a node as ORT does.
    /// </summary>
    private static void RequirePresentState(NodeProto node, string name, string op)
    {
        if (node.Output.Count < 2 || node.Output[1].Length == 0)
            throw new ModelNodeException($"{name}: ai.onnx {op}-27 requires its second output, present_state; the node leaves it out");
    }

    /// <summary>The type of each attribute LinearAttention and GatedDeltaNet have (ORT's schemas).</summary>
    private static readonly Dictionary<string, AttributeProto.Types.AttributeType> AttentionAttributeTypes = new()
    {
        ["q_num_heads"] = AttributeProto.Types.AttributeType.Int, ["kv_num_heads"] = AttributeProto.Types.AttributeType.Int,
        ["chunk_size"] = AttributeProto.Types.AttributeType.Int, ["state_window"] = AttributeProto.Types.AttributeType.Int,
        ["qk_l2_norm"] = AttributeProto.Types.AttributeType.Int, ["state_update_capacity"] = AttributeProto.Types.AttributeType.Int,
        ["update_rule"] = AttributeProto.Types.AttributeType.String, ["gate_activation"] = AttributeProto.Types.AttributeType.String,
        ["beta_activation"] = AttributeProto.Types.AttributeType.String,
        ["scale"] = AttributeProto.Types.AttributeType.Float, ["gate_lower_bound"] = AttributeProto.Types.AttributeType.Float,
    };

    /// <summary>Refuses an attribute of another type than the schema's (a FLOAT q_num_heads would otherwise read as 0), naming it.</summary>
    private static void RequireAttributeTypes(NodeProto node, string name)
    {
        foreach (var attribute in node.Attribute)
            if (AttentionAttributeTypes.TryGetValue(attribute.Name, out var type) && attribute.Type != type)
                throw new ModelNodeException($"{name}: attribute '{attribute.Name}' must be {type.ToString().ToUpperInvariant()}, got {attribute.Type.ToString().ToUpperInvariant()}");
    }

    /// <summary>The attributes of the engine's own ops as a model may give them: a misspelt one would otherwise go unread.</summary>
    private static readonly Dictionary<string, string[]> EngineOpAttributes = new()
    {
        [LightningAttentionSignature.OpType] = LightningAttentionSignature.AttributeNames,
        [LsslScanSignature.OpType] = LsslScanSignature.AttributeNames,
        [LinearAttentionSignature.OpType] = LinearAttentionSignature.EngineAttributeNames,
        [GatedDeltaNetSignature.OpType] = GatedDeltaNetSignature.AttributeNames,
        [CausalConvSignature.OpType] = CausalConvSignature.AttributeNames,
        [VarlenCausalConvSignature.OpType] = VarlenCausalConvSignature.AttributeNames,
        [LinearAttentionGateSignature.OpType] = LinearAttentionGateSignature.AttributeNames,
        [GatedRmsNormSignature.OpType] = GatedRmsNormSignature.AttributeNames,
    };

    private static void RequireKnownAttributes(NodeProto node)
    {
        if (!EngineOpAttributes.TryGetValue(node.OpType, out var known)) return;
        if (node.Attribute.FirstOrDefault(a => !known.Contains(a.Name)) is AttributeProto unknown)
            throw new ModelNodeException($"{node.OpType} node '{NameOf(node)}': unknown attribute '{unknown.Name}' ({node.OpType} has {string.Join(", ", known)})");
    }

    /// <summary>Why the delta rule's kernels cannot run heads of these dims, or null (they can, or the model does not say).</summary>
    private static string? DeltaRuleHeadDimsProblem((long? Key, long? Value) dims) =>
        dims.Key > DeltaRuleConfig.MaxKeyDim ? $"key head dim {dims.Key} (the delta rule's kernels take up to {DeltaRuleConfig.MaxKeyDim})"
        : dims.Value > DeltaRuleConfig.MaxValueDim ? $"value head dim {dims.Value} (the delta rule's kernels take up to {DeltaRuleConfig.MaxValueDim})"
        : null;

    /// <summary>
    /// What the plan adds for a delta-rule node whose head dims the model leaves unknown: the kernels' limit is checked only
    /// when the node runs, and a run over it is refused there.
    /// </summary>
    private static string UndeclaredHeadDims((long? Key, long? Value) dims) =>
        dims.Key is not null && dims.Value is not null ? ""
        : $" (head dims unknown before a run: a run with dk over {DeltaRuleConfig.MaxKeyDim} or dv over {DeltaRuleConfig.MaxValueDim} is refused)";

    /// <summary>dk and dv of a LinearAttention node where the model declares them: past_state (B, H, dk, dv), else the packed widths.</summary>
    private static (long? Key, long? Value) LinearAttentionHeadDims(NodeProto node, ShapeHints hints)
    {
        string Input(int index) => node.Input.Count > index ? node.Input[index] : "";
        string state = Input(LinearAttentionSignature.PastState);
        if (hints.DeclaredDim(state, 4, 2) is long dk && hints.DeclaredDim(state, 4, 3) is long dv) return (dk, dv);
        if (Input(LinearAttentionSignature.Key).Length == 0) return (null, null);
        long? Width(string value, long? heads) => hints.LastDim(value) is long width && heads > 0 ? width / heads : null;
        return (Width(Input(LinearAttentionSignature.Query), IntAttribute(node, "q_num_heads")),
            Width(Input(LinearAttentionSignature.Value), IntAttribute(node, "kv_num_heads")));
    }

    /// <summary>dk and dv of a GatedDeltaNet node where the model declares them: initial_state (B, Hv, dv, dk), else query and value.</summary>
    private static (long? Key, long? Value) GatedDeltaNetHeadDims(NodeProto node, ShapeHints hints)
    {
        string Input(int index) => node.Input.Count > index ? node.Input[index] : "";
        string state = Input(GatedDeltaNetSignature.InitialState);
        if (hints.DeclaredDim(state, 4, 2) is long dv && hints.DeclaredDim(state, 4, 3) is long dk) return (dk, dv);
        // A packed QKV query's last dim is its whole row.
        if (Input(GatedDeltaNetSignature.Key).Length == 0) return (null, null);
        return (hints.LastDim(Input(GatedDeltaNetSignature.Query)), hints.LastDim(Input(GatedDeltaNetSignature.Value)));
    }

    /// <summary>The companion ops of a Gated DeltaNet layer the engine takes from com.microsoft (and ai.onnx, the convolution).</summary>
    private static readonly HashSet<string> CompanionOps =
        [CausalConvSignature.OpType, VarlenCausalConvSignature.OpType, LinearAttentionGateSignature.OpType, GatedRmsNormSignature.OpType];

    private static void RetargetCompanion(NodeProto node, long onnxOpset, ShapeHints hints, List<HandoverNode> nodes)
    {
        bool fromOnnx = OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain);
        if (fromOnnx ? node.OpType != CausalConvSignature.OpType : node.Domain != MicrosoftDomain) return;
        if (node.Name.Length == 0) node.Name = NameOf(node);
        string name = $"{node.OpType} node '{node.Name}'";
        if (fromOnnx && onnxOpset < 27)
            throw new ModelNodeException($"{name}: ai.onnx CausalConvWithState needs opset 27, the model imports ai.onnx opset {onnxOpset}");
        if (fromOnnx) RequirePresentState(node, name, "CausalConvWithState");
        if (fromOnnx && onnxOpset > 27)
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, OnnxModel.OnnxDomain, OnnxModel.OnnxDomain, $"{LaterOpset(onnxOpset, "CausalConvWithState")}: left to ORT"));
            return;
        }
        string from = fromOnnx ? OnnxModel.OnnxDomain : MicrosoftDomain;
        var (detail, leftToOrt) = CompanionPlan(node, fromOnnx, hints, name);
        if (leftToOrt is not null)
        {
            nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, from, $"{leftToOrt}: left to ORT"));
            return;
        }
        node.Domain = EngineDomain;
        nodes.Add(new HandoverNode(NameOf(node), node.OpType, from, EngineDomain, detail));
    }

    /// <summary>What the engine would run (for the plan), or why ORT keeps the node. Values neither runs are refused naming the node.</summary>
    private static (string Detail, string? LeftToOrt) CompanionPlan(NodeProto node, bool fromOnnx, ShapeHints hints, string name)
    {
        string[] known = node.OpType switch
        {
            CausalConvSignature.OpType => fromOnnx ? ["activation"] : CausalConvSignature.AttributeNames.Concat(CausalConvSignature.CudaOnlyAttributes).ToArray(),
            VarlenCausalConvSignature.OpType => VarlenCausalConvSignature.AttributeNames,
            LinearAttentionGateSignature.OpType => LinearAttentionGateSignature.AttributeNames,
            _ => GatedRmsNormSignature.AttributeNames,
        };
        if (node.Attribute.FirstOrDefault(a => !known.Contains(a.Name)) is AttributeProto unknown)
            return ("", $"attribute '{unknown.Name}' is not one the engine reads");
        // Inferred, not only declared: a bfloat16 Cast's output bound for the engine's ops fails ORT's type check at load.
        var elementType = node.Input.Count > 0 ? hints.InferredType(node.Input[0]) : null;
        if (elementType is not null and not TensorProto.Types.DataType.Float and not TensorProto.Types.DataType.Float16)
            return ("", $"{elementType.Value.ToString().ToLowerInvariant()} tensors");
        if (node.OpType is CausalConvSignature.OpType or VarlenCausalConvSignature.OpType && node.Input.Count > 1
            && hints.LastDim(node.Input[1]) is long k && k > Kernels.Conv.CausalConvConfig.MaxKernelSize)
            return ("", $"kernel size {k} (the engine's short convolution takes up to {Kernels.Conv.CausalConvConfig.MaxKernelSize})");
        string? Attr(string attribute) => node.Attribute.FirstOrDefault(a => a.Name == attribute) is AttributeProto a
            ? a.Type == AttributeProto.Types.AttributeType.String ? a.S.ToStringUtf8() : a.I.ToString() : null;
        bool Extra(int from, IList<string> values) => values.Skip(from).Any(v => v.Length > 0);
        switch (node.OpType)
        {
            case CausalConvSignature.OpType:
            {
                var activation = CausalConvSignature.Activation(Attr("activation"), name);
                int dilation = CausalConvSignature.Dilation(IntAttribute(node, "dilation"), name);
                if (IntAttribute(node, "ndim") is long ndim && ndim != 1) return ("", $"ndim {ndim} (the engine runs ndim 1)");
                if (IntAttribute(node, "state_window") is long window && window != 0) return ("", $"state_window {window} (CUDA only)");
                foreach (var cudaOnly in CausalConvSignature.CudaOnlyAttributes)
                    if (IntAttribute(node, cudaOnly) is long v && v != (cudaOnly == "state_channels_last" ? -1 : 0)) return ("", $"{cudaOnly} {v} (CUDA only)");
                if (Extra(2, node.Output)) return ("", "the state_update output (CUDA only)");
                long channelsLast = IntAttribute(node, "channels_last") ?? 0;
                if (channelsLast is not (0 or 1)) throw new ModelNodeException($"{name}: channels_last must be 0 or 1, got {channelsLast}");
                return ($"activation {(activation == Kernels.Conv.ConvActivation.Silu ? "silu" : "none")}" + (dilation > 1 ? $", dilation {dilation}" : "") +
                    (channelsLast == 1 ? ", channels-last" : ""), null);
            }
            case VarlenCausalConvSignature.OpType:
            {
                var activation = CausalConvSignature.Activation(Attr("activation"), name);
                int dilation = CausalConvSignature.Dilation(IntAttribute(node, "dilation"), name);
                foreach (var (attribute, plain) in new[] { ("state_update_capacity", 0L), ("group_size", 1L), ("delta_offset", 0L) })
                    if (IntAttribute(node, attribute) is long v && v != plain) return ("", $"{attribute} {v} (compact capture or dynamic mode)");
                if (Extra(VarlenCausalConvSignature.InputNames.Length, node.Input)) return ("", "capture_count, kernel_delta or previous_mask given (compact capture or dynamic mode)");
                if (Extra(2, node.Output)) return ("", "the state_update output (compact capture)");
                return ($"packed sequences, activation {(activation == Kernels.Conv.ConvActivation.Silu ? "silu" : "none")}" + (dilation > 1 ? $", dilation {dilation}" : ""), null);
            }
            case LinearAttentionGateSignature.OpType:
                return (Extra(1, node.Output) ? "decay and beta" : "decay", null);
            default:
            {
                var activation = GatedRmsNormSignature.Activation(Attr("activation"), name);
                // ORT runs any epsilon; the engine's kernel takes finite ones >= 0 (a negative one makes rows NaN by their norm).
                float epsilon = NormEpsilon(node);
                if (!GatedRmsNormSignature.EngineRuns(epsilon)) return ("", $"epsilon {epsilon} (the engine takes a finite epsilon >= 0)");
                return ($"activation {(activation == GateActivation.Silu ? "silu" : "sigmoid")}", null);
            }
        }
    }

    /// <summary>How many times each value is read: node inputs and graph outputs, in every graph (subgraphs read outer values).</summary>
    private static Dictionary<string, int> Uses(GraphProto main)
    {
        var uses = new Dictionary<string, int>();
        foreach (var graph in OnnxModel.AllGraphs(main))
        {
            foreach (var name in graph.Node.SelectMany(n => n.Input).Concat(graph.Output.Select(o => o.Name)))
                if (name.Length > 0) uses[name] = uses.GetValueOrDefault(name) + 1;
        }
        return uses;
    }

    /// <summary>
    /// Transpose(0,2,1) → CausalConvWithState → Transpose(0,2,1), as ONNX Runtime GenAI's builder writes it around a channels-first
    /// convolution: the engine node reads and writes (B, T, C) itself (channels_last = 1, the state still (B, C, K−1)), the
    /// Transposes removed — only when the conv is the Transpose's one reader and the second Transpose the conv's.
    /// </summary>
    private static void FoldTransposes(GraphProto graph, IReadOnlyDictionary<string, int> uses, long onnxOpset, List<HandoverNode> nodes)
    {
        var producers = new Dictionary<string, NodeProto>();
        foreach (var n in graph.Node)
            foreach (var output in n.Output.Where(o => o.Length > 0)) producers[output] = n;
        foreach (var conv in graph.Node.Where(n => n.Domain == EngineDomain && n.OpType == CausalConvSignature.OpType).ToArray())
        {
            if (conv.Input.Count == 0 || conv.Output.Count == 0 || conv.Attribute.Any(a => a.Name is "channels_last" or "state_channels_last" && a.I != (a.Name == "channels_last" ? 0 : -1)))
                continue;
            if (!producers.TryGetValue(conv.Input[0], out var before) || !IsTranspose021(before)) continue;
            var after = graph.Node.FirstOrDefault(n => n.Input.Contains(conv.Output[0]));
            string? kept = uses.GetValueOrDefault(conv.Input[0]) != 1 ? $"'{conv.Input[0]}' has another reader"
                : after is null || !IsTranspose021(after) ? "its output is not read by a Transpose(0,2,1)"
                : uses.GetValueOrDefault(conv.Output[0]) != 1 ? $"'{conv.Output[0]}' has another reader"
                : NotAsItsOp([before, after], onnxOpset);
            int entry = nodes.FindLastIndex(n => n.NodeName == NameOf(conv) && n.ToEngine);
            if (kept is not null)
            {
                if (entry >= 0) nodes[entry] = nodes[entry] with { Detail = $"{nodes[entry].Detail}; Transposes kept: {kept}" };
                continue;
            }
            conv.Input[0] = before.Input[0];
            conv.Output[0] = after!.Output[0];
            // Either may be given as its default already: replaced, never repeated.
            foreach (var given in conv.Attribute.Where(a => a.Name is "channels_last" or "state_channels_last").ToArray()) conv.Attribute.Remove(given);
            conv.Attribute.Add(new AttributeProto { Name = "channels_last", Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            conv.Attribute.Add(new AttributeProto { Name = "state_channels_last", Type = AttributeProto.Types.AttributeType.Int, I = 0 });
            graph.Node.Remove(before);
            graph.Node.Remove(after);
            if (entry >= 0) nodes[entry] = nodes[entry] with { Detail = $"{nodes[entry].Detail}, channels-last: Transposes '{NameOf(before)}' and '{NameOf(after)}' folded in" };
        }
    }

    /// <summary>
    /// Split → per-head LpNormalization of q and k (Reshape to (B, T, H, d) and back) → q times a constant → LinearAttention
    /// with a delta rule, as ONNX Runtime GenAI's builder writes a Gated DeltaNet mixer: the engine node reads the split's input,
    /// the packed rows [q | k | v], where they lie and normalizes q and k itself (qk_l2_norm, the constant folded into scale),
    /// the Split, Reshapes, LpNormalizations and Mul removed — only when nothing else reads the tensors in between, past_state
    /// gives the head dims, the nodes lie in the attention's graph and the folded scale is finite and not 0 (which the kernel
    /// reads as 1/sqrt(dk)).
    /// </summary>
    private static void FoldQkPreparation(GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses, long onnxOpset, List<HandoverNode> nodes)
    {
        foreach (var attention in graph.Node.Where(n => n.Domain == EngineDomain && n.OpType == LinearAttentionSignature.OpType).ToArray())
        {
            var fold = QkPreparation.Match(attention, graph, hints, uses, out string? refusal);
            refusal ??= fold is null ? null : NotAsItsOp(fold.Removed, onnxOpset);
            if (fold is null || refusal is not null)
            {
                if (refusal is not null) NoteKept(nodes, attention, $"q/k preparation kept: {refusal}");
                continue;
            }
            attention.Input[LinearAttentionSignature.Query] = fold.Split.Input[0];
            attention.Input[LinearAttentionSignature.Key] = "";
            attention.Input[LinearAttentionSignature.Value] = "";
            if (attention.Attribute.FirstOrDefault(a => a.Name == "scale") is AttributeProto old) attention.Attribute.Remove(old);
            attention.Attribute.Add(new AttributeProto { Name = "scale", Type = AttributeProto.Types.AttributeType.Float, F = fold.Scale });
            attention.Attribute.Add(new AttributeProto { Name = LinearAttentionSignature.QkL2Norm, Type = AttributeProto.Types.AttributeType.Int, I = 1 });
            foreach (var removed in fold.Removed) graph.Node.Remove(removed);
            int entry = nodes.FindLastIndex(n => n.NodeName == NameOf(attention) && n.ToEngine);
            if (entry >= 0)
                nodes[entry] = nodes[entry] with
                {
                    Detail = $"{nodes[entry].Detail}, reads the packed rows of '{fold.Split.Input[0]}': Split '{NameOf(fold.Split)}', the q/k LpNormalizations and the q scaling folded in",
                };
        }
    }

    /// <summary>
    /// A channels-last engine CausalConvWithState (its state channels first, dilation 1) whose output only a delta-rule
    /// LinearAttention reads as packed query rows: the attention takes the convolution's input, weight, bias and past state
    /// (conv_weight, conv_bias, past_conv_state) and writes its present state, and its kernels convolve each head's rows as they
    /// load them, so the convolved rows are never written out. The convolution node is removed.
    /// </summary>
    private static void FoldConvolution(GraphProto graph, IReadOnlyDictionary<string, int> uses, List<HandoverNode> nodes)
    {
        var producers = new Dictionary<string, NodeProto>();
        foreach (var n in graph.Node)
            foreach (var output in n.Output.Where(o => o.Length > 0)) producers[output] = n;
        foreach (var attention in graph.Node.Where(n => n.Domain == EngineDomain && n.OpType == LinearAttentionSignature.OpType).ToArray())
        {
            var inputs = attention.Input;
            bool packed = inputs.Count > LinearAttentionSignature.PastState && inputs[LinearAttentionSignature.Key].Length == 0 && inputs[LinearAttentionSignature.Value].Length == 0;
            if (!packed || inputs.Count > LinearAttentionSignature.InputNames.Length || !producers.TryGetValue(inputs[LinearAttentionSignature.Query], out var conv)) continue;
            if (conv.Domain != EngineDomain || conv.OpType != CausalConvSignature.OpType || conv.Input.Count < 2 || conv.Input[1].Length == 0) continue;
            long? Attr(string name) => IntAttribute(conv, name);
            string activation = conv.Attribute.FirstOrDefault(a => a.Name == "activation")?.S.ToStringUtf8() ?? "none";
            string? kept = uses.GetValueOrDefault(conv.Output[0]) != 1 ? $"'{conv.Output[0]}' has another reader"
                : Attr("channels_last") != 1 || Attr("state_channels_last") != 0 ? "it is not channels-last with its state channels first"
                : (Attr("dilation") ?? 1) != 1 ? $"dilation {Attr("dilation")} (the fold takes 1)"
                : (Attr("ndim") ?? 1) != 1 ? $"ndim {Attr("ndim")} (the fold takes 1)"
                : conv.Attribute.FirstOrDefault(a => a.Name is not ("channels_last" or "state_channels_last" or "dilation" or "ndim" or "activation") && !IsUnsetConvAttribute(a)) is AttributeProto other
                    ? $"attribute '{other.Name}' (the fold takes channels_last, state_channels_last, dilation, ndim and activation; the others at 0)"
                : activation is not ("none" or "silu" or "swish") ? $"activation {activation}"
                : null;
            if (kept is not null)
            {
                NoteKept(nodes, attention, $"convolution '{NameOf(conv)}' kept: {kept}");
                continue;
            }

            attention.Input[LinearAttentionSignature.Query] = conv.Input[0];
            while (attention.Input.Count < LinearAttentionSignature.ConvWeight) attention.Input.Add("");
            attention.Input.Add(conv.Input[1]);
            attention.Input.Add(conv.Input.Count > 2 ? conv.Input[2] : "");
            attention.Input.Add(conv.Input.Count > 3 ? conv.Input[3] : "");
            if (conv.Output.Count > 1 && conv.Output[1].Length > 0)
            {
                while (attention.Output.Count < LinearAttentionSignature.PresentConvState) attention.Output.Add("");
                attention.Output.Add(conv.Output[1]);
            }
            attention.Attribute.Add(new AttributeProto
            {
                Name = LinearAttentionSignature.ConvActivation, Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8(activation),
            });
            graph.Node.Remove(conv);
            NoteFold(nodes, conv, attention, $"convolves the rows of '{conv.Input[0]}' as it loads them: CausalConvWithState '{NameOf(conv)}' folded in");
        }
    }

    /// <summary>
    /// state_window or a CUDA-only attribute written out at 0, its default, as ORT writes every attribute of a model it saves
    /// optimized: it asks for nothing the fold leaves out.
    /// </summary>
    private static bool IsUnsetConvAttribute(AttributeProto a) =>
        a.Type == AttributeProto.Types.AttributeType.Int && a.I == 0
        && (a.Name == "state_window" || (a.Name != "state_channels_last" && CausalConvSignature.CudaOnlyAttributes.Contains(a.Name)));

    /// <summary>
    /// The unfused gated RMS norm ONNX Runtime GenAI's builder writes after the attention (Reshape to heads,
    /// SimplifiedLayerNormalization, Reshape back, times SiLU(z) in float32, Cast back) as one engine GatedRMSNorm node — only
    /// when the weight holds one head's d values, x is known to be [B, T, H·d] and the types of x, weight and gate are known
    /// and one; else a note says why ORT keeps the chain.
    /// </summary>
    private static void FoldGatedNorm(GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses, long onnxOpset, List<HandoverNode> nodes,
        List<string> notes)
    {
        foreach (var norm in graph.Node.Where(n => n.OpType == "SimplifiedLayerNormalization" && OnnxModel.SameDomain(n.Domain, OnnxModel.OnnxDomain)).ToArray())
        {
            var chain = GatedNormChain.Match(norm, graph, hints, uses, out string? refusal);
            refusal ??= chain is null ? null : NotAsItsOp(chain.Removed, onnxOpset);
            if (chain is null || refusal is not null)
            {
                if (refusal is not null) notes.Add($"gated norm at '{NameOf(norm)}' kept with ORT: {refusal}");
                continue;
            }
            var fused = new NodeProto
            {
                OpType = GatedRmsNormSignature.OpType, Domain = EngineDomain, Name = NameOf(norm) + "/gated",
                Input = { chain.X, chain.Scale, chain.Gate }, Output = { chain.Output },
            };
            fused.Attribute.Add(new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float, F = chain.Epsilon });
            fused.Attribute.Add(new AttributeProto { Name = "activation", Type = AttributeProto.Types.AttributeType.String, S = Google.Protobuf.ByteString.CopyFromUtf8("silu") });
            graph.Node.Insert(graph.Node.IndexOf(chain.Removed[^1]), fused);
            foreach (var removed in chain.Removed) graph.Node.Remove(removed);
            nodes.Add(new HandoverNode(fused.Name, "SimplifiedLayerNormalization", OnnxModel.OnnxDomain, EngineDomain,
                $"one GatedRMSNorm (silu) for the chain {string.Join(", ", chain.Removed.Select(n => n.OpType).Distinct())}"));
        }
    }

    /// <summary>
    /// An engine GatedRMSNorm whose input is only a delta-rule LinearAttention's output (in the same graph), normalizing each head
    /// (its scale holds one head's dv values): the attention takes the scale and the gate (norm_scale, norm_gate) and writes the
    /// norm's output, its kernels normalizing each head's rows before they store them. Only where the gate is computed before the
    /// attention (the node order stays topological), the types agree and the model makes dv plain (past_state's last dim). A
    /// constant scale [1, …, 1, dv] is given as a copy of shape [dv] (norm_scale has rank 1).
    /// </summary>
    private static void FoldOutputNorm(GraphProto graph, ShapeHints hints, IReadOnlyDictionary<string, int> uses, List<HandoverNode> nodes)
    {
        foreach (var norm in graph.Node.Where(n => n.Domain == EngineDomain && n.OpType == GatedRmsNormSignature.OpType).ToArray())
        {
            if (norm.Input.Count != 3 || norm.Input.Any(i => i.Length == 0) || norm.Output.Count != 1) continue;
            // An attention in an enclosing graph is no node this graph can change.
            if (hints.Producer(norm.Input[0]) is not { OpType: LinearAttentionSignature.OpType } attention || attention.Domain != EngineDomain || !graph.Node.Contains(attention)) continue;
            if (attention.Output[0] != norm.Input[0] || uses.GetValueOrDefault(norm.Input[0]) != 1 || attention.Input.Count > LinearAttentionSignature.NormScale) continue;
            string rule = attention.Attribute.FirstOrDefault(a => a.Name == "update_rule")?.S.ToStringUtf8() ?? LinearAttentionSignature.DefaultUpdateRule;
            if (rule is not ("delta" or "gated_delta") || attention.Input.Count <= LinearAttentionSignature.PastState) continue;
            string scale = norm.Input[1], gate = norm.Input[2];
            // The engine's LinearAttention takes every input in one type: past_state's, declared as a graph input or initializer.
            var type = hints.ElementType(attention.Input[LinearAttentionSignature.PastState]);
            var scaleDims = hints.DeclaredDims(scale);
            string? kept = hints.LastDim(attention.Input[LinearAttentionSignature.PastState]) is not long dv ? "past_state does not declare dv"
                : scaleDims is null || scaleDims.Count == 0 || scaleDims[^1] != dv || scaleDims.SkipLast(1).Any(n => n != 1)
                    ? $"its scale '{scale}' is {(scaleDims is null ? "of unknown shape" : $"[{string.Join(", ", scaleDims)}]")}, the fold needs [{dv}] (one head's)"
                : scaleDims.Count > 1 && hints.Constant(scale) is null ? $"its scale '{scale}' is [{string.Join(", ", scaleDims)}] and no constant to give as [{dv}]"
                : type is null || hints.ElementType(scale) != type || hints.InferredType(gate) != type ? "the types of past_state, the scale and the gate are not known to be one"
                : LateInput(graph, hints, attention, norm, scale, gate) is string late && ReadBetween(graph, attention, norm)
                    ? $"the {late} is computed after the attention, whose outputs are read before the norm"
                : !GatedRmsNormSignature.EngineRuns(NormEpsilon(norm)) ? $"its epsilon is {NormEpsilon(norm)}, the engine takes a finite epsilon >= 0"
                : null;
            if (kept is not null)
            {
                NoteKept(nodes, attention, $"output norm '{NameOf(norm)}' kept: {kept}");
                continue;
            }
            if (scaleDims!.Count > 1) scale = ConstantAsVector(graph, hints.Constant(scale)!, scale);
            // A gate or scale computed after the attention (ONNX Runtime's saved optimized models order the projections so): the
            // attention moves to the norm's place, after both, where nothing in between reads what it writes.
            if (LateInput(graph, hints, attention, norm, norm.Input[1], gate) is not null)
            {
                graph.Node.Remove(attention);
                graph.Node.Insert(graph.Node.IndexOf(norm), attention);
            }

            while (attention.Input.Count < LinearAttentionSignature.NormScale) attention.Input.Add("");
            attention.Input.Add(scale);
            attention.Input.Add(gate);
            attention.Output[0] = norm.Output[0];
            attention.Attribute.Add(new AttributeProto
            {
                Name = LinearAttentionSignature.NormEpsilon, Type = AttributeProto.Types.AttributeType.Float,
                F = NormEpsilon(norm),
            });
            attention.Attribute.Add(new AttributeProto
            {
                Name = LinearAttentionSignature.NormActivation, Type = AttributeProto.Types.AttributeType.String,
                S = norm.Attribute.FirstOrDefault(a => a.Name == "activation")?.S ?? Google.Protobuf.ByteString.CopyFromUtf8("silu"),
            });
            graph.Node.Remove(norm);
            NoteFold(nodes, norm, attention, $"normalizes and gates its output heads: GatedRMSNorm '{NameOf(norm)}' folded in");
        }
    }

    /// <summary>"scale '…'" or "gate '…'" when that input of the norm is made by a node of the graph after the attention; else null.</summary>
    private static string? LateInput(GraphProto graph, ShapeHints hints, NodeProto attention, NodeProto norm, string scale, string gate)
    {
        int at = graph.Node.IndexOf(attention);
        bool Late(string value) => hints.Producer(value) is NodeProto producer && graph.Node.IndexOf(producer) > at;
        return Late(gate) ? $"gate '{gate}'" : Late(scale) ? $"scale '{scale}'" : null;
    }

    /// <summary>Whether a node between the attention and the norm (or a subgraph of one) reads an output of the attention.</summary>
    private static bool ReadBetween(GraphProto graph, NodeProto attention, NodeProto norm)
    {
        var written = attention.Output.Where(o => o.Length > 0).ToHashSet();
        int from = graph.Node.IndexOf(attention) + 1, to = graph.Node.IndexOf(norm);
        return graph.Node.Skip(from).Take(to - from).Any(n => n.Input.Any(written.Contains)
            || n.Attribute.SelectMany(a => a.G is null ? a.Graphs : a.Graphs.Prepend(a.G)).SelectMany(OnnxModel.AllGraphs)
                .Any(g => g.Node.Any(inner => inner.Input.Any(written.Contains))));
    }

    private static float NormEpsilon(NodeProto norm) => norm.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? GatedRmsNormSignature.DefaultEpsilon;

    /// <summary>The constant <paramref name="name"/> as a rank-1 initializer of <paramref name="graph"/> (one copy per graph): its name.</summary>
    private static string ConstantAsVector(GraphProto graph, TensorProto constant, string name)
    {
        string vectorName = $"{name}/as_vector";
        if (graph.Initializer.Any(t => t.Name == vectorName)) return vectorName;
        var vector = constant.Clone();
        vector.Name = vectorName;
        long count = vector.Dims.Aggregate(1L, (a, n) => a * n);
        vector.Dims.Clear();
        vector.Dims.Add(count);
        graph.Initializer.Add(vector);
        return vectorName;
    }

    /// <summary>Why a fold that matched its pattern was refused, on the plan's entry of the node it would have changed (`inspect` shows it).</summary>
    private static void NoteKept(List<HandoverNode> nodes, NodeProto node, string why)
    {
        int entry = nodes.FindLastIndex(n => n.NodeName == NameOf(node) && n.ToEngine);
        if (entry >= 0) nodes[entry] = nodes[entry] with { Detail = $"{nodes[entry].Detail}; {why}" };
    }

    /// <summary>The plan's entries of a node folded into a LinearAttention and of the attention, which says what it now does.</summary>
    private static void NoteFold(List<HandoverNode> nodes, NodeProto folded, NodeProto attention, string what)
    {
        int foldedEntry = nodes.FindLastIndex(n => n.NodeName == NameOf(folded) && n.ToEngine);
        if (foldedEntry >= 0) nodes[foldedEntry] = nodes[foldedEntry] with { Detail = $"{nodes[foldedEntry].Detail}; folded into LinearAttention '{NameOf(attention)}'" };
        int entry = nodes.FindLastIndex(n => n.NodeName == NameOf(attention) && n.ToEngine);
        if (entry >= 0) nodes[entry] = nodes[entry] with { Detail = $"{nodes[entry].Detail}; {what}" };
    }

    /// <summary>
    /// The attributes a fold lets the ai.onnx nodes it removes carry at an opset, those of ORT's schemas it reads or that change
    /// nothing: a node with an attribute its op lacks is a model ORT refuses to load, which a fold that removed it would run.
    /// </summary>
    private static IEnumerable<string> FoldedAttributes(string opType, long onnxOpset) => opType switch
    {
        "Split" => onnxOpset < 13 ? ["axis", "split"] : onnxOpset >= 18 ? ["axis", "num_outputs"] : ["axis"],
        "Reshape" => onnxOpset >= 14 ? ["allowzero"] : [],
        "LpNormalization" => ["axis", "p"],
        "Transpose" => ["perm"],
        // saturate acts on float8 targets only.
        "Cast" => onnxOpset >= 19 ? ["to", "saturate"] : ["to"],
        "SimplifiedLayerNormalization" => ["axis", "epsilon", "stash_type"],
        "QuickGelu" => ["alpha"],
        _ => [],
    };

    /// <summary>Why a fold keeps the nodes it would remove: one carries an attribute the fold does not take at the model's opset; or null.</summary>
    private static string? NotAsItsOp(IEnumerable<NodeProto> removed, long onnxOpset)
    {
        foreach (var node in removed)
        {
            var known = FoldedAttributes(node.OpType, onnxOpset).ToArray();
            if (node.Attribute.FirstOrDefault(a => !known.Contains(a.Name)) is AttributeProto other)
                return $"{node.OpType} '{NameOf(node)}' has attribute '{other.Name}', which the fold does not take at ai.onnx opset {onnxOpset}" +
                    (known.Length > 0 ? $" (it takes {string.Join(", ", known)})" : "");
            // Split reads its sizes from an input from opset 13 on, from its attribute before.
            if (node.OpType == "Split" && onnxOpset < 13 && node.Input.Count > 1)
                return $"Split '{NameOf(node)}' has a sizes input, which Split does not have at ai.onnx opset {onnxOpset}";
        }
        return null;
    }

    private static bool IsTranspose021(NodeProto node) =>
        node.OpType == "Transpose" && OnnxModel.SameDomain(node.Domain, OnnxModel.OnnxDomain) && node.Input.Count == 1 && node.Output.Count == 1 &&
        node.Attribute.FirstOrDefault(a => a.Name == "perm") is AttributeProto perm && perm.Ints.SequenceEqual([0L, 2L, 1L]);

    private static long? IntAttribute(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name)?.I;

    /// <summary>The decay's form when the model makes its width plain: Hkv per head, Hkv·dk per key dim.</summary>
    private static DecayForm? DecayFormOf(NodeProto node, ShapeHints hints)
    {
        if (node.Input.Count <= LinearAttentionSignature.Decay || hints.LastDim(node.Input[LinearAttentionSignature.Decay]) is not long width) return null;
        long? kvHeads = node.Attribute.FirstOrDefault(a => a.Name == "kv_num_heads")?.I;
        if (kvHeads is null || kvHeads < 1) return null;
        if (width == kvHeads) return DecayForm.PerHead;
        return width > kvHeads && width % kvHeads == 0 ? DecayForm.PerKey : null;
    }

    private static void Import(ModelProto model, string domain, long version)
    {
        if (!model.OpsetImport.Any(o => o.Domain == domain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = domain, Version = version });
    }

    private static string NameOf(NodeProto node) => node.Name.Length > 0 ? node.Name : $"{node.OpType}({string.Join(", ", node.Output)})";
}

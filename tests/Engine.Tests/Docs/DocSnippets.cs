using System.Reflection;
using System.Runtime.ExceptionServices;
using System.Runtime.Loader;
using Engine.Onnx;
using Engine.Tests.Harness;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;

namespace Engine.Tests.Docs;

/// <summary>A ```csharp block of a markdown file: the file (relative to the repository), the fence's line and the code.</summary>
public sealed record DocSnippet(string File, int Line, string Code)
{
    public override string ToString() => $"{File}:{Line}";
}

/// <summary>
/// The C# blocks of the docs, compiled as a user's program would be (docs/architecture.md, "Docs are tested"): top-level
/// statements with the usings of a new project plus <c>Engine</c> and <c>System.Numerics.Tensors</c>, the variables of
/// <see cref="WellKnownVariables"/> in scope, against the framework and Engine.Onnx with what it depends on. A block that
/// declares everything it uses and names no file is run as well (<see cref="Runs"/>).
/// </summary>
public static class DocSnippets
{
    /// <summary>ImplicitUsings of a console project, and the two namespaces every snippet reads as imported.</summary>
    private static readonly string[] DefaultUsings =
        ["System", "System.IO", "System.Linq", "System.Collections.Generic", "System.Threading", "System.Threading.Tasks",
         "System.Net.Http", "System.Numerics.Tensors", "Engine"];

    /// <summary>The namespaces a snippet may take types from: what <c>using Engine;</c> and <c>using Engine.Onnx;</c> reach, and .npy files (<c>Engine.IO</c>).</summary>
    private static readonly HashSet<string> UserNamespaces = [.. DefaultUsings, "Engine.Onnx", "Engine.IO"];

    /// <summary>The variables snippets use without declaring them (listed in docs/architecture.md).</summary>
    private const string WellKnownVariables = """
        using Engine.Onnx;

        public static class WellKnown
        {
            // Attention: q [B,T,Hq,K]; k [B,T,Hk,K]; v [B,T,Hkv,V]; g [B,T,Hkv,K] or [B,T,Hkv]; beta [B,T,Hkv]; output [B,T,max(Hq,Hkv),V];
            // initialState, finalState: the op's state ([B,Hkv,K,V]; LSSL [B,H,N]); cuSeqlens: packed sequence offsets.
            public static readonly Tensor<float> q = null!, k = null!, v = null!, g = null!, beta = null!, output = null!;
            public static readonly Tensor<float> initialState = null!, finalState = null!;
            public static readonly int[] cuSeqlens = [];
            // The same for one token (T = 1).
            public static readonly Tensor<float> qToken = null!, kToken = null!, vToken = null!, gToken = null!, betaToken = null!, outputToken = null!;
            // LSSL: u, y [B,L,H]; uToken, yToken [B,1,H]; c [H,N]; d [H].
            public static readonly Tensor<float> u = null!, y = null!, uToken = null!, yToken = null!, c = null!, d = null!;
            // ONNX: a model's input x [B,T,D] and one token's xToken [B,1,D].
            public static readonly TensorData x = null!, xToken = null!;
        }
        """;

    private static readonly CSharpParseOptions ParseOptions = new(LanguageVersion.Latest);

    private static readonly SyntaxTree Preamble = CSharpSyntaxTree.ParseText(
        string.Concat(DefaultUsings.Select(n => $"global using {n};\n")) + "global using static WellKnown;\n" + WellKnownVariables,
        ParseOptions, path: "WellKnown.cs");

    private static readonly Lazy<MetadataReference[]> References = new(() =>
    {
        string framework = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        var frameworkAssemblies = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(path => Path.GetDirectoryName(path) == framework);
        return [.. frameworkAssemblies.Concat(Libraries(typeof(ModelSession).Assembly, framework)).Distinct()
            .Select(path => MetadataReference.CreateFromFile(path))];
    });

    /// <summary>Every ```csharp block of README.md, docs/*.md and src/*/README.md.</summary>
    public static IEnumerable<DocSnippet> InRepository()
    {
        string root = Repository.Root;
        var files = new[] { Path.Combine(root, "README.md") }
            .Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order())
            .Concat(Directory.GetDirectories(Path.Combine(root, "src")).Order().Select(dir => Path.Combine(dir, "README.md")))
            .Where(File.Exists);
        return files.SelectMany(path => Parse(Path.GetRelativePath(root, path).Replace('\\', '/'), File.ReadAllText(path)));
    }

    /// <summary>The ```csharp blocks of one markdown text; other fences (plain, shell) are skipped whole.</summary>
    public static IEnumerable<DocSnippet> Parse(string file, string markdown)
    {
        var lines = markdown.ReplaceLineEndings("\n").Split('\n');
        for (int open = 0; open < lines.Length; open++)
        {
            if (!lines[open].StartsWith("```", StringComparison.Ordinal)) continue;
            int close = Array.FindIndex(lines, open + 1, line => line.TrimEnd() == "```");
            if (close < 0) throw new FormatException($"{file}:{open + 1}: the code fence is not closed");
            if (lines[open].TrimEnd() == "```csharp")
                yield return new DocSnippet(file, open + 1, string.Join('\n', lines[(open + 1)..close]));
            open = close;
        }
    }

    /// <summary>
    /// What is wrong with a snippet, each as "file(line,column): ...": compiler errors and warnings, imports of
    /// namespaces other than <see cref="UserNamespaces"/>, and types named from elsewhere. Empty when it is fine.
    /// </summary>
    public static IReadOnlyList<string> Problems(DocSnippet snippet)
    {
        var (compilation, tree) = Compile(snippet);
        var problems = compilation.GetDiagnostics()
            .Where(d => d.Severity >= DiagnosticSeverity.Warning)
            .Select(d => d.ToString())
            .ToList();

        var model = compilation.GetSemanticModel(tree);
        var root = tree.GetCompilationUnitRoot();
        foreach (var directive in root.Usings)
        {
            if (model.GetSymbolInfo(directive.NamespaceOrType).Symbol is INamespaceSymbol imported && !MayImport(imported))
                problems.Add($"{At(directive)}: imports {imported}: a snippet uses what `using Engine;` and `using Engine.Onnx;` reach");
        }
        foreach (var name in root.DescendantNodes().OfType<SimpleNameSyntax>())
        {
            if (name is IdentifierNameSyntax { IsVar: true }) continue;
            if (model.GetSymbolInfo(name).Symbol is INamedTypeSymbol type && !MayName(type))
                problems.Add($"{At(name)}: names {type.ToDisplayString()}, which `using Engine;` and `using Engine.Onnx;` do not reach");
        }
        // Tensor.Create<T>([1, T, H]) compiles, binds to Create(T[] values) and makes a 1-D tensor holding those numbers:
        // refused in every snippet, as most are compiled only (they use the well-known variables).
        foreach (var call in root.DescendantNodes().OfType<InvocationExpressionSyntax>())
        {
            if (call.ArgumentList.Arguments is [{ Expression: CollectionExpressionSyntax }]
                && model.GetSymbolInfo(call).Symbol is IMethodSymbol { Name: "Create", Parameters.Length: 1 } create
                && create.ContainingType.ToDisplayString() == "System.Numerics.Tensors.Tensor")
                problems.Add($"{At(call)}: Tensor.Create of a list makes a 1-D tensor of those values; a tensor of a shape is Tensor.CreateFromShape");
        }
        return problems;
    }

    /// <summary>
    /// Whether <see cref="Run"/> runs the snippet: it uses none of the well-known variables (so it declares every tensor
    /// it reads, with its shape and values) and calls nothing that takes a path or a folder (a file of the user's).
    /// </summary>
    public static bool Runs(DocSnippet snippet)
    {
        var (compilation, tree) = Compile(snippet);
        var model = compilation.GetSemanticModel(tree);
        foreach (var node in tree.GetCompilationUnitRoot().DescendantNodes())
        {
            var symbol = model.GetSymbolInfo(node).Symbol;
            if (symbol is IFieldSymbol { ContainingType.Name: "WellKnown" }) return false;
            if (symbol is IMethodSymbol method && method.Parameters.Any(TakesAFile)) return false;
        }
        return true;
    }

    private static bool TakesAFile(IParameterSymbol parameter) =>
        parameter.Type.SpecialType == SpecialType.System_String
        && (parameter.Name.Contains("path", StringComparison.OrdinalIgnoreCase) || parameter.Name.Contains("directory", StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// Runs the snippet's program in this process (its own load context, the engine's assemblies shared); what it throws
    /// is rethrown as it was thrown. Only for snippets that compile without problems.
    /// </summary>
    public static void Run(DocSnippet snippet)
    {
        var (compilation, _) = Compile(snippet);
        using var image = new MemoryStream();
        var emitted = compilation.Emit(image);
        if (!emitted.Success) throw new InvalidOperationException($"{snippet} does not compile: {emitted.Diagnostics.First(d => d.Severity == DiagnosticSeverity.Error)}");
        image.Position = 0;
        var context = new AssemblyLoadContext(snippet.ToString(), isCollectible: true);
        try
        {
            var entry = context.LoadFromStream(image).EntryPoint!;
            try
            {
                entry.Invoke(null, entry.GetParameters().Length == 0 ? null : [Array.Empty<string>()]);
            }
            catch (TargetInvocationException e) when (e.InnerException is not null)
            {
                ExceptionDispatchInfo.Capture(e.InnerException).Throw();
            }
        }
        finally
        {
            context.Unload();
        }
    }

    /// <summary>The snippet as a program with the preamble; #line maps every diagnostic to the markdown file's own lines.</summary>
    private static (CSharpCompilation Compilation, SyntaxTree Tree) Compile(DocSnippet snippet)
    {
        var tree = CSharpSyntaxTree.ParseText($"#line {snippet.Line + 1} \"{snippet.File}\"\n{snippet.Code}", ParseOptions, path: snippet.File);
        var compilation = CSharpCompilation.Create("DocSnippet", [Preamble, tree], References.Value,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        return (compilation, tree);
    }

    private static bool MayImport(INamespaceSymbol ns) =>
        UserNamespaces.Contains(ns.ToDisplayString());

    private static bool MayName(INamedTypeSymbol type) =>
        UserNamespaces.Contains(type.ContainingNamespace.ToDisplayString());

    private static string At(SyntaxNode node)
    {
        var span = node.GetLocation().GetMappedLineSpan();
        return $"{span.Path}({span.StartLinePosition.Line + 1},{span.StartLinePosition.Character + 1})";
    }

    /// <summary>The assembly and every assembly outside the framework it depends on: what a user's package reference brings.</summary>
    private static IEnumerable<string> Libraries(Assembly root, string framework)
    {
        var found = new Dictionary<string, string>();
        var pending = new Stack<Assembly>([root]);
        while (pending.TryPop(out var assembly))
        {
            if (Path.GetDirectoryName(assembly.Location) == framework || !found.TryAdd(assembly.GetName().Name!, assembly.Location)) continue;
            foreach (var reference in assembly.GetReferencedAssemblies()) pending.Push(Assembly.Load(reference));
        }
        return found.Values;
    }
}

using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.IR;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Engine.Kernels.Common;

/// <summary>
/// Compiles the GPU kernels to PTX without a CUDA device, as ILGPU compiles them for a launch (O2, algorithms, the
/// CUDA group size, the shape parameter bound to a constant). PTX ISA 7.8: the newest NVIDIA's CUDA 11.8 assembler takes,
/// and enough for sm_90.
/// </summary>
public sealed class PtxCompiler : IDisposable
{
    private readonly Context _context;
    private readonly PTXBackend _backend;

    public PtxCompiler(CudaArchitecture architecture)
    {
        Architecture = architecture;
        _context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2).EnableAlgorithms());
        _backend = new PTXBackend(_context, new CudaCapabilityContext(architecture), architecture, CudaInstructionSet.ISA_78, null);
    }

    public CudaArchitecture Architecture { get; }

    /// <summary>The architectures `engine ptx --arch` takes, by their ptxas names.</summary>
    public static IReadOnlyDictionary<string, CudaArchitecture> Architectures { get; } =
        new Dictionary<string, CudaArchitecture> { ["sm_80"] = CudaArchitecture.SM_80, ["sm_90"] = CudaArchitecture.SM_90 };

    /// <summary>
    /// The launch's PTX. As ILGPU does when a launch meets a new <see cref="SpecializedValue{T}"/>: a wrapper entry point
    /// calls the kernel with the shape as a constant, is inlined and optimized, then compiled.
    /// </summary>
    public string Compile(GpuKernelLaunch launch)
    {
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(launch.Kernel.Method);
        var specialized = entry.Parameters.SpecializedParameters;
        if (specialized.Length != 1)
            throw new InvalidOperationException($"{launch.Kernel.Name}: expected one specialized shape parameter, found {specialized.Length}");
        using var kernelContext = _backend.PreCompileKernelMethod(entry).ExtractToContext(out var kernel);
        var wrapper = kernelContext.Declare(new MethodDeclaration(MethodHandle.Create(launch.Kernel.Method.Name), kernelContext.VoidType), out _);
        kernel.AddFlags(MethodFlags.Inline);
        using (var builder = wrapper.CreateBuilder())
        {
            var block = builder.EntryBlockBuilder;
            var call = block.CreateCall(wrapper.Location, kernel);
            for (int i = 0; i < kernel.NumParameters; i++)
            {
                // Every parameter stays in the signature, as the launcher passes them all; the shape's value is the constant.
                var parameter = builder.AddParameter(kernel.Parameters[i].Type, kernel.Parameters[i].Name);
                call.Add(i - entry.KernelIndexParameterOffset == specialized[0].Index
                    ? block.CreateObjectValue(wrapper.Location, launch.SpecializedShape)
                    : parameter);
            }
            call.Seal();
            block.CreateReturn(wrapper.Location);
            builder.Complete();
        }
        kernelContext.Optimize();
        string ptx = ((PTXCompiledKernel)_backend.Compile(wrapper, entry, new KernelSpecialization(GpuRuntime.CudaGroupSize, null))).PTXAssembly;
        return WithTarget(ptx, Target);
    }

    /// <summary>The ptxas name of <see cref="Architecture"/>: sm_90.</summary>
    public string Target => $"sm_{Architecture.Major}{Architecture.Minor}";

    /// <summary>
    /// ILGPU's PTX backend writes ".target sm_80" whatever architecture it is given (the newest it names); the kernels use
    /// nothing beyond sm_80, so the requested architecture is stated instead, as ptxas then assembles for it.
    /// </summary>
    private static string WithTarget(string ptx, string target)
    {
        int start = ptx.IndexOf("\n.target ", StringComparison.Ordinal);
        if (start < 0) throw new InvalidOperationException("the PTX has no .target line");
        int end = ptx.IndexOf('\n', start + 1);
        return string.Concat(ptx.AsSpan(0, start), "\n.target ", target, ptx.AsSpan(end));
    }

    public void Dispose()
    {
        _backend.Dispose();
        _context.Dispose();
    }
}

/// <summary>What NVIDIA's assembler made of one kernel: its resources (ptxas -v) and its machine code as nvdisasm prints it.</summary>
public sealed record PtxAssembly(string Report, int Registers, int StackFrameBytes, int SpillStoreBytes, int SpillLoadBytes, int SharedBytes, string Sass);

/// <summary>
/// Assembles PTX with NVIDIA's ptxas (CUDA 11.8: tools/ptxas/fetch-ptxas.sh fetches it) and disassembles the result with the
/// nvdisasm beside it, without a GPU.
/// </summary>
public sealed class PtxAssembler(string ptxas)
{
    private readonly string _nvdisasm = Path.Combine(Path.GetDirectoryName(ptxas) ?? ".", "nvdisasm");

    /// <summary>The kernel's ptxas -v report and SASS; a failed assembly throws with the tool's message.</summary>
    public PtxAssembly Assemble(string ptx, string arch)
    {
        string folder = Directory.CreateTempSubdirectory("engine-ptx-").FullName;
        try
        {
            string source = Path.Combine(folder, "kernel.ptx"), cubin = Path.Combine(folder, "kernel.cubin");
            File.WriteAllText(source, ptx);
            string report = Run(ptxas, ["-arch=" + arch, "-v", source, "-o", cubin]);
            string sass = Run(_nvdisasm, [cubin]);
            int Read(string pattern) => System.Text.RegularExpressions.Regex.Match(report, pattern) is { Success: true } m
                ? int.Parse(m.Groups[1].Value)
                : throw new InvalidOperationException($"ptxas -v printed no '{pattern}':\n{report}");
            return new PtxAssembly(report, Read(@"Used (\d+) registers"), Read(@"(\d+) bytes stack frame"), Read(@"(\d+) bytes spill stores"),
                Read(@"(\d+) bytes spill loads"), System.Text.RegularExpressions.Regex.Match(report, @"(\d+) bytes smem") is { Success: true } s ? int.Parse(s.Groups[1].Value) : 0, sass);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>The tool's stdout, and its stderr before it (ptxas writes its report there).</summary>
    private static string Run(string tool, string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo(tool, arguments) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var process = System.Diagnostics.Process.Start(start) ?? throw new InvalidOperationException($"{tool} did not start");
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"{Path.GetFileName(tool)} failed ({process.ExitCode}):\n{stderr.Result}{stdout}");
        return stderr.Result + stdout;
    }
}

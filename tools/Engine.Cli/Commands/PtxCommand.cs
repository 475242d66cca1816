using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine ptx DIR: every GPU kernel as PTX, for NVIDIA's assembler (no GPU needed).</summary>
internal sealed class PtxCommand : ICommand
{
    public string Name => "ptx";
    public string Summary => "write every GPU kernel as PTX (no GPU needed), e.g. for NVIDIA's ptxas";
    public IReadOnlyCollection<string> Options { get; } = ["arch"];
    public int Positionals => 1;
    public string Usage => $"""
        engine ptx DIR [--arch {string.Join("|", PtxCompiler.Architectures.Keys)}]
          Writes DIR/OP.KERNEL.ptx for each GPU kernel, compiled as ILGPU compiles it for a CUDA launch (PTX ISA 7.8,
          {GpuRuntime.CudaGroupSize} threads per group); --arch defaults to sm_90. Assemble one with
          ptxas -arch=sm_90 -v DIR/gla.Output.ptx -o /dev/null
        """;

    public int Run(CommandLine args, CliContext context)
    {
        if (args.Positionals.Count != 1) throw new UsageException("give the directory to write the .ptx files to");
        string arch = args.Value("arch") ?? "sm_90";
        if (!PtxCompiler.Architectures.TryGetValue(arch, out var architecture))
            throw new UsageException($"--arch must be one of {string.Join(", ", PtxCompiler.Architectures.Keys)}, got '{arch}'");
        string directory = Directory.CreateDirectory(args.Positionals[0]).FullName;
        using var compiler = new PtxCompiler(architecture);
        foreach (var kernel in GpuKernelCatalog.All)
        {
            string file = Path.Combine(directory, kernel.Name + ".ptx");
            File.WriteAllText(file, compiler.Compile(kernel));
            context.Out.WriteLine($"wrote {file}");
        }
        context.Out.WriteLine($"{GpuKernelCatalog.All.Count} kernels for {arch}");
        return 0;
    }
}

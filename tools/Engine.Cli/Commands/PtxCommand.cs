using System.CommandLine;
using System.Text;
using System.Text.Json;
using Engine.IO;
using Engine.Kernels.Common;

namespace Engine.Cli.Commands;

/// <summary>engine ptx DIR: every GPU kernel as PTX, for NVIDIA's assembler (no GPU needed).</summary>
internal sealed class PtxCommand : EngineCommand
{
    private readonly Argument<string> _dir = Opt.PathArgument("dir", "DIR", "the directory to write the .ptx files to");
    private readonly Option<string> _arch = Opt.Choice("--arch", "sm_90", [.. PtxCompiler.Architectures.Keys], "the target architecture the PTX's .target states");
    private readonly Option<bool> _json = Opt.Json();

    public PtxCommand() : base("ptx", "write every GPU kernel as PTX as a launch compiles it (no GPU needed), e.g. for NVIDIA's ptxas", $"""
        Writes DIR/OP.KERNEL.VARIANT.ptx for each GPU kernel under each configuration of its op the checks cover
        (H = 8, K = V = 128; gate forms and precisions), compiled as ILGPU compiles it for a CUDA launch: the shape a
        constant, PTX ISA 7.8, .target the --arch given (the instructions are sm_80's, which sm_90 runs too),
        {GpuRuntime.CudaGroupSize} threads per group. Assemble one with
        ptxas -arch=sm_90 -v DIR/gla.Output.per-head-tf32.ptx -o /dev/null
        """)
    {
        Add(_dir);
        Add(_arch);
        Add(_json);
    }

    protected override int Run(ParseResult args, CliContext context)
    {
        string arch = args.GetValue(_arch)!;
        bool json = args.GetValue(_json);
        string directory = OutputFolder.Create(args.GetValue(_dir)!, "DIR");
        OutputFolder.RequireRoom(GpuKernelCatalog.Launches.Select(launch => Path.Combine(directory, launch.Name + ".ptx")), []);
        using var compiler = new PtxCompiler(PtxCompiler.Architectures[arch]);
        var files = new List<Dictionary<string, string>>();
        foreach (var launch in GpuKernelCatalog.Launches)
        {
            // Compiling every launch takes a while: a cancelled run stops between files.
            context.Cancellation.ThrowIfCancellationRequested();
            string file = Path.Combine(directory, launch.Name + ".ptx");
            string ptx = compiler.Compile(launch);
            OutputFile.Write(file, stream => stream.Write(Encoding.UTF8.GetBytes(ptx)));
            files.Add(new() { ["kernel"] = launch.Kernel.Name, ["variant"] = launch.Variant, ["file"] = file });
            if (!json) context.Out.WriteLine($"wrote {file}");
        }
        if (json) context.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object> { ["arch"] = arch, ["kernels"] = files }, new JsonSerializerOptions { WriteIndented = true }));
        else context.Out.WriteLine($"{GpuKernelCatalog.Launches.Count} launches of {GpuKernelCatalog.All.Count} kernels for {arch}");
        return 0;
    }
}

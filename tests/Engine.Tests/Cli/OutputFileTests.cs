using Engine.IO;
using Engine.Kernels.Common;
using NUnit.Framework;
using DataType = Engine.Onnx.Proto.TensorProto.Types.DataType;

namespace Engine.Tests.Cli;

/// <summary>Where `engine run` and `engine op` write: never onto an input file, never two outputs onto one file; each input named once.</summary>
[TestFixture]
public sealed class OutputFileTests : CliFixture
{
    /// <summary>A graph with no node whose output is its input x: ONNX Runtime hands back x's own (here memory-mapped) memory.</summary>
    private string IdentityGraph() => SaveModel("identity.onnx", builder =>
    {
        builder.Input("x", DataType.Float, 2, 3);
        builder.Output("x", DataType.Float, 2, 3);
    });

    private static readonly float[] Values = [1, 2, 3, 4, 5, 6];

    [Test]
    public void RunRefusesToWriteAnOutputOntoItsInputFile()
    {
        string x = Save("x.npy", NpyArray.From(Values, [2, 3]));
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", Directory), 1,
            $"output x would be written to {x}, which is the input file {x}");
        using var kept = Npy.Read(x);
        Assert.That(kept.ToFloat32(), Is.EqualTo(Values), "the input is left as it was");
    }

    /// <summary>
    /// An output that holds NaN or infinity (here passed on by ONNX Runtime from an input only its own nodes read; a model
    /// overflowing on finite inputs does the same) was written, and the run reported as a success.
    /// </summary>
    [Test]
    public void RunRefusesToWriteAnOutputThatIsNotFinite()
    {
        string x = Save("x.npy", NpyArray.From([1f, float.NaN, 3f, float.PositiveInfinity, 5f, 6f], [2, 3]));
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", PathOf("out")), 1,
            "output 'x': 2 of its values are NaN or infinite (the first at flat index 1): the model overflowed on these inputs; it is not written");
        Assert.That(File.Exists(Path.Combine(PathOf("out"), "x.npy")), Is.False);
    }

    /// <summary>Every output is checked before any is written: the finite output before the refused one was left in the folder.</summary>
    [Test]
    public void RunWritesNoOutputWhenALaterOneIsNotFinite()
    {
        string model = SaveModel("two.onnx", builder =>
        {
            builder.Input("x", DataType.Float, 2, 3);
            builder.Input("y", DataType.Float, 2, 3);
            builder.Output("x", DataType.Float, 2, 3);
            builder.Output("y", DataType.Float, 2, 3);
        });
        string x = Save("x.npy", NpyArray.From(Values, [2, 3]));
        string y = Save("y.npy", NpyArray.From([1f, 2f, float.NaN, 4f, 5f, 6f], [2, 3]));
        AssertOneLineError(Engine("run", model, "--input", $"x={x}", "--input", $"y={y}", "--output-dir", PathOf("out")), 1,
            "output 'y': 1 of its values are NaN or infinite (the first at flat index 2)");
        Assert.That(System.IO.Directory.GetFiles(PathOf("out")), Is.Empty, "files written");
    }

    [Test]
    public void RunRefusesAnInputFileReachedThroughASymbolicLink()
    {
        string real = System.IO.Directory.CreateDirectory(PathOf("real")).FullName;
        string x = Path.Combine(real, "x.npy");
        Npy.Write(x, NpyArray.From(Values, [2, 3]));
        string link = PathOf("link");
        System.IO.Directory.CreateSymbolicLink(link, real);
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", link), 1, $"which is the input file {x}");
        using var kept = Npy.Read(x);
        Assert.That(kept.ToFloat32(), Is.EqualTo(Values));
    }

    /// <summary>Folders where files are named, and files where folders are: said as such, naming what the user gave.</summary>
    [Test]
    public void AFolderForAFileOrAFileForAFolderIsNamedAsSuch()
    {
        string x = Save("x.npy", NpyArray.From(Values, [2, 3]));
        string folder = System.IO.Directory.CreateDirectory(PathOf("folder")).FullName;
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={folder}", "--output-dir", PathOf("out")), 1, $"{folder}: is a folder, not a .npy file");
        AssertOneLineError(Engine("inspect", folder), 1, $"{folder}: is a folder, not a model file");
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", x), 2, $"--output-dir {x}: is a file; give a folder");
        AssertOneLineError(Engine("inputs", "gla", "--T", "4", "--H", "1", "--K", "4", "--V", "4", "--out-dir", x), 2, $"--out-dir {x}: is a file; give a folder");
    }

    /// <summary>
    /// A folder where `samples` or `ptx` writes a file, and a file where `samples` writes the hybrid decoder's folder: said
    /// as such before anything is written (it was .NET's "Access to the path is denied" or "The file already exists").
    /// </summary>
    [Test]
    public void SamplesAndPtxNameAFolderWhereTheyWriteAFile()
    {
        string samples = System.IO.Directory.CreateDirectory(PathOf("samples")).FullName;
        string blocked = System.IO.Directory.CreateDirectory(Path.Combine(samples, "gla_block.onnx")).FullName;
        AssertOneLineError(Engine("samples", samples), 1, $"{blocked}: is a folder, not a file to write");
        Assert.That(System.IO.Directory.GetFileSystemEntries(samples), Is.EqualTo(new[] { blocked }), "nothing written");
        System.IO.Directory.Delete(blocked);
        File.WriteAllText(Path.Combine(samples, "hybrid_decoder"), "");
        AssertOneLineError(Engine("samples", samples), 1, $"{Path.Combine(samples, "hybrid_decoder")}: is a file, where a folder is written");
        string ptx = System.IO.Directory.CreateDirectory(PathOf("ptx")).FullName;
        string kernel = System.IO.Directory.CreateDirectory(Path.Combine(ptx, GpuKernelCatalog.Launches[^1].Name + ".ptx")).FullName;
        AssertOneLineError(Engine("ptx", ptx), 1, $"{kernel}: is a folder, not a file to write");
        Assert.That(System.IO.Directory.GetFileSystemEntries(ptx), Is.EqualTo(new[] { kernel }), "nothing written");
    }

    /// <summary>
    /// `samples` writes each model beside its path and moves it over an earlier run's: the same bytes as the model's own,
    /// the hybrid decoder loadable with its data, and no file left beside them.
    /// </summary>
    [Test]
    public void SamplesReplaceAnEarlierRunsFilesWithTheModelsOwnBytes()
    {
        string dir = PathOf("samples"), hybrid = Path.Combine(dir, "hybrid_decoder");
        string[] small = ["--vocab", "16", "--hidden", "8", "--layers", "1", "--context", "8", "--qk-heads", "1", "--value-heads", "1", "--head-dim", "8"];
        System.IO.Directory.CreateDirectory(hybrid);
        foreach (var name in Workloads.SampleModels.Samples().Keys) File.WriteAllText(Path.Combine(dir, name), "an earlier run's file, cut short");
        File.WriteAllText(Path.Combine(hybrid, Workloads.HybridDecoder.DataFile), "cut short");
        var (code, _, stderr) = Engine(["samples", dir, .. small]);
        Assert.That(code, Is.Zero, stderr);
        foreach (var (name, model) in Workloads.SampleModels.Samples())
            Assert.That(File.ReadAllBytes(Path.Combine(dir, name)), Is.EqualTo(model.ToBytes()), name);
        Assert.That(System.IO.Directory.GetFiles(dir).Select(Path.GetFileName), Is.EquivalentTo(Workloads.SampleModels.Samples().Keys), "no file beside the models");
        Assert.That(System.IO.Directory.GetFiles(hybrid).Select(Path.GetFileName),
            Is.EquivalentTo(new[] { Workloads.HybridDecoder.ModelFile, Workloads.HybridDecoder.DataFile, Workloads.HybridDecoder.ConfigFile }));
        var loaded = global::Engine.Onnx.OnnxModel.Load(Path.Combine(hybrid, Workloads.HybridDecoder.ModelFile));
        Assert.That(loaded.Inputs.Select(i => i.Name), Does.Contain("input_ids"));
    }

    /// <summary>`ptx` writes each kernel's PTX, a run over an earlier one's files leaving nothing beside them.</summary>
    [Test]
    public void PtxReplacesAnEarlierRunsFiles()
    {
        string dir = System.IO.Directory.CreateDirectory(PathOf("ptx")).FullName;
        string first = Path.Combine(dir, GpuKernelCatalog.Launches[0].Name + ".ptx");
        File.WriteAllText(first, "cut short");
        var (code, _, stderr) = Engine("ptx", dir);
        Assert.That(code, Is.Zero, stderr);
        Assert.That(File.ReadAllText(first), Does.Contain(".target sm_90"));
        Assert.That(System.IO.Directory.GetFiles(dir), Has.Length.EqualTo(GpuKernelCatalog.Launches.Count), "no file beside the kernels'");
    }

    /// <summary>A file that cannot be written is named as the user gave it, not by the file written beside it first.</summary>
    [Test]
    public void AnUnwritableOutputIsNamedAsGiven()
    {
        var (code, _, stderr) = Engine("lssl-init", "--H", "2", "--N", "4", "--out-dir", "/proc");
        Assert.That(code, Is.EqualTo(1), stderr);
        Assert.That(stderr, Does.Contain("/proc/A.npy: cannot be written").And.Not.Contain(".tmp"));
    }

    [Test]
    public void RunWritesTheIdentityGraphsOutputElsewhere()
    {
        string x = Save("x.npy", NpyArray.From(Values, [2, 3]));
        string outDir = PathOf("out");
        var (code, _, stderr) = Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", outDir);
        Assert.That(code, Is.Zero, stderr);
        using var y = Npy.Read(Path.Combine(outDir, "x.npy"));
        Assert.That(y.ToFloat32(), Is.EqualTo(Values));
    }

    /// <summary>A hard link shows no sign of being the input file: the output is written beside it and moved over the link, the input kept.</summary>
    [Test]
    public void RunOntoAHardLinkOfItsInputKeepsTheInput()
    {
        string x = Save("x.npy", NpyArray.From(Values, [2, 3]));
        string outDir = System.IO.Directory.CreateDirectory(PathOf("out")).FullName;
        using (var ln = System.Diagnostics.Process.Start("ln", [x, Path.Combine(outDir, "x.npy")])!) ln.WaitForExit();
        var (code, _, stderr) = Engine("run", IdentityGraph(), "--input", $"x={x}", "--output-dir", outDir);
        Assert.That(code, Is.Zero, stderr);
        using var input = Npy.Read(x);
        using var output = Npy.Read(Path.Combine(outDir, "x.npy"));
        Assert.That(input.ToFloat32(), Is.EqualTo(Values), "the input as it was");
        Assert.That(output.ToFloat32(), Is.EqualTo(Values));
        Assert.That(System.IO.Directory.GetFiles(outDir), Has.Length.EqualTo(1), "no temporary file left");
    }

    [Test]
    public void RunRefusesTwoOutputsThatMapToOneFileName()
    {
        string model = SaveModel("two.onnx", builder =>
        {
            string x = builder.Input("x", DataType.Float, 2, 3);
            builder.Node("Identity", [x], outputNames: ["a/b"]);
            builder.Node("Neg", [x], outputNames: ["a_b"]);
            builder.Output("a/b", DataType.Float, 2, 3);
            builder.Output("a_b", DataType.Float, 2, 3);
        });
        string input = Save("x.npy", NpyArray.From(Values, [2, 3]));
        string outDir = PathOf("out");
        AssertOneLineError(Engine("run", model, "--input", $"x={input}", "--output-dir", outDir), 1,
            $"outputs a/b and a_b would both be written to {Path.Combine(outDir, "a_b.npy")}");
    }

    [Test]
    public void OpRefusesTheStateAndTheOutputInOneFile()
    {
        var inputs = Engine("inputs", "gated-delta", "--T", "4", "--H", "1", "--K", "4", "--V", "4", "--out-dir", Directory);
        Assert.That(inputs.code, Is.Zero, inputs.stderr);
        string same = PathOf("same.npy");
        AssertOneLineError(Engine("op", "gated-delta", "--q", PathOf("q.npy"), "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), "--beta", PathOf("beta.npy"),
            "--g", PathOf("g.npy"), "--o", same, "--ht", same), 1, $"outputs o and ht would both be written to {same}");
        Assert.That(File.Exists(same), Is.False, "refused before the op runs");
        AssertOneLineError(Engine("op", "gated-delta", "--q", PathOf("q.npy"), "--k", PathOf("k.npy"), "--v", PathOf("v.npy"), "--beta", PathOf("beta.npy"),
            "--g", PathOf("g.npy"), "--o", PathOf("q.npy")), 1, $"output o would be written to {PathOf("q.npy")}, which is the input file");
    }

    [Test]
    public void AnInputGivenTwiceIsRefused()
    {
        string a = Save("a.npy", NpyArray.From(Values, [2, 3]));
        string b = Save("b.npy", NpyArray.From(Values, [2, 3]));
        AssertOneLineError(Engine("run", IdentityGraph(), "--input", $"x={a}", "--input", $"x={b}", "--output-dir", PathOf("out")), 2,
            "--input x is given more than once");
    }
}

using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>engine generate at the edges: a short context, a prompt too long, a config whose names lead out of the folder or overlap.</summary>
[TestFixture]
public sealed class GenerateLimitTests : CliFixture
{
    /// <summary>The hybrid decoder with a context of 64 positions, shorter than the 128-step warm-up.</summary>
    private string ShortContextDecoder()
    {
        var (code, _, stderr) = Engine("samples", Directory, "--vocab", "64", "--hidden", "32", "--layers", "4", "--context", "64",
            "--qk-heads", "2", "--value-heads", "4", "--head-dim", "8");
        Assert.That(code, Is.Zero, stderr);
        return PathOf("hybrid_decoder");
    }

    [Test]
    public void TheWarmUpFitsAShortContext()
    {
        var (code, stdout, stderr) = Engine("generate", ShortContextDecoder(), "--prompt-tokens", "4", "--new-tokens", "4", "--repeats", "1", "--threads", "1", "--json");
        Assert.That(code, Is.Zero, stderr);
        Assert.That(stdout, Does.Contain("\"new_tokens\": 4"));
    }

    [Test]
    public void APromptLongerThanTheContextIsRefusedBeforeItIsMade() =>
        AssertOneLineError(Engine("generate", ShortContextDecoder(), "--prompt-tokens", "2147483647", "--new-tokens", "2", "--backend", "none"), 1,
            "the prompt's 2147483647 tokens reach search.max_length 64 (prompt and new tokens): no room for a new token");

    [Test]
    public void AModelFileLinkedFromOutsideTheFolderIsRefused()
    {
        string folder = ShortContextDecoder();
        string outside = System.IO.Directory.CreateDirectory(PathOf("outside")).FullName;
        string model = Path.Combine(folder, "model.onnx");
        File.Move(model, Path.Combine(outside, "model.onnx"));
        File.CreateSymbolicLink(model, Path.Combine(outside, "model.onnx"));
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "2", "--backend", "none"), 1,
            $"model.decoder.filename names 'model.onnx', a symbolic link to '{Path.Combine(outside, "model.onnx")}', outside the model folder");
    }

    /// <summary>genai_config.json linked from outside the folder is not read, as the model file is not: a device such as /dev/zero least of all.</summary>
    [TestCase(false)]
    [TestCase(true)]
    public void AConfigLinkedFromOutsideTheFolderIsRefused(bool device)
    {
        string folder = ShortContextDecoder();
        string config = Path.Combine(folder, "genai_config.json");
        string target = device ? "/dev/zero" : Path.Combine(System.IO.Directory.CreateDirectory(PathOf("outside")).FullName, "genai_config.json");
        if (!device) File.Move(config, target);
        else File.Delete(config);
        File.CreateSymbolicLink(config, target);
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "2", "--backend", "none"), 1,
            $"{config}: a symbolic link to '{target}', outside the model folder");
    }

    [Test]
    public void TwoConfigKeysNamingOneInputAreRefused()
    {
        string folder = ShortContextDecoder();
        string config = Path.Combine(folder, "genai_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"attention_mask\": \"attention_mask\"",
            "\"attention_mask\": \"attention_mask\", \"position_ids\": \"attention_mask\""));
        AssertOneLineError(Engine("generate", folder, "--prompt-tokens", "4", "--new-tokens", "2", "--backend", "none"), 1,
            $"{config}: model.decoder.inputs.position_ids names 'attention_mask', which model.decoder.inputs.attention_mask names too");
    }
}

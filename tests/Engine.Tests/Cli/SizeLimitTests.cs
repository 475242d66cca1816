using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>Sizes that make an array larger than .NET holds in one: refused before anything is allocated, naming the options.</summary>
[TestFixture]
public sealed class SizeLimitTests : CliFixture
{
    [TestCase(new[] { "--vocab", "2000000000", "--hidden", "2000000000" }, "--vocab 2000000000 --hidden 2000000000: the embeddings [vocab, hidden] would hold 4000000000000000000 elements")]
    [TestCase(new[] { "--context", "2000000000" }, "--context 2000000000: the rotary caches [context, 16] would hold 32000000000 elements")]
    public void SampleSizesTooLargeForAnArrayAreNamed(string[] sizes, string message) =>
        AssertOneLineError(Engine(["samples", Directory, .. sizes]), 1, message);

    [TestCase("inputs", "gla", "--out-dir")]
    [TestCase("bench", "gla", null)]
    [TestCase("bench", "gated-delta", null)]
    public void AttentionSizesTooLargeForAnArrayAreNamed(string command, string op, string? outDir) =>
        AssertOneLineError(Engine([command, op, "--T", "100000", "--H", "100000", "--K", "100000", .. outDir is null ? Array.Empty<string>() : [outDir, Directory]]), 1,
            "B 1, T 100000, H 100000, K 100000: q [B, T, H, K] would hold 1000000000000000 elements");

    [Test]
    public void LsslSizesTooLargeForAnArrayAreNamed() =>
        AssertOneLineError(Engine("bench", "lssl", "--T", "100000000", "--H", "100000"), 1, "B 1, L 100000000, H 100000: u [B, L, H] would hold");
}

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
        AssertOneLineError(Engine([command, op, "--T", "100000", "--H", "100000", "--K", "256", .. outDir is null ? Array.Empty<string>() : [outDir, Directory]]), 1,
            "B 1, T 100000, H 100000, K 256: q [B, T, H, K] would hold 2560000000000 elements");

    [Test]
    public void LsslSizesTooLargeForAnArrayAreNamed() =>
        AssertOneLineError(Engine("bench", "lssl", "--T", "100000000", "--H", "100000", "--N", "16"), 1, "B 1, L 100000000, H 100000: u [B, L, H] would hold");

    [TestCase("lssl-init", "100000", "8", "--N 100000: A [N, N] would hold 10000000000 elements")]
    [TestCase("bench", "100000", "1", "--N 100000: A [N, N] would hold 10000000000 elements")]
    [TestCase("lssl-init", "46341", "8", "--N 46341: A [N, N] would hold 2147488281 elements")]
    [TestCase("bench", "3000", "256", "--H 256 --N 3000: the discretized A of every channel [H, 3008, 3008] would hold 2316304384 elements")]
    public void LsslStateSizesTooLargeForAnArrayAreNamed(string command, string n, string h, string message) =>
        AssertOneLineError(Engine([.. command == "bench" ? new[] { "bench", "lssl", "--T", "16" } : ["lssl-init", "--out-dir", Directory], "--N", n, "--H", h]), 1, message);

    [Test]
    public void LsslDiagonalSizesTooLargeForAnArrayAreNamed() =>
        AssertOneLineError(Engine("bench", "lssl", "--T", "16", "--kind", "diagonal", "--N", "3000", "--H", "3000"), 1,
            "--H 3000 --N 3000: the scan's output weights [H, 3264, 256] would hold 2506752000 elements");

    [Test]
    public void HippoInitRefusesAStateSizeNoArrayHolds() =>
        Assert.That(() => global::Engine.Kernels.Lssl.LsslInit.HippoLegT(46341),
            Throws.TypeOf<ArgumentOutOfRangeException>().With.Message.Contains("state size N must be <= 46340"));
}

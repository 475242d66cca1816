using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>Sizes that make an array larger than .NET holds in one: refused before anything is allocated, naming the options.</summary>
[TestFixture]
public sealed class SizeLimitTests : CliFixture
{
    [TestCase(new[] { "--vocab", "2000000000", "--hidden", "2000000000" }, "--vocab 2000000000 --hidden 2000000000: the embeddings [vocab, hidden] would hold 4000000000000000000 elements")]
    [TestCase(new[] { "--context", "2000000000" }, "--context 2000000000: the rotary caches [context, 16] would hold 32000000000 elements")]
    public void SampleSizesTooLargeForAnArrayAreNamed(string[] sizes, string message) =>
        AssertOneLineError(Engine(["samples", Directory, .. sizes]), 2, message);

    [Test]
    public void InputSizesTooLargeForAnArrayAreNamed() =>
        AssertOneLineError(Engine("inputs", "gla", "--T", "100000", "--H", "100000", "--K", "100000", "--out-dir", Directory), 2,
            "--B 1 --T 100000 --H 100000 --K 100000: q [B,T,H,K] would hold 1000000000000000 elements");
}

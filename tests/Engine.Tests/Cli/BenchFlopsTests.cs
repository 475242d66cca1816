using System.Text.Json;
using NUnit.Framework;

namespace Engine.Tests.Cli;

/// <summary>
/// The model flops `engine bench` rates a call with (model GFLOP/s × ms), against counts derived here from each op's math:
/// every product a · b + c is one multiply-add, two flops.
/// </summary>
[TestFixture]
public sealed class BenchFlopsTests : CliFixture
{
    [TestCase("gla", "--chunk")]
    [TestCase("lightning", "--block")]
    public void AChunkedAttentionCountsItsLastShorterChunkAtItsOwnLength(string op, string chunkOption)
    {
        // T = 40 in chunks of 16: two whole chunks, then one of 8 tokens.
        const int t = 40, c = 16, k = 16, v = 8;
        // A chunk of n tokens: its scores Q Kᵀ (n × n × K), their product with V (n × n × V), the queries' product with
        // the state before the chunk (n × K × V) and the chunk's update of the state (n × K × V).
        static double ChunkFmas(int n) => n * n * k + n * n * v + 2.0 * n * k * v;
        double expected = 2 * (2 * ChunkFmas(c) + ChunkFmas(t - 2 * c));
        Assert.That(ModelFlops(op, "--T", $"{t}", "--H", "1", "--K", $"{k}", "--V", $"{v}", chunkOption, $"{c}"), Is.EqualTo(expected).Within(1e-6).Percent);
    }

    [Test]
    public void TheLsslScanCountsTheStepsAfterItsLastWholeChunkAsTheRecurrenceItRuns()
    {
        // L = 40 steps with N = 16 (chunks of Q = 16): two whole chunks, then 8 steps of the recurrence.
        const int l = 40, n = 16, q = 16, chunks = l / q, rest = l % q;
        // A whole chunk: its outputs' lower-triangular Toeplitz block (with D), its outputs' state part C Ā^(i+1) x, its
        // inputs' share of the end state, and the carry's N × N mat-vec.
        const double chunkFmas = q * (q + 1) / 2 + q * n + q * n + n * n;
        // A step of the recurrence: x ← Ā x + B̄ u, y = C x.
        const double stepFmas = n * n + n + n;
        double expected = 2 * (chunks * chunkFmas + rest * stepFmas);
        Assert.That(ModelFlops("lssl", "--T", $"{l}", "--H", "1", "--N", $"{n}", "--mode", "scan"), Is.EqualTo(expected).Within(1e-6).Percent);
    }

    [Test]
    public void TheLsslRecurrenceCountsItsOutputsAsWellAsItsStates()
    {
        const int l = 40, n = 16;
        // Each step: the N × N mat-vec Ā x, B̄ u into the state, and the output C x.
        const double stepFmas = n * n + n + n;
        Assert.That(ModelFlops("lssl", "--T", $"{l}", "--H", "1", "--N", $"{n}", "--mode", "recurrent"), Is.EqualTo(2 * l * stepFmas).Within(1e-6).Percent);
    }

    [Test]
    public void TheLsslConvolutionCountsThePassThatMakesTheFinalState()
    {
        // L = 40 steps with N = 16 (chunks of Q = 16): the FFTs' size is the power of two >= 2L − 1.
        const int l = 40, n = 16, q = 16, chunks = l / q, rest = l % q, fftSize = 128;
        double fft = 5.0 * fftSize * Math.Log2(fftSize) + 8.0 * fftSize;
        // The final state, which the bench writes: each whole chunk's inputs' share of its end state and the carry's
        // N × N mat-vec, then x ← Ā x + B̄ u for each step after them.
        const double stateFmas = chunks * (q * n + n * n) + rest * (n * n + n);
        Assert.That(ModelFlops("lssl", "--T", $"{l}", "--H", "1", "--N", $"{n}", "--mode", "conv"), Is.EqualTo(fft + 2 * stateFmas).Within(1e-6).Percent);
    }

    [Test]
    public void EveryLsslModeTheReferenceRunsAsItsRecurrenceIsTimedOnce()
    {
        var (code, stdout, stderr) = Engine(["bench", "lssl", "--backend", "reference", "--mode", "all", "--T", "32", "--H", "1", "--N", "4", "--repeats", "1", "--json"]);
        Assert.That(code, Is.Zero, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.EnumerateArray().Select(row => row.GetProperty("variant").GetString()), Is.EqualTo(new[] { "legs recurrent" }), stdout);
    }

    /// <summary>Runs `engine bench ... --repeats 1 --json` and returns the model flops of its one row.</summary>
    private static double ModelFlops(params string[] args)
    {
        var (code, stdout, stderr) = Engine(["bench", .. args, "--repeats", "1", "--json"]);
        Assert.That(code, Is.Zero, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.That(doc.RootElement.GetArrayLength(), Is.EqualTo(1), stdout);
        var row = doc.RootElement[0];
        return row.GetProperty("model_gflops").GetDouble() * 1e9 * row.GetProperty("milliseconds").GetDouble() / 1e3;
    }
}

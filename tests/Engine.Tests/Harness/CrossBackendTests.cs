using NUnit.Framework;

namespace Engine.Tests.Harness;

/// <summary>Every op × every backend × its shape grid, against the float64 reference.</summary>
[TestFixture]
public sealed class CrossBackendTests
{
    private static readonly Dictionary<string, IReadOnlyDictionary<string, double[]>> ReferenceCache = new();

    public static IEnumerable<TestCaseData> Cases() =>
        from op in OpCases.All
        from backend in TestDevices.For(op.Small)
        select new TestCaseData(op, backend).SetName($"{op.Name} on {backend}");

    [TestCaseSource(nameof(Cases))]
    public void MatchesReference(OpCase op, TestBackend backend)
    {
        var device = TestDevices.Get(backend);
        IReadOnlyDictionary<string, double[]> expected;
        lock (ReferenceCache)
        {
            if (!ReferenceCache.TryGetValue(op.Name, out expected!))
                ReferenceCache[op.Name] = expected = op.Reference();
        }
        var actual = op.Run(device);
        Assert.That(actual.Keys, Is.EquivalentTo(expected.Keys));
        foreach (var (name, e) in expected)
        {
            double err = Numerics.RelativeRms(actual[name], e);
            Assert.That(err, Is.LessThanOrEqualTo(op.Tolerance), $"{name}: relative RMS error {err:E2} on {backend}");
        }
    }
}

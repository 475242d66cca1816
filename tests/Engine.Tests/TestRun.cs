using Engine.Tests.Harness;
using NUnit.Framework;

namespace Engine.Tests;

/// <summary>Runs once around every test in the assembly: the shared devices are disposed at the very end.</summary>
[SetUpFixture]
public sealed class TestRun
{
    [OneTimeTearDown]
    public void DisposeDevices() => TestDevices.DisposeAll();
}

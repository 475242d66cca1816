namespace Engine.Tests.Harness;

/// <summary>
/// One op on one shape with its inputs fixed. The harness runs it on a backend (outputs pre-filled with
/// NaN so an unwritten element fails) and compares every named output with the float64 reference.
/// </summary>
public abstract class OpCase
{
    /// <summary>Unique, readable: op, shape and parameters.</summary>
    public abstract string Name { get; }

    /// <summary>Small enough for the GPU kernels on ILGPU's CPU accelerator.</summary>
    public abstract bool Small { get; }

    /// <summary>fp16 in/out: compared at <see cref="Numerics.Fp16Tolerance"/>.</summary>
    public virtual bool Half => false;

    public virtual double Tolerance => Half ? Numerics.Fp16Tolerance : Numerics.Fp32Tolerance;

    /// <summary>The float64 reference outputs, by name.</summary>
    public abstract IReadOnlyDictionary<string, double[]> Reference();

    /// <summary>The outputs on <paramref name="device"/>, by name (same names as <see cref="Reference"/>).</summary>
    public abstract IReadOnlyDictionary<string, float[]> Run(EngineDevice device);

    public override string ToString() => Name;
}

/// <summary>Every op's cases; each op family contributes its own list.</summary>
public static class OpCases
{
    public static IEnumerable<OpCase> All =>
        Gla.GlaCases.All
        .Concat(Lightning.LightningCases.All)
        .Concat(DeltaRule.DeltaRuleCases.All)
        .Concat(Lssl.LsslCases.All);
}

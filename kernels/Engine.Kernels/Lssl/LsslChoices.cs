namespace Engine;

// The LSSL choices a user names: in namespace Engine with the rest of the API.

/// <summary>How the state matrix A of the H channels is given.</summary>
public enum LsslStateMatrix
{
    /// <summary>One dense A [N, N] shared by every channel (each channel still has its own step Δ).</summary>
    DenseShared,
    /// <summary>A dense A [H, N, N] per channel.</summary>
    DensePerChannel,
    /// <summary>A diagonal A [H, N] (S4D-real style): the state decays elementwise.</summary>
    Diagonal,
}

/// <summary>How an LSSL call walks the sequence. All give the same y within tolerance.</summary>
public enum LsslMode
{
    /// <summary>Pick by the documented cost rule for the backend and shape (see docs/lssl.md).</summary>
    Auto,
    /// <summary>One step at a time with the carried state: the decode path.</summary>
    Recurrent,
    /// <summary>Chunks of Q steps as small matrix products: first Q kernel taps, C·Āⁱ rows, Āʲ·B̄ columns, Ā^Q carries.</summary>
    Scan,
    /// <summary>The length-L kernel K̄ applied as a convolution (FFT on the CPU, direct on the GPU).</summary>
    Conv,
}

/// <summary>The discretization rule.</summary>
public enum LsslMethod
{
    /// <summary>Generalized bilinear transform with parameter α: Ā = (I − αΔA)⁻¹(I + (1−α)ΔA), B̄ = Δ(I − αΔA)⁻¹B.</summary>
    Gbt,
    /// <summary>Zero-order hold: Ā = exp(ΔA), B̄ = A⁻¹(exp(ΔA) − I)B.</summary>
    Zoh,
}

/// <summary>
/// A discretization rule: zero-order hold, or the generalized bilinear transform with its α. The zero value
/// (<c>default(LsslDiscretization)</c>, a field never set) is the bilinear transform, the documented default.
/// </summary>
public readonly record struct LsslDiscretization
{
    // The bilinear transform is rule 0, so that a zero-initialized value is the default rule and not GBT with α = 0 (forward
    // Euler, the least accurate and least stable). Gbt(0.5) is stored as Bilinear: one representation per rule, so equal
    // rules compare equal.
    private enum Rule { Bilinear, Gbt, Zoh }

    private readonly Rule _rule;
    private readonly double _gbtAlpha;

    private LsslDiscretization(Rule rule, double gbtAlpha) { _rule = rule; _gbtAlpha = gbtAlpha; }

    public LsslMethod Method => _rule == Rule.Zoh ? LsslMethod.Zoh : LsslMethod.Gbt;

    /// <summary>α of the generalized bilinear transform (0 forward Euler, 0.5 bilinear, 1 backward Euler); 0 for ZOH.</summary>
    public double Alpha => _rule switch { Rule.Bilinear => 0.5, Rule.Gbt => _gbtAlpha, _ => 0.0 };

    public static LsslDiscretization Bilinear => default;
    public static LsslDiscretization ForwardEuler => Gbt(0.0);
    public static LsslDiscretization BackwardEuler => Gbt(1.0);
    public static LsslDiscretization ZeroOrderHold => new(Rule.Zoh, 0.0);

    public static LsslDiscretization Gbt(double alpha)
    {
        if (!(alpha >= 0.0 && alpha <= 1.0))
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "the bilinear transform's alpha must lie in [0, 1]");
        return alpha == 0.5 ? Bilinear : new LsslDiscretization(Rule.Gbt, alpha);
    }

    public override string ToString() => Method == LsslMethod.Zoh ? "zoh" : $"gbt(alpha={Alpha})";
}

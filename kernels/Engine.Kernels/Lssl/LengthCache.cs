namespace Engine.Kernels.Lssl;

/// <summary>A derived constant made for a sequence length, which may serve other lengths too.</summary>
internal interface ILengthBound
{
    bool Serves(int length);
}

/// <summary>
/// One immutable derived constant of a system, kept for the next call: made on first use and remade when a call
/// needs a length it does not serve. Readers take the published instance without a lock; a build runs once,
/// under the lock, and concurrent callers that need it wait for it. An instance a call holds stays valid when
/// another call replaces it.
/// </summary>
internal sealed class LengthCache<T> where T : class, ILengthBound
{
    private readonly Lock _build = new();
    private T? _value;

    /// <summary>The cached instance if it serves <paramref name="length"/>, else build(length, arg), then cached.</summary>
    public T Get<TArg>(int length, TArg arg, Func<int, TArg, T> build)
    {
        var value = Volatile.Read(ref _value);
        if (value is not null && value.Serves(length)) return value;
        lock (_build)
        {
            value = _value;
            if (value is null || !value.Serves(length))
            {
                value = build(length, arg);
                Volatile.Write(ref _value, value);
            }
            return value;
        }
    }
}

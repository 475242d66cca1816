using Engine.Kernels.Common;
using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Engine;

/// <summary>Shape checks and element-type handling shared by every op facade.</summary>
internal static class TensorArgs
{
    public static void RequireElementType<T>()
    {
        if (typeof(T) != typeof(float) && typeof(T) != typeof(Half))
            throw new NotSupportedException($"element type {typeof(T).Name} is not supported: use float or System.Half");
    }

    public static string Format(ReadOnlySpan<nint> lengths)
    {
        var parts = new string[lengths.Length];
        for (int i = 0; i < lengths.Length; i++) parts[i] = lengths[i].ToString();
        return "[" + string.Join(", ", parts) + "]";
    }

    public static void RequireRank(ReadOnlySpan<nint> lengths, string name, int rank, string dims)
    {
        if (lengths.Length != rank)
            throw new ArgumentException($"{name}: expected rank {rank} {dims}, got rank {lengths.Length} with shape {Format(lengths)}", name);
    }

    public static void RequireShape(ReadOnlySpan<nint> lengths, string name, string dims, params ReadOnlySpan<nint> expected)
    {
        if (!lengths.SequenceEqual(expected))
            throw new ArgumentException($"{name}: expected shape {Format(expected)} {dims}, got {Format(lengths)}", name);
    }

    /// <summary>Checks rank and every dimension given as >= 0 (a negative entry is free). dims names the axes.</summary>
    public static void RequireDims(ReadOnlySpan<nint> lengths, string name, string dims, params ReadOnlySpan<nint> expected)
    {
        bool ok = lengths.Length == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || lengths[i] == expected[i];
        if (ok) return;
        var parts = new string[expected.Length];
        for (int i = 0; i < expected.Length; i++) parts[i] = expected[i] < 0 ? "*" : expected[i].ToString();
        throw new ArgumentException($"{name}: expected shape [{string.Join(", ", parts)}] {dims}, got {Format(lengths)}", name);
    }

    /// <summary>
    /// Refuses a tensor of more elements than one array holds (<see cref="Array.MaxLength"/>), naming it: a call holds each
    /// tensor's values as one span, and a tensor over native memory may hold more.
    /// </summary>
    public static void RequireElementCount(ReadOnlySpan<nint> lengths, string name)
    {
        if (lengths.IndexOf(0) >= 0) return;
        long count = 1;
        foreach (nint n in lengths)
        {
            if (n > Array.MaxLength / count)
                throw new ArgumentException($"{name}: shape {Format(lengths)} holds more than {Array.MaxLength} elements, the most one call takes in a tensor: " +
                    "split the call (fewer tokens or sequences per call, the state carried between them)", name);
            count *= n;
        }
    }

    /// <summary>
    /// Refuses a shape the call derives (a state, an output to allocate) that holds more elements than one array, naming it:
    /// unlike a given tensor's, its size is not bounded by any input's length (q, k and v of no token may ask for any heads).
    /// </summary>
    public static void RequireArrayHolds(ReadOnlySpan<nint> lengths, string name, string dims, string remedy)
    {
        // Exact: a long product of three int-sized lengths may already wrap.
        BigInteger count = 1;
        foreach (nint n in lengths) count *= n;
        if (count > Array.MaxLength)
            throw new ArgumentException($"{name}: {dims} = {Format(lengths)} would hold {count} elements, more than one array holds ({Array.MaxLength}): {remedy}", name);
    }

    /// <summary>A <see cref="Tensor{T}"/> the call reads, as a span: null refused by its name rather than dereferenced.</summary>
    public static ReadOnlyTensorSpan<T> Input<T>(Tensor<T>? tensor, string name) => (tensor ?? throw new ArgumentNullException(name)).AsReadOnlyTensorSpan();

    /// <summary>A <see cref="Tensor{T}"/> the call writes, as a span: null refused by its name rather than dereferenced.</summary>
    public static TensorSpan<T> Output<T>(Tensor<T>? tensor, string name) => (tensor ?? throw new ArgumentNullException(name)).AsTensorSpan();

    public static int Dim(ReadOnlySpan<nint> lengths, int axis, string name)
    {
        nint n = lengths[axis];
        if (n > int.MaxValue) throw new ArgumentException($"{name}: dimension {axis} = {n} is too large", name);
        return (int)n;
    }

    /// <summary>Refuses <paramref name="a"/> and <paramref name="b"/> sharing a byte of an element (views interleaved in one buffer may lie apart).</summary>
    public static void RequireApart<TA, TB>(ReadOnlyTensorSpan<TA> a, string nameA, ReadOnlyTensorSpan<TB> b, string nameB, string? why = null)
    {
        if (Overlap(a, b)) throw new ArgumentException($"{nameA}: shares memory with {nameB}{(why is null ? "" : $" ({why})")}: give it a tensor of its own", nameA);
    }

    /// <summary>
    /// Refuses <paramref name="written"/> sharing memory with <paramref name="read"/> unless it is that very tensor: the same
    /// first element, shape and strides, so that a kernel writing rows in place writes each over the row it has just read.
    /// </summary>
    public static void RequireSameOrApart<T>(ReadOnlyTensorSpan<T> written, string writtenName, ReadOnlyTensorSpan<T> read, string readName)
    {
        if (!Overlap(written, read)) return;
        if (Unsafe.AreSame(ref Unsafe.AsRef(in written.GetPinnableReference()), ref Unsafe.AsRef(in read.GetPinnableReference()))
            && written.Lengths.SequenceEqual(read.Lengths) && written.Strides.SequenceEqual(read.Strides)) return;
        throw new ArgumentException($"{writtenName}: shares memory with {readName} without being its tensor (the same first element, shape and " +
            $"strides): give {writtenName} a tensor of its own, or {readName} itself", writtenName);
    }

    /// <summary>Whether two tensors share a byte of an element (<see cref="StridedRegion.Overlap"/>).</summary>
    private static bool Overlap<TA, TB>(ReadOnlyTensorSpan<TA> a, ReadOnlyTensorSpan<TB> b)
    {
        if (a.IsEmpty || b.IsEmpty) return false;
        nint offset = Unsafe.ByteOffset(ref Unsafe.As<TA, byte>(ref Unsafe.AsRef(in a.GetPinnableReference())),
            ref Unsafe.As<TB, byte>(ref Unsafe.AsRef(in b.GetPinnableReference())));
        return StridedRegion.Overlap(new StridedRegion(0, a.Lengths, a.Strides, Unsafe.SizeOf<TA>()),
            new StridedRegion(offset, b.Lengths, b.Strides, Unsafe.SizeOf<TB>()));
    }

    /// <summary>Every value finite.</summary>
    public static void RequireFinite(ReadOnlySpan<float> values, string name)
    {
        if (AllFinite(values)) return;
        for (int i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw ValueRules.Refusal(ValueRule.Finite, name, values[i], i);
    }

    /// <summary>Every value of rows <paramref name="width"/> floats wide, <paramref name="stride"/> floats apart, finite (index i counts row floats only).</summary>
    public static void RequireFiniteRows(ReadOnlySpan<float> rows, int stride, int width, string name)
    {
        if (stride == width)
        {
            RequireFinite(rows, name);
            return;
        }
        for (long start = 0, row = 0; start < rows.Length; start += stride, row++)
        {
            var values = rows.Slice((int)start, width);
            if (AllFinite(values)) continue;
            int i = 0;
            while (float.IsFinite(values[i])) i++;
            throw new ArgumentException($"{name}: values must be finite, got {values[i]} at flat index {row * width + i}", name);
        }
    }

    /// <summary>False when a value is NaN or infinite.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // SIMD code on the decode path: optimized from the first call
    public static bool AllFinite(ReadOnlySpan<float> values)
    {
        ref float start = ref MemoryMarshal.GetReference(values);
        // x − x is 0 for every finite x and NaN otherwise: the sum stays 0 exactly when all are finite.
        // Two sums, so consecutive vectors do not wait on each other.
        Vector512<float> even = default, odd = default;
        int i = 0, n = Vector512<float>.Count;
        for (; i <= values.Length - 2 * n; i += 2 * n)
        {
            var x = Vector512.LoadUnsafe(ref start, (nuint)i);
            var y = Vector512.LoadUnsafe(ref start, (nuint)(i + n));
            even += x - x;
            odd += y - y;
        }
        float tail = 0f;
        for (; i < values.Length; i++) tail += Unsafe.Add(ref start, i) - Unsafe.Add(ref start, i);
        return Vector512.Sum(even + odd) + tail == 0f;
    }

    /// <summary>Floats below which a check runs on the calling thread alone.</summary>
    private const int ParallelCheckFloats = 1 << 16;

    /// <summary><see cref="AllFinite(ReadOnlySpan{float})"/> a slice per worker (<see cref="InSlices"/>).</summary>
    public static bool AllFinite(ReadOnlySpan<float> values, IWorkScheduler scheduler) => InSlices(values, scheduler, AllFinite);

    /// <summary>
    /// <paramref name="check"/> on the scheduler's workers, a slice each; true when every slice passes. A call's inputs and output
    /// are read once more around its kernels, and one core alone draws only part of the memory bandwidth.
    /// </summary>
    public static unsafe bool InSlices(ReadOnlySpan<float> values, IWorkScheduler scheduler, Func<ReadOnlySpan<float>, bool> check)
    {
        int slices = Math.Min(scheduler.Workers, values.Length / ParallelCheckFloats);
        if (slices <= 1) return check(values);
        int faults = 0;
        fixed (float* first = values)
        {
            float* start = first;
            long length = values.Length;
            scheduler.Run(slices, (slice, _) =>
            {
                long from = length * slice / slices, to = length * (slice + 1) / slices;
                if (!check(new ReadOnlySpan<float>(start + from, (int)(to - from)))) Volatile.Write(ref faults, 1);
            });
        }
        return faults == 0;
    }

    /// <summary>The memory of a dense tensor (or one of at most one element).</summary>
    public static ReadOnlySpan<T> DenseSpan<T>(ReadOnlyTensorSpan<T> t)
    {
        int n = checked((int)t.FlattenedLength);
        if (n == 0) return ReadOnlySpan<T>.Empty;
        Span<nint> origin = stackalloc nint[t.Rank];
        origin.Clear();
        if (!t.TryGetSpan(origin, n, out ReadOnlySpan<T> span))
            throw new InvalidOperationException("tensor is not dense");
        return span;
    }

    public static Span<T> DenseSpan<T>(TensorSpan<T> t, string name)
    {
        int n = checked((int)t.FlattenedLength);
        if (n == 0) return Span<T>.Empty;
        Span<nint> origin = stackalloc nint[t.Rank];
        origin.Clear();
        if (!t.TryGetSpan(origin, n, out Span<T> span))
            throw new ArgumentException($"{name}: output tensors must be dense (contiguous, row-major)", name);
        return span;
    }
}

/// <summary>An input as contiguous fp32: the tensor's own memory when it already is, else a pooled copy.</summary>
internal ref struct FloatInput
{
    private float[]? _rented;

    public ReadOnlySpan<float> Span { get; private set; }

    public static FloatInput From<T>(ReadOnlyTensorSpan<T> t) where T : unmanaged
    {
        var input = new FloatInput();
        int n = checked((int)t.FlattenedLength);
        if (typeof(T) == typeof(float))
        {
            input.Init(Unsafe.As<ReadOnlyTensorSpan<T>, ReadOnlyTensorSpan<float>>(ref t));
            return input;
        }
        var halves = Unsafe.As<ReadOnlyTensorSpan<T>, ReadOnlyTensorSpan<Half>>(ref t);
        input._rented = ArrayPool<float>.Shared.Rent(Math.Max(n, 1));
        if (halves.IsDense || n <= 1)
        {
            TensorPrimitives.ConvertToSingle(TensorArgs.DenseSpan(halves), input._rented.AsSpan(0, n));
        }
        else
        {
            var tmp = ArrayPool<Half>.Shared.Rent(n);
            halves.FlattenTo(tmp.AsSpan(0, n));
            TensorPrimitives.ConvertToSingle(tmp.AsSpan(0, n), input._rented.AsSpan(0, n));
            ArrayPool<Half>.Shared.Return(tmp);
        }
        input.Span = input._rented.AsSpan(0, n);
        return input;
    }

    /// <summary>
    /// q, k or v [B, T, H, d] as token rows (<paramref name="rowStride"/> floats apart): with <paramref name="inPlace"/>, the tensor's own
    /// memory when its rows lie where the kernels can read them (<see cref="TokenRowsOf.Stride"/>: e.g. the q, k and v parts of
    /// one packed projection); else dense fp32 as <see cref="From"/> gives it.
    /// </summary>
    public static FloatInput Rows<T>(ReadOnlyTensorSpan<T> t, bool inPlace, out int rowStride) where T : unmanaged
    {
        rowStride = t.Rank == 4 ? checked((int)(t.Lengths[2] * t.Lengths[3])) : 0;
        long rows = t.Rank == 4 ? (long)t.Lengths[0] * t.Lengths[1] : 0;
        if (!inPlace || t.IsDense || rows == 0 || TokenRowsOf.Stride(t) is not int stride) return From(t);
        var floats = Unsafe.As<ReadOnlyTensorSpan<T>, ReadOnlyTensorSpan<float>>(ref t);
        long extent = (rows - 1) * stride + rowStride;
        rowStride = stride;
        return new FloatInput { Span = MemoryMarshal.CreateReadOnlySpan(in floats.GetPinnableReference(), checked((int)extent)) };
    }

    /// <summary>
    /// The dense convolved rows of one part (q, k or v: <paramref name="heads"/> of <paramref name="dim"/> from convolution channel
    /// <paramref name="channel"/>) of the raw rows <paramref name="raw"/> (token rows <paramref name="rowStride"/> apart), which it disposes.
    /// </summary>
    public static FloatInput Convolved(ConvolutionCall conv, FloatInput raw, int rowStride, int channel, int heads, int dim, bool exact)
    {
        int n = conv.Sequences.TotalTokens * heads * dim;
        var input = new FloatInput { _rented = ArrayPool<float>.Shared.Rent(Math.Max(n, 1)) };
        conv.ConvolveDense(raw.Span, rowStride, channel, heads, dim, input._rented, exact);
        input.Span = input._rented.AsSpan(0, n);
        raw.Dispose();
        return input;
    }

    private void Init(ReadOnlyTensorSpan<float> t)
    {
        int n = checked((int)t.FlattenedLength);
        if (t.IsDense || n <= 1)
        {
            Span = n == 0 ? ReadOnlySpan<float>.Empty : TensorArgs.DenseSpan(t);
            return;
        }
        _rented = ArrayPool<float>.Shared.Rent(n);
        t.FlattenTo(_rented.AsSpan(0, n));
        Span = _rented.AsSpan(0, n);
    }

    public void Dispose()
    {
        if (_rented is not null) ArrayPool<float>.Shared.Return(_rented);
        _rented = null;
    }
}

/// <summary>q, k or v [B, T, H, d] as fp32 token rows: see <see cref="FloatInput.Rows"/>.</summary>
internal static class TokenRowsOf
{
    /// <summary>
    /// The floats from one token's [H, d] row to the next when the tensor keeps its rows where the kernels can read them:
    /// float, each row dense, the B·T rows equally spaced without overlap. Null otherwise.
    /// </summary>
    public static int? Stride<T>(ReadOnlyTensorSpan<T> t)
    {
        if (typeof(T) != typeof(float) || t.Rank != 4) return null;
        ReadOnlySpan<nint> n = t.Lengths, s = t.Strides;
        nint width = n[2] * n[3];
        if ((n[3] > 1 && s[3] != 1) || (n[2] > 1 && s[2] != n[3])) return null;
        nint stride = n[0] == 1 || n[1] > 1 ? s[1] : s[0];
        if (n[0] == 1 && n[1] == 1) stride = width;
        if (n[0] > 1 && n[1] > 1 && s[0] != n[1] * s[1]) return null;
        return stride >= width && stride <= int.MaxValue ? (int)stride : null;
    }
}

/// <summary>An output written as fp32: the tensor's own memory for float, else a pooled buffer converted on <see cref="Commit"/>.</summary>
internal ref struct FloatOutput<T> where T : unmanaged
{
    private readonly Span<T> _target;
    private readonly string _name;
    private float[]? _rented;

    public FloatOutput(TensorSpan<T> t, string name)
    {
        _target = TensorArgs.DenseSpan(t, name);
        _name = name;
        if (typeof(T) == typeof(float))
        {
            Span = MemoryMarshal.Cast<T, float>(_target);
        }
        else
        {
            _rented = ArrayPool<float>.Shared.Rent(Math.Max(_target.Length, 1));
            Span = _rented.AsSpan(0, _target.Length);
        }
    }

    public Span<float> Span { get; }

    /// <summary>Writes a float16 target, refusing a value float16 cannot hold (it would become ±Inf) rather than writing it.</summary>
    public readonly void Commit()
    {
        if (_rented is null) return;
        HalfRange.Require(Span, _name);
        TensorPrimitives.ConvertToHalf(Span, MemoryMarshal.Cast<T, Half>(_target));
    }

    public void Dispose()
    {
        if (_rented is not null) ArrayPool<float>.Shared.Return(_rented);
        _rented = null;
    }
}

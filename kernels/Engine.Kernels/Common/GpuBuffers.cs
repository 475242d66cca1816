using ILGPU;
using ILGPU.Runtime;

namespace Engine.Kernels.Common;

/// <summary>
/// Named device buffers owned by one GPU op instance, each named after the field of the op's kernel
/// arguments it backs. A buffer is reallocated only when a call needs more than it holds, so steady-state
/// calls of the same size allocate nothing; tables (chunk tables, sequence offsets) are uploaded only when they change,
/// so steady-state calls of one layout move no table either.
/// </summary>
public sealed class GpuBuffers(GpuRuntime runtime) : IDisposable
{
    private readonly Dictionary<string, MemoryBuffer> _buffers = new();
    private readonly Dictionary<string, int[]> _tables = new();
    private GpuChecks? _checks;

    /// <summary>The value checks and float16 conversions of calls on this instance's device tensors (their words live here).</summary>
    public GpuChecks Checks => _checks ??= new GpuChecks(runtime, this);

    /// <summary>A view of at least <paramref name="length"/> elements (exactly that length) under <paramref name="name"/>.</summary>
    public ArrayView<T> Get<T>(string name, long length) where T : unmanaged
    {
        if (!_buffers.TryGetValue(name, out var buffer) || buffer.Length < Math.Max(length, 1) || buffer.ElementSize != System.Runtime.CompilerServices.Unsafe.SizeOf<T>())
        {
            buffer?.Dispose();
            buffer = runtime.Allocate<T>(Math.Max(length, 1), $"the GPU kernels' {name} buffer");
            _buffers[name] = buffer;
            _tables.Remove(name);
        }
        return ((MemoryBuffer1D<T, Stride1D.Dense>)buffer).View.SubView(0, Math.Max(length, 1));
    }

    /// <summary>Copies host data into the named buffer and returns its view.</summary>
    public ArrayView<T> Upload<T>(string name, ReadOnlySpan<T> data) where T : unmanaged
    {
        var view = Get<T>(name, data.Length);
        runtime.Upload(view, data);
        return view;
    }

    /// <summary>Uploads a table into the named buffer unless the buffer already holds these values; returns its view.</summary>
    public ArrayView<int> UploadTable(string name, ReadOnlySpan<int> table)
    {
        if (_tables.TryGetValue(name, out var held) && held.AsSpan().SequenceEqual(table)) return Get<int>(name, table.Length);
        var view = Upload(name, table);
        _tables[name] = table.ToArray();
        return view;
    }

    /// <summary>A one-element view for the arguments a launch does not read: kernels never get a default view.</summary>
    public ArrayView<T> Placeholder<T>() where T : unmanaged => Get<T>($"placeholder of {typeof(T).Name}", 1);

    /// <summary>Builds <paramref name="table"/> for the sequences, uploads it and returns its three parts (see <see cref="ChunkTable.Build"/>).</summary>
    public (ArrayView<int> ChunkStart, ArrayView<int> ChunkLength, ArrayView<int> FirstChunk) UploadChunkTable(ChunkTable table, SequenceLayout sequences, int chunkSize)
    {
        var view = UploadTable(nameof(ChunkTable), table.Build(sequences, chunkSize));
        int chunks = table.Chunks;
        return (view.SubView(0, chunks), view.SubView(chunks, chunks), view.SubView(2 * chunks, sequences.Count + 1));
    }

    public void Dispose()
    {
        foreach (var b in _buffers.Values) b.Dispose();
        _buffers.Clear();
        _tables.Clear();
    }
}

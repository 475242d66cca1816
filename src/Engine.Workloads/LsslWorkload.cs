using System.Numerics.Tensors;
using Engine.Kernels.Lssl;

namespace Engine.Workloads;

/// <summary>
/// An LSSL layer (<see cref="Lssl.Parameters"/>, bilinear) on random inputs, with the model flop count of each
/// mode: what `engine bench lssl`, the demo and the BenchmarkDotNet suite run. Buffers are made once and reused.
/// </summary>
public sealed class LsslWorkload : IDisposable
{
    private readonly float[] _u, _y, _state;

    public LsslWorkload(int batch, int length, int channels, int stateSize, LsslInitKind kind = LsslInitKind.Legs, int seed = 0)
    {
        RequireSizes(batch, [length], channels, stateSize);
        Batch = batch; Length = length; Channels = channels; StateSize = stateSize;
        Layer = Lssl.Parameters(kind, channels, stateSize, seed).Layer();
        _u = new WorkloadData(seed + 1).Normal((long)batch * length * channels);
        _y = new float[_u.Length];
        _state = new float[(long)batch * channels * stateSize];
    }

    /// <summary>
    /// Refuses, before anything is allocated, sizes past what one array holds and workloads of <paramref name="lengths"/>
    /// (a bench makes one per L and holds them all) past the machine's memory: u, y and the state.
    /// </summary>
    public static void RequireSizes(int batch, IReadOnlyCollection<int> lengths, int channels, int stateSize)
    {
        foreach (int length in lengths) ArraySize.Require($"B {batch}, L {length}, H {channels}: u [B, L, H]", batch, length, channels);
        ArraySize.Require($"B {batch}, H {channels}, N {stateSize}: the state [B, H, N]", batch, channels, stateSize);
        double floats = lengths.Sum(length => 2.0 * batch * length * channels + (double)batch * channels * stateSize);
        ArraySize.RequireMemory($"B {batch}, L {ArraySize.Lengths(lengths)}, H {channels}, N {stateSize}: u, y and the state", floats * sizeof(float));
    }

    public int Batch { get; }
    public int Length { get; }
    public int Channels { get; }
    public int StateSize { get; }
    public LsslLayer Layer { get; }

    public ReadOnlySpan<float> Output => _y;

    public double ModelFlops(LsslMode mode) => ModelFlops(Batch, Length, Channels, StateSize, Layer.StateMatrix == LsslStateMatrix.Diagonal, Layer.ChunkLength, mode);

    /// <summary>
    /// Model flops of a mode (not Auto), per channel and sequence: recurrent 2L(N² + 2N) (Ā x, B̄ u and C x; diagonal: 6LN); scan
    /// 2L'((Q + 1)/2 + 2N + N²/Q) (diagonal: N/Q for the carry) over the L' = L − (L mod Q) steps of whole chunks, the
    /// triangular Toeplitz block counted once, and the recurrence's count for the L mod Q steps after them, which it runs;
    /// conv 5 n log₂ n + 8 n with n = the FFT size (two channels share a forward and an inverse transform), and for the
    /// final state the workload writes, the scan's state pass: 2L'(N + N²/Q), then L mod Q steps of the state's recurrence.
    /// </summary>
    public static double ModelFlops(int batch, int length, int channels, int stateSize, bool diagonal, int chunk, LsslMode mode)
    {
        double n = stateSize, l = length, q = chunk;
        // A step of the state, x ← Ā x + B̄ u; the recurrence adds its output C x.
        double stateStep = diagonal ? 4 * n : 2 * (n * n + n), recurrentStep = stateStep + 2 * n;
        double rest = length % chunk, chunked = l - rest;
        double perChannel = mode switch
        {
            LsslMode.Recurrent => l * recurrentStep,
            LsslMode.Scan => 2 * chunked * ((q + 1) / 2 + 2 * n + (diagonal ? n : n * n) / q) + rest * recurrentStep,
            LsslMode.Conv => FftFlops(LsslCpu.FftSize(length)) + 2 * chunked * (n + (diagonal ? n : n * n) / q) + rest * stateStep,
            _ => throw new ArgumentException($"mode {mode} has no flop model: resolve Auto first", nameof(mode)),
        };
        return perChannel * batch * channels;
    }

    private static double FftFlops(int size) => 5.0 * size * Math.Log2(size) + 8.0 * size;

    /// <summary>Runs the layer (final state kept) and returns the mode that ran.</summary>
    public LsslMode Run(EngineDevice device, LsslMode mode)
    {
        nint[] shape = [Batch, Length, Channels];
        return Layer.Forward(device, new ReadOnlyTensorSpan<float>(_u, shape), new TensorSpan<float>(_y, shape),
            finalState: new TensorSpan<float>(_state, [Batch, Channels, StateSize]), mode: mode);
    }

    public void Dispose() => Layer.Dispose();
}

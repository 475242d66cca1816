using ILGPU;
using ILGPU.Runtime;

namespace Engine.Kernels.Lssl;

/// <summary>
/// What an LSSL kernel knows at compile time (a <see cref="SpecializedValue{T}"/>): channels, state size and
/// its padding, chunk length, the form of A and the group size.
/// </summary>
public readonly struct LsslGpuShape : IEquatable<LsslGpuShape>
{
    public LsslGpuShape(LsslConfig config, int groupSize)
    {
        Channels = config.Channels;
        N = config.StateSize;
        Np = config.StatePadded;
        Q = config.ChunkLength;
        Form = config.Form;
        GroupSize = groupSize;
    }

    public int Channels { get; }
    public int N { get; }
    public int Np { get; }
    public int Q { get; }
    public LsslStateMatrix Form { get; }
    public bool Diagonal => Form == LsslStateMatrix.Diagonal;
    public int GroupSize { get; }

    public bool Equals(LsslGpuShape other) =>
        Channels == other.Channels && N == other.N && Np == other.Np && Q == other.Q && Form == other.Form && GroupSize == other.GroupSize;

    public override bool Equals(object? obj) => obj is LsslGpuShape other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Channels, N, Np, Q, Form, GroupSize);
}

/// <summary>
/// What an LSSL kernel gets at run time: the device buffers of one call (the tables are the
/// <see cref="LsslSystem"/>'s, uploaded once; views a launch does not read are placeholders) and the
/// launch's scalars. Yes/no flags are ints behind bool properties: ILGPU refuses bool kernel parameters.
/// </summary>
public struct LsslGpuArgs
{
    /// <summary>u, y [B, L, H]; state [B, H, N].</summary>
    public ArrayView<float> U, Y, State;

    /// <summary>The fp32 tables of <see cref="LsslSystem"/>, same layouts.</summary>
    public ArrayView<float> StepT, StepKeep, Bbar, C, D, Taps, OutputWeights, StateColsT, ChunkCarryT, ChunkCarryKeep;

    /// <summary>K̄ [H, KernelStride] (conv mode).</summary>
    public ArrayView<float> ConvKernel;

    /// <summary>[B, H, chunks, Np]: each chunk's end-state contribution, and the state before each chunk.</summary>
    public ArrayView<float> Z, Xprev;

    public int Batch, Length;
    /// <summary>Recurrent: first step and step count.</summary>
    public int Start, Count;
    /// <summary>Chunk kernels: chunks per (sequence, channel), the stride of Z and Xprev.</summary>
    public int Chunks;
    public int KernelStride;

    private int _writeOutput, _useZ, _writeState;

    /// <summary>Recurrent: write y (else only the state advances).</summary>
    public bool WriteOutput { readonly get => _writeOutput != 0; set => _writeOutput = value ? 1 : 0; }

    /// <summary>Carry: add Z (else the zero-input carry).</summary>
    public bool UseZ { readonly get => _useZ != 0; set => _useZ = value ? 1 : 0; }

    /// <summary>Carry: write the final state.</summary>
    public bool WriteState { readonly get => _writeState != 0; set => _writeState = value ? 1 : 0; }
}

/// <summary>Dynamic shared memory of the recurrent kernel, in floats: two state buffers and two rows of partial sums.</summary>
internal readonly struct RecurrentTiles(LsslGpuShape s)
{
    public int States => 0;                                  // [2 × Np] the state, double-buffered
    public int Partials => 2 * s.Np;                         // [2 × group] partial C·x, alternating by step
    public int Floats => Partials + 2 * s.GroupSize;
}

/// <summary>Dynamic shared memory of the carry kernel, in floats.</summary>
internal readonly struct CarryTiles(LsslGpuShape s)
{
    public int States => 0;                                  // [2 × Np] the state, double-buffered
    public int Floats => 2 * s.Np;
}

/// <summary>
/// The LSSL kernels. Per (sequence, channel) groups for what is sequential (recurrence, chunk carry: the
/// state in shared memory, double-buffered, one barrier per step); flat 1-D grids for what is parallel
/// (chunk-local outputs, chunk end states, fix-up, direct convolution), channel index fastest so that
/// neighbouring threads touch neighbouring u and y.
/// </summary>
public static class LsslGpuKernels
{
    /// <summary>
    /// x ← K x + (Ā − K) x + B̄ u_t (see <see cref="LsslSystem"/>), y_t = C x + D u_t for steps [Start, Start + Count). Group = (sequence, channel);
    /// thread i owns state rows i, i + G, …; the output is the sum of the threads' partial C·x.
    /// </summary>
    public static void Recurrent(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        int item = Grid.IdxX, tid = Group.IdxX, g = s.GroupSize;
        int b = item / s.Channels, h = item - b * s.Channels;
        var tiles = new RecurrentTiles(s);
        var shared = SharedMemory.GetDynamic<float>();
        var states = shared.SubView(tiles.States, 2 * s.Np);
        var partials = shared.SubView(tiles.Partials, 2 * g);
        long stateBase = (long)item * s.N;
        for (int i = tid; i < s.N; i += g) states[i] = args.State[stateBase + i];
        Group.Barrier();
        int cur = 0;
        float d = args.D[h];
        long rowBase = (long)h * s.Np, matrixBase = (long)h * s.Np * s.Np;
        for (int step = 0; step < args.Count; step++)
        {
            long at = ((long)b * args.Length + args.Start + step) * s.Channels + h;
            float ut = args.U[at];
            int xc = cur * s.Np, xn = (1 - cur) * s.Np;
            float partial = 0f;
            for (int i = tid; i < s.N; i += g)
            {
                float xi = states[xc + i];
                // Ā x first, then B̄ u: x + B̄ u rounded first would lose a small B̄ u against a large x that (Ā − I) x then cancels.
                float acc = args.StepKeep[rowBase + i] * xi;
                if (s.Diagonal)
                {
                    acc += args.StepT[rowBase + i] * xi;
                }
                else
                {
                    for (int k = 0; k < s.N; k++) acc += args.StepT[matrixBase + (long)k * s.Np + i] * states[xc + k];
                }
                acc += args.Bbar[rowBase + i] * ut;
                states[xn + i] = acc;
                partial += args.C[rowBase + i] * acc;
            }
            int red = (step & 1) * g;
            partials[red + tid] = partial;
            Group.Barrier();
            if (args.WriteOutput && tid == 0)
            {
                float sum = d * ut;
                for (int r = 0; r < g; r++) sum += partials[red + r];
                args.Y[at] = sum;
            }
            cur = 1 - cur;
        }
        for (int i = tid; i < s.N; i += g) args.State[stateBase + i] = states[cur * s.Np + i];
    }

    /// <summary>
    /// The chunk carry, sequential over chunks: Xprev[c] = x; x ← K x + (Ā^Q − K) x (+ Z[c]) (see <see cref="LsslSystem"/>).
    /// Group = (sequence, channel).
    /// </summary>
    public static void Carry(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        int item = Grid.IdxX, tid = Group.IdxX, g = s.GroupSize;
        int h = item % s.Channels;
        var shared = SharedMemory.GetDynamic<float>();
        var states = shared.SubView(new CarryTiles(s).States, 2 * s.Np);
        long stateBase = (long)item * s.N;
        for (int i = tid; i < s.N; i += g) states[i] = args.State[stateBase + i];
        Group.Barrier();
        int cur = 0;
        long rowBase = (long)h * s.Np, matrixBase = (long)h * s.Np * s.Np;
        for (int c = 0; c < args.Chunks; c++)
        {
            int xc = cur * s.Np, xn = (1 - cur) * s.Np;
            long at = ((long)item * args.Chunks + c) * s.Np;
            for (int i = tid; i < s.N; i += g)
            {
                float xi = states[xc + i];
                args.Xprev[at + i] = xi;
                // Ā^Q x first, then Z (see Recurrent).
                float acc = args.ChunkCarryKeep[rowBase + i] * xi;
                if (s.Diagonal)
                {
                    acc += args.ChunkCarryT[rowBase + i] * xi;
                }
                else
                {
                    for (int k = 0; k < s.N; k++) acc += args.ChunkCarryT[matrixBase + (long)k * s.Np + i] * states[xc + k];
                }
                if (args.UseZ) acc += args.Z[at + i];
                states[xn + i] = acc;
            }
            Group.Barrier();
            cur = 1 - cur;
        }
        if (args.WriteState)
            for (int i = tid; i < s.N; i += g) args.State[stateBase + i] = states[cur * s.Np + i];
    }

    /// <summary>Chunk-local outputs of the full chunks: y_(cQ+i) = Σ_(j&lt;=i) K̄_(i−j) u_(cQ+j) + D u_(cQ+i).</summary>
    public static void LocalOutput(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= ChunkStepCount(args, s)) return;
        var (b, c, i, h) = ChunkStepOf(index, args, s);
        long first = ((long)b * args.Length + (long)c * s.Q) * s.Channels + h;
        long tapBase = (long)h * s.Q;
        float sum = args.D[h] * args.U[first + (long)i * s.Channels];
        for (int j = 0; j <= i; j++) sum += args.Taps[tapBase + i - j] * args.U[first + (long)j * s.Channels];
        args.Y[first + (long)i * s.Channels] = sum;
    }

    /// <summary>Each full chunk's contribution to the state at its end: Z[c] = Σ_j Ā^(Q−1−j) B̄ u_(cQ+j).</summary>
    public static void ChunkState(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= (long)args.Batch * s.Channels * args.Chunks * s.Np) return;
        int k = (int)(index % s.Np);
        long rest = index / s.Np;
        int c = (int)(rest % args.Chunks);
        long item = rest / args.Chunks;
        int h = (int)(item % s.Channels), b = (int)(item / s.Channels);
        long first = ((long)b * args.Length + (long)c * s.Q) * s.Channels + h;
        long colBase = (long)h * s.Q * s.Np + k;
        float sum = 0f;
        for (int j = 0; j < s.Q; j++) sum += args.StateColsT[colBase + (long)j * s.Np] * args.U[first + (long)j * s.Channels];
        args.Z[(item * args.Chunks + c) * s.Np + k] = sum;
    }

    /// <summary>Adds the carried state's part: y_(cQ+i) += C Ā^(i+1) · Xprev[c], for steps inside the sequence.</summary>
    public static void FixUp(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= ChunkStepCount(args, s)) return;
        var (b, c, i, h) = ChunkStepOf(index, args, s);
        int t = c * s.Q + i;
        if (t >= args.Length) return;
        long prev = (((long)b * s.Channels + h) * args.Chunks + c) * s.Np;
        long rowBase = (long)h * (s.Np + s.Q) * s.Q + i;
        float sum = 0f;
        for (int k = 0; k < s.N; k++) sum += args.OutputWeights[rowBase + (long)k * s.Q] * args.Xprev[prev + k];
        args.Y[((long)b * args.Length + t) * s.Channels + h] += sum;
    }

    /// <summary>Direct causal convolution with the kernel K̄: y_t = Σ_(s&lt;=t) K̄_(t−s) u_s + D u_t (zero initial state).</summary>
    public static void ConvDirect(LsslGpuArgs args, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= (long)args.Batch * args.Length * s.Channels) return;
        int h = (int)(index % s.Channels);
        long rest = index / s.Channels;
        int t = (int)(rest % args.Length);
        int b = (int)(rest / args.Length);
        long first = (long)b * args.Length * s.Channels + h;
        long kernelBase = (long)h * args.KernelStride + t;
        float sum = args.D[h] * args.U[first + (long)t * s.Channels];
        for (int j = 0; j <= t; j++) sum += args.ConvKernel[kernelBase - j] * args.U[first + (long)j * s.Channels];
        args.Y[first + (long)t * s.Channels] = sum;
    }

    /// <summary>Threads of the kernels with one thread per (batch, chunk, step inside the chunk, channel).</summary>
    private static long ChunkStepCount(in LsslGpuArgs args, in LsslGpuShape s) => (long)args.Batch * args.Chunks * s.Q * s.Channels;

    /// <summary>The (batch, chunk, step, channel) of a thread of those kernels, channel fastest.</summary>
    private static (int Batch, int Chunk, int Step, int Channel) ChunkStepOf(long index, in LsslGpuArgs args, in LsslGpuShape s)
    {
        int h = (int)(index % s.Channels);
        long rest = index / s.Channels;
        int i = (int)(rest % s.Q);
        rest /= s.Q;
        return ((int)(rest / args.Chunks), (int)(rest % args.Chunks), i, h);
    }
}

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
        DiagonalFlag = config.IsDiagonal ? 1 : 0;
        GroupSize = groupSize;
    }

    public int Channels { get; }
    public int N { get; }
    public int Np { get; }
    public int Q { get; }
    /// <summary>1 for a diagonal A (an int: kernel parameters must be blittable).</summary>
    public int DiagonalFlag { get; }
    public bool Diagonal => DiagonalFlag != 0;
    public int GroupSize { get; }

    public bool Equals(LsslGpuShape other) =>
        Channels == other.Channels && N == other.N && Np == other.Np && Q == other.Q && DiagonalFlag == other.DiagonalFlag && GroupSize == other.GroupSize;

    public override bool Equals(object? obj) => obj is LsslGpuShape other && Equals(other);

    public override int GetHashCode() => HashCode.Combine(Channels, N, Np, Q, DiagonalFlag, GroupSize);
}

/// <summary>The device buffers of one call; the tables are the <see cref="LsslSystem"/>'s, uploaded once.</summary>
public struct LsslGpuViews
{
    /// <summary>u, y [B, L, H]; state [B, H, N].</summary>
    public ArrayView<float> U, Y, State;

    /// <summary>The fp32 tables of <see cref="LsslSystem"/>, same layouts.</summary>
    public ArrayView<float> AbarMinusIT, Bbar, C, D, Taps, OutputWeights, StateColsT, ChunkPowMinusIT;

    /// <summary>K̄ [H, KernelStride] (conv mode).</summary>
    public ArrayView<float> ConvKernel;

    /// <summary>[B, H, chunks, Np]: each chunk's end-state contribution, and the state before each chunk.</summary>
    public ArrayView<float> Z, Xprev;
}

/// <summary>The scalars of one launch.</summary>
public struct LsslGpuCall
{
    public int Batch, Length;
    /// <summary>Recurrent: first step and step count.</summary>
    public int Start, Count;
    /// <summary>Chunk kernels: chunks per (sequence, channel), the stride of Z and Xprev.</summary>
    public int Chunks;
    public int KernelStride;
    /// <summary>Recurrent: write y. Carry: add Z (else the zero-input carry) and write the final state.</summary>
    public int WriteOutput, UseZ, WriteState;
}

/// <summary>
/// The LSSL kernels. Per (sequence, channel) groups for what is sequential (recurrence, chunk carry: the
/// state in shared memory, double-buffered, one barrier per step); flat 1-D grids for what is parallel
/// (chunk-local outputs, chunk end states, fix-up, direct convolution), channel index fastest so that
/// neighbouring threads touch neighbouring u and y.
/// </summary>
public static class LsslGpuKernels
{
    /// <summary>Floats of dynamic shared memory the recurrence needs: two state buffers and two rows of partial sums.</summary>
    public static int RecurrentSharedFloats(LsslGpuShape s) => 2 * s.Np + 2 * s.GroupSize;

    public static int CarrySharedFloats(LsslGpuShape s) => 2 * s.Np;

    /// <summary>
    /// x ← x + (Ā − I) x + B̄ u_t, y_t = C x + D u_t for steps [Start, Start + Count). Group = (sequence, channel);
    /// thread i owns state rows i, i + G, …; the output is the sum of the threads' partial C·x.
    /// </summary>
    public static void Recurrent(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        int item = Grid.IdxX, tid = Group.IdxX, g = s.GroupSize;
        int b = item / s.Channels, h = item - b * s.Channels;
        var shared = SharedMemory.GetDynamic<float>();
        long stateBase = (long)item * s.N;
        for (int i = tid; i < s.N; i += g) shared[i] = v.State[stateBase + i];
        Group.Barrier();
        int cur = 0;
        float d = v.D[h];
        long rowBase = (long)h * s.Np, matrixBase = (long)h * s.Np * s.Np;
        for (int step = 0; step < call.Count; step++)
        {
            long at = ((long)b * call.Length + call.Start + step) * s.Channels + h;
            float ut = v.U[at];
            int xc = cur * s.Np, xn = (1 - cur) * s.Np;
            float partial = 0f;
            for (int i = tid; i < s.N; i += g)
            {
                float xi = shared[xc + i];
                float acc = xi + v.Bbar[rowBase + i] * ut;
                if (s.Diagonal)
                {
                    acc += v.AbarMinusIT[rowBase + i] * xi;
                }
                else
                {
                    for (int k = 0; k < s.N; k++) acc += v.AbarMinusIT[matrixBase + (long)k * s.Np + i] * shared[xc + k];
                }
                shared[xn + i] = acc;
                partial += v.C[rowBase + i] * acc;
            }
            int red = 2 * s.Np + (step & 1) * g;
            shared[red + tid] = partial;
            Group.Barrier();
            if (call.WriteOutput != 0 && tid == 0)
            {
                float sum = d * ut;
                for (int r = 0; r < g; r++) sum += shared[red + r];
                v.Y[at] = sum;
            }
            cur = 1 - cur;
        }
        for (int i = tid; i < s.N; i += g) v.State[stateBase + i] = shared[cur * s.Np + i];
    }

    /// <summary>
    /// The chunk carry, sequential over chunks: Xprev[c] = x; x ← x + (Ā^Q − I) x (+ Z[c]). Group = (sequence, channel).
    /// </summary>
    public static void Carry(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        int item = Grid.IdxX, tid = Group.IdxX, g = s.GroupSize;
        int h = item % s.Channels;
        var shared = SharedMemory.GetDynamic<float>();
        long stateBase = (long)item * s.N;
        for (int i = tid; i < s.N; i += g) shared[i] = v.State[stateBase + i];
        Group.Barrier();
        int cur = 0;
        long rowBase = (long)h * s.Np, matrixBase = (long)h * s.Np * s.Np;
        for (int c = 0; c < call.Chunks; c++)
        {
            int xc = cur * s.Np, xn = (1 - cur) * s.Np;
            long at = ((long)item * call.Chunks + c) * s.Np;
            for (int i = tid; i < s.N; i += g)
            {
                float xi = shared[xc + i];
                v.Xprev[at + i] = xi;
                float acc = call.UseZ != 0 ? xi + v.Z[at + i] : xi;
                if (s.Diagonal)
                {
                    acc += v.ChunkPowMinusIT[rowBase + i] * xi;
                }
                else
                {
                    for (int k = 0; k < s.N; k++) acc += v.ChunkPowMinusIT[matrixBase + (long)k * s.Np + i] * shared[xc + k];
                }
                shared[xn + i] = acc;
            }
            Group.Barrier();
            cur = 1 - cur;
        }
        if (call.WriteState != 0)
            for (int i = tid; i < s.N; i += g) v.State[stateBase + i] = shared[cur * s.Np + i];
    }

    /// <summary>Chunk-local outputs of the full chunks: y_(cQ+i) = Σ_(j<=i) K̄_(i−j) u_(cQ+j) + D u_(cQ+i).</summary>
    public static void LocalOutput(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= ChunkStep.Count(call, s)) return;
        var (b, c, i, h) = ChunkStep.Of(index, call, s);
        long first = ((long)b * call.Length + (long)c * s.Q) * s.Channels + h;
        long tapBase = (long)h * s.Q;
        float sum = v.D[h] * v.U[first + (long)i * s.Channels];
        for (int j = 0; j <= i; j++) sum += v.Taps[tapBase + i - j] * v.U[first + (long)j * s.Channels];
        v.Y[first + (long)i * s.Channels] = sum;
    }

    /// <summary>Each full chunk's contribution to the state at its end: Z[c] = Σ_j Ā^(Q−1−j) B̄ u_(cQ+j).</summary>
    public static void ChunkState(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= (long)call.Batch * s.Channels * call.Chunks * s.Np) return;
        int k = (int)(index % s.Np);
        long rest = index / s.Np;
        int c = (int)(rest % call.Chunks);
        long item = rest / call.Chunks;
        int h = (int)(item % s.Channels), b = (int)(item / s.Channels);
        long first = ((long)b * call.Length + (long)c * s.Q) * s.Channels + h;
        long colBase = (long)h * s.Q * s.Np + k;
        float sum = 0f;
        for (int j = 0; j < s.Q; j++) sum += v.StateColsT[colBase + (long)j * s.Np] * v.U[first + (long)j * s.Channels];
        v.Z[(item * call.Chunks + c) * s.Np + k] = sum;
    }

    /// <summary>Adds the carried state's part: y_(cQ+i) += C Ā^(i+1) · Xprev[c], for steps inside the sequence.</summary>
    public static void FixUp(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= ChunkStep.Count(call, s)) return;
        var (b, c, i, h) = ChunkStep.Of(index, call, s);
        int t = c * s.Q + i;
        if (t >= call.Length) return;
        long prev = (((long)b * s.Channels + h) * call.Chunks + c) * s.Np;
        long rowBase = (long)h * (s.Np + s.Q) * s.Q + i;
        float sum = 0f;
        for (int k = 0; k < s.N; k++) sum += v.OutputWeights[rowBase + (long)k * s.Q] * v.Xprev[prev + k];
        v.Y[((long)b * call.Length + t) * s.Channels + h] += sum;
    }

    /// <summary>Direct causal convolution with the kernel K̄: y_t = Σ_(s<=t) K̄_(t−s) u_s + D u_t (zero initial state).</summary>
    public static void ConvDirect(LsslGpuViews v, LsslGpuCall call, SpecializedValue<LsslGpuShape> shape)
    {
        var s = shape.Value;
        long index = (long)Grid.IdxX * s.GroupSize + Group.IdxX;
        if (index >= (long)call.Batch * call.Length * s.Channels) return;
        int h = (int)(index % s.Channels);
        long rest = index / s.Channels;
        int t = (int)(rest % call.Length);
        int b = (int)(rest / call.Length);
        long first = (long)b * call.Length * s.Channels + h;
        long kernelBase = (long)h * call.KernelStride + t;
        float sum = v.D[h] * v.U[first + (long)t * s.Channels];
        for (int j = 0; j <= t; j++) sum += v.ConvKernel[kernelBase - j] * v.U[first + (long)j * s.Channels];
        v.Y[first + (long)t * s.Channels] = sum;
    }

    /// <summary>The kernels with one thread per (batch, chunk, step inside the chunk, channel), channel fastest.</summary>
    private static class ChunkStep
    {
        public static long Count(in LsslGpuCall call, in LsslGpuShape s) => (long)call.Batch * call.Chunks * s.Q * s.Channels;

        public static (int Batch, int Chunk, int Step, int Channel) Of(long index, in LsslGpuCall call, in LsslGpuShape s)
        {
            int h = (int)(index % s.Channels);
            long rest = index / s.Channels;
            int i = (int)(rest % s.Q);
            rest /= s.Q;
            return ((int)(rest / call.Chunks), (int)(rest % call.Chunks), i, h);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Engine.Onnx.Interop;

/// <summary>One input or output of an engine op as ORT sees it.</summary>
internal sealed record OpParameter(string Name, bool Optional, int ElementType = Ort.ElementFloat);

/// <summary>A kernel made for one node: attributes and constant inputs read once, then Compute per call (re-entrant).</summary>
internal interface IEngineKernel : IDisposable
{
    void Compute(KernelContext context);
}

/// <summary>An op the engine implements inside ONNX Runtime: its signature and how a node becomes a kernel.</summary>
internal abstract class EngineOp
{
    public abstract string Name { get; }
    public abstract IReadOnlyList<OpParameter> Inputs { get; }
    public abstract IReadOnlyList<OpParameter> Outputs { get; }

    /// <summary>Validates the node (attributes, inputs, the shapes the model fixes) and builds its kernel.</summary>
    public abstract IEngineKernel CreateKernel(KernelInfo info, EngineDevice device);
}

/// <summary>
/// The native OrtCustomOp table of one engine op bound to one device. The 208-byte struct ORT reads is
/// followed by a GCHandle to this object, which is how the static callbacks find their op. ORT keeps the
/// raw pointer, so the memory lives until <see cref="Dispose"/>, which the owner calls only after every
/// session using it is gone.
/// </summary>
internal sealed unsafe class NativeCustomOp : IDisposable
{
    private const int StructSize = 208;
    private const int CustomOpVersion = 31;

    private readonly nint _name;
    private GCHandle _self;
    private byte* _block;

    public NativeCustomOp(EngineOp op, EngineDevice device, Action<int> liveKernels)
    {
        Op = op;
        Device = device;
        LiveKernels = liveKernels;
        _name = Marshal.StringToCoTaskMemUTF8(op.Name);
        _self = GCHandle.Alloc(this);
        _block = (byte*)NativeMemory.AllocZeroed(StructSize + (nuint)sizeof(nint));
        *(uint*)_block = CustomOpVersion;
        var slots = (nint*)(_block + 8);
        int i = 0;
        slots[i++] = 0;                                                                           // CreateKernel (V1)
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nint>)&GetName;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nint>)&GetExecutionProviderType;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint, int>)&GetInputType;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint>)&GetInputTypeCount;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint, int>)&GetOutputType;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint>)&GetOutputTypeCount;
        slots[i++] = 0;                                                                           // KernelCompute (V1)
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, void>)&KernelDestroy;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint, int>)&GetInputCharacteristic;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint, int>)&GetOutputCharacteristic;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nuint, int>)&GetInputMemoryType;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetVariadicMinArity;            // inputs
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetVariadicHomogeneity;         // inputs
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetVariadicMinArity;            // outputs
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetVariadicHomogeneity;         // outputs
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nint, nint, nint*, nint>)&CreateKernelV2;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, nint, nint>)&KernelComputeV2;
        slots[i++] = 0;                                                                           // InferOutputShapeFn
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetStartVersion;
        slots[i++] = (nint)(delegate* unmanaged[Cdecl]<nint, int>)&GetEndVersion;
        // GetMayInplace, ReleaseMayInplace, GetAliasMap, ReleaseAliasMap stay null.
        *(nint*)(_block + StructSize) = GCHandle.ToIntPtr(_self);
    }

    public EngineOp Op { get; }
    public EngineDevice Device { get; }
    public Action<int> LiveKernels { get; }

    /// <summary>The OrtCustomOp* handed to ORT.</summary>
    public nint Pointer => _block != null ? (nint)_block : throw new ObjectDisposedException(nameof(NativeCustomOp));

    public void Dispose()
    {
        if (_block == null) return;
        NativeMemory.Free(_block);
        _block = null;
        Marshal.FreeCoTaskMem(_name);
        _self.Free();
    }

    private static NativeCustomOp Of(nint op) => (NativeCustomOp)GCHandle.FromIntPtr(*(nint*)((byte*)op + StructSize)).Target!;

    /// <summary>What ORT holds for a kernel: the kernel and the op that made it.</summary>
    private sealed class KernelHandle(IEngineKernel kernel, NativeCustomOp owner)
    {
        public IEngineKernel Kernel { get; } = kernel;
        public NativeCustomOp Owner { get; } = owner;
    }

    // Every callback below is entered from native code: an exception escaping one would end the process,
    // so each one that can fail catches everything and reports through a status (or not at all).

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nint GetName(nint op) => Of(op)._name;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nint GetExecutionProviderType(nint op) => 0; // CPU: the kernels take host tensors on every backend

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetInputType(nint op, nuint index) => Of(op).Op.Inputs[(int)index].ElementType;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nuint GetInputTypeCount(nint op) => (nuint)Of(op).Op.Inputs.Count;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetOutputType(nint op, nuint index) => Of(op).Op.Outputs[(int)index].ElementType;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nuint GetOutputTypeCount(nint op) => (nuint)Of(op).Op.Outputs.Count;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetInputCharacteristic(nint op, nuint index) => Of(op).Op.Inputs[(int)index].Optional ? 1 : 0;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetOutputCharacteristic(nint op, nuint index) => Of(op).Op.Outputs[(int)index].Optional ? 1 : 0;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetInputMemoryType(nint op, nuint index) => 0; // OrtMemTypeDefault

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetVariadicMinArity(nint op) => 1;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetVariadicHomogeneity(nint op) => 1;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetStartVersion(nint op) => 1;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int GetEndVersion(nint op) => int.MaxValue;

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nint CreateKernelV2(nint op, nint api, nint info, nint* kernel)
    {
        *kernel = 0;
        try
        {
            var owner = Of(op);
            var created = owner.Op.CreateKernel(new KernelInfo(info), owner.Device);
            *kernel = GCHandle.ToIntPtr(GCHandle.Alloc(new KernelHandle(created, owner)));
            owner.LiveKernels(+1);
            return 0;
        }
        catch (Exception e)
        {
            int code = e switch { OrtCallException ort => ort.OrtErrorCode, ModelNodeException or ArgumentException => Ort.ErrorInvalidArgument, _ => Ort.ErrorFail };
            return Ort.Status(code, Ops.NodeErrors.MessageOf(e));
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static nint KernelComputeV2(nint kernel, nint context)
    {
        try
        {
            var handle = (KernelHandle)GCHandle.FromIntPtr(kernel).Target!;
            handle.Kernel.Compute(new KernelContext(context));
            return 0;
        }
        catch (Exception e)
        {
            // An ORT call that failed (e.g. an output the caller pre-allocated with another shape) keeps ORT's own code.
            int code = e switch { OrtCallException ort => ort.OrtErrorCode, ArgumentException => Ort.ErrorInvalidArgument, _ => Ort.ErrorRuntimeException };
            return Ort.Status(code, Ops.NodeErrors.MessageOf(e));
        }
    }

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static void KernelDestroy(nint kernel)
    {
        if (kernel == 0) return;
        try
        {
            var gc = GCHandle.FromIntPtr(kernel);
            var handle = (KernelHandle)gc.Target!;
            gc.Free();
            handle.Kernel.Dispose();
            handle.Owner.LiveKernels(-1);
        }
        catch (Exception)
        {
            // Nothing can be reported from a destroy callback; the kernel's memory is released by the GC.
        }
    }
}

/// <summary>A custom-op domain (name and ops) created in ORT; released after the sessions that use it.</summary>
internal sealed unsafe class NativeOpDomain : IDisposable
{
    private readonly NativeCustomOp[] _ops;
    private nint _domain;

    public NativeOpDomain(string name, IEnumerable<NativeCustomOp> ops)
    {
        Name = name;
        _ops = ops.ToArray();
        nint domain;
        fixed (byte* n = Ort.Utf8(name)) Ort.Check(Ort.CreateCustomOpDomain(n, &domain));
        _domain = domain;
        try
        {
            foreach (var op in _ops) Ort.Check(Ort.CustomOpDomainAdd(_domain, op.Pointer));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string Name { get; }

    /// <summary>Adds this domain to a session's options (the native OrtSessionOptions*).</summary>
    public void AddTo(Microsoft.ML.OnnxRuntime.SessionOptions options)
    {
        ObjectDisposedException.ThrowIf(_domain == 0, this);
        Ort.Check(Ort.AddCustomOpDomain(options.DangerousGetHandle(), _domain));
    }

    public void Dispose()
    {
        if (_domain != 0) Ort.ReleaseCustomOpDomain(_domain);
        _domain = 0;
        foreach (var op in _ops) op.Dispose();
    }
}

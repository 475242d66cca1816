// One kernel call: GLA with a per-key gate on random data on the CPU, checked against the float64 reference.
using System.Numerics.Tensors;
using Engine;

const int B = 1, T = 1024, H = 4, K = 64, V = 64;
var random = new Random(0);

// q, v ~ N(0, 1); k rows ~ N(0, 1/K); log gates log σ(x + 2) <= 0, mild decay as trained GLA layers have.
var q = Tensor.Create(Fill(B * T * H * K, () => Normal(1)), [B, T, H, K]);
var k = Tensor.Create(Fill(B * T * H * K, () => Normal(1 / MathF.Sqrt(K))), [B, T, H, K]);
var v = Tensor.Create(Fill(B * T * H * V, () => Normal(1)), [B, T, H, V]);
var g = Tensor.Create(Fill(B * T * H * K, () => -MathF.Log(1 + MathF.Exp(-(Normal(1) + 2)))), [B, T, H, K]);

using var cpu = EngineDevice.Create(Backend.Cpu);
using var reference = EngineDevice.Create(Backend.Reference);
var clock = System.Diagnostics.Stopwatch.StartNew();
AttentionResult<float> fast = Gla.Forward(cpu, q, k, v, g);
double milliseconds = clock.Elapsed.TotalMilliseconds;
AttentionResult<float> exact = Gla.Forward(reference, q, k, v, g);

double maxError = 0, maxValue = 0;
var o = fast.Output.AsReadOnlyTensorSpan();
var e = exact.Output.AsReadOnlyTensorSpan();
var fastValues = new float[o.FlattenedLength];
var exactValues = new float[e.FlattenedLength];
o.FlattenTo(fastValues);
e.FlattenTo(exactValues);
for (int i = 0; i < fastValues.Length; i++)
{
    maxError = Math.Max(maxError, Math.Abs(fastValues[i] - exactValues[i]));
    maxValue = Math.Max(maxValue, Math.Abs(exactValues[i]));
}
Console.WriteLine($"GLA B={B} T={T} H={H} K={K} V={V} on {cpu.Description}: {milliseconds:F1} ms (first call, JIT included)");
Console.WriteLine($"max |error| against the float64 reference: {maxError:E2} (outputs up to {maxValue:F2})");
// fp32 accumulation over T tokens: errors of a few 1e-6 relative to the outputs' size are expected.
return maxError <= 1e-4 * Math.Max(1, maxValue) ? 0 : 1;

float[] Fill(int length, Func<float> next)
{
    var values = new float[length];
    for (int i = 0; i < length; i++) values[i] = next();
    return values;
}

float Normal(float std) => std * MathF.Sqrt(-2 * MathF.Log(1 - random.NextSingle())) * MathF.Cos(2 * MathF.PI * random.NextSingle());

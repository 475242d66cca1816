// A prefill-then-decode loop: a GLA session takes a prompt in one chunked call, then generates token by token
// with its state kept between calls; every decoded token's output is checked against one whole-sequence call.
using System.Numerics.Tensors;
using Engine;

const int Prompt = 256, Decode = 64, T = Prompt + Decode, H = 4, K = 64, V = 64;
var random = new Random(1);
float[] q = Fill(T * H * K, 1), k = Fill(T * H * K, 1 / MathF.Sqrt(K)), v = Fill(T * H * V, 1);
float[] g = Array.ConvertAll(Fill(T * H * K, 1), x => -MathF.Log(1 + MathF.Exp(-(x + 2))));   // log σ(x + 2) <= 0

using var device = EngineDevice.Create(Backend.Cpu);
using var session = new GlaSession(device, sequences: 1, new HeadLayout(H, H, K, V), GateKind.PerKey);

// Prefill: the prompt's tokens [1, Prompt, H, ·] in one chunked call.
var output = new float[T * H * V];
session.Prefill(Tokens(q, 0, Prompt, K), Tokens(k, 0, Prompt, K), Tokens(v, 0, Prompt, V), Tokens(g, 0, Prompt, K),
    Tensor.Create(new float[Prompt * H * V], [1, Prompt, H, V]));

// Decode: one token per call, the state carried by the session.
var token = Tensor.Create(new float[H * V], [1, 1, H, V]);
var clock = System.Diagnostics.Stopwatch.StartNew();
for (int t = Prompt; t < T; t++)
{
    session.Step(Tokens(q, t, 1, K), Tokens(k, t, 1, K), Tokens(v, t, 1, V), Tokens(g, t, 1, K), token);
    token.FlattenTo(output.AsSpan(t * H * V, H * V));
}
double perToken = clock.Elapsed.TotalMilliseconds / Decode;

// The same sequence in one call: the decoded tokens must agree with it.
var whole = Gla.Forward(device, Tokens(q, 0, T, K), Tokens(k, 0, T, K), Tokens(v, 0, T, V), Tokens(g, 0, T, K));
var expected = new float[T * H * V];
whole.Output.FlattenTo(expected);
double maxError = 0;
for (int i = Prompt * H * V; i < T * H * V; i++) maxError = Math.Max(maxError, Math.Abs(output[i] - expected[i]));
Console.WriteLine($"prefill {Prompt} tokens, then {Decode} decode steps at {perToken:F3} ms per token ({device.Description})");
Console.WriteLine($"max |difference| of the decoded tokens from one whole-sequence call: {maxError:E2}");
return maxError <= 1e-4 ? 0 : 1;

// Tokens [start, start + count) of a [1, T, H, dim] array as a tensor of their own.
Tensor<float> Tokens(float[] values, int start, int count, int dim) =>
    Tensor.Create(values.AsSpan(start * H * dim, count * H * dim).ToArray(), [1, count, H, dim]);

float[] Fill(int length, float std)
{
    var values = new float[length];
    for (int i = 0; i < length; i++)
        values[i] = std * MathF.Sqrt(-2 * MathF.Log(1 - random.NextSingle())) * MathF.Cos(2 * MathF.PI * random.NextSingle());
    return values;
}

using NUnit.Framework;

namespace Engine.Tests.Harness;

/// <summary>What the parsers' fuzz tests share: seeded byte-level mutations and a run that a hang cannot stall.</summary>
public static class Fuzz
{
    private static readonly byte[] Interesting = [0x00, 0x01, 0x7F, 0x80, 0xFF, (byte)'(', (byte)')', (byte)',', (byte)'\'', (byte)'-', (byte)'9'];

    /// <summary>A copy of <paramref name="valid"/> with bytes flipped, cut off, inserted or removed.</summary>
    public static byte[] Mutate(byte[] valid, Random random)
    {
        var bytes = new List<byte>(valid);
        int at = random.Next(bytes.Count + 1);
        switch (random.Next(4))
        {
            case 0:
                for (int flips = random.Next(1, 5); flips > 0 && bytes.Count > 0; flips--)
                {
                    int i = random.Next(bytes.Count);
                    bytes[i] = random.Next(2) == 0 ? Interesting[random.Next(Interesting.Length)] : (byte)(bytes[i] ^ (1 << random.Next(8)));
                }
                break;
            case 1:
                bytes.RemoveRange(at, bytes.Count - at);
                break;
            case 2:
                var inserted = new byte[random.Next(1, 17)];
                random.NextBytes(inserted);
                bytes.InsertRange(at, inserted);
                break;
            default:
                bytes.RemoveRange(at, Math.Min(random.Next(1, 17), bytes.Count - at));
                break;
        }
        return bytes.ToArray();
    }

    /// <summary>
    /// Runs cases 0 .. count - 1 in order on a worker thread; each returns what is wrong with its outcome, or null.
    /// Fails on the first problem, or when a case has not returned within <paramref name="hangAfter"/> (a
    /// guard against hangs, not a speed check: the whole run normally takes a small fraction of it).
    /// </summary>
    public static void Run(int count, Func<int, string?> runCase, TimeSpan hangAfter)
    {
        int current = -1;
        var work = Task.Run(() =>
        {
            for (int i = 0; i < count; i++)
            {
                Volatile.Write(ref current, i);
                if (runCase(i) is { } problem) return $"case {i}: {problem}";
            }
            return null;
        });
        if (!work.Wait(hangAfter)) Assert.Fail($"case {Volatile.Read(ref current)} did not return within {hangAfter}");
        Assert.That(work.Result, Is.Null);
    }

    /// <summary>Null when <paramref name="error"/> is one of the <paramref name="documented"/> types and its message contains <paramref name="naming"/>.</summary>
    public static string? Judge(Exception error, string naming, params Type[] documented) =>
        !documented.Contains(error.GetType()) ? $"undocumented {error.GetType().Name}: {error}"
        : !error.Message.Contains(naming, StringComparison.Ordinal) ? $"the message does not name '{naming}': {error.Message}"
        : null;
}

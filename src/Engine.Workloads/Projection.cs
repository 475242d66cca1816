using Engine.Onnx;

namespace Engine.Workloads;

/// <summary>
/// The projections of the sample decoders: x (…, rows) times a [rows, columns] weight, as a MatMul, or as the
/// com.microsoft MatMulNBits that ONNX Runtime GenAI's CPU int4 export (`--precision int4 -e cpu`) writes in its place:
/// 4-bit codes in blocks of 32 along rows, symmetric (no zero points: ORT reads 8), one scale per block and column in
/// the activations' type; accuracy_level as given (the builder's CPU default is 4: ORT rounds each row of the input to int8
/// per block and multiplies in integers).
/// </summary>
internal static class Projection
{
    /// <summary>The int4 export's block along rows (the builder's default block_size).</summary>
    public const int Int4Block = 32;

    /// <summary>
    /// Adds the projection of <paramref name="x"/> by <paramref name="weight"/> (row-major [rows, columns]), named
    /// <paramref name="nodeName"/>/MatMul, or with <paramref name="int4AccuracyLevel"/> given an int4 MatMulNBits named
    /// /MatMul_Q4 as the quantizer renames it; returns its output.
    /// </summary>
    public static string Add(ModelBuilder b, string x, string weightName, float[] weight, int rows, int columns, TensorElementType type,
        int? int4AccuracyLevel, string nodeName, string? outputName = null)
    {
        string[]? outputs = outputName is null ? null : [outputName];
        if (int4AccuracyLevel is not int accuracyLevel) return b.Node("MatMul", [x, b.Initializer(weightName, weight, type, rows, columns)], name: nodeName + "/MatMul", outputNames: outputs)[0];
        int blocks = (rows + Int4Block - 1) / Int4Block;
        var (codes, scales) = QuantizeInt4(weight, rows, columns);
        string codesName = b.Initializer($"{weightName}_Q4G{Int4Block}", TensorData.Create(codes, columns, blocks, Int4Block / 2));
        string scalesName = b.Initializer(weightName + "_scales", scales, type, columns, blocks);
        return b.Node("MatMulNBits", [x, codesName, scalesName], domain: HandoverRewriter.MicrosoftDomain, name: nodeName + "/MatMul_Q4",
            outputNames: outputs, attributes: [("K", (long)rows), ("N", (long)columns), ("bits", 4L), ("block_size", (long)Int4Block), ("accuracy_level", (long)accuracyLevel)])[0];
    }

    /// <summary>
    /// Round-to-nearest symmetric int4: per column and block of rows, scale = max |w| / 7 and code = clamp(round(w / scale), −8, 7) + 8,
    /// two codes a byte, the lower row in the low nibble (rows past the end are zeros); codes [columns, blocks, 16], scales [columns, blocks].
    /// </summary>
    private static (byte[] Codes, float[] Scales) QuantizeInt4(float[] weight, int rows, int columns)
    {
        int blocks = (rows + Int4Block - 1) / Int4Block;
        var codes = new byte[(long)columns * blocks * Int4Block / 2];
        var scales = new float[(long)columns * blocks];
        for (int n = 0; n < columns; n++)
            for (int block = 0; block < blocks; block++)
            {
                int first = block * Int4Block, count = Math.Min(Int4Block, rows - first);
                float max = 0;
                for (int i = 0; i < count; i++) max = Math.Max(max, Math.Abs(weight[(long)(first + i) * columns + n]));
                float scale = max / 7;
                scales[(long)n * blocks + block] = scale;
                long blob = ((long)n * blocks + block) * (Int4Block / 2);
                for (int i = 0; i < Int4Block; i++)
                {
                    float w = i < count ? weight[(long)(first + i) * columns + n] : 0;
                    int code = scale == 0 ? 8 : Math.Clamp((int)MathF.Round(w / scale), -8, 7) + 8;
                    codes[blob + i / 2] |= (byte)(i % 2 == 0 ? code : code << 4);
                }
            }
        return (codes, scales);
    }
}

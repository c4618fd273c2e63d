using Google.Protobuf;
using MnistNative.Core;
using MnistNative.Data;
using MnistNative.Formats;
using Onnx;

namespace MnistNative.Cli.Onnx;

/// <summary>
/// Writes a model (.npz, or an ONNX MLP read through ModelInput) as an ONNX graph: input "pixels" float32
/// (N, 784) already scaled to [0, 1] (raw bytes * (1/255), as MnistClassifier scales them), then for each layer
/// Gemm(x, w_l, b_l, transB = 1) followed by Relu (hidden layers only), and Softmax(axis = 1) producing
/// "probabilities" float32 (N, 10). N is a symbolic dimension "batch".
/// Weights are stored as float32 initializers in the seed's orientation (w_l is (out, in), hence transB).
/// Opset: default domain 13 (the first opset whose Softmax normalises only along the given axis);
/// IR version 8. The protobuf messages are OnnxSharp's generated Google.Protobuf types.
/// </summary>
public static class OnnxExporter
{
    public const int Opset = 13;
    public const long IrVersion = 8;
    public const string InputName = "pixels";
    public const string OutputName = "probabilities";

    public static void Export(string modelNpzPath, string onnxPath)
    {
        ArgumentNullException.ThrowIfNull(modelNpzPath);
        ArgumentNullException.ThrowIfNull(onnxPath);
        MlpParameters p = ModelInput.Load(modelNpzPath);
        ModelProto model = Build(p, Path.GetFileName(modelNpzPath));
        AtomicFile.Write(onnxPath, stream => model.WriteTo(stream));
    }

    internal static ModelProto Build(MlpParameters p, string name)
    {
        var graph = new GraphProto { Name = $"mnistnative_{string.Join("_", p.Sizes)}" };
        graph.Input.Add(TensorValue(InputName, MlpParameters.InputSize));
        graph.Output.Add(TensorValue(OutputName, MlpParameters.Classes));
        string x = InputName;
        for (int l = 0; l < p.LayerCount; l++)
        {
            string w = $"w{l + 1}", b = $"b{l + 1}", z = $"z{l + 1}";
            graph.Initializer.Add(FloatTensor(w, [p.Sizes[l + 1], p.Sizes[l]], p.W[l]));
            graph.Initializer.Add(FloatTensor(b, [p.Sizes[l + 1]], p.B[l]));
            var gemm = new NodeProto { Name = $"gemm{l + 1}", OpType = "Gemm", Output = { z }, Input = { x, w, b } };
            gemm.Attribute.Add(new AttributeProto
            {
                Name = "transB", Type = AttributeProto.Types.AttributeType.Int, I = 1,
            });
            graph.Node.Add(gemm);
            x = z;
            if (l < p.LayerCount - 1)
            {
                string a = $"a{l + 1}";
                graph.Node.Add(new NodeProto { Name = $"relu{l + 1}", OpType = "Relu", Input = { x }, Output = { a } });
                x = a;
            }
        }
        var softmax = new NodeProto { Name = "softmax", OpType = "Softmax", Input = { x }, Output = { OutputName } };
        softmax.Attribute.Add(new AttributeProto
        {
            Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 1,
        });
        graph.Node.Add(softmax);

        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "mnistnative",
            ProducerVersion = typeof(OnnxExporter).Assembly.GetName().Version?.ToString() ?? "0",
            DocString = $"MNIST MLP {string.Join("-", p.Sizes)} exported from {name}; input: pixels scaled by 1/255",
            Graph = graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = Opset });
        return model;
    }

    private static ValueInfoProto TensorValue(string name, int width)
    {
        var shape = new TensorShapeProto();
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimParam = "batch" });
        shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = width });
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto
            {
                TensorType = new TypeProto.Types.Tensor
                {
                    ElemType = (int)TensorProto.Types.DataType.Float, Shape = shape,
                },
            },
        };
    }

    private static TensorProto FloatTensor(string name, long[] dims, double[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
        t.Dims.Add(dims);
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++)
            System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(4 * i), (float)values[i]);
        t.RawData = ByteString.CopyFrom(bytes);
        return t;
    }
}

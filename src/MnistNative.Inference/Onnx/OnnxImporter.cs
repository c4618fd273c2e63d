using System.Buffers.Binary;
using Google.Protobuf;
using MnistNative.Formats;
using Onnx;

namespace MnistNative.Inference.Onnx;

/// <summary>
/// Lowers an ONNX graph to the core's layer list: a chain of dense layers (784 -> H1 -> ... -> 10) with ReLU
/// between them. The graph is read with OnnxSharp's generated Google.Protobuf messages and walked node by node
/// from its one input; every node must take the running value (and constants) and is either
/// <list type="bullet">
/// <item>a linear layer: Gemm (transA 0, any transB, alpha, beta), or MatMul by a constant (in, out) matrix;</item>
/// <item>an affine map by constants: Add, Sub, Mul, Div (scalar or one value per feature) or an inference-mode
/// BatchNormalization. Before a layer (e.g. the input normalisation (x - 0.1307) / 0.3081) it is folded into
/// that layer's weights and bias; after a layer, into the layer's rows;</item>
/// <item>Relu (closes a hidden layer), Flatten / Reshape to (N, 784), Identity, Dropout, Cast to float;</item>
/// <item>a final Softmax or LogSoftmax over the 10 classes (monotone: the argmax does not change; the core
/// applies its own softmax for probabilities).</item>
/// </list>
/// Anything else is refused with one line naming the node, its op type and why. Folding is done in float64
/// and rounded to float32 once, in the classifier.
/// </summary>
public static class OnnxImporter
{
    public const int MinOpset = 7;
    public const int MaxOpset = 23;

    private const int Pixels = MnistClassifier.PixelCount;

    /// <summary>
    /// Whether the bytes look like a .npz: a zip archive starts with a local file header or an empty end record.
    /// </summary>
    public static bool IsZip(ReadOnlySpan<byte> head) =>
        head.Length >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && (head[2], head[3]) is (3, 4) or (5, 6);

    /// <summary>Parses the bytes of an ONNX model and lowers it to an MLP.</summary>
    /// <param name="bytes">The whole .onnx file.</param>
    /// <param name="source">The file name (or "&lt;memory&gt;") that messages start with.</param>
    /// <param name="notOnnxProblem">The problem to report when the bytes are not a protobuf ModelProto at all.</param>
    /// <exception cref="DataFormatException">
    /// The bytes are not an ONNX model, or the graph is not a supported MLP.
    /// </exception>
    public static MlpWeights Import(ReadOnlySpan<byte> bytes, string source,
        string notOnnxProblem = "is not a valid ONNX model")
    {
        ModelProto model;
        try
        {
            model = ModelProto.Parser.ParseFrom(bytes);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new DataFormatException(source, $"{notOnnxProblem} (protobuf: {FirstLine(e.Message)})");
        }
        if (model.Graph == null || model.Graph.Node.Count == 0)
            throw new DataFormatException(source, $"{notOnnxProblem} (no graph with nodes in it)");
        return new GraphLowering(source, model).Run();
    }

    private static string FirstLine(string s)
    {
        int n = s.IndexOfAny(['\r', '\n']);
        return (n < 0 ? s : s[..n]).TrimEnd('.');
    }

    // A constant tensor: its dims and its values as doubles (float, double and integer types).
    private sealed record Constant(long[] Dims, double[] Values)
    {
        public long Count => Values.Length;
    }

    // What the running value is: the input or a ReLU's output (features, with a pending affine map a * x + c
    // still to fold into the next layer), a linear layer's output before its activation, or the final softmax.
    private enum Stage { Features, Linear, Softmax }

    private sealed class GraphLowering(string source, ModelProto model)
    {
        private readonly GraphProto _graph = model.Graph;
        private readonly Dictionary<string, Constant> _constants = new(StringComparer.Ordinal);
        private readonly HashSet<string> _passedValues = new(StringComparer.Ordinal);
        private readonly List<(double[] W, double[] B, int In, int Out)> _layers = [];
        private string _current = "";
        private int _width = Pixels;
        private int _rank;
        private Stage _stage = Stage.Features;
        private double[] _scale = Filled(Pixels, 1.0), _shift = new double[Pixels];
        private bool _affinePending;
        private bool _afterRelu;
        private int _opset;

        public MlpWeights Run()
        {
            _opset = DefaultOpset();
            foreach (TensorProto t in _graph.Initializer) _constants[t.Name] = ReadTensor(t, $"initializer '{t.Name}'");
            _current = TheInput();
            for (int i = 0; i < _graph.Node.Count; i++) Lower(_graph.Node[i], i);
            return Finish();
        }

        private int DefaultOpset()
        {
            OperatorSetIdProto? op = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx");
            if (op == null) throw Refuse("imports no default-domain (ai.onnx) opset");
            if (op.Version < MinOpset || op.Version > MaxOpset)
                throw Refuse($"uses opset {op.Version}; opsets {MinOpset} to {MaxOpset} are supported");
            return (int)op.Version;
        }

        // The one graph input that is not an initializer (before IR 4, initializers were listed as inputs too).
        private string TheInput()
        {
            var inputs = _graph.Input.Where(v => !_constants.ContainsKey(v.Name)).ToList();
            if (inputs.Count == 0) throw Refuse("has no graph input");
            if (inputs.Count > 1)
                throw Refuse($"has {inputs.Count} inputs ({string.Join(", ", inputs.Select(v => $"'{v.Name}'"))}); "
                    + "the core takes one input of 784 pixels");
            ValueInfoProto input = inputs[0];
            TypeProto.Types.Tensor? tensor = input.Type?.TensorType;
            if (tensor == null) throw Refuse($"input '{input.Name}' is not a tensor");
            if (tensor.ElemType != (int)TensorProto.Types.DataType.Float)
                throw Refuse($"input '{input.Name}' has element type {TypeName(tensor.ElemType)}; float32 expected");
            if (tensor.Shape != null)
            {
                var dims = tensor.Shape.Dim;
                _rank = dims.Count;
                long perImage = 1;
                bool known = true;
                for (int d = 1; d < dims.Count; d++)
                {
                    if (dims[d].ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue)
                        perImage *= dims[d].DimValue;
                    else known = false;
                }
                if (dims.Count < 2 || (known && perImage != Pixels))
                    throw Refuse($"input '{input.Name}' has shape {ShapeText(tensor.Shape)}; (N, 784), (N, 28, 28) or "
                        + "(N, 1, 28, 28) expected");
            }
            else _rank = 2;
            return input.Name;
        }

        private void Lower(NodeProto node, int index)
        {
            if (node.Domain is not ("" or "ai.onnx"))
                throw RefuseNode(node, index, $"is from domain '{node.Domain}'; only standard ONNX ops are supported");
            if (node.OpType == "Constant")
            {
                if (node.Output.Count != 1) throw RefuseNode(node, index, "has no single output");
                _constants[node.Output[0]] = ConstantNodeValue(node, index);
                return;
            }
            bool readsCurrent = node.Input.Contains(_current);
            foreach (string input in node.Input)
            {
                if (input.Length == 0 || input == _current || _constants.ContainsKey(input)) continue;
                if (_passedValues.Contains(input))
                    throw RefuseNode(node, index, $"reads '{input}', an earlier value of the chain; only a single "
                        + "chain of layers (no branches or skip connections) is supported");
                throw RefuseNode(node, index, $"reads '{input}', which is neither the running value nor a constant "
                    + "(a second input or a branch)");
            }
            if (!readsCurrent)
            {
                // a node over constants only: an alias of a weight, as PyTorch writes for shared parameters
                if (node.OpType == "Identity" && node.Input.Count == 1 && node.Output.Count == 1)
                {
                    _constants[node.Output[0]] = _constants[node.Input[0]];
                    return;
                }
                throw RefuseNode(node, index, "computes on constants only; fold it into the initializers before "
                    + "export");
            }
            if (node.Output.Count == 0 || node.Output[0].Length == 0) throw RefuseNode(node, index, "has no output");
            if (_stage == Stage.Softmax && node.OpType != "Identity")
                throw RefuseNode(node, index, "follows the final Softmax; nothing but Identity may come after it");
            switch (node.OpType)
            {
                case "Identity":
                    break;
                case "Dropout":
                    bool training = node.Input.Count > 2 && node.Input[2].Length > 0
                        && ConstantOf(node, index, 2).Values.Any(v => v != 0);
                    if (training)
                        throw RefuseNode(node, index, "is in training mode");
                    break;
                case "Cast":
                    if (IntAttribute(node, "to", 0) != (int)TensorProto.Types.DataType.Float)
                        throw RefuseNode(node, index, $"casts to {TypeName((int)IntAttribute(node, "to", 0))}; "
                            + $"only float32 is supported");
                    break;
                case "Flatten":
                    long axis = IntAttribute(node, "axis", 1);
                    if ((axis < 0 ? axis + _rank : axis) != 1)
                        throw RefuseNode(node, index, $"flattens from axis {axis}; axis 1 keeps one row per image");
                    _rank = 2;
                    break;
                case "Reshape":
                    LowerReshape(node, index);
                    break;
                case "Gemm":
                    LowerGemm(node, index);
                    break;
                case "MatMul":
                    LowerMatMul(node, index);
                    break;
                case "Add" or "Sub" or "Mul" or "Div":
                    LowerArithmetic(node, index);
                    break;
                case "BatchNormalization":
                    LowerBatchNorm(node, index);
                    break;
                case "Relu":
                    LowerRelu(node, index);
                    break;
                case "Softmax" or "LogSoftmax":
                    LowerSoftmax(node, index);
                    break;
                case "Conv" or "ConvTranspose" or "MaxPool" or "AveragePool" or "GlobalAveragePool" or "GlobalMaxPool":
                    throw RefuseNode(node, index, "is a convolution or pooling layer; the core runs MLPs (dense "
                        + "layers over 784 pixels)");
                case "Sigmoid" or "Tanh" or "LeakyRelu" or "Elu" or "Selu" or "Gelu" or "HardSigmoid" or "PRelu"
                    or "Softplus":
                    throw RefuseNode(node, index, "is an activation other than ReLU; the core's hidden layers use "
                        + "ReLU only");
                default:
                    throw RefuseNode(node, index, "is not supported; the core runs MLPs made of Gemm or MatMul + "
                        + "Add, Relu, Flatten/Reshape, constant Add/Sub/Mul/Div and a final Softmax");
            }
            _passedValues.Add(_current);
            _current = node.Output[0];
        }

        private void LowerReshape(NodeProto node, int index)
        {
            if (node.Input.Count < 2 || node.Input[1] != "" && !_constants.ContainsKey(node.Input[1]))
                throw RefuseNode(node, index, "takes its shape from a computed value; export with a constant "
                    + "shape (e.g. nn.Flatten)");
            double[] shape = node.Input.Count >= 2 && node.Input[1].Length > 0
                ? ConstantOf(node, index, 1).Values
                : [.. IntsAttribute(node, "shape").Select(v => (double)v)];
            bool ok = shape.Length == 2 && (shape[1] == _width || shape[1] == -1 && shape[0] != -1);
            if (!ok)
                throw RefuseNode(node, index, $"reshapes to ({string.Join(", ", shape)}); only (N, {_width}) "
                    + $"keeps one row per image");
            _rank = 2;
        }

        private void LowerGemm(NodeProto node, int index)
        {
            if (node.Input[0] != _current) throw RefuseNode(node, index, "takes the running value as B; it must be A");
            if (IntAttribute(node, "transA", 0) != 0) throw RefuseNode(node, index, "has transA = 1");
            if (node.Input.Count < 2 || !_constants.ContainsKey(node.Input[1]))
                throw RefuseNode(node, index, "has a B that is not a constant");
            Constant b = _constants[node.Input[1]];
            if (b.Dims.Length != 2)
                throw RefuseNode(node, index, $"has B of shape ({string.Join(", ", b.Dims)}); a matrix expected");
            bool transB = IntAttribute(node, "transB", 0) != 0;
            double alpha = FloatAttribute(node, "alpha", 1.0), beta = FloatAttribute(node, "beta", 1.0);
            int inputs = (int)(transB ? b.Dims[1] : b.Dims[0]), outputs = (int)(transB ? b.Dims[0] : b.Dims[1]);
            var w = new double[(long)outputs * inputs];
            for (int j = 0; j < outputs; j++)
                for (int k = 0; k < inputs; k++)
                    w[(long)j * inputs + k] =
                        alpha * (transB ? b.Values[(long)j * inputs + k] : b.Values[(long)k * outputs + j]);
            var bias = new double[outputs];
            if (node.Input.Count > 2 && node.Input[2].Length > 0)
            {
                Constant c = ConstantOf(node, index, 2);
                double[] perOutput = PerFeature(node, index, c, outputs, "C");
                for (int j = 0; j < outputs; j++) bias[j] = beta * perOutput[j];
            }
            AddLayer(node, index, w, bias, inputs, outputs);
        }

        private void LowerMatMul(NodeProto node, int index)
        {
            if (node.Input[0] != _current || !_constants.ContainsKey(node.Input[1]))
                throw RefuseNode(node, index, "is not (running value) x (constant matrix)");
            if (_rank != 2)
                throw RefuseNode(node, index, $"multiplies a rank-{_rank} value; flatten the input to (N, 784) first");
            Constant b = _constants[node.Input[1]];
            if (b.Dims.Length != 2)
                throw RefuseNode(node, index, $"has B of shape ({string.Join(", ", b.Dims)}); a matrix expected");
            int inputs = (int)b.Dims[0], outputs = (int)b.Dims[1];
            var w = new double[(long)outputs * inputs];
            for (int j = 0; j < outputs; j++)
                for (int k = 0; k < inputs; k++)
                    w[(long)j * inputs + k] = b.Values[(long)k * outputs + j];
            AddLayer(node, index, w, new double[outputs], inputs, outputs);
        }

        // Folds the pending affine map of the features into the new layer: W' = W diag(a), b' = b + W c.
        private void AddLayer(NodeProto node, int index, double[] w, double[] bias, int inputs, int outputs)
        {
            if (_stage == Stage.Linear)
                throw RefuseNode(node, index, "follows a linear layer without an activation between them");
            if (_rank != 2 && _layers.Count == 0)
                throw RefuseNode(node, index, $"multiplies a rank-{_rank} value; flatten the input to (N, 784) first");
            if (inputs != _width)
                throw RefuseNode(node, index, $"takes {inputs} inputs but the value before it has {_width} features"
                    + (_layers.Count == 0 ? " (an MLP over 784 pixels expected)" : ""));
            if (outputs < 1 || outputs > (1 << 16))
                throw RefuseNode(node, index, $"has {outputs} outputs; 1..65536 supported");
            if (_affinePending)
            {
                for (int j = 0; j < outputs; j++)
                {
                    double shift = 0;
                    for (int k = 0; k < inputs; k++)
                    {
                        double x = w[(long)j * inputs + k];
                        shift += x * _shift[k];
                        w[(long)j * inputs + k] = x * _scale[k];
                    }
                    bias[j] += shift;
                }
            }
            foreach (double v in w)
                if (!double.IsFinite(v)) throw RefuseNode(node, index, "has NaN or infinite weights");
            _layers.Add((w, bias, inputs, outputs));
            _stage = Stage.Linear;
            _width = outputs;
            _affinePending = false;
            _afterRelu = false;
        }

        private void LowerArithmetic(NodeProto node, int index)
        {
            if (node.Input.Count != 2) throw RefuseNode(node, index, "does not have two inputs");
            bool currentFirst = node.Input[0] == _current;
            if (node.Input[0] == node.Input[1]) throw RefuseNode(node, index, "combines the running value with itself");
            Constant k = ConstantOf(node, index, currentFirst ? 1 : 0);
            double[] v = PerFeature(node, index, k, _width, "its constant");
            var scale = Filled(_width, 1.0);
            var shift = new double[_width];
            for (int i = 0; i < _width; i++)
            {
                switch (node.OpType)
                {
                    case "Add": shift[i] = v[i]; break;
                    case "Sub" when currentFirst: shift[i] = -v[i]; break;
                    case "Sub": scale[i] = -1; shift[i] = v[i]; break;
                    case "Mul": scale[i] = v[i]; break;
                    case "Div" when currentFirst:
                        if (v[i] == 0) throw RefuseNode(node, index, "divides by zero");
                        scale[i] = 1 / v[i];
                        break;
                    default:
                        throw RefuseNode(node, index, "divides a constant by the running value (not an "
                            + "affine map)");
                }
            }
            ApplyAffine(node, index, scale, shift);
        }

        // y = (x - mean) / sqrt(var + eps) * gamma + beta, per feature (inference mode: all four constants)
        private void LowerBatchNorm(NodeProto node, int index)
        {
            if (node.Input.Count < 5 || node.Output.Count > 1 && node.Output.Skip(1).Any(o => o.Length > 0))
                throw RefuseNode(node, index, "is in training mode (it has running-statistics outputs)");
            double[] gamma = PerFeature(node, index, ConstantOf(node, index, 1), _width, "scale");
            double[] beta = PerFeature(node, index, ConstantOf(node, index, 2), _width, "B");
            double[] mean = PerFeature(node, index, ConstantOf(node, index, 3), _width, "mean");
            double[] variance = PerFeature(node, index, ConstantOf(node, index, 4), _width, "var");
            double epsilon = FloatAttribute(node, "epsilon", 1e-5);
            var scale = new double[_width];
            var shift = new double[_width];
            for (int i = 0; i < _width; i++)
            {
                scale[i] = gamma[i] / Math.Sqrt(variance[i] + epsilon);
                shift[i] = beta[i] - mean[i] * scale[i];
            }
            ApplyAffine(node, index, scale, shift);
        }

        // y = scale * x + shift per feature: into the rows of the layer just made, or pending for the next layer.
        private void ApplyAffine(NodeProto node, int index, double[] scale, double[] shift)
        {
            if (_stage == Stage.Linear)
            {
                var (w, b, inputs, outputs) = _layers[^1];
                for (int j = 0; j < outputs; j++)
                {
                    for (int k = 0; k < inputs; k++) w[(long)j * inputs + k] *= scale[j];
                    b[j] = b[j] * scale[j] + shift[j];
                }
                return;
            }
            for (int i = 0; i < _width; i++)
            {
                _scale[i] *= scale[i];
                _shift[i] = _shift[i] * scale[i] + shift[i];
                if (!double.IsFinite(_scale[i]) || !double.IsFinite(_shift[i]))
                    throw RefuseNode(node, index, "gives non-finite values");
            }
            _affinePending = true;
            _afterRelu = false;
        }

        private void LowerRelu(NodeProto node, int index)
        {
            if (_stage == Stage.Linear)
            {
                _stage = Stage.Features;
                _scale = Filled(_width, 1.0);
                _shift = new double[_width];
                _affinePending = false;
                _afterRelu = true;
                return;
            }
            // ReLU of raw pixels (0..1) or of a ReLU's output changes nothing; of a shifted value it would
            if (_affinePending || (!_afterRelu && _layers.Count > 0))
                throw RefuseNode(node, index, "follows an affine map rather than a linear layer");
            _afterRelu = _layers.Count > 0;
        }

        private void LowerSoftmax(NodeProto node, int index)
        {
            if (_stage != Stage.Linear || _width != MnistClassifier.ClassCount)
                throw RefuseNode(node, index, $"is not applied to the {MnistClassifier.ClassCount} outputs of the "
                    + $"last linear layer");
            long axis = IntAttribute(node, "axis", _opset >= 13 ? -1 : 1);
            if (axis is not (1 or -1))
                throw RefuseNode(node, index, $"runs over axis {axis}; the class axis (1 or -1) expected");
            _stage = Stage.Softmax;
        }

        private MlpWeights Finish()
        {
            var outputs = _graph.Output.Select(o => o.Name).ToList();
            if (outputs.Count != 1)
                throw Refuse($"has {outputs.Count} outputs ({string.Join(", ", outputs.Select(o => $"'{o}'"))}); "
                    + $"one output of 10 scores expected");
            if (outputs[0] != _current)
                throw Refuse($"its output '{outputs[0]}' is not the end of the chain of layers (which ends at "
                    + $"'{_current}')");
            if (_layers.Count == 0) throw Refuse("has no linear layer (Gemm or MatMul)");
            if (_stage == Stage.Features)
                throw Refuse($"ends with an activation or an affine map after its last linear layer; the output "
                    + $"must be "
                    + "that layer's scores (optionally through Softmax or LogSoftmax)");
            if (_width != MnistClassifier.ClassCount)
                throw Refuse($"its last layer has {_width} outputs; {MnistClassifier.ClassCount} classes expected");
            var sizes = new int[_layers.Count + 1];
            sizes[0] = Pixels;
            for (int l = 0; l < _layers.Count; l++) sizes[l + 1] = _layers[l].Out;
            return new MlpWeights(sizes, [.. _layers.Select(x => x.W)], [.. _layers.Select(x => x.B)]);
        }

        // A constant with one value (broadcast) or one per feature, as doubles of length width.
        private double[] PerFeature(NodeProto node, int index, Constant c, int width, string what)
        {
            if (c.Count == 1) return Filled(width, c.Values[0]);
            // one per feature: any shape over the pixels (e.g. (1, 1, 28, 28)), else (.., 1, width)
            if (c.Count == width && (_layers.Count == 0 || c.Dims.Take(c.Dims.Length - 1).All(d => d == 1)))
                return c.Values;
            throw RefuseNode(node, index, $"has {what} of shape ({string.Join(", ", c.Dims)}); one value or one "
                + $"per feature "
                + $"({width}) expected");
        }

        private Constant ConstantOf(NodeProto node, int index, int input)
        {
            if (input >= node.Input.Count || !_constants.TryGetValue(node.Input[input], out Constant? c))
                throw RefuseNode(node, index, $"input {input} is not a constant");
            return c;
        }

        private Constant ConstantNodeValue(NodeProto node, int index)
        {
            foreach (AttributeProto a in node.Attribute)
            {
                switch (a.Name)
                {
                    case "value": return ReadTensor(a.T, $"node '{NodeName(node, index)}' (Constant)");
                    case "value_float": return new Constant([], [a.F]);
                    case "value_floats": return new Constant([a.Floats.Count], [.. a.Floats.Select(f => (double)f)]);
                    case "value_int": return new Constant([], [a.I]);
                    case "value_ints": return new Constant([a.Ints.Count], [.. a.Ints.Select(i => (double)i)]);
                }
            }
            throw RefuseNode(node, index, "holds no tensor, float or int value");
        }

        private Constant ReadTensor(TensorProto t, string what)
        {
            if (t.DataLocation == TensorProto.Types.DataLocation.External || t.ExternalData.Count > 0)
                throw Refuse($"{what} is stored as external data (in a separate file); the core reads "
                    + $"self-contained models: "
                    + "save with the weights inside the .onnx (e.g. onnx.save(model, path, "
                        + "save_as_external_data=False))");
            long count = 1;
            foreach (long d in t.Dims)
            {
                if (d < 0) throw Refuse($"{what} has a negative dimension");
                count *= d;
                if (count > 1L << 28) throw Refuse($"{what} holds more than 2^28 values");
            }
            var values = new double[count];
            ReadOnlySpan<byte> raw = t.RawData.Span;
            var type = (TensorProto.Types.DataType)t.DataType;
            int size = type switch
            {
                TensorProto.Types.DataType.Float => 4,
                TensorProto.Types.DataType.Double => 8,
                TensorProto.Types.DataType.Int64 => 8,
                TensorProto.Types.DataType.Int32 => 4,
                _ => throw Refuse($"{what} has element type {TypeName(t.DataType)}; float32, float64, int32 or "
                    + $"int64 supported"),
            };
            if (raw.Length > 0)
            {
                if (raw.Length != count * size)
                    throw Refuse($"{what} holds {raw.Length} bytes of data for {count} values of {size} bytes");
                for (int i = 0; i < values.Length; i++)
                {
                    ReadOnlySpan<byte> at = raw[(i * size)..];
                    values[i] = type switch
                    {
                        TensorProto.Types.DataType.Float => BinaryPrimitives.ReadSingleLittleEndian(at),
                        TensorProto.Types.DataType.Double => BinaryPrimitives.ReadDoubleLittleEndian(at),
                        TensorProto.Types.DataType.Int64 => BinaryPrimitives.ReadInt64LittleEndian(at),
                        _ => BinaryPrimitives.ReadInt32LittleEndian(at),
                    };
                }
                return new Constant([.. t.Dims], values);
            }
            int stored = type switch
            {
                TensorProto.Types.DataType.Float => t.FloatData.Count,
                TensorProto.Types.DataType.Double => t.DoubleData.Count,
                TensorProto.Types.DataType.Int64 => t.Int64Data.Count,
                _ => t.Int32Data.Count,
            };
            if (stored != count)
                throw Refuse($"{what} holds {stored} values; its shape ({string.Join(", ", t.Dims)}) needs {count}");
            for (int i = 0; i < values.Length; i++)
            {
                values[i] = type switch
                {
                    TensorProto.Types.DataType.Float => t.FloatData[i],
                    TensorProto.Types.DataType.Double => t.DoubleData[i],
                    TensorProto.Types.DataType.Int64 => t.Int64Data[i],
                    _ => t.Int32Data[i],
                };
            }
            return new Constant([.. t.Dims], values);
        }

        private static long IntAttribute(NodeProto node, string name, long fallback) =>
            node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : fallback;

        private static double FloatAttribute(NodeProto node, string name, double fallback) =>
            node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : fallback;

        private static IEnumerable<long> IntsAttribute(NodeProto node, string name) =>
            node.Attribute.FirstOrDefault(a => a.Name == name)?.Ints ?? Enumerable.Empty<long>();

        private DataFormatException Refuse(string problem) => new(source, problem);

        private DataFormatException RefuseNode(NodeProto node, int index, string why) =>
            new(source, $"node '{NodeName(node, index)}' ({node.OpType}) {why}");

        private static string NodeName(NodeProto node, int index) =>
            node.Name.Length > 0 ? node.Name : $"#{index}" + (node.Output.Count > 0 ? $" -> {node.Output[0]}" : "");
    }

    private static double[] Filled(int n, double v)
    {
        var a = new double[n];
        Array.Fill(a, v);
        return a;
    }

    private static string ShapeText(TensorShapeProto shape) => "(" + string.Join(", ", shape.Dim.Select(d =>
        d.ValueCase == TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue
            ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture)
            : d.DimParam.Length > 0 ? d.DimParam : "?")) + ")";

    private static string TypeName(int elemType) => elemType switch
    {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => $"type #{elemType}",
    };
}

/// <summary>
/// A dense MLP as the core runs it: Sizes [784, H1, ..., 10]; W[l] is (Sizes[l+1], Sizes[l]) row-major (the
/// seed's orientation), B[l] has Sizes[l+1] values. Hidden layers use ReLU; the output layer gives the scores.
/// </summary>
public sealed record MlpWeights(int[] Sizes, double[][] W, double[][] B);

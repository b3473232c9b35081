"""TFLite flatbuffers written here for the tests, with the `tflite` package's builder functions:
the file layout TensorFlow's converter writes, and a tiny quantized model with every op and
option MobileNetV2 uses."""

import flatbuffers
import numpy as np
import tflite

from dlmie.benchmarks import numpy_reference as reference

rng = np.random.default_rng(0)
U8, I32 = tflite.TensorType.UINT8, tflite.TensorType.INT32
OP, ACT, PAD = tflite.BuiltinOperator, tflite.ActivationFunctionType, tflite.Padding


def _vector(b, start, offsets):
    start(b, len(offsets))
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def tflite_bytes(tensors, operators):
    """A TFLite model as the converter lays it out: one subgraph, input tensor 0, output the last.

    - tensors: dicts with name, shape, type, and optionally data (array stored in its own buffer),
      scale and zero_point (scalars or per-channel arrays) and axis (the quantized dimension)
    - operators: (builtin code, inputs, outputs, options type, function builder -> options or None)
    """
    b = flatbuffers.Builder(1024)
    buffers = []
    for t in [{}] + tensors:  # buffer 0 is the empty buffer, by convention
        data = t.get("data")
        data = None if data is None else b.CreateNumpyVector(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        buffers.append(tflite.BufferEnd(b))
    tensor_offsets = []
    for i, t in enumerate(tensors):
        name, shape = b.CreateString(t["name"]), b.CreateNumpyVector(np.asarray(t["shape"], np.int32))
        quantization = None
        if "scale" in t:
            scale = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["scale"], np.float32)))
            zero = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["zero_point"], np.int64)))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zero)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.get("axis", 0))
            quantization = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, t["type"])
        tflite.TensorAddBuffer(b, i + 1)
        tflite.TensorAddName(b, name)
        if quantization is not None:
            tflite.TensorAddQuantization(b, quantization)
        tensor_offsets.append(tflite.TensorEnd(b))
    codes = sorted({op[0] for op in operators})
    code_offsets = []
    for code in codes:
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, 1)
        code_offsets.append(tflite.OperatorCodeEnd(b))
    op_offsets = []
    for code, inputs, outputs, options_type, options in operators:
        options = options(b) if options else None
        ins, outs = (b.CreateNumpyVector(np.asarray(v, np.int32)) for v in (inputs, outputs))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, codes.index(code))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, options_type)
            tflite.OperatorAddBuiltinOptions(b, options)
        op_offsets.append(tflite.OperatorEnd(b))
    tensor_vec = _vector(b, tflite.SubGraphStartTensorsVector, tensor_offsets)
    op_vec = _vector(b, tflite.SubGraphStartOperatorsVector, op_offsets)
    ins, outs = b.CreateNumpyVector(np.int32([0])), b.CreateNumpyVector(np.int32([len(tensors) - 1]))
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensor_vec)
    tflite.SubGraphAddOperators(b, op_vec)
    tflite.SubGraphAddInputs(b, ins)
    tflite.SubGraphAddOutputs(b, outs)
    subgraph = tflite.SubGraphEnd(b)
    subgraphs = _vector(b, tflite.ModelStartSubgraphsVector, [subgraph])
    code_vec = _vector(b, tflite.ModelStartOperatorCodesVector, code_offsets)
    buffer_vec = _vector(b, tflite.ModelStartBuffersVector, buffers)
    description = b.CreateString("dlmie test model")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, code_vec)
    tflite.ModelAddSubgraphs(b, subgraphs)
    tflite.ModelAddBuffers(b, buffer_vec)
    tflite.ModelAddDescription(b, description)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def conv_options(stride, padding, activation, depthwise=False):
    prefix = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"

    def build(b):
        getattr(tflite, prefix + "Start")(b)
        getattr(tflite, prefix + "AddPadding")(b, padding)
        getattr(tflite, prefix + "AddStrideW")(b, stride)
        getattr(tflite, prefix + "AddStrideH")(b, stride)
        getattr(tflite, prefix + "AddFusedActivationFunction")(b, activation)
        getattr(tflite, prefix + "AddDilationWFactor")(b, 1)
        getattr(tflite, prefix + "AddDilationHFactor")(b, 1)
        if depthwise:
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        return getattr(tflite, prefix + "End")(b)

    return build


def pool_options(size, stride):
    def build(b):
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, PAD.VALID)
        tflite.Pool2DOptionsAddStrideW(b, stride)
        tflite.Pool2DOptionsAddStrideH(b, stride)
        tflite.Pool2DOptionsAddFilterWidth(b, size)
        tflite.Pool2DOptionsAddFilterHeight(b, size)
        return tflite.Pool2DOptionsEnd(b)

    return build


def add_options(b):
    tflite.AddOptionsStart(b)
    tflite.AddOptionsAddFusedActivationFunction(b, ACT.NONE)
    return tflite.AddOptionsEnd(b)


def softmax_options(b):
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, 1.0)
    return tflite.SoftmaxOptionsEnd(b)


def weights(shape, axis=None):
    """Random uint8 weights, per tensor (axis None) or per channel along axis; returns (tensor
    fields, real values)."""
    q = rng.integers(0, 256, shape).astype(np.uint8)
    if axis is None:
        scale, zero = 0.004, 131
    else:
        scale, zero = rng.uniform(0.002, 0.006, shape[axis]), rng.integers(120, 136, shape[axis])
    fields = {"type": U8, "shape": shape, "data": q, "scale": scale, "zero_point": zero, "axis": axis or 0}
    return fields, reference.dequantize(q, scale, zero, axis)


def bias(n, scale):
    """Random int32 biases with their own scale (per tensor or per channel); (fields, real)."""
    q = rng.integers(-300, 300, n).astype(np.int32)
    fields = {"type": I32, "shape": (n,), "data": q, "scale": scale, "zero_point": np.zeros(np.size(scale), int)}
    return fields, reference.dequantize(q, scale, 0)


def activation(name, shape, scale=6 / 255, zero=0):
    return {"name": name, "type": U8, "shape": shape, "scale": scale, "zero_point": zero}


INPUT_SCALE, INPUT_ZERO = 1 / 128, 128


def tiny_model():
    """(file bytes, real weights) of a 12x12x3 graph with every op and option MobileNetV2 uses:
    a stride-2 "SAME" conv (asymmetric padding), a depthwise conv, a 1x1 projection, a residual
    ADD, a stride-2 "SAME" depthwise conv without bias, a 2x2 average pool, a 1x1 head, the
    reshape to (1, 20) and a softmax; weights per tensor and per channel."""
    (w1, W1), (w4, W4), (w7, W7), (w11, W11), (w14, W14) = (
        weights((8, 3, 3, 3), axis=0), weights((1, 3, 3, 8), axis=3), weights((8, 1, 1, 8)),
        weights((1, 3, 3, 8)), weights((5, 1, 1, 8)))
    (b2, B2), (b5, B5) = bias(8, INPUT_SCALE * w1["scale"]), bias(8, 6 / 255 * w4["scale"])
    (b8, B8), (b15, B15) = bias(8, 6 / 255 * w7["scale"]), bias(5, 6 / 255 * w14["scale"])
    tensors = [
        activation("input", (1, 12, 12, 3), INPUT_SCALE, INPUT_ZERO),
        {"name": "conv/W", **w1}, {"name": "conv/b", **b2}, activation("conv", (1, 6, 6, 8)),
        {"name": "dw/W", **w4}, {"name": "dw/b", **b5}, activation("dw", (1, 6, 6, 8)),
        {"name": "project/W", **w7}, {"name": "project/b", **b8}, activation("project", (1, 6, 6, 8), 0.1, 128),
        activation("add", (1, 6, 6, 8), 0.1, 128),
        {"name": "dw2/W", **w11}, activation("dw2", (1, 3, 3, 8)),
        activation("pool", (1, 2, 2, 8)),
        {"name": "head/W", **w14}, {"name": "head/b", **b15}, activation("head", (1, 2, 2, 5), 0.1, 128),
        {"name": "shape", "type": I32, "shape": (2,), "data": np.int32([1, 20])},
        activation("logits", (1, 20), 0.1, 128),
        activation("probabilities", (1, 20), 1 / 256),
    ]
    CONV, DW = tflite.BuiltinOptions.Conv2DOptions, tflite.BuiltinOptions.DepthwiseConv2DOptions
    operators = [
        (OP.CONV_2D, [0, 1, 2], [3], CONV, conv_options(2, PAD.SAME, ACT.RELU6)),
        (OP.DEPTHWISE_CONV_2D, [3, 4, 5], [6], DW, conv_options(1, PAD.SAME, ACT.RELU6, depthwise=True)),
        (OP.CONV_2D, [6, 7, 8], [9], CONV, conv_options(1, PAD.VALID, ACT.NONE)),
        (OP.ADD, [9, 3], [10], tflite.BuiltinOptions.AddOptions, add_options),
        (OP.DEPTHWISE_CONV_2D, [10, 11, -1], [12], DW, conv_options(2, PAD.SAME, ACT.RELU, depthwise=True)),
        (OP.AVERAGE_POOL_2D, [12], [13], tflite.BuiltinOptions.Pool2DOptions, pool_options(2, 1)),
        (OP.CONV_2D, [13, 14, 15], [16], CONV, conv_options(1, PAD.VALID, ACT.NONE)),
        (OP.RESHAPE, [16, 17], [18], 0, None),
        (OP.SOFTMAX, [18], [19], tflite.BuiltinOptions.SoftmaxOptions, softmax_options),
    ]
    real = dict(W1=W1, B2=B2, W4=W4, B5=B5, W7=W7, B8=B8, W11=W11, W14=W14, B15=B15)
    return tflite_bytes(tensors, operators), real

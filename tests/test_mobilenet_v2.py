"""MobileNetV2 from a TFLite file: the generic reader on a tiny model written here, layer by layer
against NumPy; the real mirrored model on imagenet_val_25; clear errors for damaged files."""

import shutil
from collections import Counter

import flatbuffers
import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import tflite

from dlmie.benchmarks import numpy_reference as reference
from dlmie import layers as L
from dlmie.data import DatasetNotFoundError, dataset_path
from dlmie.models import mobilenet_v2 as M

rng = np.random.default_rng(0)
U8, I32 = tflite.TensorType.UINT8, tflite.TensorType.INT32
OP, ACT, PAD = tflite.BuiltinOperator, tflite.ActivationFunctionType, tflite.Padding


# ---------------------------------------------------------------- writing a TFLite flatbuffer


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


def tiny_reference(images, r):
    """The tiny model in float64 NumPy, TensorFlow layouts: tensor index -> (N, H, W, C) or (N, D)."""
    relu6 = lambda h: np.clip(h, 0, 6)  # noqa: E731
    t = {0: reference.dequantize(images, INPUT_SCALE, INPUT_ZERO)}
    t[3] = relu6(reference.tf_conv2d(t[0], r["W1"], r["B2"], 2, "SAME"))
    t[6] = relu6(reference.tf_conv2d(t[3], r["W4"], r["B5"], 1, "SAME", depthwise=True))
    t[9] = reference.tf_conv2d(t[6], r["W7"], r["B8"], 1, "VALID")
    t[10] = t[9] + t[3]
    t[12] = np.maximum(reference.tf_conv2d(t[10], r["W11"], np.zeros(8), 2, "SAME", depthwise=True), 0)
    t[13] = reference.pool(t[12].transpose(0, 3, 1, 2), 2, 1, 0, "avg").transpose(0, 2, 3, 1)
    t[16] = reference.tf_conv2d(t[13], r["W14"], r["B15"], 1, "VALID")
    t[18] = t[16].reshape(len(images), -1)  # TFLite reshapes in (N, H, W, C) order
    t[19] = reference.softmax(t[18], axis=1)
    return t


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data, real = tiny_model()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(data)
    return path, real


def test_reader_dequantizes_and_converts_layouts(tiny):
    path, r = tiny
    graph = M.read_tflite(path)
    assert [op.kind for op in graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "DEPTHWISE_CONV_2D",
                                             "AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX"]
    conv, dw, project, add, dw2, pool = graph.ops[:6]
    np.testing.assert_allclose(conv.weights["W"], r["W1"].transpose(0, 3, 1, 2), rtol=1e-6)  # OHWI -> (F, C, k, k)
    # 1HWC -> (C, 1, k, k)
    np.testing.assert_allclose(dw.weights["W"], r["W4"][0].transpose(2, 0, 1)[:, None], rtol=1e-6)
    np.testing.assert_allclose(conv.weights["b"], r["B2"], rtol=1e-6)
    np.testing.assert_array_equal(dw2.weights["b"], np.zeros(8))  # no bias tensor
    # TensorFlow's "SAME": 12 -> 6 and 6 -> 3 at stride 2 pad one pixel, after; stride 1 pads both sides.
    assert (conv.pads, dw.pads, project.pads, dw2.pads) == ((0, 1, 0, 1), (1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 0, 1))
    assert (conv.activation, project.activation, dw2.activation) == ("RELU6", "NONE", "RELU")
    assert (add.inputs, pool.window, pool.stride) == ([9, 3], (2, 2), 1)
    assert graph.tensors[graph.input].scale == INPUT_SCALE and graph.tensors[graph.input].zero_point == INPUT_ZERO


def test_graph_matches_numpy_layer_by_layer(tiny):
    path, r = tiny
    graph = M.read_tflite(path)
    images = rng.integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    expected = tiny_reference(images, r)
    x = pt.tensor4("x")
    values = M.run_graph(graph, x, L.shared_params(M.graph_params(graph)))
    fn = pytensor.function([x], [values[i] for i in expected])
    got = fn(M.input_preprocessing(graph.tensors[graph.input])(images))
    for (i, want), out in zip(expected.items(), got):
        out = out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
        assert out.shape == want.shape, graph.tensors[i].name
        err = np.max(np.abs(out - want)) / np.max(np.abs(want))
        assert err < 1e-5, f"{graph.tensors[i].name}: scaled error {err:.1e}"


def test_tiny_graph_is_not_mobilenet(tiny, tmp_path):
    path, _ = tiny
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(map(str, range(20))))
    with pytest.raises(ValueError, match=r"tiny\.tflite is not a MobileNetV2 graph"):
        M.load(path, labels)


def test_unsupported_op_is_named(tmp_path):
    tensors = [activation("input", (1, 4, 4, 2)), activation("pooled", (1, 2, 2, 2))]
    path = tmp_path / "maxpool.tflite"
    path.write_bytes(tflite_bytes(tensors, [(OP.MAX_POOL_2D, [0], [1], tflite.BuiltinOptions.Pool2DOptions,
                                             pool_options(2, 2))]))
    with pytest.raises(ValueError, match=r"maxpool\.tflite: operator 0 is MAX_POOL_2D, which dlmie cannot run"):
        M.read_tflite(path)


def test_truncated_tiny_files_are_errors(tiny, tmp_path):
    data = tiny[0].read_bytes()
    path = tmp_path / "cut.tflite"
    # The last bytes hold buffer 0, the empty buffer that no tensor reads (the builder writes
    # back to front); a file cut there is still whole.
    for size in list(range(0, len(data) - 16, 97)) + [len(data) - 16]:
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match="cut.tflite"):
            M.read_tflite(path)


def test_text_and_h5_files_are_not_tflite(tmp_path):
    h5py = pytest.importorskip("h5py")
    text = tmp_path / "model.tflite"
    text.write_text("404: Not Found\n")
    h5 = tmp_path / "model.h5"
    with h5py.File(h5, "w") as f:
        f["W1"] = np.zeros((2, 2), np.float32)
    for path in (text, h5):
        with pytest.raises(ValueError, match=rf"{path.name} is not a TensorFlow Lite model .*mobilenet-v2"):
            M.read_tflite(path)
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        M.read_tflite(tmp_path / "missing.tflite")


def test_imagenet_1000_drops_background_and_checks_names():
    names = ["background", "tench", "goldfish"] + [f"c{k}" for k in range(998)]
    scores = np.arange(2 * 1001).reshape(2, 1001)
    assert np.array_equal(M.imagenet_1000(scores, names, {0: "tench", 1: "goldfish"}), scores[:, 1:])
    with pytest.raises(ValueError, match="not at index"):
        M.imagenet_1000(scores, names, {0: "goldfish"})


# ---------------------------------------------------------------- the real model


def _dataset(name):
    try:
        return dataset_path(name)
    except DatasetNotFoundError as err:
        pytest.skip(f"data set {name!r} not fetched ({err})")


@pytest.fixture(scope="module")
def mobilenet():
    _dataset("mobilenet-v2")
    return M.load()  # building and compiling the real network once for the module


@pytest.fixture(scope="module")
def imagenet25():
    data = np.load(_dataset("imagenet-val-25"), allow_pickle=True)
    return data["X"], data["y"], data["label_map"].item()


def test_real_file_graph_and_names(mobilenet):
    graph = M.read_tflite(_dataset("mobilenet-v2") / M.MODEL_FILE)
    assert Counter(op.kind for op in graph.ops) == {"CONV_2D": 36, "DEPTHWISE_CONV_2D": 17, "ADD": 10,
                                                    "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "SOFTMAX": 1}
    assert mobilenet.layer_names == ["conv1", *(f"block{b}" for b in range(17)), "conv_last", "pool", "scores"]
    shapes = {k: v.get_value().shape for k, v in mobilenet.params.items()}
    assert shapes["conv1.W"] == (32, 3, 3, 3) and shapes["block3.expand.W"] == (144, 24, 1, 1)
    assert shapes["block3.depthwise.W"] == (144, 1, 3, 3) and shapes["block3.project.b"] == (32,)
    assert shapes["conv_last.W"] == (1280, 320, 1, 1) and shapes["logits.W"] == (1001, 1280, 1, 1)
    assert "block0.expand.W" not in shapes
    assert len(mobilenet.class_names) == 1001 and mobilenet.class_names[0] == "background"
    # input scale 1/128, zero point 128: x = q / 128 - 1
    x = mobilenet.preprocessing(np.uint8([[[[0, 128, 255]]]])).ravel()
    np.testing.assert_allclose(x, [-1, 0, 127 / 128], atol=1e-6)


def test_real_model_top5_on_imagenet_val_25(mobilenet, imagenet25):
    images, labels, label_map = imagenet25
    scores = M.imagenet_1000(mobilenet.probabilities(images), mobilenet.class_names, label_map)
    best5 = np.argsort(-scores, axis=1)[:, :5]
    top1, top5 = np.mean(best5[:, 0] == labels), np.mean(np.any(best5 == labels[:, None], axis=1))
    print(f"MobileNetV2 on imagenet_val_25: top-1 {top1:.0%}, top-5 {top5:.0%}")
    assert top5 >= 0.8, f"top-1 {top1:.0%}, top-5 {top5:.0%}"


def test_real_model_features(mobilenet, imagenet25):
    images = imagenet25[0][:2]
    grid = mobilenet.features(images, "conv_last")
    pooled = mobilenet.features(images, "pool")
    assert grid.shape == (2, 49, 1280) and pooled.shape == (2, 1280)
    np.testing.assert_allclose(pooled, grid.mean(axis=1), rtol=1e-4, atol=1e-5)


def test_truncated_real_file_is_an_error(tmp_path):
    real = _dataset("mobilenet-v2") / M.MODEL_FILE
    cut = tmp_path / M.MODEL_FILE
    with open(real, "rb") as src, open(cut, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.truncate(real.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"{M.MODEL_FILE} is a truncated or corrupt .*get_datasets.sh mobilenet-v2"):
        M.read_tflite(cut)

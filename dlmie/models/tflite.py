"""A reader and interpreter for TensorFlow Lite flatbuffers, without TensorFlow.

    graph = read_tflite("model.tflite")         # a Graph: ops in order, weights dequantized to float32
    params = L.shared_params(graph_params(graph))
    values = run_graph(graph, x, params)        # x: (N, C, H, W) real-valued input -> tensor index -> value
    probs = values[graph.output]

`read_tflite` parses the file with the `tflite` package (the flatbuffer schema's generated
accessors): one subgraph with one input and one output, whose operators are CONV_2D,
DEPTHWISE_CONV_2D (depth multiplier 1), ADD of two activations, AVERAGE_POOL_2D over "VALID"
windows, RESHAPE and SOFTMAX, with fused NONE, RELU or RELU6 activations. Constants stored as
uint8, int8 or int32 are dequantized, per tensor or per channel, to float32 and laid out as
dlmie's layers want them (convolution weights (F, C, k, k), depthwise (C, 1, k, k)); TensorFlow's
"SAME" padding becomes explicit, possibly asymmetric, pads. Anything else is a TFLiteFormatError
that names the file and what dlmie cannot run.

`run_graph` evaluates such a graph symbolically with dlmie's layers, in (N, C, H, W) layout and
float32: it computes with the dequantized weights, not in TFLite's integer arithmetic, so its
values differ slightly from TFLite's, which also rounds every activation to 8 bits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from dlmie import layers as L

SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX")
ACTIVATIONS = {"NONE": lambda h: h, "RELU": L.relu, "RELU6": L.relu6}

_OP_NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
_ACTIVATION_NAMES = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}
_TENSOR_TYPES = {tflite.TensorType.UINT8: np.uint8, tflite.TensorType.INT8: np.int8,
                 tflite.TensorType.INT32: np.int32, tflite.TensorType.FLOAT32: np.float32}
_OPTIONS = {"CONV_2D": tflite.Conv2DOptions, "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
            "ADD": tflite.AddOptions, "AVERAGE_POOL_2D": tflite.Pool2DOptions, "SOFTMAX": tflite.SoftmaxOptions}


class TFLiteFormatError(ValueError):
    """A file that is not a TFLite model, is damaged, or holds a graph dlmie cannot run."""


@dataclass
class Tensor:
    """An activation tensor: its TFLite name, its TFLite shape ((N, H, W, C) or (N, D)), and
    real = (q - zero_point) * scale for its quantized values (both None for a float tensor)."""

    name: str
    shape: tuple
    scale: float | None = None
    zero_point: int | None = None


@dataclass
class Op:
    """One operator, constants dequantized to float32 and in dlmie layouts.

    - kind: the TFLite name, one of SUPPORTED_OPS
    - inputs: indices of the activation tensors it reads; output: the one it writes
    - weights: {"W", "b"}: CONV_2D W (F, C, k, k), DEPTHWISE_CONV_2D W (C, 1, k, k), b (F,) or
      (C,); empty for the other ops
    - stride: the same along height and width
    - pads: (top, bottom, left, right) zeros, TensorFlow's "SAME" made explicit
    - window: (height, width) of an AVERAGE_POOL_2D window
    - activation: "NONE", "RELU" or "RELU6", applied to the output
    - beta: SOFTMAX's inverse temperature
    """

    kind: str
    inputs: list
    output: int
    weights: dict = field(default_factory=dict)
    stride: int = 1
    pads: tuple = (0, 0, 0, 0)
    window: tuple = (1, 1)
    activation: str = "NONE"
    beta: float = 1.0


@dataclass
class Graph:
    """ops in execution order; tensors: index -> Tensor for the graph input and every op output."""

    ops: list
    tensors: dict
    input: int
    output: int


def same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding along one axis: (before, after), the extra pixel after.

    The output has ceil(size / stride) positions; for stride 2 on an even size the padding is
    asymmetric, e.g. 224 -> 112 with a 3x3 kernel pads (0, 1).
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def dequantize(q: np.ndarray, quantization) -> np.ndarray:
    """(q - zero_point) * scale as float32, per tensor or per channel along QuantizedDimension.

    Inputs:
    - q: integer array of any shape
    - quantization: a tflite.QuantizationParameters with one scale, or one per index of q's
      quantized dimension (zero points: one, or one per scale)
    Returns:
    - float32 array of q's shape
    """
    scale, zero = quantization.ScaleAsNumpy(), quantization.ZeroPointAsNumpy()
    zero = np.zeros(1, np.int64) if isinstance(zero, int) else zero  # the accessor's 0 for "absent"
    shape = [1] * q.ndim
    if max(scale.size, zero.size) > 1:
        axis = quantization.QuantizedDimension()
        if axis >= q.ndim or {scale.size, zero.size} - {1, q.shape[axis]}:
            raise TFLiteFormatError(f"{scale.size} scales and {zero.size} zero points for quantized "
                                    f"dimension {axis} of a {q.shape} tensor")
        shape[axis] = -1
    # float64: int32 biases above 2**24 would lose digits in float32 before scaling.
    real = (q.astype(np.float64) - zero.astype(np.float64).reshape(shape)) * scale.astype(np.float64).reshape(shape)
    return real.astype(np.float32)


def read_tflite(path, fix: str = "") -> Graph:
    """Read a TensorFlow Lite flatbuffer into a `Graph` of float32 ops.

    Inputs:
    - path: a .tflite file with one subgraph, one input and one output, using only SUPPORTED_OPS
    - fix: how to get a good copy of the file (e.g. the command that fetches it), appended to
      the errors for a missing, foreign or damaged file
    Returns:
    - Graph; constant tensors (weights, biases) are folded into the ops that read them
    Raises:
    - FileNotFoundError if path does not exist
    - ValueError (TFLiteFormatError) naming the file when it is not a TFLite model, is truncated
      or corrupt, or uses an operator or option that dlmie cannot run
    """
    path = Path(path)
    fix = f"; {fix}" if fix else ""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist{fix}")
    data = path.read_bytes()
    if len(data) < 8 or not tflite.Model.ModelBufferHasIdentifier(data, 0):
        raise TFLiteFormatError(f"{path} is not a TensorFlow Lite model (it lacks the 'TFL3' identifier at "
                                f"byte 4, found {data[4:8]!r}){fix}")
    try:
        return _read_graph(tflite.Model.GetRootAsModel(data, 0))
    except TFLiteFormatError as err:
        raise TFLiteFormatError(f"{path}: {err}") from None
    except (IndexError, ValueError, TypeError, struct.error, UnicodeDecodeError, OverflowError) as err:
        # The flatbuffer accessors do not check offsets; a cut-off file fails deep inside them.
        raise TFLiteFormatError(f"{path} is a truncated or corrupt TensorFlow Lite file "
                                f"({type(err).__name__}: {err}){fix}") from err


def _read_graph(model) -> Graph:
    if model.SubgraphsLength() != 1:
        raise TFLiteFormatError(f"expected one subgraph, found {model.SubgraphsLength()}")
    g = model.Subgraphs(0)
    if g.InputsLength() != 1 or g.OutputsLength() != 1:
        raise TFLiteFormatError(f"expected one input and one output, found {g.InputsLength()} and {g.OutputsLength()}")

    def constant(i):
        """Tensor i's stored value, dequantized when it is quantized; None for an activation."""
        t = g.Tensors(i)
        buffer = model.Buffers(t.Buffer())
        if buffer.DataLength() == 0:
            if buffer.Offset() > 1:  # data stored after the flatbuffer (models over 2 GB) -- not read here
                raise TFLiteFormatError(f"tensor {t.Name().decode()!r} keeps its data outside the flatbuffer")
            return None
        dtype = _TENSOR_TYPES.get(t.Type())
        if dtype is None:
            raise TFLiteFormatError(f"constant {t.Name().decode()!r} has unsupported type {t.Type()}")
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        raw = buffer.DataAsNumpy()
        if raw.size != np.dtype(dtype).itemsize * int(np.prod(shape)):
            raise TFLiteFormatError(f"constant {t.Name().decode()!r} {shape} holds {raw.size} bytes")
        value = raw.view(dtype).reshape(shape)
        q = t.Quantization()
        return dequantize(value, q) if q is not None and q.ScaleLength() else value

    def activation_tensor(i):
        t = g.Tensors(i)
        q = t.Quantization()
        quantized = q is not None and q.ScaleLength() == 1
        return Tensor(t.Name().decode(), tuple(int(s) for s in t.ShapeAsNumpy()),
                      float(q.ScaleAsNumpy()[0]) if quantized else None,
                      int(q.ZeroPointAsNumpy()[0]) if quantized else None)

    first, last = g.Inputs(0), g.Outputs(0)
    tensors = {first: activation_tensor(first)}
    ops = []
    for k in range(g.OperatorsLength()):
        op = g.Operators(k)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "unknown")
        if kind not in SUPPORTED_OPS:
            raise TFLiteFormatError(f"operator {k} is {kind}, which dlmie cannot run "
                                    f"(it runs {', '.join(SUPPORTED_OPS)})")
        inputs = [int(i) for i in op.InputsAsNumpy()]
        values = [None if i < 0 else constant(i) for i in inputs]
        reads = [i for i, v in zip(inputs, values) if i >= 0 and v is None]
        unknown = [i for i in reads if i not in tensors]
        if unknown:
            raise TFLiteFormatError(f"operator {k} ({kind}) reads tensor {unknown[0]} before any operator writes it")
        options = None
        if kind in _OPTIONS:
            table = op.BuiltinOptions()
            if table is None:
                raise TFLiteFormatError(f"operator {k} ({kind}) has no options")
            options = _OPTIONS[kind]()
            options.Init(table.Bytes, table.Pos)
        if not reads or op.OutputsLength() != 1:
            raise TFLiteFormatError(f"operator {k} ({kind}) reads {len(reads)} activations and writes "
                                    f"{op.OutputsLength()} tensors; expected at least one and exactly one")
        node = Op(kind, reads, int(op.Outputs(0)))
        shape_in = tensors[reads[0]].shape
        _fill(node, options, values, shape_in, k)
        tensors[node.output] = activation_tensor(node.output)
        _check_shape(node, shape_in, tensors[node.output].shape, k, tensors[reads[-1]].shape)
        ops.append(node)
    if not ops or ops[-1].output != last:
        raise TFLiteFormatError(f"the graph output (tensor {last}) is not written by its last operator")
    return Graph(ops, tensors, first, last)


def _fill(node: Op, options, values, shape_in, k):
    """Node's weights, stride, padding and activation from the TFLite options and constants."""
    where = f"operator {k} ({node.kind})"
    if options is not None and hasattr(options, "FusedActivationFunction"):
        act = _ACTIVATION_NAMES.get(options.FusedActivationFunction(), str(options.FusedActivationFunction()))
        if act not in ACTIVATIONS:
            raise TFLiteFormatError(f"{where} has fused activation {act}; dlmie runs {', '.join(ACTIVATIONS)}")
        node.activation = act
    if node.kind == "ADD" and len(node.inputs) != 2:
        raise TFLiteFormatError(f"{where} adds a constant; dlmie adds two activations only")
    if node.kind == "SOFTMAX":
        node.beta = float(options.Beta())
    if node.kind not in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        return
    if len(shape_in) != 4:
        raise TFLiteFormatError(f"{where} reads a {shape_in} tensor; it needs (N, H, W, C)")
    if options.StrideH() != options.StrideW() or options.StrideH() < 1:
        raise TFLiteFormatError(f"{where} has strides {options.StrideH()}x{options.StrideW()}; "
                                f"dlmie needs equal strides")
    node.stride = options.StrideH()
    if node.kind == "AVERAGE_POOL_2D":
        node.window = (options.FilterHeight(), options.FilterWidth())
    else:
        if options.DilationHFactor() != 1 or options.DilationWFactor() != 1:
            raise TFLiteFormatError(f"{where} is dilated; dlmie runs undilated convolutions only")
        if len(values) < 2 or values[1] is None:
            raise TFLiteFormatError(f"{where} has no constant weights")
        w = values[1]
        if node.kind == "CONV_2D":
            w = w.transpose(0, 3, 1, 2)  # OHWI -> (F, C, k, k)
        else:
            if w.shape[0] != 1 or w.shape[3] != shape_in[3]:
                raise TFLiteFormatError(f"{where} has weights {w.shape} for {shape_in[3]} channels "
                                        f"(depth multiplier must be 1)")
            w = w[0].transpose(2, 0, 1)[:, None]  # 1HWC -> (C, 1, k, k)
        b = values[2] if len(values) > 2 and values[2] is not None else np.zeros(w.shape[0], np.float32)
        if b.shape != (w.shape[0],):
            raise TFLiteFormatError(f"{where} has bias {b.shape} for {w.shape[0]} outputs")
        node.weights = {"W": np.ascontiguousarray(w, np.float32), "b": np.asarray(b, np.float32)}
        node.window = w.shape[2:]
    if options.Padding() == tflite.Padding.SAME:
        (kh, kw), s = node.window, node.stride
        node.pads = same_pads(shape_in[1], kh, s) + same_pads(shape_in[2], kw, s)
        if node.kind == "AVERAGE_POOL_2D" and any(node.pads):
            # TensorFlow leaves padding out of the average; L.avg_pool counts it.
            raise TFLiteFormatError(f"{where} pads with 'SAME'; dlmie averages over 'VALID' windows only")


def _check_shape(node: Op, shape_in, shape_out, k, shape_other=None):
    """A corrupt file shows up as an output shape that the op cannot produce."""
    n = shape_in[0]
    if node.kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D"):
        top, bottom, left, right = node.pads
        h = (shape_in[1] + top + bottom - node.window[0]) // node.stride + 1
        w = (shape_in[2] + left + right - node.window[1]) // node.stride + 1
        c = node.weights["W"].shape[0] if node.kind == "CONV_2D" else shape_in[3]
        if node.kind == "CONV_2D" and node.weights["W"].shape[1] != shape_in[3]:
            raise TFLiteFormatError(f"operator {k} (CONV_2D) has weights for {node.weights['W'].shape[1]} "
                                    f"input channels, its input {shape_in} has {shape_in[3]}")
        expected = (n, h, w, c)
    elif node.kind == "RESHAPE":
        expected = shape_out if np.prod(shape_out) == np.prod(shape_in) else None
    elif node.kind == "ADD" and tuple(shape_other) != tuple(shape_in):
        expected = None
    else:
        expected = shape_in
    if tuple(shape_out) != tuple(expected or ()):
        raise TFLiteFormatError(f"operator {k} ({node.kind}) maps {shape_in} to {shape_out}, expected {expected}")


def graph_params(graph: Graph, names=None) -> dict:
    """The graph's weights as {f"{name}.W": array, f"{name}.b": array}; names[k] names op k
    (default "op0", "op1", ...). Wrap with `L.shared_params` for `run_graph`."""
    names = names or [f"op{k}" for k in range(len(graph.ops))]
    return {f"{name}.{key}": value for op, name in zip(graph.ops, names) for key, value in op.weights.items()}


def _convolution(op: Op, w, b, h):
    """A CONV_2D or DEPTHWISE_CONV_2D op on h (N, C, H, W) with static C, H, W. A 1x1 convolution
    too goes through conv2d: ConvGemm then reads channel-first input in place (no im2col copy)."""
    if op.kind == "DEPTHWISE_CONV_2D":
        return L.depthwise_conv2d(h, w, b, op.stride, op.pads)
    if len(set(op.pads)) == 1:
        return L.conv2d(h, w, b, op.stride, op.pads[0])
    return L.conv2d(L.pad2d(h, op.pads), w, b, op.stride)  # asymmetric "SAME"; Im2Col pads symmetrically


def run_graph(graph: Graph, x, params: dict, names=None) -> dict:
    """The graph as a symbolic forward pass.

    Inputs:
    - graph: from read_tflite
    - x: (N, C, H, W) symbolic input, already as real values (dequantized, not uint8)
    - params: shared variables keyed as by graph_params(graph, names)
    - names: one name per op, as given to graph_params
    Returns:
    - dict tensor index -> symbolic value, (N, C, H, W) for images or (N, D) after a RESHAPE to 2-D
    """
    names = names or [f"op{k}" for k in range(len(graph.ops))]

    def static(h, index):
        # Every size but the batch is in the file; static shapes let the layers slice with
        # Python ints, which keeps the graph small and compiling fast.
        shape = graph.tensors[index].shape
        return pt.specify_shape(h, (None, shape[3], shape[1], shape[2]) if len(shape) == 4 else (None, *shape[1:]))

    values = {graph.input: static(x, graph.input)}
    for op, name in zip(graph.ops, names):
        h = values[op.inputs[0]]
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            out = _convolution(op, params[f"{name}.W"], params[f"{name}.b"], h)
        elif op.kind == "ADD":
            out = h + values[op.inputs[1]]
        elif op.kind == "AVERAGE_POOL_2D":
            if tuple(op.window) == tuple(graph.tensors[op.inputs[0]].shape[1:3]):
                out = L.global_avg_pool(h).dimshuffle(0, 1, "x", "x")  # one window over everything
            else:
                out = L.avg_pool(h, op.window[0], op.stride)
        elif op.kind == "RESHAPE":
            # TFLite reshapes in (N, H, W, C) order; ours is (N, C, H, W).
            target = graph.tensors[op.output].shape
            if h.ndim == 4:
                h = h.dimshuffle(0, 2, 3, 1)
            out = h.reshape((h.shape[0], *target[1:]), ndim=len(target))
            if len(target) == 4:
                out = out.dimshuffle(0, 3, 1, 2)
        else:  # SOFTMAX
            out = pt.special.softmax(h * np.float32(op.beta), axis=-1)
        values[op.output] = static(ACTIVATIONS[op.activation](out), op.output)
    return values

"""MobileNetV2 1.0/224 (Sandler et al. 2018) from the quantized TensorFlow Lite file that
``./get_datasets.sh mobilenet-v2`` fetches, as a float32 dlmie `Network`.

    net = load()                                # datasets/mobilenet_v2/: the .tflite file and its labels
    probs = net.probabilities(images)           # (N, 224, 224, 3) uint8 -> (N, 1001); class 0 is "background"
    grid = net.features(images, "conv_last")    # (N, 49, 1280)
    top5 = np.argsort(-imagenet_1000(probs), axis=1)[:, :5]   # in the 1000-class ImageNet order

`dlmie.models.tflite` reads the file into a generic graph of float32 ops and evaluates it;
this module checks that the graph has MobileNetV2's shape and gives its layers names (conv1,
block0 .. block16, conv_last, pool, scores; parameters conv1.W, block3.expand.W,
block3.depthwise.W, ...), the input its preprocessing and the scores their class names.

The network computes in float32 with the dequantized weights, not in TFLite's uint8 arithmetic:
its scores differ slightly from TFLite's, which also rounds every activation to 8 bits.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dlmie import layers as L
from dlmie.images import Preprocessing
from dlmie.models.network import Network
from dlmie.models.tflite import Graph, Tensor, TFLiteFormatError, graph_params, read_tflite, run_graph

FETCH_HINT = "run ./get_datasets.sh mobilenet-v2 to fetch the model"
GRID_LAYER = "conv_last"  # 7 x 7 x 1280
MODEL_FILE, LABELS_FILE = "mobilenet_v2_1.0_224_quant.tflite", "imagenet_labels.txt"

# One letter per op: conv1, 17 inverted-residual blocks (block0 has no expansion layer; a block
# adds its input when the shapes allow), conv_last, the global pool, the 1x1 classifier, the
# reshape to (N, 1001) and the softmax.
_LETTERS = {"CONV_2D": "C", "DEPTHWISE_CONV_2D": "D", "ADD": "A", "AVERAGE_POOL_2D": "P", "RESHAPE": "R",
            "SOFTMAX": "S"}
_MOBILENET_V2 = re.compile(r"C((?:C?DCA?){17})CPCRS?")
_BLOCK_PARTS = {"C": "expand", "D": "depthwise", "A": "add"}


def mobilenet_v2_names(graph: Graph, path="the graph") -> tuple[list[str], dict]:
    """Name the ops of a MobileNetV2 graph.

    Returns:
    - names: one per op: conv1, block{b}.expand / .depthwise / .project / .add, conv_last,
      pool, logits, scores, probabilities (block b is TensorFlow's expanded_conv_b)
    - layers: activation name -> tensor index, input to output: conv1, block0 .. block16 (each
      block's output after its residual add), conv_last, pool, scores
    Raises ValueError naming path when the graph is not MobileNetV2-shaped.
    """
    letters = "".join(_LETTERS[op.kind] for op in graph.ops)
    match = _MOBILENET_V2.fullmatch(letters)
    if match is None:
        raise TFLiteFormatError(f"{path} is not a MobileNetV2 graph: its ops read {letters!r} (C conv, D depthwise, "
                                f"A add, P pool, R reshape, S softmax), expected conv, 17 inverted-residual blocks "
                                f"and a pooled 1x1-conv classifier; {FETCH_HINT}")
    names, layers = ["conv1"], {"conv1": graph.ops[0].output}
    k = 1
    for b, block in enumerate(re.findall(r"C?DCA?", match.group(1))):
        for i, letter in enumerate(block):
            part = "project" if letter == "C" and i > 0 else _BLOCK_PARTS[letter]
            names.append(f"block{b}.{part}")
            if part == "add" and graph.ops[k - 1].output not in graph.ops[k].inputs:
                raise TFLiteFormatError(f"{path}: block{b}'s residual add does not read its projection")
            k += 1
        layers[f"block{b}"] = graph.ops[k - 1].output
    names += ["conv_last", "pool", "logits", "scores", "probabilities"][: len(graph.ops) - k]
    for name, op in zip(names[k:], graph.ops[k:]):
        layers[name] = op.output
    del layers["logits"]
    layers.pop("probabilities", None)

    shapes = {name: graph.tensors[i].shape for name, i in layers.items()}
    expected = {"conv1": (1, 112, 112, 32), "block16": (1, 7, 7, 320), "conv_last": (1, 7, 7, 1280),
                "pool": (1, 1, 1, 1280), "scores": (1, 1001)}
    wrong = {name: shapes[name] for name, shape in expected.items() if tuple(shapes[name]) != shape}
    if graph.tensors[graph.input].shape != (1, 224, 224, 3) or wrong:
        raise TFLiteFormatError(f"{path} is not MobileNetV2 1.0/224: input {graph.tensors[graph.input].shape}, "
                                f"expected (1, 224, 224, 3); layers {wrong or 'as expected'}; expected {expected}")
    return names, layers


def input_preprocessing(tensor: Tensor) -> Preprocessing:
    """What the quantized input means: a pixel q stands for (q - zero_point) * scale, which is
    (q / 255 - mean) / std with mean = zero_point / 255 and std = 1 / (255 * scale). For this
    model's scale 1/128 and zero point 128 that is q / 128 - 1 (close to the x / 127.5 - 1 of
    the float MobileNetV2). A float input gets that x / 127.5 - 1."""
    if tensor.scale is None:
        return Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    mean, std = tensor.zero_point / 255.0, 1.0 / (255.0 * tensor.scale)
    return Preprocessing(mean=(mean,) * 3, std=(std,) * 3)


def read_labels(path) -> list[str]:
    """imagenet_labels.txt: one class name a line, "background" first (1001 lines)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {FETCH_HINT}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load(path=None, labels=None) -> Network:
    """MobileNetV2 1.0/224 as a `Network` in inference mode.

    Inputs:
    - path: the quantized .tflite file (default: mobilenet_v2_1.0_224_quant.tflite in
      dataset_path("mobilenet-v2"))
    - labels: its class names, one a line (default: imagenet_labels.txt beside it)
    Returns a Network with
    - input (N, 3, 224, 224), preprocessing from the input tensor's quantization (q / 128 - 1)
    - params conv1.W, conv1.b, block{b}.{expand,depthwise,project}.{W,b}, conv_last.W, .b,
      logits.W (1001, 1280, 1, 1), logits.b (block0 has no expand)
    - activations conv1 (N, 32, 112, 112), block0 .. block16 (N, 320, 7, 7 for block16),
      conv_last (N, 1280, 7, 7), pool (N, 1280), scores (N, 1001), logits before the softmax
    - class_names: 1001, "background" first; class_ids: "0" .. "1000"
    Raises ValueError naming the file when it is not a TFLite model, is damaged, or is not
    MobileNetV2; DatasetNotFoundError when the default files are not fetched.
    """
    if path is None:
        from dlmie.data import dataset_path

        path = dataset_path("mobilenet-v2") / MODEL_FILE
    path = Path(path)
    labels = path.with_name(LABELS_FILE) if labels is None else Path(labels)
    graph = read_tflite(path, FETCH_HINT)
    names, layers = mobilenet_v2_names(graph, path)
    class_names = read_labels(labels)
    if len(class_names) != graph.tensors[layers["scores"]].shape[-1]:
        raise ValueError(f"{labels} has {len(class_names)} class names; {path} has "
                         f"{graph.tensors[layers['scores']].shape[-1]} classes")

    def build(x, params):
        values = run_graph(graph, x, params, names)
        activations = {name: values[i] for name, i in layers.items()}
        activations["pool"] = activations["pool"].flatten(2)
        return activations["scores"], activations

    params = L.shared_params(graph_params(graph, names))
    return Network("mobilenet_v2", params, build, 224, input_preprocessing(graph.tensors[graph.input]),
                   class_names, [str(k) for k in range(len(class_names))])


def imagenet_1000(scores: np.ndarray, class_names=None, label_map=None) -> np.ndarray:
    """(N, 1001) scores or probabilities -> (N, 1000) in the usual ImageNet order (cs231n's
    imagenet_val_25, Keras, torchvision): ImageNet class k is our class k + 1, after "background".

    Inputs:
    - scores: (..., 1001)
    - class_names, label_map: optional; with both, checks that label_map[k] (ImageNet index ->
      name, as imagenet_val_25.npz stores it) is class_names[k + 1] for every k it holds
    Returns:
    - scores[..., 1:]
    """
    scores = np.asarray(scores)
    if scores.shape[-1] != 1001:
        raise ValueError(f"expected 1001 classes (background first), got {scores.shape[-1]}")
    if class_names is not None and label_map is not None:
        wrong = [k for k, name in dict(label_map).items() if class_names[int(k) + 1] != name]
        if wrong:
            k = wrong[0]
            raise ValueError(f"{len(wrong)} ImageNet classes are not at index + 1, e.g. {k}: "
                             f"{label_map[k]!r} vs {class_names[int(k) + 1]!r}")
    return scores[..., 1:]

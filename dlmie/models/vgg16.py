"""VGG-16 (Simonyan & Zisserman 2015) from the Keras weight files, as a dlmie `Network`.

    net = load()                                # datasets/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5
    grid = net.features(images, "conv5_3")      # (N, 196, 512): the 14 x 14 grid Show-Attend-Tell attends over
    net = load(full_path)                       # with fc6-fc8: "fc7" (N, 4096) and ImageNet class scores

Thirteen 3x3 convolutions (pad 1) with ReLU in five blocks, each block ending in 2x2 max pooling;
the full file adds fc6 and fc7 (4096, ReLU) and fc8 (1000 ImageNet classes). Layer names follow
the paper and Caffe (conv1_1 ... conv5_3, pool1 ... pool5, fc6, fc7, scores); the Keras file
calls the same layers block1_conv1 ... block5_conv3, fc1, fc2, predictions.

Input: 224 x 224 BGR, 0-255, minus the ImageNet channel means (the Caffe convention the weights
were trained with).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
from dlmie import layers as L
from dlmie.images import Preprocessing
from dlmie.models.network import Network

# (channels, convolutions) of the five blocks
BLOCKS = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]
FC = [("fc6", "fc1", 4096), ("fc7", "fc2", 4096), ("scores", "predictions", 1000)]  # ours, Keras', width
PREPROCESSING = Preprocessing(mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), channel_order="BGR", scale=255.0)
INPUT_SIZE = 224
GRID_LAYER = "conv5_3"  # 14 x 14 x 512
FETCH_HINT = "run ./get_datasets.sh vgg16-notop (or vgg16-full for fc6-fc8)"


def conv_layers():
    """[(our name, Keras name, in channels, out channels)] for the 13 convolutions."""
    out, channels = [], 3
    for b, (width, count) in enumerate(BLOCKS, start=1):
        for c in range(1, count + 1):
            out.append((f"conv{b}_{c}", f"block{b}_conv{c}", channels, width))
            channels = width
    return out


def read_keras_weights(path) -> dict:
    """Every layer's weights from a Keras (1.x/2.x) h5 weight file, through its own index.

    The root attribute `layer_names` lists the layers in order; each layer's group lists its
    arrays in the attribute `weight_names` (kernel first, then bias).
    Returns: Keras layer name -> list of float32 arrays, for layers that have weights.
    Raises ValueError naming the file when it is not such a file.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; {FETCH_HINT}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not an HDF5 file ({err}); {FETCH_HINT}") from err
    with f:
        if "layer_names" not in f.attrs:
            raise ValueError(f"{path} is an HDF5 file but not a Keras weight file (no 'layer_names' attribute)")
        weights = {}
        for raw in f.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = [w.decode() if isinstance(w, bytes) else str(w) for w in f[name].attrs.get("weight_names", [])]
            try:
                arrays = [np.asarray(f[name][w], np.float32) for w in names]
            except (KeyError, OSError) as err:
                raise ValueError(f"{path}: the weights of layer {name!r} cannot be read ({err}); the file is damaged") from err
            if arrays:
                weights[name] = arrays
    return weights


def params_from_keras(weights: dict, path) -> dict:
    """Keras layers -> our parameter names and layouts.

    Conv kernels are stored (3, 3, in, out) for cross-correlation and become (out, in, 3, 3);
    fc kernels are (in, out) already. fc6's inputs are the pool5 grid flattened in Keras' (H, W, C)
    order, which `forward` reproduces. fc6-fc8 are taken when the file has all three.
    Returns our name -> float32 array: conv1_1.W, conv1_1.b, ..., and fc6.W ... scores.b if present.
    """
    params = {}

    def take(ours, keras, kernel_shape):
        if keras not in weights:
            raise ValueError(f"{path}: layer {keras!r} is missing; is this VGG-16's Keras weight file? ({FETCH_HINT})")
        kernel, bias = weights[keras][:2] if len(weights[keras]) >= 2 else (weights[keras][0], None)
        if kernel.shape != kernel_shape or bias is None or bias.shape != kernel_shape[-1:]:
            got = [tuple(a.shape) for a in weights[keras]]
            raise ValueError(f"{path}: layer {keras!r} holds arrays of shapes {got}, expected kernel {kernel_shape} and bias")
        params[f"{ours}.W"] = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel
        params[f"{ours}.b"] = bias

    for ours, keras, c_in, c_out in conv_layers():
        take(ours, keras, (3, 3, c_in, c_out))
    present = [keras in weights for _, keras, _ in FC]
    if any(present) and not all(present):
        raise ValueError(f"{path} holds only some of fc1, fc2, predictions; expected none (notop) or all three")
    if all(present):
        width = 7 * 7 * 512
        for ours, keras, out in FC:
            take(ours, keras, (width, out))
            width = out
    return params


def forward(params: dict, x):
    """The symbolic forward pass in inference mode.

    Inputs:
    - params: name -> shared variable, as from `params_from_keras`
    - x: (N, 3, 224, 224) preprocessed images (other sizes work for the conv layers)
    Returns:
    - scores: (N, 1000) ImageNet logits, or None without fc layers
    - activations: conv1_1 ... conv5_3 (after ReLU), pool1 ... pool5, and fc6, fc7 (after ReLU),
      scores when the fc layers are present
    """
    activations, h = {}, x
    for b, (_, count) in enumerate(BLOCKS, start=1):
        for c in range(1, count + 1):
            name = f"conv{b}_{c}"
            h = L.relu(L.conv2d(h, params[f"{name}.W"], params[f"{name}.b"], 1, 1))
            activations[name] = h
        h = L.max_pool(h, 2, 2)
        activations[f"pool{b}"] = h
    if "fc6.W" not in params:
        return None, activations
    h = h.dimshuffle(0, 2, 3, 1).flatten(2)  # Keras flattened (H, W, C)
    for name in ("fc6", "fc7"):
        h = L.relu(L.affine(h, params[f"{name}.W"], params[f"{name}.b"]))
        activations[name] = h
    scores = L.affine(h, params["scores.W"], params["scores.b"])
    activations["scores"] = scores
    return scores, activations


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from MobileNetV2's label file when it has been fetched."""
    from dlmie.data import DatasetNotFoundError, dataset_path

    try:
        lines = (dataset_path("mobilenet-v2") / "imagenet_labels.txt").read_text().splitlines()
    except (DatasetNotFoundError, FileNotFoundError):
        return [f"ImageNet class {k}" for k in range(1000)]
    return lines[1:1001]  # line 0 is "background"


def load(path=None) -> Network:
    """VGG-16 from a Keras h5 file; by default the full file if get_datasets.sh fetched it, else notop."""
    if path is None:
        from dlmie.data import dataset_path, is_present

        path = dataset_path("vgg16-full" if is_present("vgg16-full") else "vgg16-notop")
    params = L.shared_params(params_from_keras(read_keras_weights(path), path))
    has_head = "scores.W" in params
    names = imagenet_class_names() if has_head else []
    return Network("vgg16", params, lambda x, p: forward(p, x), INPUT_SIZE, PREPROCESSING,
                   names, [str(k) for k in range(len(names))])

"""A trained classifier, ready for notebooks and commands: weights, class names, preprocessing,
and compiled functions for class scores and for input gradients of any objective.

    model = load_classifier()                   # the committed Tiny-ImageNet network
    model = load_classifier("cs231n")           # cs231n's pretrained_model.h5 (./get_datasets.sh cs231n-pretrained)
    model = load_classifier("path/to/model.npz")
    probs = model.probabilities(images)         # images: (N, 64, 64, 3) uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
from dlmie import checkpoint, layers as L
from dlmie.images import Preprocessing
from dlmie.models import convnet
from dlmie.models.encoders import ENCODERS, load_encoder
from dlmie.models.network import Network

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_MODEL = "tiny_convnet"
COMMITTED = ("tiny_convnet",)  # classifier model files in WEIGHTS_DIR
CLASSIFIERS = (*COMMITTED, "cs231n", *ENCODERS)

def convnet_classifier(name, spec: convnet.ConvNetSpec, weights: dict, class_names, wnids,
                       preprocessing: Preprocessing) -> Network:
    """A `Network` of the conv-net family in inference mode; activations conv1.., fc1.., scores."""
    def build(x, params):
        scores, activations, _ = convnet.forward(spec, params, x, train=False)
        return scores, activations

    params = L.shared_params({k: np.asarray(v, np.float32) for k, v in weights.items()})
    return Network(name, params, build, spec.input_size, preprocessing, class_names, wnids)


def accuracy(scores_of, images: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> tuple[float, float]:
    """Top-1 and top-5 accuracy.

    Inputs:
    - scores_of: function (B, H, W, 3) uint8 images -> (B, num_classes) scores or probabilities
    - images: (N, H, W, 3) uint8; labels: (N,) int
    Returns (top1, top5), fractions in [0, 1].
    """
    top1 = top5 = 0
    for start in tqdm(range(0, len(images), batch_size), desc="evaluating", unit="batch", leave=False):
        best5 = np.argsort(-scores_of(images[start : start + batch_size]), axis=1)[:, :5]
        y = labels[start : start + batch_size]
        top1 += int(np.sum(best5[:, 0] == y))
        top5 += int(np.sum(np.any(best5 == y[:, None], axis=1)))
    return top1 / len(images), top5 / len(images)


def load_npz(path) -> Network:
    """A model file written by `python -m dlmie.train_classifier --export` (dlmie checkpoint)."""
    arrays, meta = checkpoint.load(path)
    if meta.get("kind") != "convnet":
        raise ValueError(f"{path} is a dlmie checkpoint but not a classifier model (kind={meta.get('kind')!r})")
    return convnet_classifier(Path(path).stem, convnet.ConvNetSpec.from_dict(meta["spec"]), arrays,
                              meta["class_names"], meta["wnids"], Preprocessing(**meta["preprocessing"]))


def load_cs231n_h5(path, wnids, class_names) -> Network:
    """cs231n's pretrained_model.h5: W1..W11, b1..b11, gamma1..10, beta1..10, running_mean1..10,
    running_var1..10 (blocks 1-9 conv, 10 the hidden affine, 11 the scores). Affine weights may
    be stored (in, out) or transposed; the shapes decide. Its inputs were 0-255 pixels minus
    the training set's mean image, approximated here by the per-channel means."""
    import h5py

    spec = convnet.CS231N_SPEC
    expected = convnet.init_params(spec)
    weights, blocks = {}, [f"conv{i}" for i in range(1, 10)] + ["fc1", "scores"]
    with h5py.File(path, "r") as f:
        for k, block in enumerate(blocks, start=1):
            sources = {"W": f"W{k}", "b": f"b{k}"}
            if block != "scores":
                sources.update(gamma=f"gamma{k}", beta=f"beta{k}", running_mean=f"running_mean{k}",
                               running_var=f"running_var{k}")
            for field, key in sources.items():
                if key not in f:
                    raise ValueError(f"{path}: key {key!r} is missing; is this cs231n's pretrained_model.h5?")
                value = np.asarray(f[key], np.float32)
                shape = expected[f"{block}.{field}"].shape
                if value.shape != shape and value.ndim == 2 and value.T.shape == shape:
                    value = value.T
                if value.shape != shape:
                    raise ValueError(f"{path}: {key} has shape {value.shape}, expected {shape}")
                weights[f"{block}.{field}"] = value
    preprocessing = Preprocessing(mean=(0.480, 0.448, 0.398), std=(1 / 255, 1 / 255, 1 / 255))
    return convnet_classifier("cs231n", spec, weights, class_names, wnids, preprocessing)


def load_classifier(name: str = DEFAULT_MODEL) -> Network:
    """A classifier by name (one of CLASSIFIERS) or the path of a model file.

    "tiny_convnet" is committed with the repository, "cs231n" is cs231n's pretrained_model.h5, and
    the ImageNet encoders classify into ImageNet's classes where their weight file has the head
    (MobileNetV2's does; VGG-16's only when the full file is fetched).
    """
    if name == "cs231n":
        from dlmie.data import dataset_path
        from dlmie.data.tiny_imagenet import read_classes

        wnids, names = read_classes(dataset_path("tiny-imagenet-100-A"))
        return load_cs231n_h5(dataset_path("cs231n-pretrained"), wnids, names)
    if name in ENCODERS:
        net = load_encoder(name)
        if net.scores is None:
            raise ValueError(f"{name}'s weight file has no classifier head: ./get_datasets.sh {name}-full fetches it")
        return net
    if name in COMMITTED:
        return load_npz(WEIGHTS_DIR / f"{name}.npz")
    path = Path(name)
    if path.suffix == ".npz" and path.exists():
        return load_npz(path)
    raise ValueError(f"unknown classifier {name!r}: use one of {', '.join(CLASSIFIERS)} or the path of a model .npz file")

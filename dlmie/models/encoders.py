"""The ImageNet encoders by name, for feature extraction, captioning and the notebooks.

    net = load_encoder("mobilenet_v2")          # or "vgg16"
    grid = net.features(images, grid_layer("mobilenet_v2"))    # (N, 49, 1280)

Both are `dlmie.models.network.Network`s: one interface (name, input_size, preprocessing,
features(images, layer)) whatever the architecture.
"""

from __future__ import annotations

from dlmie.models.network import Network

ENCODERS = ("mobilenet_v2", "vgg16")


def _module(name: str):
    if name == "vgg16":
        from dlmie.models import vgg16 as module
    elif name == "mobilenet_v2":
        from dlmie.models import mobilenet_v2 as module
    else:
        raise ValueError(f"unknown encoder {name!r}: use one of {', '.join(ENCODERS)}")
    return module


def load_encoder(name: str, path=None) -> Network:
    """An encoder by name, from its fetched weight file or from `path`."""
    return _module(name).load(path)


def grid_layer(name: str) -> str:
    """The encoder's last convolutional grid: vgg16 conv5_3 (14 x 14 x 512), mobilenet_v2 conv_last (7 x 7 x 1280)."""
    return _module(name).GRID_LAYER


def vector_layer(name: str) -> str:
    """The encoder's image vector: vgg16 fc7 (4096, needs the full weight file), mobilenet_v2 pool (1280)."""
    return _module(name).VECTOR_LAYER

"""The ImageNet encoders by name, for feature extraction, captioning and the notebooks.

    net = load_encoder("mobilenet_v2")          # or "vgg16"
    grid = net.features(images, grid_layer("mobilenet_v2"))    # (N, 49, 1280)

Both are `dlmie.models.network.Network`s: one interface (name, input_size, preprocessing,
features(images, layer)) whatever the architecture.
"""

from __future__ import annotations

from dlmie.models.network import Network
from dlmie.models.registry import module_by_name

_MODULES = {"mobilenet_v2": "dlmie.models.mobilenet_v2", "vgg16": "dlmie.models.vgg16"}
ENCODERS = tuple(_MODULES)


def _module(name: str):
    return module_by_name("encoder", name, _MODULES)


def load_encoder(name: str, path=None) -> Network:
    """An encoder by name, from its fetched weight file or from `path`."""
    return _module(name).load(path)


def grid_layer(name: str) -> str:
    """The encoder's last convolutional grid: vgg16 conv5_3 (14 x 14 x 512), mobilenet_v2 conv_last (7 x 7 x 1280)."""
    return _module(name).GRID_LAYER

"""One interface for every network the notebooks and commands use: our Tiny-ImageNet classifiers,
the ImageNet encoders (VGG-16, MobileNetV2) and, through them, the captioners' image features.

A `Network` is a symbolic input `x` (N, 3, H, W), the activations of its named layers, and class
scores when it has a classifier head. Everything else is compiled from those on demand:

    net.probabilities(images)               # (N, S, S, 3) uint8 -> (N, classes)
    net.features(images, "conv5_3")         # (N, H'*W', C) grid or (N, D) vector
    f = net.gradient_function(objective)    # x -> (objective, d objective / dx), for saliency & co.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import compile_cache
from dlmie.config import keep_buffers_mode
from dlmie.images import Preprocessing


class Network:
    """A network in inference mode (batch norm, where present, uses its stored statistics).

    Attributes:
    - name: str; input_size: int, the height = width of the images it expects
    - preprocessing: Preprocessing, from (N, S, S, 3) uint8 RGB to its input
    - params: name -> shared variable (float32); setting their values changes the network in place
    - x: symbolic input (N, 3, S, S)
    - activations: dict layer name -> symbolic output, input to output order
    - scores: symbolic (N, num_classes), or None for a network without a classifier head
    - class_names, class_ids: lists of length num_classes (empty without a head)
    """

    def __init__(self, name: str, params: dict, build, input_size: int, preprocessing: Preprocessing,
                 class_names=(), class_ids=()):
        """build: function(x, params) -> (scores or None, activations dict)."""
        self.name, self.params, self.input_size, self.preprocessing = name, params, input_size, preprocessing
        self.class_names, self.class_ids = list(class_names), list(class_ids)
        self.x = pt.tensor4("x")
        self.scores, self.activations = build(self.x, params)
        width = None if self.scores is None else self.scores.type.shape[-1]
        if width is not None and len(self.class_names) != width:
            raise ValueError(f"{name}: {len(self.class_names)} class names for {width} classes")
        self._compiled = {}

    @property
    def layer_names(self) -> list[str]:
        return list(self.activations)

    def _function(self, key, outputs, mode=None):
        if key not in self._compiled:
            self._compiled[key] = compile_cache.function([self.x], outputs, mode=mode)
        return self._compiled[key]

    def _require_scores(self):
        if self.scores is None:
            raise ValueError(f"{self.name} has no classifier head; use features() on one of {self.layer_names}")

    def class_scores(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) preprocessed float32 -> (N, num_classes) scores (compiled once)."""
        self._require_scores()
        return self._function("scores", self.scores)(np.asarray(x, np.float32))

    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB images -> (N, num_classes) softmax probabilities."""
        out = []
        for start in range(0, len(images), batch_size):
            scores = self.class_scores(self.preprocessing(images[start : start + batch_size]))
            e = np.exp(scores - scores.max(axis=1, keepdims=True))
            out.append(e / e.sum(axis=1, keepdims=True))
        return np.concatenate(out)

    def layer_output(self, layer: str):
        """The symbolic output of a named layer; a clear error for a name the network lacks."""
        if layer not in self.activations:
            raise ValueError(f"{self.name} has no layer {layer!r}; its layers are {', '.join(self.layer_names)}")
        return self.activations[layer]

    def grid_shape(self, layer: str):
        """(H, W) of a spatial layer's grid at the network's input size, or None for a vector layer."""
        out = self.layer_output(layer)
        if out.ndim != 4:
            return None
        blank = np.zeros((1, self.input_size, self.input_size, 3), np.uint8)
        shape = self._function(("shape", layer), out.shape)(self.preprocessing(blank))
        return int(shape[2]), int(shape[3])

    def features(self, images: np.ndarray, layer: str, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        """Activations of one layer as float32 features.

        Inputs:
        - images: (N, S, S, 3) uint8 RGB at the network's input size
        - layer: a name in layer_names
        Returns:
        - (N, H*W, C) for a spatial layer, regions in row-major order (region l is row l // W,
          column l % W of the grid), or (N, D) for a vector layer
        """
        out = self.layer_output(layer)
        if out.ndim == 4:
            out = out.flatten(3).dimshuffle(0, 2, 1)
        # Called once per batch, on batches of one shape: its arrays are kept between calls.
        fn = self._function(("features", layer), out, mode=keep_buffers_mode())
        batches = range(0, len(images), batch_size)
        if progress:
            batches = tqdm(batches, desc=f"{self.name} {layer}", unit="batch")
        return np.concatenate([fn(self.preprocessing(images[s : s + batch_size])) for s in batches])

    def gradient_function(self, objective, *extra_inputs):
        """Compile (x, *extra) -> (objective value, d objective / d x).

        Inputs:
        - objective: function(scores, activations, *extra_inputs) -> symbolic scalar, where
          scores is (N, num_classes) or None and activations maps layer names to tensors
        - extra_inputs: symbolic variables the objective reads (a class index, a target feature)
        Returns a compiled function; x is (N, 3, S, S) float32.
        """
        value = objective(self.scores, self.activations, *extra_inputs)
        return compile_cache.function([self.x, *extra_inputs], [value, pytensor.grad(value, self.x)])


"""Objectives for visualization by optimization, as small composable pieces (in the spirit of lucid).

An `Objective` is a symbolic scalar built from a network's class scores, its layer activations
and its input x, to be *maximized* by `dlmie.vis.ascent.ascend`. Objectives combine with +, -
and multiplication by a number, so penalties are written the way papers write them:

    class_score(76) - 0.01 * priors.total_variation()         # a regularized class model
    -(feature_distance("conv3", phi0) + 0.1 * priors.alpha_norm() + 0.5 * priors.total_variation())

What changes between runs -- the class, the channel, the target features, the weights -- is not
baked into the graph: it is an input of the compiled function, given its value at run time. Two
objectives with the same `key` therefore compile to the same function, so visualizing 100
classes, or every channel of a layer, compiles once.

Every objective sums over the images of the batch, and images of a batch do not interact in
inference mode, so the gradient with respect to image i is the gradient of image i's own term.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L


class Input(NamedTuple):
    """A run-time input of an objective: its dtype and number of dimensions (0: a scalar)."""

    dtype: str
    ndim: int

    def variable(self):
        """A fresh symbolic variable of this type."""
        return pt.tensor(dtype=self.dtype, shape=(None,) * self.ndim)


class Objective:
    """A symbolic scalar to maximize.

    Attributes:
    - name: str, for progress bars and plots
    - key: hashable; equal keys build identical graphs (up to the values of the inputs)
    - inputs: list of `Input`, the run-time inputs of the graph
    - values: list of NumPy values, one per input, passed when the compiled function runs
    - build: function(scores, activations, x, *input variables) -> symbolic scalar, where scores is
      (N, classes) or None, activations maps layer names to tensors and x is the (N, 3, H, W) input
    """

    def __init__(self, name: str, key, build: Callable, inputs=(), values=()):
        self.name, self.key, self.build = name, key, build
        self.inputs, self.values = list(inputs), list(values)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def __add__(self, other: "Objective") -> "Objective":
        if not isinstance(other, Objective):
            return NotImplemented
        n = len(self.inputs)

        def build(scores, activations, x, *variables):
            return self.build(scores, activations, x, *variables[:n]) + other.build(scores, activations, x, *variables[n:])

        return Objective(f"{self.name} + {other.name}", ("+", self.key, other.key), build,
                         self.inputs + other.inputs, self.values + other.values)

    def __mul__(self, weight: float) -> "Objective":
        if not np.isscalar(weight):
            return NotImplemented

        def build(scores, activations, x, w, *variables):
            return w * self.build(scores, activations, x, *variables)

        # The weight is an input too: changing a regularizer's strength does not recompile.
        return Objective(f"{weight:g} * ({self.name})", ("*", self.key), build,
                         [Input(pytensor.config.floatX, 0)] + self.inputs,
                         [np.asarray(weight, pytensor.config.floatX)] + self.values)

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        negative = -1.0 * self
        negative.name = f"-({self.name})"
        return negative

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)


def _index(value):
    """A class or channel index as a run-time input: one int for every image (an int64 scalar),
    or one per image (an int64 vector, the batch size)."""
    value = np.asarray(value, np.int64)
    if value.ndim > 1:
        raise ValueError(f"an index must be an int or a sequence of ints, got shape {value.shape}")
    return Input("int64", value.ndim), value


def _pick(t, index):
    """t[:, k] for a scalar k, or t[i, k_i] for a vector k (one index per image): (N, ...)."""
    if index.ndim == 0:
        return t[:, index]
    return t[pt.arange(index.shape[0]), index]


def _layer(activations, layer: str):
    if layer not in activations:
        raise ValueError(f"no layer {layer!r}; the network's layers are {', '.join(activations)}")
    return activations[layer]


def class_score(k) -> Objective:
    """The raw score s_k of a class (Simonyan et al. 2014): not the softmax probability, which can
    also rise by lowering the other classes' scores.

    Inputs:
    - k: int (the same class for every image) or (N,) ints, one class per image
    Returns an Objective: sum_i scores[i, k_i].
    """
    index, value = _index(k)

    def build(scores, activations, x, k):
        if scores is None:
            raise ValueError("class_score needs a network with class scores")
        return _pick(scores, k).sum()

    return Objective(f"class {k}", ("class_score", index.ndim), build, [index], [value])


def channel_objective(a, c):
    """The mean activation of one channel per image over the layer's grid, summed over the images.

    Inputs:
    - a: symbolic (N, C, H', W') activations of a spatial layer, or (N, D) of a vector layer
    - c: symbolic int64, a scalar (the same channel for every image) or an (N,) vector (channel
      c_i for image i)
    Returns a symbolic scalar:
        sum_i (1 / (H' W')) sum_{h,w} a[i, c_i, h, w]   for a spatial layer,
        sum_i a[i, c_i]                                  for a vector layer,
    with c_i = c for every image when c is a scalar.
    """
    ### BEGIN SOLUTION
    picked = _pick(a, c)
    return picked.mean(axis=tuple(range(1, picked.ndim))).sum() if picked.ndim > 1 else picked.sum()
    ### END SOLUTION


def channel(layer: str, c) -> Objective:
    """The mean activation of one channel of a layer, over its whole grid (a "feature" in lucid).

    Inputs:
    - layer: a layer name, e.g. "conv5"
    - c: int, or (N,) ints for one channel per image
    Returns an Objective: sum_i mean_{h,w} a[i, c_i, h, w] (a[i, c_i] for a vector layer).
    """
    index, value = _index(c)

    def build(scores, activations, x, c):
        return channel_objective(_layer(activations, layer), c)

    return Objective(f"{layer}:{c}", ("channel", layer, index.ndim), build, [index], [value])


def neuron(layer: str, c, y: int | None = None, x: int | None = None, pre_relu: bool = False) -> Objective:
    """One unit of a spatial layer: channel c at grid position (y, x), by default the centre
    ((H' - 1) // 2, (W' - 1) // 2), whose receptive field is centred on the image.

    Inputs:
    - layer: a spatial layer's name
    - c: int, or (N,) ints for one channel per image
    - y, x: grid position, or None for the centre
    - pre_relu: take the unit's value before its ReLU (`layers.relu_input`), which has a gradient
      even where the unit is silent; a ReLU layer is required then
    Returns an Objective: sum_i a[i, c_i, y, x].
    """
    index, value = _index(c)
    where = [v for v in (y, x) if v is not None]
    if len(where) == 1:
        raise ValueError("give both y and x, or neither (the centre)")

    def build(scores, activations, image, c, *position):
        a = _layer(activations, layer)
        a = L.relu_input(a) if pre_relu else a
        if a.ndim != 4:
            raise ValueError(f"neuron needs a spatial layer; {layer} is a vector")
        row, col = position if position else ((a.shape[2] - 1) // 2, (a.shape[3] - 1) // 2)
        return _pick(a, c)[:, row, col].sum()

    inputs, values = [index], [value]
    if where:
        inputs += [Input("int64", 0)] * 2
        values += [np.asarray(y, np.int64), np.asarray(x, np.int64)]
    where_name = ("centre" if not where else f"({y}, {x})") + (", before ReLU" if pre_relu else "")
    key = ("neuron", layer, index.ndim, bool(where), pre_relu)
    return Objective(f"{layer}:{c} at {where_name}", key, build, inputs, values)


def relative_feature_distance(phi, phi0):
    """The data term of feature inversion (Mahendran & Vedaldi 2015), symbolic or NumPy.

    Inputs:
    - phi: (N, ...) the representations of N images, e.g. (N, C, H', W') or (N, D)
    - phi0: one image's target representation, phi's shape without the first axis
    Returns a scalar: sum_i ||phi_i - phi0||^2 / ||phi0||^2, each norm over all of an image's
    axes (the same code must run on NumPy arrays and on PyTensor variables).
    """
    ### BEGIN SOLUTION
    axes = tuple(range(1, phi.ndim))
    return (((phi - phi0[None]) ** 2).sum(axis=axes) / (phi0 ** 2).sum()).sum()
    ### END SOLUTION


def feature_distance(layer: str, target: np.ndarray) -> Objective:
    """Relative squared distance to a target representation (Mahendran & Vedaldi 2015):
    ||Phi(x) - Phi_0||^2 / ||Phi_0||^2, to be minimized (ascend on its negative).

    Dividing by ||Phi_0||^2 makes the value comparable between layers: 0 is a perfect match,
    1 is as far as the all-zero representation.
    Inputs:
    - layer: a layer name
    - target: Phi_0, the layer's output for one image: (C, H', W') or (D,)
    Returns an Objective: sum_i ||Phi(x_i) - Phi_0||^2 / ||Phi_0||^2.
    """
    target = np.asarray(target, pytensor.config.floatX)

    def build(scores, activations, x, phi0):
        phi = _layer(activations, layer)
        if phi.ndim != phi0.ndim + 1:
            raise ValueError(f"{layer} outputs {phi.ndim}-d tensors; the target must be one image's "
                             f"{phi.ndim - 1}-d features, got {phi0.ndim}-d")
        return relative_feature_distance(phi, phi0)

    return Objective(f"|{layer} - target|^2", ("feature_distance", layer, target.ndim), build,
                     [Input(pytensor.config.floatX, target.ndim)], [target])


def mean_square_activation(layer: str) -> Objective:
    """The mean square of a layer's activations, DeepDream's objective (Mordvintsev et al. 2015;
    `dlmie.vis.ascent.deep_dream`): whatever the layer already sees in the image grows.

    Inputs:
    - layer: a layer name
    Returns an Objective: sum_i mean_{c,h,w} a[i, c, h, w]^2.
    """
    def build(scores, activations, x):
        a = _layer(activations, layer)
        return (a ** 2).mean(axis=tuple(range(1, a.ndim))).sum()

    return Objective(f"dream {layer}", ("mean_square_activation", layer), build)

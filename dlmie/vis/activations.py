"""What each layer of a network computes on real images, as in the deep-visualization toolbox
(Yosinski et al. 2015): activation grids, single-channel maps laid over the image, and the
validation images and patches that excite a channel most.

Activations are those of the network in inference mode: batch norm uses its stored statistics,
so a channel's map of one image does not depend on the other images in the batch.

    acts = layer_activations(net, x)                      # {layer: (N, C, H', W') or (N, D)}
    maps = resize_bilinear(acts["conv3"][0, 7], 64)       # one channel over a 64 x 64 image
    best = top_activations(net, images, ["conv4"], k=8)   # per layer: every channel's peaks, its top 8
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
from dlmie import compile_cache
from dlmie.vis.ascent import gradient_function
from dlmie.vis.objectives import Input, Objective

# network -> compiled x -> [every layer's activations]; entries go with the network.
_FORWARD = weakref.WeakKeyDictionary()
# network -> {layer: compiled x -> the layer's output shape}
_SHAPES = weakref.WeakKeyDictionary()


def layer_activations(net, x: np.ndarray) -> dict:
    """Every layer's output for a batch, from one compiled forward pass (built once per network).

    Inputs:
    - net: a `dlmie.models.network.Network`
    - x: (N, 3, H, W) float32 model input
    Returns:
    - dict layer name -> (N, C, H', W') for a spatial layer or (N, D), float32, input to output order
    """
    if net not in _FORWARD:
        _FORWARD[net] = compile_cache.function([net.x], list(net.activations.values()))
    outputs = _FORWARD[net](np.asarray(x, np.float32))
    return dict(zip(net.activations, outputs))


def top_k_activations(a: np.ndarray, k: int) -> tuple:
    """The k strongest responses of every channel over a set of images, at most one per image: the
    "top images" of a channel in the deep-visualization toolbox (Yosinski et al. 2015, section 4),
    each with the grid unit where the channel peaks on it.

    The peak of channel c on image n is P[n, c] = max_{i,j} a[n, c, i, j], at the position (i, j)
    that comes first in row-major order among those holding the maximum. The top k of channel c
    are the k images of largest P[n, c], in decreasing order of P; equal peaks come in increasing
    order of n.
    Inputs:
    - a: (N, C, H', W') activations of a spatial layer
    - k: how many images per channel, 1 <= k <= N
    Returns a tuple of four (C, k) arrays:
    - values: P[images[c, j], c], of a's dtype, non-increasing along each row
    - images: int, the image indices n, distinct within a row
    - rows, cols: int, the grid position (i, j) of each image's peak
    Raises:
    - ValueError("k = 7 is more than the 5 images") when k > N
    - ValueError("k must be at least 1, got 0") when k < 1
    """
    ### BEGIN SOLUTION
    n, c, h, w = a.shape
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"k = {k} is more than the {n} images")
    flat = a.reshape(n, c, h * w)
    where = flat.argmax(axis=2)  # (N, C): the first maximum in row-major order
    peaks = np.take_along_axis(flat, where[:, :, None], axis=2)[:, :, 0].T  # (C, N)
    images = np.argsort(-peaks, axis=1, kind="stable")[:, :k]  # ties keep the lower image first
    values = np.take_along_axis(peaks, images, axis=1)
    rows, cols = np.divmod(np.take_along_axis(where.T, images, axis=1), w)
    return values, images, rows, cols
    ### END SOLUTION


class ChannelPeaks(NamedTuple):
    """The peaks of every channel of one layer over a set of images.

    - peaks: (N, C) float32, the peak of channel c on image n (max over the grid), for every image
    - values: (C, k) float32, the k highest peaks of each channel, highest first
    - images: (C, k) int, the images they are on (ties: the lower index first)
    - rows, cols: (C, k) int, the grid position of each of those peaks
    - grid: (H', W'), the layer's grid size
    """

    peaks: np.ndarray
    values: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    grid: tuple

    def top(self, channel: int, k: int) -> np.ndarray:
        """(k,) indices of the images on which `channel` peaks highest, highest first."""
        if k > self.images.shape[1]:
            raise ValueError(f"{k} top images asked for; these peaks keep {self.images.shape[1]} (top_activations' k)")
        return self.images[channel, :k]


def top_activations(net, images: np.ndarray, layers, k: int = 16, batch_size: int = 100,
                    progress: bool = True) -> dict:
    """Peaks of every channel of some spatial layers over a set of images, in one pass, and each
    channel's k strongest images (`top_k_activations`, over every batch).

    Inputs:
    - net: a `Network`
    - images: (N, S, S, 3) uint8 RGB at the network's input size
    - layers: names of spatial layers
    - k: the top images kept per channel (at most N)
    - batch_size: images per forward pass
    - progress: a progress bar
    Returns:
    - dict layer -> `ChannelPeaks`
    """
    k = min(k, len(images))
    peaks, best, grids = {layer: [] for layer in layers}, {layer: [] for layer in layers}, {}
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="activations", unit="batch", leave=False, disable=not progress):
        acts = layer_activations(net, net.preprocessing(images[start : start + batch_size]))
        for layer in layers:
            a = acts[layer]
            if a.ndim != 4:
                raise ValueError(f"{layer} is not a spatial layer")
            grids[layer] = a.shape[2:]
            peaks[layer].append(a.max(axis=(2, 3)))
            values, found, rows, cols = top_k_activations(a, min(k, len(a)))
            best[layer].append((values, found + start, rows, cols))
    result = {}
    for layer in layers:
        values, found, rows, cols = (np.concatenate([b[i] for b in best[layer]], axis=1) for i in range(4))
        # The k best of every batch's candidates (C, M): the same ranking over the candidates as
        # "images" of a 1 x 1 grid. Candidates are in batch order and ranked within a batch, so
        # equal values still come in increasing image order.
        _, slots, _, _ = top_k_activations(values.T[:, :, None, None], k)
        keep = [np.take_along_axis(v, slots, axis=1) for v in (values, found, rows, cols)]
        result[layer] = ChannelPeaks(np.concatenate(peaks[layer]), *keep, tuple(grids[layer]))
    return result


class ReceptiveField(NamedTuple):
    """Where the units of a spatial layer look in the input image.

    - offset: (row, col) of the top-left input pixel of the field of grid unit (0, 0); negative
      where the field runs into the padding
    - size: (height, width) of the field in input pixels
    - stride: input pixels between neighbouring units
    """

    offset: tuple
    size: tuple
    stride: int

    def box(self, row: int, col: int, image_size: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) input pixels, bottom and right exclusive, seen by the unit at
        grid position (row, col), clipped to an image_size x image_size image."""
        top, left = self.offset[0] + row * self.stride, self.offset[1] + col * self.stride
        return (max(top, 0), min(top + self.size[0], image_size), max(left, 0), min(left + self.size[1], image_size))


def _grid_shape(net, layer: str, size: int) -> tuple[int, int]:
    """(H', W') of a spatial layer's grid for size x size inputs."""
    shapes = _SHAPES.setdefault(net, {})
    if layer not in shapes:
        shapes[layer] = compile_cache.function([net.x], net.layer_output(layer).shape)
    shape = shapes[layer](np.zeros((1, 3, size, size), np.float32))
    if len(shape) != 4:
        raise ValueError(f"{layer} is not a spatial layer")
    return int(shape[2]), int(shape[3])


def receptive_field(net, layer: str, samples: int = 4, seed: int = 0) -> ReceptiveField:
    """The receptive field of a spatial layer, measured rather than derived from the architecture:
    the input pixels a unit depends on are those where its gradient is nonzero for some input.

    The unit is the centre one of a 3x larger random image, so that its field lies inside the
    image (convolutional layers accept any size); a ReLU that is off hides its inputs from the
    gradient, so the support is unioned over all channels and several random images.
    Inputs:
    - net: a `Network`
    - layer: a spatial layer's name
    - samples: random images to union over
    - seed: of the random images
    Returns a `ReceptiveField`.
    """
    size = 3 * net.input_size
    grid = _grid_shape(net, layer, size)
    centre = (grid[0] // 2, grid[1] // 2)

    def units(scores, activations, x, row, col):
        return activations[layer][:, :, row, col].sum()

    position = Input("int64", 0)
    objective = Objective(f"{layer} units", ("unit", layer), units, [position, position],
                          [np.asarray(centre[0]), np.asarray(centre[1])])
    x = np.random.default_rng(seed).standard_normal((samples, 3, size, size)).astype(np.float32)
    _, g = gradient_function(net, objective)(x, *objective.values)
    support = np.abs(g).sum(axis=(0, 1)) > 0  # (size, size)
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if rows[0] == 0 or cols[0] == 0 or rows[-1] == size - 1 or cols[-1] == size - 1:
        raise ValueError(f"the receptive field of {layer} is wider than 3 input images; crop the image instead")
    stride = size // grid[0]
    return ReceptiveField((int(rows[0] - centre[0] * stride), int(cols[0] - centre[1] * stride)),
                          (int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)), stride)


def top_patches(images: np.ndarray, peaks: ChannelPeaks, field: ReceptiveField, channel: int, k: int) -> list:
    """The crops of the k images that excite a channel most, each around its peak unit's receptive field.

    Inputs:
    - images: (N, S, S, 3) uint8, the images `peaks` was computed on
    - peaks: a `ChannelPeaks` of the layer (k at most its top_activations' k)
    - field: the layer's `ReceptiveField`
    - channel: the channel
    - k: number of patches
    Returns:
    - list of k (h, w, 3) uint8 crops (smaller than the field where it leaves the image)
    """
    crops = []
    for j, n in enumerate(peaks.top(channel, k)):
        top, bottom, left, right = field.box(peaks.rows[channel, j], peaks.cols[channel, j], images.shape[1])
        crops.append(images[n, top:bottom, left:right])
    return crops

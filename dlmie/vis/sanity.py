"""Sanity checks for saliency maps: do they depend on what the network learned, and on where the object is?

- cascading randomization (Adebayo et al. 2018, "Sanity checks for saliency maps"): re-draw the
  weights layer by layer from the top; a map that explains the network must change with them
- localization on the data set's bounding boxes: the pointing game (Zhang et al. 2016: does the
  map's maximum fall in the box?) and the share of the map's energy inside the box (as in
  Score-CAM, Wang et al. 2020), each next to a centered Gaussian that knows nothing of the image
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlmie.vis.saliency import input_gradient


@dataclass
class Randomization:
    """What `cascading_randomization` returns; L is the number of randomized layers.

    - layers: ["original", then each layer's name in the order randomized: top (scores) first]
    - maps: (L+1, N, S, S) saliency max_c |gradient| after each step (maps[0]: the trained network)
    - spearman: (L+1, N) Spearman rank correlation of each image's map with its original map
      (Adebayo's "absolute value" version, since the map is built from |gradient|)
    - spearman_signed: (L+1, N) the same for the signed gradient summed over channels ("no abs")
    """

    layers: list
    maps: np.ndarray
    spearman: np.ndarray
    spearman_signed: np.ndarray


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps, flattened; 0 when one map is constant (it has no ranking)."""
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    from scipy.stats import spearmanr  # scipy.stats takes 0.5-1 s to import: only where a rank is asked for

    return float(spearmanr(a, b).statistic)


def randomized_layers(net) -> list[str]:
    """The layers with weights (a `{layer}.W` parameter), top first: scores, conv7, ..., conv1."""
    return [layer for layer in reversed(net.layer_names) if f"{layer}.W" in net.params]


def cascading_randomization(net, x: np.ndarray, labels, guided: bool = False, seed: int = 0) -> Randomization:
    """Randomize the network cumulatively from the top and compare saliency maps with the originals.

    Step t re-draws the weights and biases of the t-th layer from the top (keeping the layers
    above it random): each array from N(0, s^2), s the standard deviation of its trained values,
    so activations keep their scale. Batch norm (scale, shift and running statistics) is kept:
    only what the filters learned is destroyed, and the stored statistics keep the activations
    from exploding or dying, so the maps stay defined. The shared variables are changed in place
    and restored at the end, also when an error interrupts.
    Inputs:
    - net: a `Network` with class scores, whose params follow the `{layer}.W`, `{layer}.b` naming
    - x: (N, 3, S, S) float32 model input
    - labels: (N,) int, the class whose score each map explains
    - guided: explain with guided backprop instead of vanilla gradients
    - seed: of the random weights
    Returns a `Randomization`.
    """
    rng = np.random.default_rng(seed)
    layers = randomized_layers(net)
    saved = {name: p.get_value() for name, p in net.params.items()}  # get_value copies
    gradients = [input_gradient(net, x, labels, guided)]
    try:
        for layer in layers:
            for name in (f"{layer}.W", f"{layer}.b"):
                if name in net.params:
                    trained = saved[name]
                    random = rng.standard_normal(trained.shape) * trained.std()
                    net.params[name].set_value(random.astype(trained.dtype))
            gradients.append(input_gradient(net, x, labels, guided))
    finally:
        for name, value in saved.items():
            net.params[name].set_value(value)
    gradients = np.stack(gradients)  # (L+1, N, 3, S, S)
    maps, signed = np.abs(gradients).max(axis=2), gradients.sum(axis=2)
    spearman = np.array([[_rank_correlation(m[i], maps[0, i]) for i in range(len(x))] for m in maps])
    spearman_signed = np.array([[_rank_correlation(m[i], signed[0, i]) for i in range(len(x))] for m in signed])
    return Randomization(["original", *layers], maps, spearman, spearman_signed)


def box_masks(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean masks of boxes.

    Inputs:
    - boxes: (N, 4) int x0, y0, x1, y1, inclusive pixel coordinates (Tiny-ImageNet's convention)
    - height, width: the map size
    Returns:
    - (N, height, width) bool, True inside each box
    """
    rows, cols = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
    x0, y0, x1, y1 = (np.asarray(boxes)[:, i, None, None] for i in range(4))
    return (rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)


def pointing_game(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Zhang et al. (2016): is each map's maximum inside its box? (The first maximum on ties.)

    Inputs:
    - maps: (N, H, W) float
    - boxes: (N, 4) x0, y0, x1, y1 inclusive
    Returns:
    - (N,) bool hits
    """
    n, h, w = maps.shape
    rows, cols = np.unravel_index(maps.reshape(n, -1).argmax(axis=1), (h, w))
    return box_masks(boxes, h, w)[np.arange(n), rows, cols]


def energy_in_box(maps: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The share of each map's total inside its box, sum_box M / sum M.

    Inputs:
    - maps: (N, H, W) non-negative float
    - boxes: (N, 4) x0, y0, x1, y1 inclusive
    Returns:
    - (N,) float in [0, 1]; a uniform map scores the box's share of the image
    """
    n, h, w = maps.shape
    inside = np.where(box_masks(boxes, h, w), maps, 0).sum(axis=(1, 2))
    return inside / np.maximum(maps.sum(axis=(1, 2)), 1e-12)


def center_prior(n: int, height: int, width: int, sigma: float = 0.25) -> np.ndarray:
    """The baseline every localization score must beat: a centered isotropic Gaussian.

    Photographers center their subject, so a map that ignores the image already "finds" many objects.
    Inputs:
    - n: number of maps
    - height, width: map size
    - sigma: standard deviation as a fraction of max(height, width)
    Returns:
    - (n, height, width) float32, exp(-d^2 / (2 (sigma * size)^2)) with d the distance to the center
    """
    rows, cols = np.arange(height)[:, None] - (height - 1) / 2, np.arange(width)[None, :] - (width - 1) / 2
    spread = sigma * max(height, width)
    prior = np.exp(-(rows ** 2 + cols ** 2) / (2 * spread ** 2)).astype(np.float32)
    return np.broadcast_to(prior, (n, height, width))


def localization(maps_by_method: dict, boxes: np.ndarray, center_sigma: float = 0.25) -> dict:
    """Pointing game and in-box energy of several saliency methods and of the center prior.

    Inputs:
    - maps_by_method: method name -> (N, H, W) non-negative maps of the same N images
    - boxes: (N, 4) x0, y0, x1, y1 inclusive, each image's object box
    - center_sigma: the `center_prior` width
    Returns:
    - method name -> {"pointing_game": hit rate in [0, 1], "energy_in_box": mean share in [0, 1]},
      the given methods in order, then "center prior"
    """
    n, h, w = next(iter(maps_by_method.values())).shape
    methods = {**maps_by_method, "center prior": center_prior(n, h, w, center_sigma)}
    return {name: {"pointing_game": float(pointing_game(m, boxes).mean()),
                   "energy_in_box": float(energy_in_box(m, boxes).mean())}
            for name, m in methods.items()}

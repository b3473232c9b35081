"""Feature inversion (Mahendran & Vedaldi 2015, "Understanding deep image representations by
inverting them"): which images does a layer take for the same as a given one?

Given the representation Phi_0 = Phi(x_0) of an image at one layer, find

    x* = argmin_x  ||Phi(x) - Phi_0||^2 / ||Phi_0||^2 + lambda_alpha R_alpha(x) + lambda_TV R_TV(x)

by gradient descent with momentum from random noise, i.e. `ascend` on the negative, with the
pixels kept in the valid range. What survives in x* is what the layer keeps of x_0; the priors
(`dlmie.vis.priors`) fill in the rest with something smooth rather than with noise.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from dlmie.vis.activations import layer_activations
from dlmie.vis.ascent import ascend, random_images
from dlmie.vis.objectives import feature_distance, relative_feature_distance
from dlmie.vis.priors import alpha_norm, total_variation
from dlmie.vis.transforms import ClipRange


class Inversion(NamedTuple):
    """What `invert` returns.

    - x: (1, 3, S, S) float32, the reconstruction (model input)
    - error: ||Phi(x) - Phi_0||^2 / ||Phi_0||^2 reached, the relative feature error
    - losses: (steps,) float, the full objective (data term + priors) at each step
    """

    x: np.ndarray
    error: float
    losses: np.ndarray


def relative_feature_error(phi: np.ndarray, phi0: np.ndarray) -> float:
    """||phi - phi0||^2 / ||phi0||^2 of two representations of the same shape."""
    return float(relative_feature_distance(np.asarray(phi, np.float64)[None], np.asarray(phi0, np.float64)))


def invert(net, x0: np.ndarray, layer: str, steps: int = 200, lr: float = 0.05, lambda_alpha: float = 1e-4,
           alpha: float = 6.0, lambda_tv: float = 0.01, beta: float = 2.0, scale: tuple = (1.0, 1.0),
           momentum: float = 0.9, seed: int = 0, callback: Callable | None = None, progress: bool = True) -> Inversion:
    """Reconstruct an image from its representation at one layer.

    Inputs:
    - net: a `dlmie.models.network.Network`
    - x0: (1, 3, S, S) float32, the model input of the image whose representation is inverted
    - layer: the layer's name ("scores" too)
    - steps, lr, momentum: the descent; lr (model-input units per normalized step) decays
      linearly to zero over the steps, so that the last steps settle
    - lambda_alpha, alpha: weight and exponent of the alpha-norm prior
    - lambda_tv, beta: weight and exponent of the total-variation prior
    - scale: (B, V), the typical pixel norm and neighbour difference of natural images in model
      input units (`dlmie.vis.priors.natural_scale`), which normalize the priors
    - seed: of the random starting image
    - callback: function(step, x, value), as in `ascend`
    - progress: a progress bar
    Returns an `Inversion`.
    """
    phi0 = layer_activations(net, x0)[layer][0]
    B, V = scale
    loss = (feature_distance(layer, phi0) + lambda_alpha * alpha_norm(alpha, B)
            + lambda_tv * total_variation(beta, V))
    schedule = lr * (1 - np.arange(steps) / steps)
    start = random_images(net, 1, std=0.1 * B, seed=seed, size=x0.shape[-1])
    result = ascend(net, -loss, start, steps, schedule, transforms=[ClipRange(net.preprocessing)],
                    momentum=momentum, callback=callback, progress=progress)
    error = relative_feature_error(layer_activations(net, result.x)[layer][0], phi0)
    return Inversion(result.x, error, -result.values)

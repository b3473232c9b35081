"""Natural-image priors of Mahendran & Vedaldi (2015, "Understanding deep image representations by
inverting them"), as `Objective`s on the input x: penalties to subtract from what is maximized.

- alpha-norm: R_alpha(x) = 1 / (H W B^alpha) * sum_v ||x(v)||^alpha, where x(v) is the
  colour vector of pixel v and B the typical pixel norm. A large alpha (6 in the paper) leaves
  typical pixels alone and stops a few from growing without bound.
- total variation: R_TV(x) = 1 / (H W V^beta) * sum_{v,k} ((x(v + e_x, k) - x(v, k))^2 +
  (x(v + e_y, k) - x(v, k))^2)^(beta / 2), where V is the typical difference between neighbouring
  pixels. It penalizes the high-frequency patterns that gradient ascent produces; beta = 2 blurs
  edges, beta = 1 (TV proper) keeps them, beta between trades the two.

Dividing by B and V (the paper's normalization) makes both close to 1 for a natural image
whatever the model's preprocessing, so the weights lambda transfer between models;
`natural_scale` measures B and V on real images.
"""

from __future__ import annotations

import numpy as np

from dlmie.vis.objectives import Objective

# Keeps the gradient of (d^2)^(beta / 2) finite where neighbouring pixels are equal and beta < 2.
TV_EPS = 1e-8


def alpha_norm_value(x, alpha: float = 6.0, B: float = 1.0):
    """R_alpha of images, symbolic or NumPy.

    Inputs:
    - x: (N, C, H, W)
    - alpha: the exponent
    - B: the typical pixel norm (same units as x)
    Returns a scalar: sum over images of (1 / (H W)) sum_v (||x(v)|| / B)^alpha.
    """
    # Write it with array methods and operators only (x ** 2, .sum(axis=...), .mean(axis=...)):
    # the same lines then run on NumPy arrays and on PyTensor variables. ||x(v)||^alpha is
    # (||x(v)||^2)^(alpha / 2): no square root, whose gradient is infinite at 0.
    ### BEGIN SOLUTION
    squared = (x ** 2).sum(axis=1) / B ** 2  # (N, H, W): ||x(v)||^2 / B^2
    return (squared ** (alpha / 2)).mean(axis=(1, 2)).sum()
    ### END SOLUTION


def total_variation_value(x, beta: float = 2.0, V: float = 1.0):
    """R_TV of images, symbolic or NumPy.

    As in the authors' code, the image is extended by repeating its last row and column: a pixel
    of the last column has dx = 0, one of the last row dy = 0. The sum runs over every pixel but
    the bottom-right one, whose differences are both zero (it is regularized through its
    neighbours' terms). TV_EPS, added inside the power, keeps the gradient finite for beta < 2.
    Inputs:
    - x: (N, C, H, W)
    - beta: the exponent
    - V: the typical neighbour difference (same units as x)
    Returns a scalar: sum over images of (1 / (H W)) sum_{v,k} ((dx^2 + dy^2) / V^2 + TV_EPS)^(beta / 2),
    with dx = x(v + e_x, k) - x(v, k) and dy = x(v + e_y, k) - x(v, k).
    """
    # Array methods, slicing and operators only, so that NumPy arrays and PyTensor variables both
    # work: x[:, :, :, 1:] - x[:, :, :, :-1] is dx of every pixel but the last column's. Three sums:
    # the pixels with both differences, the last row (dx only), the last column (dy only).
    ### BEGIN SOLUTION
    dx = x[:, :, :, 1:] - x[:, :, :, :-1]  # (N, C, H, W - 1)
    dy = x[:, :, 1:, :] - x[:, :, :-1, :]  # (N, C, H - 1, W)
    squared = (dx[:, :, :-1] ** 2 + dy[:, :, :, :-1] ** 2, dx[:, :, -1] ** 2, dy[:, :, :, -1] ** 2)
    interior, last_row, last_column = (((d / V ** 2 + TV_EPS) ** (beta / 2)).sum() for d in squared)
    return (interior + last_row + last_column) / (x.shape[2] * x.shape[3])
    ### END SOLUTION


def alpha_norm(alpha: float = 6.0, B: float = 1.0) -> Objective:
    """R_alpha(x) as an Objective (a penalty: subtract it). Inputs as `alpha_norm_value`."""
    return Objective(f"R_alpha={alpha:g}", ("alpha_norm", float(alpha), float(B)),
                     lambda scores, activations, x: alpha_norm_value(x, alpha, B))


def total_variation(beta: float = 2.0, V: float = 1.0) -> Objective:
    """R_TV(x) as an Objective (a penalty: subtract it). Inputs as `total_variation_value`."""
    return Objective(f"R_TV^{beta:g}", ("total_variation", float(beta), float(V)),
                     lambda scores, activations, x: total_variation_value(x, beta, V))


def natural_scale(x: np.ndarray) -> tuple[float, float]:
    """The typical pixel norm B and neighbour difference V of real images, for the normalizations.

    Inputs:
    - x: (N, C, H, W) preprocessed real images
    Returns:
    - B: mean over pixels of ||x(v)||, the colour vector's Euclidean norm
    - V: mean over pixels and channels of sqrt(dx^2 + dy^2)
    """
    x = np.asarray(x, np.float64)
    B = float(np.sqrt((x ** 2).sum(axis=1)).mean())
    dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    V = float(np.sqrt(dx ** 2 + dy ** 2).mean())
    return B, V


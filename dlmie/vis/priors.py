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
    Returns a scalar: sum over images n of (1 / (H W)) sum_v (||x_n(v)||^2 / B^2)^(alpha / 2),
    with ||x_n(v)||^2 = sum_k x[n, k, v]^2 the squared norm of pixel v's colour vector (written
    as a power of the squared norm: no square root, whose gradient is infinite at 0). The same
    code must run on NumPy arrays and on PyTensor variables: array methods and operators only.
    """
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
    with dx = x(v + e_x, k) - x(v, k) and dy = x(v + e_y, k) - x(v, k) (e_x: one column to the
    right, e_y: one row down). The same code must run on NumPy arrays and on PyTensor variables:
    slicing, array methods and operators only, no assignment into an array.
    """
    ### BEGIN SOLUTION
    dx = x[:, :, :, 1:] - x[:, :, :, :-1]  # (N, C, H, W - 1)
    dy = x[:, :, 1:, :] - x[:, :, :-1, :]  # (N, C, H - 1, W)
    squared = (dx[:, :, :-1] ** 2 + dy[:, :, :, :-1] ** 2, dx[:, :, -1] ** 2, dy[:, :, :, -1] ** 2)
    interior, last_row, last_column = (((d / V ** 2 + TV_EPS) ** (beta / 2)).sum() for d in squared)
    return (interior + last_row + last_column) / (x.shape[2] * x.shape[3])
    ### END SOLUTION


def alpha_norm_gradient(x: np.ndarray, alpha: float = 6.0, B: float = 1.0) -> np.ndarray:
    """The gradient of R_alpha (`alpha_norm_value`) with respect to the images, in NumPy.

    Mahendran & Vedaldi (2015), section 3.2: derive d R_alpha / d x[n, k, v] from
    R_alpha(x) = sum_n (1 / (H W)) sum_v (||x_n(v)||^2 / B^2)^(alpha / 2),
    where ||x_n(v)||^2 = sum_k x[n, k, v]^2. Each image's term depends on its own pixels only,
    and a pixel's term on its C channels only.
    Inputs:
    - x: (N, C, H, W) float64 images, with no all-zero pixel where alpha < 2 (R_alpha is not
      differentiable there)
    - alpha: the exponent
    - B: the typical pixel norm
    Returns:
    - dx: (N, C, H, W), d R_alpha / d x
    """
    ### BEGIN SOLUTION
    n, c, h, w = x.shape
    squared = (x ** 2).sum(axis=1, keepdims=True) / B ** 2  # (N, 1, H, W): ||x(v)||^2 / B^2
    return alpha / (h * w * B ** 2) * squared ** (alpha / 2 - 1) * x
    ### END SOLUTION


def total_variation_gradient(x: np.ndarray, beta: float = 2.0, V: float = 1.0) -> np.ndarray:
    """The gradient of R_TV (`total_variation_value`, with its border rule and TV_EPS) with
    respect to the images, in NumPy.

    Mahendran & Vedaldi (2015), section 3.2: derive d R_TV / d x[n, k, i, j] from
    R_TV(x) = sum_n (1 / (H W)) sum_{k, i, j} q[n, k, i, j]^(beta / 2),
    q = (dx^2 + dy^2) / V^2 + TV_EPS,
    dx[n, k, i, j] = x[n, k, i, j + 1] - x[n, k, i, j] (0 in the last column, j = W - 1),
    dy[n, k, i, j] = x[n, k, i + 1, j] - x[n, k, i, j] (0 in the last row, i = H - 1),
    the sum leaving out the bottom-right pixel (a constant: both its differences are 0).
    A pixel x[n, k, i, j] appears in its own term (in dx and dy, with sign -1), in the term of its
    left neighbour (i, j - 1) through that one's dx, and in the term of the pixel above
    (i - 1, j) through that one's dy (with sign +1); pixels of the first row or column have no
    such neighbour. Channels and images do not interact. For beta < 2 the power beta / 2 - 1 is
    negative: TV_EPS keeps it finite where a pixel equals both its neighbours.
    Inputs:
    - x: (N, C, H, W) float64 images (H or W may be 1)
    - beta: the exponent
    - V: the typical neighbour difference
    Returns:
    - dx: (N, C, H, W), d R_TV / d x
    """
    ### BEGIN SOLUTION
    n, c, h, w = x.shape
    dx = np.zeros_like(x)
    dx[:, :, :, :-1] = x[:, :, :, 1:] - x[:, :, :, :-1]
    dy = np.zeros_like(x)
    dy[:, :, :-1, :] = x[:, :, 1:, :] - x[:, :, :-1, :]
    # d q^(beta/2) / d(dx) = (beta / 2) q^(beta/2 - 1) * 2 dx / V^2, and the same for dy
    weight = beta / (h * w * V ** 2) * ((dx ** 2 + dy ** 2) / V ** 2 + TV_EPS) ** (beta / 2 - 1)
    gx, gy = weight * dx, weight * dy
    grad = -gx - gy  # the pixel's own term: d(dx)/dx = d(dy)/dx = -1
    grad[:, :, :, 1:] += gx[:, :, :, :-1]  # the left neighbour's dx: +1
    grad[:, :, 1:, :] += gy[:, :, :-1, :]  # the upper neighbour's dy: +1
    return grad
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


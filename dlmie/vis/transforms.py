"""Regularizers of Yosinski et al. (2015, "Understanding neural networks through deep
visualization") and jitter, as NumPy steps between the compiled gradient steps of
`dlmie.vis.ascent.ascend`.

Gradient ascent on a class score alone finds high-frequency patterns that no camera would
produce. Yosinski et al. apply, after each update x <- x + lr * g, a regularization r(x):

- L2 decay: x <- (1 - theta) x, which pulls every pixel towards 0, the mean colour (the model's
  preprocessing subtracts the data set's mean), so pixels that do not help fade away;
- Gaussian blur every k steps, which removes the high frequencies ascent favours;
- clipping pixels of small norm: the pixels whose colour vector ||x(v)|| is below a percentile
  are set to 0 (the mean colour), keeping only the strongest parts of the image;
- clipping pixels of small contribution: |sum_c x_c(v) g_c(v)| is the first-order change of the
  objective if pixel v were set to 0; pixels below a percentile of it are set to 0.

Jitter (Mordvintsev et al. 2015) shifts the image by a few random pixels before each gradient
and shifts the gradient back, so that no pattern can rely on an exact pixel grid.

Each transform has three hooks, called by `ascend` at every step:
    view = before(x, step)          the image the gradient is computed on (jitter: shifted)
    g = undo(g)                     the gradient mapped back to x's pixels (jitter: shifted back)
    x = after(x, g, step)           the regularization of the updated image
All arrays are (N, C, H, W) float32 model inputs; percentiles are taken per image.
"""

from __future__ import annotations

import numpy as np

from dlmie.images import Preprocessing, random_shift, roll


class Transform:
    """A step around the gradient; every hook defaults to doing nothing."""

    def before(self, x: np.ndarray, step: int) -> np.ndarray:
        return x

    def undo(self, grad: np.ndarray) -> np.ndarray:
        return grad

    def after(self, x: np.ndarray, grad: np.ndarray, step: int) -> np.ndarray:
        return x

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class Jitter(Transform):
    """A random circular shift of up to `max_shift` pixels before the gradient, undone on the
    gradient, so that x itself is never shifted."""

    def __init__(self, max_shift: int, seed: int = 0):
        self.max_shift = max_shift
        self._rng = np.random.default_rng(seed)
        self._shift = (0, 0)

    def before(self, x, step):
        self._shift = random_shift(self.max_shift, self._rng)
        return roll(x, *self._shift)

    def undo(self, grad):
        return roll(grad, -self._shift[0], -self._shift[1])


class L2Decay(Transform):
    """x <- (1 - theta) x: shrinks the image towards 0, the mean colour (0 <= theta < 1).

    This is the ascent step on the term -(theta / (2 lr)) ||x||^2 added to the objective; mind the
    sign, a decay that multiplies by (1 + theta) makes the image explode."""

    def __init__(self, theta: float):
        if not 0 <= theta < 1:
            raise ValueError(f"the decay theta must be in [0, 1), got {theta}")
        self.theta = theta

    def after(self, x, grad, step):
        return x * np.float32(1 - self.theta)


def gaussian_blur(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Yosinski et al.'s blur regularizer (2015, section 3): a Gaussian filter over space only,
    each channel of each image on its own, as scipy.ndimage's with mode "reflect".

    The 2-d Gaussian is separable, G(a, b) = g(a) g(b), so the blur is a 1-d filter along the
    rows' axis followed by the same filter along the columns' axis:
        g(t) = exp(-t^2 / (2 sigma^2)) / Z,  t = -r, ..., r,  r = floor(truncate * sigma + 0.5),
    with Z making the 2r + 1 weights sum to 1, and along an axis of length L
        out[i] = sum_{t=-r..r} g(t) x~[i + t],
    where x~ is x extended beyond its borders by reflection about the edge, the edge pixel
    repeated: ... x[1] x[0] | x[0] x[1] ... x[L-1] | x[L-1] x[L-2] ..., again and again where r
    is longer than the image (a 1-pixel axis is extended by copies of its pixel). The weights
    sum to 1 and the reflection loses no pixel, so each channel's mean is kept.
    Inputs:
    - x: (N, C, H, W) float images (any (..., H, W) array)
    - sigma: standard deviation of the Gaussian, in pixels; 0: no blur (a copy of x)
    - truncate: the kernel's radius in standard deviations
    Returns:
    - an array of x's shape and dtype (computed in float64)
    Raises:
    - ValueError("sigma must be >= 0, got ...") for a negative sigma
    """
    ### BEGIN SOLUTION
    x = np.asarray(x)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x.copy()
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    weights = np.exp(-t ** 2 / (2.0 * sigma ** 2))
    weights /= weights.sum()
    out = x.astype(np.float64)
    for axis in (out.ndim - 2, out.ndim - 1):
        widths = [(0, 0)] * out.ndim
        widths[axis] = (radius, radius)
        padded = np.pad(out, widths, mode="symmetric")
        length = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(k, k + length), axis=axis) for k, w in enumerate(weights))
    return out.astype(x.dtype)
    ### END SOLUTION


class Blur(Transform):
    """A Gaussian blur of width `sigma` pixels every `every` steps (spatial only, per channel)."""

    def __init__(self, sigma: float, every: int = 1):
        self.sigma, self.every = sigma, every

    def after(self, x, grad, step):
        return gaussian_blur(x, self.sigma) if (step + 1) % self.every == 0 else x


def zero_below_percentile(x: np.ndarray, score: np.ndarray, percentile: float) -> np.ndarray:
    """Yosinski et al.'s pixel clipping (2015, section 3): in each image n, the pixels whose score
    is below the image's p-th percentile of scores (p = percentile) are set to 0 (the mean
    colour) on every channel:
        out[n, k, i, j] = x[n, k, i, j] if score[n, i, j] >= T_n else 0,
    with T_n the p-th percentile of the H W scores of image n, interpolated linearly between
    order statistics (NumPy's default definition).

    Inputs:
    - x: (N, C, H, W) images
    - score: (N, H, W), one number per pixel (its norm, or its contribution to the objective)
    - percentile: p in [0, 100]
    Returns:
    - a new (N, C, H, W) array of x's dtype; p = 0 keeps every pixel
    """
    ### BEGIN SOLUTION
    threshold = np.percentile(score.reshape(len(score), -1), percentile, axis=1)
    keep = score >= threshold[:, None, None]
    return x * keep[:, None]
    ### END SOLUTION


class ClipNorm(Transform):
    """Sets to 0 the pixels whose colour norm ||x(v)|| is below the image's `percentile`-th percentile."""

    def __init__(self, percentile: float):
        self.percentile = percentile

    def after(self, x, grad, step):
        return zero_below_percentile(x, np.sqrt((x ** 2).sum(axis=1)), self.percentile)


class ClipContribution(Transform):
    """Sets to 0 the pixels whose contribution |sum_c x_c(v) g_c(v)| -- the first-order change of the
    objective if the pixel were 0 -- is below the image's `percentile`-th percentile."""

    def __init__(self, percentile: float):
        self.percentile = percentile

    def after(self, x, grad, step):
        return zero_below_percentile(x, np.abs((x * grad).sum(axis=1)), self.percentile)


class ClipRange(Transform):
    """Keeps every pixel a colour the camera could have produced: x clipped to the model's valid
    input range (`Preprocessing.valid_range`)."""

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def after(self, x, grad, step):
        return self.preprocessing.clip(x)


def yosinski(preprocessing: Preprocessing, decay: float = 0.0, blur_sigma: float = 0.0, blur_every: int = 1,
             norm_percentile: float = 0.0, contribution_percentile: float = 0.0, jitter: int = 0,
             seed: int = 0) -> list[Transform]:
    """The regularizers of Yosinski et al. (2015), each left out when its setting is 0, in the
    paper's order (decay, blur, norm clipping, contribution clipping), with jitter first and
    clipping to the valid pixel range last.

    Returns a list of `Transform` for `ascend(..., transforms=...)`.
    """
    steps = [Jitter(jitter, seed)] if jitter else []
    steps += [L2Decay(decay)] if decay else []
    steps += [Blur(blur_sigma, blur_every)] if blur_sigma else []
    steps += [ClipNorm(norm_percentile)] if norm_percentile else []
    steps += [ClipContribution(contribution_percentile)] if contribution_percentile else []
    return steps + [ClipRange(preprocessing)]

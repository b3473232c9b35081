"""The one ascent loop behind every visualization by optimization.

    x = ascend(net, class_score(76), random_images(net, 1), steps=200, lr=0.5,
               transforms=yosinski(net.preprocessing, decay=0.01, blur_sigma=0.5, blur_every=4)).x

Class models (Simonyan et al. 2014; Yosinski et al. 2015), channel and neuron visualizations,
DeepDream (`deep_dream`, on a real image) and feature inversion (`dlmie.vis.inversion`,
minimization = ascent on the negative) all run here: an objective's value and gradient come
from one compiled PyTensor function, built once per (network, objective key) and kept for the
network's lifetime; the regularizers between steps are NumPy (`dlmie.vis.transforms`).
"""

from __future__ import annotations

import warnings
import weakref
from typing import Callable, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from dlmie.images import resize_bilinear
from dlmie.vis.objectives import Objective, mean_square_activation

# network -> {objective key: compiled (x, *values) -> (value, gradient)}; entries go with the network.
_COMPILED = weakref.WeakKeyDictionary()


def gradient_function(net, objective: Objective) -> Callable:
    """The compiled (x, *objective.values) -> (value, d value / dx) of an objective, built once
    per network and objective key (so a new class, channel or target does not recompile).

    Inputs:
    - net: a `dlmie.models.network.Network`
    - objective: an `Objective`
    Returns the compiled function; x is (N, 3, H, W) float32, value a float, the gradient x's shape.
    """
    functions = _COMPILED.setdefault(net, {})
    if objective.key not in functions:
        variables = [i.variable() for i in objective.inputs]

        def build(scores, activations, *values):
            return objective.build(scores, activations, net.x, *values)

        functions[objective.key] = net.gradient_function(build, *variables)
    return functions[objective.key]


class AscentResult(NamedTuple):
    """What `ascend` returns: x (N, 3, H, W) float32, the final images; values (steps,) float,
    the objective (summed over the batch) at each step, before that step's update."""

    x: np.ndarray
    values: np.ndarray


class Snapshots:
    """A callback for `ascend` that keeps a copy of the images every `every` steps.

    Attributes after the run: steps, list of step numbers (1-based); images, list of (N, 3, H, W).
    """

    def __init__(self, every: int):
        self.every, self.steps, self.images = every, [], []

    def __call__(self, step: int, x: np.ndarray, value: float) -> None:
        if (step + 1) % self.every == 0:
            self.steps.append(step + 1)
            self.images.append(x.copy())


def ascent_step(gradient: Callable, x: np.ndarray, velocity: np.ndarray, step: int, lr: float, transforms=(),
                normalize: bool = True, momentum: float = 0.0) -> tuple:
    """One step of regularized gradient ascent (Yosinski et al. 2015, section 3), as `ascend` takes it.

    With the transforms t_1, ..., t_m in the list's order, each made of three maps (its hooks, see
    dlmie.vis.transforms.Transform): S_i(image, step) applied to the image the gradient is taken
    on, U_i(gradient) mapping a gradient back to x's pixels, and r_i(image, g, step) regularizing
    the updated image:
        view = S_m(... S_2(S_1(x, step), step) ..., step)
        (value, g) = the objective and its gradient at view, from `gradient`
        g <- U_1(U_2(... U_m(g) ...))                       the undos in reverse order
        g <- g / (mean |g| + 1e-12)   per image, the mean over its C H W values (with `normalize`)
        v <- momentum v + g
        x <- r_m(... r_1(x + lr v, g, step) ..., g, step)   with the g above
    Inputs:
    - gradient: function of view (N, C, H, W) -> (value, g): the objective summed over the batch
      (a float) and its gradient (N, C, H, W) at the images view
    - x: (N, C, H, W) the current images (model input)
    - velocity: (N, C, H, W) the momentum buffer v (zeros at the first step)
    - step: the step's number, from 0, which the transforms read (blur every k steps)
    - lr: the step size
    - transforms: a list of `dlmie.vis.transforms.Transform`
    - normalize: divide each image's gradient by its mean absolute value
    - momentum: heavy-ball momentum (0: plain gradient ascent)
    Returns a tuple of:
    - x: (N, C, H, W) the images after the step and the regularizers
    - velocity: (N, C, H, W) the new momentum buffer
    - value: the objective returned by `gradient`
    - g: (N, C, H, W) the gradient as used: mapped back by the transforms, then normalized
    """
    ### BEGIN SOLUTION
    view = x
    for t in transforms:
        view = t.before(view, step)
    value, g = gradient(view)
    for t in reversed(transforms):
        g = t.undo(g)
    if normalize:
        g = g / (np.abs(g).mean(axis=(1, 2, 3), keepdims=True) + 1e-12)
    velocity = momentum * velocity + g
    x = x + lr * velocity
    for t in transforms:
        x = t.after(x, g, step)
    return x, velocity, value, g
    ### END SOLUTION


def ascend(net, objective: Objective, x0: np.ndarray, steps: int, lr, transforms=(),
           normalize: bool = True, momentum: float = 0.0, callback: Callable | None = None,
           progress: bool = True) -> AscentResult:
    """Gradient ascent on an objective with respect to the input images.

    Each step is `ascent_step`: the gradient at the transformed view of x, normalized, a
    momentum step, then the regularizers.
    Inputs:
    - net: a `Network`
    - objective: the `Objective` to maximize (to minimize a loss, pass its negative)
    - x0: (N, 3, H, W) float32 starting images (model input); H, W may differ from net.input_size
      when the objective reads only convolutional layers
    - steps: number of steps
    - lr: the step size, a float or one per step (a schedule); with `normalize`, in model-input
      units per step
    - transforms: a list of `dlmie.vis.transforms.Transform`
    - normalize: divide each image's gradient by its mean absolute value, so that lr does not
      depend on the objective's scale (as in DeepDream)
    - momentum: heavy-ball momentum (0: plain gradient ascent)
    - callback: function(step, x, value) called after every step (see `Snapshots`)
    - progress: show a tqdm progress bar with the current value
    Returns an `AscentResult`.
    """
    f = gradient_function(net, objective)
    x = np.array(x0, np.float32)
    velocity = np.zeros_like(x)
    rates = np.broadcast_to(np.asarray(lr, np.float32), (steps,))
    values = np.empty(steps)
    moved = np.zeros(len(x), bool)  # whether each image's gradient was ever nonzero
    bar = tqdm(range(steps), desc=objective.name, leave=False, disable=not progress)
    for step in bar:
        x, velocity, values[step], g = ascent_step(lambda view: f(view, *objective.values), x, velocity, step,
                                                   rates[step], transforms, normalize, momentum)
        moved |= np.any(g != 0, axis=(1, 2, 3))
        if callback is not None:
            callback(step, x, float(values[step]))
        if step % 10 == 0:
            bar.set_postfix(value=f"{values[step]:.4g}")
    if steps and not moved.all():
        warnings.warn(f"{objective.name}: the gradient was 0 at every step for images {np.flatnonzero(~moved).tolist()} "
                      "(a ReLU unit silent on them); start from noisier images (random_images(std=...))", stacklevel=2)
    return AscentResult(x, values)


def random_images(net, n: int = 1, std: float = 0.1, seed: int = 0, size: int | None = None) -> np.ndarray:
    """Starting images for ascent: the mean colour (0 in model input) plus a little Gaussian noise.

    Inputs:
    - net: a `Network` (for its input size)
    - n: number of images
    - std: noise standard deviation in model-input units
    - seed: of the noise
    - size: height = width (default net.input_size)
    Returns:
    - (n, 3, size, size) float32
    """
    size = size or net.input_size
    return (std * np.random.default_rng(seed).standard_normal((n, 3, size, size))).astype(np.float32)


def deep_dream(net, x: np.ndarray, layer: str, octaves: int = 3, octave_scale: float = 1.4, steps: int = 20,
               lr: float = 0.02, transforms=(), progress: bool = True) -> np.ndarray:
    """DeepDream (Mordvintsev et al. 2015) with octaves: ascent on the mean square of a layer's
    activations, from the coarsest scale of the image to the finest, carrying the detail added at
    each scale up to the next, so that patterns form at several sizes.

    Inputs:
    - net: a `Network`; `layer` must be convolutional, since the image sizes vary
    - x: (N, 3, H, W) float32 model input, the real image(s)
    - layer: the layer whose activations grow
    - octaves: number of scales; the smallest is (H, W) / octave_scale^(octaves - 1)
    - octave_scale: ratio between successive scales
    - steps: ascent steps per octave
    - lr: step size of the normalized gradient (model-input units)
    - transforms: e.g. [Jitter(4), ClipRange(net.preprocessing)]
    - progress: progress bars
    Returns:
    - (N, 3, H, W) float32, the dreamed image(s)
    """
    objective = mean_square_activation(layer)
    base = np.asarray(x, np.float32)
    height, width = base.shape[2:]
    sizes = [(round(height / octave_scale ** k), round(width / octave_scale ** k)) for k in range(octaves)][::-1]
    detail = np.zeros((*base.shape[:2], *sizes[0]), np.float32)
    for size in sizes:
        scaled = resize_bilinear(base, size)
        dreamed = ascend(net, objective, scaled + resize_bilinear(detail, size), steps, lr,
                         transforms, progress=progress).x
        detail = dreamed - scaled
    return dreamed

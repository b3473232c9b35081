"""Saliency: which input pixels a class score is most sensitive to.

- vanilla gradients (Simonyan, Vedaldi & Zisserman 2014): M_ij = max_c |d s_k / d x_cij|
- SmoothGrad (Smilkov et al. 2017): that map averaged over noisy copies of the image
- guided backpropagation (Springenberg et al. 2015): the gradient through a copy of the graph
  whose ReLUs pass back only positive gradients through positive inputs
- fooling images (Szegedy et al. 2014; cs231n assignment 3): gradient ascent on a wrong class's
  score until the network predicts it

Every function takes the model input x = net.preprocessing(images), (N, 3, S, S) float32, and one
class per image. The objective is `objectives.class_score`, each image's own raw class score; its
gradient is compiled by `ascent.gradient_function`, once per network, and reads the network's
shared variables, so it follows in-place weight changes (`dlmie.vis.sanity`).

    x = net.preprocessing(images)                  # (N, S, S, 3) uint8 -> (N, 3, S, S)
    maps = saliency_map(net, x, labels)            # (N, S, S)
    maps = smoothgrad(net, x, labels, samples=50)  # (N, S, S)
    grads = guided_backprop(net, x, labels)        # (N, 3, S, S)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.graph.fg import FunctionGraph
from dlmie import layers as L
from dlmie.vis.ascent import gradient_function
from dlmie.vis.objectives import Objective, class_score


_GUIDED_RELU_OPS = {}  # input type -> OpFromGraph; one op per type so the replacement keeps the type


def guided_relu(x):
    """max(x, 0) forward; backward, dL/dx = g * [x > 0] * [g > 0] with g = dL/d out (Springenberg 2015).

    Plain backprop would pass g wherever x > 0, negative or not; the "deconvnet" rule of Zeiler &
    Fergus passes g wherever g > 0; guided backprop applies both masks.
    Inputs:
    - x: symbolic tensor, any shape
    Returns a symbolic tensor of x's type.
    """
    if x.type not in _GUIDED_RELU_OPS:
        inner = x.type()

        def pullback(inputs, outputs, cotangents):
            (inp,), (g,) = inputs, cotangents
            return [g * (inp > 0) * (g > 0)]

        # inline: compiled like a plain maximum (fused, in C) once the gradient graph is built.
        _GUIDED_RELU_OPS[x.type] = OpFromGraph([inner], [pt.maximum(inner, 0)], pullback=pullback,
                                               inline=True, name="guided_relu")
    return _GUIDED_RELU_OPS[x.type](x)


def guided_graph(output):
    """A copy of a graph whose every ReLU is a `guided_relu`; the original graph is left untouched.

    The copy is rooted at the same input and shared variables (only the nodes in between are
    cloned), so it computes the same values from the same weights. ReLUs are replaced in
    topological order, so each guided ReLU reads the already-rewritten layers below it.
    Inputs:
    - output: a symbolic variable, e.g. net.scores
    Returns the rewritten copy of `output`.
    """
    fgraph = FunctionGraph(outputs=[output], clone=True, copy_inputs=False)
    for node in fgraph.toposort():
        x = L.relu_operand(node)
        if x is not None:
            fgraph.replace(node.outputs[0], guided_relu(x), reason="guided backprop")
    return fgraph.outputs[0]


def guided_objective(objective: Objective) -> Objective:
    """The same objective, differentiated through guided ReLUs (`guided_graph` of its value).

    Inputs:
    - objective: an `Objective`, e.g. `class_score(labels)`
    Returns an `Objective` with the same inputs and values and its own compile key.
    """
    def build(scores, activations, x, *variables):
        return guided_graph(objective.build(scores, activations, x, *variables))

    return Objective(f"guided {objective.name}", ("guided", objective.key), build, objective.inputs, objective.values)


def input_gradient(net, x: np.ndarray, labels, guided: bool = False, batch_size: int = 32) -> np.ndarray:
    """Gradient of each image's chosen class score with respect to the model input.

        G_i = ∂ s_{k_i}(x_i) / ∂ x_i,    i = 1 .. N

    where s_k(x) is the network's raw score of class k (before any softmax: a probability also
    rises when the other classes' scores fall) and k_i = labels[i]. Only image i's own class score
    is differentiated, never the sum over classes. In inference mode the images of a batch do not
    interact, so the gradient of the batch's sum over i of s_{k_i}(x_i) with respect to the batch
    holds every G_i at once. The images are processed `batch_size` at a time (the last batch may be
    smaller). With guided=True every ReLU of the network backpropagates by Springenberg et al.'s
    rule (see `guided_relu`) instead of the plain one; the forward values do not change.

    Inputs:
    - net: a `dlmie.models.network.Network` with class scores
    - x: (N, 3, S, S) float32 model input
    - labels: (N,) int, the class of each image whose score is differentiated
    - guided: guided backpropagation instead of the plain backward pass
    - batch_size: images per call of the compiled gradient
    Returns:
    - (N, 3, S, S) float32, the G_i stacked in the order of x
    """
    x, labels = np.asarray(x, np.float32), np.asarray(labels, np.int64)
    ### BEGIN SOLUTION
    gradients = []
    for start in range(0, len(x), batch_size):
        objective = class_score(labels[start : start + batch_size])
        if guided:
            objective = guided_objective(objective)
        _, g = gradient_function(net, objective)(x[start : start + batch_size], *objective.values)
        gradients.append(g)
    return np.concatenate(gradients)
    ### END SOLUTION


def saliency_map(net, x: np.ndarray, labels, guided: bool = False) -> np.ndarray:
    """Simonyan et al. (2014): M_ij = max over channels c of |d s_k / d x_cij|.

    Inputs: as `input_gradient`.
    Returns:
    - (N, S, S) float32, non-negative
    """
    return np.abs(input_gradient(net, x, labels, guided)).max(axis=1)


def smoothgrad(net, x: np.ndarray, labels, samples: int = 50, sigma: float = 0.15, seed: int = 0,
               guided: bool = False) -> np.ndarray:
    """SmoothGrad (Smilkov et al. 2017): the saliency map averaged over noisy copies of each image.

    Gradients of a ReLU network jump between neighbouring inputs, which makes single maps
    speckled; averaging over x + N(0, sigma_i^2) keeps what is stable.
    Inputs:
    - net, x, labels, guided: as `input_gradient`
    - samples: number of noisy copies n
    - sigma: noise standard deviation as a fraction of each image's input range max(x_i) - min(x_i)
      (the paper finds 10-20% best)
    - seed: of the noise
    Returns:
    - (N, S, S) float32, (1/n) sum_t M(x + noise_t)
    """
    x = np.asarray(x, np.float32)
    rng = np.random.default_rng(seed)
    spread = sigma * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))
    total = np.zeros((x.shape[0], *x.shape[2:]), np.float32)
    for _ in range(samples):
        noise = rng.standard_normal(x.shape, dtype=np.float32) * spread[:, None, None, None]
        total += saliency_map(net, x + noise, labels, guided)
    return total / samples


def guided_backprop(net, x: np.ndarray, labels) -> np.ndarray:
    """Guided backpropagation (Springenberg et al. 2015): `input_gradient` through guided ReLUs.

    Inputs: net, x (N, 3, S, S) float32, labels (N,) int, as `input_gradient`.
    Returns:
    - (N, 3, S, S) float32 signed gradients; shown as an image (`dlmie.plots.signed_image`) they
      look like the object's edges, whatever the class (Adebayo et al. 2018 check this in `sanity`)
    """
    return input_gradient(net, x, labels, guided=True)


class FoolingResult(NamedTuple):
    """What `fooling_images` returns; S is the input size.

    - images: (N, S, S, 3) float32 RGB in [0, 1], the fooling images (not rounded to uint8:
      rounding could undo the parts of the change smaller than a grey level)
    - steps: (N,) int, gradient steps taken (max_steps where the target was not reached)
    - change: (N, S, S, 3) float32, images - original / 255, in [0, 1] pixel units
    - fooled: (N,) bool, whether the network predicts the target for the fooling image
    """

    images: np.ndarray
    steps: np.ndarray
    change: np.ndarray
    fooled: np.ndarray


def fooling_step(x: np.ndarray, g: np.ndarray, low: np.ndarray, high: np.ndarray, step: float) -> np.ndarray:
    """One step of a fooling image: gradient ascent on the target's score with a step of fixed length.

    Per image i, first drop the components of the gradient that push a value already at a bound
    further out (they would be clipped away, and the step would be shorter than `step`):

        ĝ = 0 at the values with x <= low and g < 0, or with x >= high and g > 0;  ĝ = g elsewhere
        x' = Π( x + step · ĝ / ‖ĝ‖₂ ),   ‖ĝ‖₂ over the C, H and W axes of image i

    where Π sets every value below `low` to `low` and above `high` to `high`. An image whose ĝ is
    all zero does not move (its new input is x, never NaN: guard the division, e.g. by 1e-12).
    Inputs:
    - x: (N, C, H, W) current model inputs
    - g: (N, C, H, W) ∂ s_target / ∂ x for each image
    - low, high: the smallest and largest valid input, arrays that broadcast against x, e.g.
      (1, C, H, W) (the preprocessed black and white images)
    - step: the L2 length of each image's step, in model-input units
    Returns:
    - (N, C, H, W) the new inputs, every value in [low, high]; x and g are left unchanged
    """
    ### BEGIN SOLUTION
    g = np.where(((x <= low) & (g < 0)) | ((x >= high) & (g > 0)), 0, g)
    norm = np.sqrt((g ** 2).sum(axis=(1, 2, 3), keepdims=True))
    return np.clip(x + step * g / np.maximum(norm, 1e-12), low, high)
    ### END SOLUTION


def fooling_images(net, images: np.ndarray, targets, step: float = 1.0, max_steps: int = 100) -> FoolingResult:
    """Fooling images (Szegedy et al. 2014, *Intriguing properties of neural networks*; cs231n
    assignment 3's make_fooling_image): change real images just enough that the network takes
    them for a chosen wrong class, by ascending the target's score along the gradient of
    Simonyan et al.'s saliency maps.

    Let x_i be image i's model input (the network's preprocessing of its pixels) and t_i its
    target. Repeat, at most max_steps times: every image still to do, i.e. whose predicted class
    argmax_k s_k(x_i) is not yet t_i, takes one step of gradient ascent on its target's raw score,

        x_i <- `fooling_step`(x_i, G_i, low, high, step),   G_i = ∂ s_{t_i}(x_i) / ∂ x_i

    with G_i the gradient of `input_gradient` and low, high the model inputs of an all-black and
    an all-white image of the same size (so every x_i stays a valid image). An image stops as
    soon as the network predicts its target: one that is already predicted as its target takes 0
    steps; the loop ends when no image is left to do. The images still to do go through the
    network together (a few images: one batch).
    Inputs:
    - net: a `Network` with class scores
    - images: (N, S, S, 3) uint8 RGB, the starting images
    - targets: (N,) int, the class each image should be taken for
    - step: the L2 length of each step in model-input units
    - max_steps: give up after this many steps
    Returns a `FoolingResult` (see its docstring) of:
    - images: (N, S, S, 3) float32 in [0, 1], the final model inputs mapped back to pixels by the
      preprocessing's inverse (not rounded to uint8)
    - steps: (N,) int, the steps each image took (max_steps where the target was not reached)
    - change: (N, S, S, 3) float32, images - the original images / 255
    - fooled: (N,) bool, whether the network predicts the target for the final model input
    """
    ### BEGIN SOLUTION
    pre, targets = net.preprocessing, np.asarray(targets, np.int64)
    size = np.shape(images)[1:3]
    low, high = pre(np.zeros((1, *size, 3))), pre(np.full((1, *size, 3), 255.0))
    x = pre(images)
    steps, todo = np.zeros(len(x), np.int64), np.arange(len(x))
    for _ in range(max_steps):
        todo = todo[net.class_scores(x[todo]).argmax(axis=1) != targets[todo]]
        if todo.size == 0:
            break
        g = input_gradient(net, x[todo], targets[todo])
        x[todo] = fooling_step(x[todo], g, low, high, step)
        steps[todo] += 1
    fooled = net.class_scores(x).argmax(axis=1) == targets
    pixels = pre.invert(x)
    return FoolingResult(pixels, steps, pixels - np.asarray(images, np.float32) / 255, fooled)
    ### END SOLUTION

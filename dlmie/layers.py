"""Symbolic layers on PyTensor, cs231n style: one function per layer, shapes in every docstring.

Every function takes PyTensor variables and returns PyTensor expressions; `pytensor.grad`
gives the backward pass. Layers keep the dtype of their input, so the same code runs in
float32 for training and in float64 for gradient checks.

Image tensors are (N, C, H, W). Layers with running statistics (batch norm) return their
output together with a list of `(shared_variable, new_value)` updates for `pytensor.function`;
so does dropout, whose random generator advances the same way.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.gradient import disconnected_type
from pytensor.graph.replace import graph_replace
from pytensor.scalar.basic import ScalarMaximum
from pytensor.tensor.elemwise import Elemwise
from pytensor.tensor.exceptions import NotScalarConstantError
from dlmie.kernels import BatchNormTrain, DepthwiseConv2d, EmbeddingGrad, Im2Col, MaxPool, SoftmaxCrossEntropy
from dlmie.kernels.conv import output_size as conv_output_size


def scalar(value, dtype):
    """A constant or hyper-parameter as a scalar of the given dtype.

    Python numbers are converted exactly: PyTensor turns a bare ``0.1`` into a floatX (float32)
    constant, whose rounding would otherwise leak into float64 gradient checks and training.
    Symbolic values (a learning-rate shared variable, say) are cast.
    """
    if isinstance(value, (int, float, np.number)):
        return pt.constant(np.asarray(value, dtype=dtype))
    return pt.cast(value, dtype)


def shared_params(arrays: dict) -> dict:
    """NumPy arrays -> shared variables named after their keys, with static shapes (conv2d reads
    the kernel size from the static shape)."""
    return {
        name: pytensor.shared(np.asarray(value), name=name, shape=np.shape(value))
        for name, value in arrays.items()
    }


def affine(x, w, b):
    """Fully connected layer.

    Inputs:
    - x: (N, d_1, ..., d_k), flattened to (N, D) with D = d_1 * ... * d_k
    - w: (D, M) weights
    - b: (M,) biases
    Returns:
    - out: (N, M) = x.reshape(N, D) @ w + b
    """
    return pt.dot(x.flatten(2), w) + b


def relu(x):
    """Rectified linear unit, elementwise max(x, 0); any shape in, same shape out."""
    return pt.maximum(x, 0)


def _is_constant_zero(v) -> bool:
    """Whether a variable is the constant 0 (possibly broadcast, as in maximum(x, 0))."""
    try:
        return pt.get_underlying_scalar_constant_value(v) == 0
    except NotScalarConstantError:
        return False


def relu_operand(node):
    """x if an Apply node is maximum(x, 0), the way `relu` builds a ReLU (in either order); else None."""
    if node is None or not (isinstance(node.op, Elemwise) and isinstance(node.op.scalar_op, ScalarMaximum)):
        return None
    others = [inp for inp in node.inputs if not _is_constant_zero(inp)]
    return others[0] if len(others) == 1 else None


def relu_input(a):
    """The pre-activation z of a = relu(z), an output of `relu`.

    A silent unit (z < 0) has a zero gradient through its ReLU, so an ascent that starts where a
    unit is silent never moves; the unit's z has a gradient everywhere (visualizing single units).
    Raises a ValueError for a tensor that is not an output of `relu`.
    """
    z = relu_operand(a.owner)
    if z is None:
        raise ValueError(f"{a} is not the output of layers.relu, so it has no pre-ReLU value to take")
    return z


def relu6(x):
    """min(max(x, 0), 6), MobileNet's activation; any shape in, same shape out."""
    return pt.minimum(pt.maximum(x, 0), 6)


def tanh(x):
    """tanh(x), written as 2 sigmoid(2x) - 1; any shape in, same shape out.

    The same function, but PyTensor's C backend computes a float32 tanh with libm's scalar tanhf,
    several times slower than the vectorized expf under sigmoid, and the tanh of the LSTM gates and
    of the attention MLP run in every step of a captioner's forward and backward passes. The error is absolute, a few
    roundings of 1 (at most 2e-7 in float32, 4e-16 in float64), not relative: 2 sigmoid(2x) - 1
    cancels near 0, where tanh(x) keeps fewer significant digits than libm's. Saturates to +-1 without
    overflow (exp of a large argument is inf, and 1 / (1 + inf) = 0).
    """
    return 2 * pt.sigmoid(2 * x) - 1


def _alloc_for(x, alloc):
    """alloc(x): an array whose shape is computed from x's, without the cost of building it on x.

    PyTensor's Alloc constant-folds its symbolic shape when it is built, cloning the whole graph
    that computes x: a network's padding canvases and bias rows made building it quadratic in its
    depth. Built on a fresh variable of x's type, which x then replaces, the cloned graph is one
    node; the result is the same graph.
    """
    stand_in = x.type()
    return graph_replace(alloc(stand_in), {stand_in: x})


def pad2d(x, pad, value=0.0):
    """Pad the height and width axes of a 4-D tensor with a constant.

    Inputs:
    - x: (N, C, H, W)
    - pad: an int (the same on every side) or (top, bottom, left, right); TensorFlow's "SAME"
      padding of a stride-2 layer is asymmetric, e.g. (0, 1, 0, 1)
    - value: the fill value (-inf for max pooling)
    Returns:
    - (N, C, H + top + bottom, W + left + right)
    """
    top, bottom, left, right = (pad,) * 4 if np.ndim(pad) == 0 else pad
    if top == bottom == left == right == 0:
        return x

    def blank(v):
        # Not pt.pad: under floatX=float32 it rounds float64 input through float32 (PyTensor 3.0.7).
        a, b, h, w = v.shape
        return pt.alloc(pt.constant(value, dtype=v.dtype), a, b, h + top + bottom, w + left + right)

    canvas = _alloc_for(x, blank)
    h, w = x.shape[2], x.shape[3]
    return pt.set_subtensor(canvas[:, :, top : top + h, left : left + w], x)


def _windows(x, window_h, window_w, stride, out_h, out_w):
    """All strided window offsets of a 4-D tensor, stacked on a new axis 1.

    Inputs:
    - x: (A, B, Hp, Wp), already padded
    Returns:
    - (A, window_h * window_w, B, out_h, out_w): element [a, i * window_w + j, b, y, z] is
      x[a, b, y * stride + i, z * stride + j]
    """
    slices = [
        x[:, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
        for i in range(window_h)
        for j in range(window_w)
    ]
    return pt.stack(slices, axis=1)


def _kernel_size(w):
    """Static (HH, WW) of a filter bank; the im2col loop needs them at graph-building time."""
    kh, kw = w.type.shape[2:]
    if kh is None or kw is None:
        raise ValueError(
            "conv2d needs the filter's height and width at graph-building time. Create the filter "
            "with a static shape: pytensor.shared(value, shape=value.shape) or "
            "pt.tensor(shape=(None, None, HH, WW))."
        )
    return kh, kw


def conv2d(x, w, b, stride=1, pad=0):
    """Convolution (cross-correlation, as in every deep-learning framework), symbolic, by im2col.

    With xp the input zero-padded by `pad` on every side of its height and width axes,

        out[n, f, y, z] = b[f] + sum over c, i, j of w[f, c, i, j] * xp[n, c, y*stride + i, z*stride + j]

    for 0 <= y < H', 0 <= z < W', 0 <= i < HH, 0 <= j < WW. As one matrix product (im2col): let X be
    the (C*HH*WW, N*H'*W') matrix whose column (n*H' + y)*W' + z is the window of image n at
    output position (y, z), flattened in (c, i, j) order, and Wm the (F, C*HH*WW) matrix of the
    filters flattened the same way. Then O = Wm X + b 1^T is (F, N*H'*W'): row f holds filter f's
    outputs, image by image, row by row; the result is O seen as (N, F, H', W'). The backward pass
    needs no code: pytensor.grad derives it (two matrix products and the adjoint of the im2col
    layout, which sums the column gradients back into the pixels).

    Inputs:
    - x: (N, C, H, W) symbolic images
    - w: (F, C, HH, WW) filters, with HH and WW known statically
    - b: (F,) biases
    - stride: step between windows, the same along height and width
    - pad: zeros added on every side of the height and width axes
    Returns:
    - out: (N, F, H', W') symbolic, with H' = (H + 2 pad - HH) // stride + 1, likewise W'
    """
    kh, kw = _kernel_size(w)
    n, _, h, width = x.shape
    ### BEGIN SOLUTION
    out_h = conv_output_size(h, kh, stride, pad)
    out_w = conv_output_size(width, kw, stride, pad)
    columns = Im2Col(kh, kw, stride, pad)(x)  # (C * HH * WW, N * H' * W')
    filters = w.reshape((w.shape[0], -1))
    # The bias enters as a rank-1 product b 1^T rather than a broadcast add, so that its
    # gradient is a matrix-vector product (BLAS) instead of PyTensor's slower row-sum loop.
    ones = _alloc_for(columns, lambda c: pt.ones((1, c.shape[1]), dtype=c.dtype))
    out = pt.dot(filters, columns) + pt.dot(b.dimshuffle(0, "x"), ones)  # (F, N * H' * W')
    return out.reshape((w.shape[0], n, out_h, out_w)).dimshuffle(1, 0, 2, 3)
    ### END SOLUTION


def depthwise_conv2d(x, w, b, stride=1, pad=0):
    """Depthwise convolution (MobileNet): each channel is filtered by its own HH x WW kernel.

        out[n, c, y, z] = b[c] + sum over i, j of w[c, 0, i, j] * xp[n, c, y*stride + i, z*stride + j]

    with xp the input zero-padded by `pad`. A depthwise layer does C * HH * WW multiply-adds per
    pixel against a full convolution's C * F * HH * WW, so there is no GEMM worth forming: the
    forward pass is one loop over the image (`kernels.DepthwiseConv2d`), and the backward pass is
    the derivative of `depthwise_conv2d_by_views`, the same function as a sum of strided views.

    Inputs:
    - x: (N, C, H, W) images
    - w: (C, 1, HH, WW) filters (PyTorch's layout for groups = C), HH and WW known statically
    - b: (C,) biases
    - stride: step between windows, the same along height and width
    - pad: an int, or (top, bottom, left, right) as in `pad2d`
    Returns:
    - out: (N, C, H', W') with H' = (H + top + bottom - HH) // stride + 1, likewise W'
    """
    kh, kw = _kernel_size(w)
    top, bottom, left, right = (pad,) * 4 if np.ndim(pad) == 0 else pad
    return DepthwiseConv2d(kh, kw, stride, top, bottom, left, right)(x, w, b)


def depthwise_conv2d_by_views(x, w, b, stride=1, pad=0):
    """`depthwise_conv2d` as a sum of HH * WW strided views of the padded input, each scaled by
    one kernel tap per channel (PyTensor fuses the sum into one elementwise loop). Inputs and
    output as `depthwise_conv2d`; its backward pass is this function's derivative."""
    kh, kw = _kernel_size(w)
    top, bottom, left, right = (pad,) * 4 if np.ndim(pad) == 0 else pad
    xp = pad2d(x, pad)
    # Python ints where the sizes are static: symbolic slice bounds cost a canonical-form graph
    # per view at every compile, which dominated compiling MobileNetV2's 17 depthwise layers.
    height, width = x.type.shape[2:]
    height = xp.shape[2] if height is None else height + top + bottom
    width = xp.shape[3] if width is None else width + left + right
    out_h = (height - kh) // stride + 1
    out_w = (width - kw) // stride + 1
    taps = w[:, 0].dimshuffle(1, 2, "x", 0, "x", "x")  # (HH, WW, 1, C, 1, 1): taps[i, j] broadcasts
    out = b.dimshuffle("x", 0, "x", "x")
    for i in range(kh):
        for j in range(kw):
            view = xp[:, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
            out = out + view * taps[i, j]
    return out


def _pool(x, size, stride, pad, mode):
    if mode not in ("max", "avg"):
        raise ValueError(f"pooling mode must be 'max' or 'avg', got {mode!r}")
    stride = size if stride is None else stride
    padded = pad2d(x, pad, float("-inf") if mode == "max" else 0.0)
    if stride == size and mode == "max":
        return MaxPool(size)(padded)
    n, c, h, w = x.shape
    out_h = conv_output_size(h, size, stride, pad)
    out_w = conv_output_size(w, size, stride, pad)
    reduce = pt.max if mode == "max" else pt.mean
    if stride == size:
        # Non-overlapping windows: crop to whole windows and reshape, no copies of the input.
        cropped = padded[:, :, : out_h * size, : out_w * size]
        blocks = cropped.reshape((n, c, out_h, size, out_w, size))
        return reduce(blocks, axis=(3, 5))
    return reduce(_windows(padded, size, size, stride, out_h, out_w), axis=1)


def max_pool(x, size=2, stride=None, pad=0):
    """Max pooling over square windows.

    Inputs:
    - x: (N, C, H, W)
    - size: window height and width
    - stride: step between windows (default: `size`, non-overlapping)
    - pad: -inf padding on every side, so padding never wins the max
    Returns:
    - out: (N, C, H', W') with H' = (H + 2 * pad - size) // stride + 1, likewise W'.
      The gradient goes to the maximum of each window (to every tied maximum).
    """
    return _pool(x, size, stride, pad, "max")


def avg_pool(x, size=2, stride=None, pad=0):
    """Average pooling over square windows; zero padding counts towards the average.

    Inputs and output as `max_pool`.
    """
    return _pool(x, size, stride, pad, "avg")


def global_avg_pool(x):
    """(N, C, H, W) -> (N, C): the mean over all spatial positions."""
    return x.mean(axis=(2, 3))


def batchnorm(x, gamma, beta, running_mean, running_var, train, momentum=0.9, eps=1e-5, kernel=True):
    """Batch normalization (Ioffe & Szegedy 2015) for (N, D) inputs or, spatially, (N, C, H, W).

    Training normalizes with the statistics of the batch and returns updates that move the
    running statistics: running = momentum * running + (1 - momentum) * batch (biased variance,
    as in cs231n's assignments and their pretrained model). Inference normalizes with the
    running statistics and returns no updates.

    Inputs:
    - x: (N, D), normalized over axis 0, or (N, C, H, W), normalized over axes (0, 2, 3)
    - gamma, beta: (D,) or (C,) scale and shift
    - running_mean, running_var: (D,) or (C,) shared variables (or any tensors at inference)
    - train: Python bool, chooses batch or running statistics
    - momentum: weight of the old running value
    - eps: added to the variance
    - kernel: in training, compute with the compiled `dlmie.kernels.BatchNormTrain` (for float32 and
      float64 input whose gamma and beta have its dtype); False: with PyTensor's own ops, which
      `pytensor.grad` differentiates op by op (an independent reference for the kernel and for a
      hand-written backward pass)
    Returns:
    - out: same shape as x
    - updates: list of (shared_variable, new_value); empty at inference
    """
    if x.ndim not in (2, 4):
        raise ValueError(f"batchnorm takes (N, D) or (N, C, H, W) input, got {x.ndim} dimensions")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    pattern = ("x", 0) if x.ndim == 2 else ("x", 0, "x", "x")

    def per_feature(v):
        return pt.as_tensor_variable(v).dimshuffle(*pattern)

    def normalize(mean, var):
        x_hat = (x - per_feature(mean)) / pt.sqrt(per_feature(var) + scalar(eps, x.dtype))
        return per_feature(gamma) * x_hat + per_feature(beta)

    if not train:
        return normalize(running_mean, running_var), []
    gamma, beta = pt.as_tensor_variable(gamma), pt.as_tensor_variable(beta)
    if kernel and x.dtype in ("float32", "float64") and gamma.dtype == beta.dtype == x.dtype:
        # The same arithmetic as the lines below, as one compiled op (and one for its gradient):
        # PyTensor's own reductions and fused elementwise loops for these took longer than the
        # convolutions' GEMMs in a conv net's training step. See dlmie.kernels.BatchNormTrain.
        out, mean, var = BatchNormTrain(eps)(x, gamma, beta)
    else:
        mean = x.mean(axis=axes)
        var = pt.sqr(x - per_feature(mean)).mean(axis=axes)
        out = normalize(mean, var)
    keep, new = scalar(momentum, x.dtype), scalar(1 - momentum, x.dtype)
    updates = [
        (running_mean, keep * running_mean + new * mean),
        (running_var, keep * running_var + new * var),
    ]
    return out, updates


def dropout(x, p_drop, rng, train):
    """Inverted dropout: zero each unit with probability `p_drop` and scale the rest by
    1 / (1 - p_drop), so that inference (train=False) is the identity.

    Inputs:
    - x: any shape
    - p_drop: probability of zeroing a unit, 0 <= p_drop < 1
    - rng: a shared generator, `pt.random.shared_rng(seed=...)`
    - train: Python bool
    Returns:
    - out: same shape as x
    - updates: [(rng, next_rng)] in training, so that each call draws a new mask; else empty
    """
    if not 0 <= p_drop < 1:
        raise ValueError(f"p_drop must be in [0, 1), got {p_drop}")
    if not train or p_drop == 0:
        return x, []
    next_rng, uniform = rng.uniform(size=x.shape)
    keep = pt.cast(uniform >= p_drop, x.dtype)
    return x * keep / scalar(1 - p_drop, x.dtype), [(rng, next_rng)]


def log_softmax(scores, axis=-1):
    """Numerically stable log-softmax along `axis`; any shape in, same shape out."""
    shifted = scores - pt.max(scores, axis=axis, keepdims=True)
    return shifted - pt.log(pt.sum(pt.exp(shifted), axis=axis, keepdims=True))


def softmax_cross_entropy(scores, y):
    """Mean softmax cross-entropy loss.

    Inputs:
    - scores: (N, C) class scores
    - y: (N,) integer labels in [0, C)
    Returns:
    - loss: scalar, -mean_i log softmax(scores_i)[y_i]

    Each row's -log softmax(scores_i)[y_i] = logsumexp(scores_i) - scores_i[y_i] comes from one
    compiled Op (`kernels.SoftmaxCrossEntropy`), whose gradient softmax(scores_i) - onehot(y_i)
    is one pass over the scores instead of the dozen that log_softmax and indexing cost.
    """
    row_losses, _ = SoftmaxCrossEntropy()(scores, y)
    return row_losses.mean()


def word_embedding(x, w):
    """Look up word vectors.

    Inputs:
    - x: (N, T) integer word indices in [0, V)
    - w: (V, D) embedding matrix
    Returns:
    - out: (N, T, D), out[n, t] = w[x[n, t]]

    The gradient with respect to w adds each row of d_out into the row of its word; it is one
    compiled Op (`kernels.EmbeddingGrad`), not PyTensor's NumPy fallback for matrices.
    """
    words, table = pt.lvector("words"), w.type()
    lookup = OpFromGraph([words, table], [table[words]], inline=True, name="word_embedding",
                         pullback=_word_embedding_pullback)
    return lookup(pt.cast(x.flatten(), "int64"), w).reshape((*x.shape, w.shape[1]), ndim=x.ndim + 1)


def _word_embedding_pullback(inputs, outputs, cotangents):
    # A module-level function, not a lambda, so that the Op pickles (dlmie.compile_cache keys it).
    words, table = inputs
    return [disconnected_type(), EmbeddingGrad()(words, cotangents[0], table.shape[0])]


def temporal_affine(x, w, b):
    """The same affine map at every time step, as one GEMM over all N * T vectors.

    Inputs:
    - x: (N, T, D)
    - w: (D, M)
    - b: (M,)
    Returns:
    - out: (N, T, M)
    """
    n, t, d = x.shape
    return (pt.dot(x.reshape((n * t, d)), w) + b).reshape((n, t, w.shape[1]))


def temporal_softmax_loss(scores, y, mask, weights=None):
    """Softmax cross-entropy at every time step, counting only the steps where mask is 1;
    summed over time and averaged over the minibatch (cs231n's convention).

    Inputs:
    - scores: (N, T, V) scores over the vocabulary
    - y: (N, T) integer targets in [0, V)
    - mask: (N, T) 1 where y is a real word, 0 at padding (any non-negative float: a step's weight)
    - weights: (N,) how much each sequence counts (e.g. self-critical training's advantages), or
      None for 1 each
    Returns:
    - loss: scalar, L = -(1/N) Σ_{n,t} w_n m_{nt} log p_{nt}(y_{nt}), with p_{nt} the softmax of
      scores[n, t] over the V words, m the mask and w the weights

    The compiled op `SoftmaxCrossEntropy` (dlmie.kernels) computes -log p(y) for each row of a
    (M, V) matrix of scores and M targets, in a numerically stable way (it returns those M losses
    and the M log-sum-exps of the rows).
    """
    n, t, v = scores.shape
    if weights is not None:
        # A caption's weight scales its steps' mask: the cross-entropy below stays the plain one.
        mask = pt.cast(mask, scores.dtype) * pt.cast(weights, scores.dtype).dimshuffle(0, "x")
    ### BEGIN SOLUTION
    row_losses, _ = SoftmaxCrossEntropy()(scores.reshape((n * t, v)), y.flatten())
    return (row_losses * pt.cast(mask.flatten(), scores.dtype)).sum() / pt.cast(n, scores.dtype)
    ### END SOLUTION

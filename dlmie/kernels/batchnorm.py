"""Training-mode batch normalization, forward and backward, as two PyTensor Ops.

The other half of a conv block. Written with PyTensor's elementwise and reduction ops, a
training-mode batchnorm becomes ~6 `Sum{axes=[0, 2, 3]}` reductions and a few multi-output
Composites over full activations, forward and backward, which PyTensor's C loops run at
4-20 ns per element (scalar, latency-bound accumulation): together more time than the
convolution's GEMMs. `BatchNormTrain` normalizes a batch with its own statistics and returns
them (for the running averages); `BatchNormGrad` is its backward pass.

Each Op computes with the NumPy functions `batchnorm_forward` and `batchnorm_backward` of
dlmie.numpy_layers (its `perform`), and with a C loop (`dlmie.kernels.batchnorm_c`) where that
module is present: 3 (forward) and 2 (backward) vectorized passes over each channel, channel by
channel over (image, row) spans, so any strides work, and contiguous image planes (NCHW, or the
channel-first (C, N, H, W) memory that conv2d's GEMM produces) take the fast path.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_grad
from pytensor.graph.basic import Apply
from pytensor.graph.replace import clone_replace
from pytensor.link.c.op import COp
from pytensor.link.c.params_type import ParamsType

from dlmie import numpy_layers
from dlmie.kernels.common import FLOAT_DTYPES

try:
    import dlmie.kernels.batchnorm_c as batchnorm_c
except ModuleNotFoundError as err:  # the student handout leaves the C kernel out: the Ops run their `perform`
    if err.name != "dlmie.kernels.batchnorm_c":
        raise
    batchnorm_c = None


def _bn_axes(ndim):
    return (0,) if ndim == 2 else (0, 2, 3)


def _bn_per_channel(v, ndim):
    return v.dimshuffle(("x", 0) if ndim == 2 else ("x", 0, "x", "x"))


def _bn_shape(ndim):
    """The shape of a per-channel vector broadcast against an ndim-dimensional x."""
    return (1, -1) + (1,) * (ndim - 2)


class _BatchNormOp(COp):
    """Common parts: `eps`, the C code from `batchnorm_c` (or none without it), the input checks."""

    __props__ = ("eps",)
    params_type = ParamsType(eps=pytensor.scalar.float64)

    def __init__(self, eps: float):
        self.eps = float(eps)

    @staticmethod
    def _kernel():
        """The C code module; without it, NotImplementedError makes PyTensor run `perform` instead."""
        if batchnorm_c is None:
            raise NotImplementedError("no C kernel (dlmie.kernels.batchnorm_c): batch norm runs its NumPy perform")
        return batchnorm_c

    def c_support_code(self, **kwargs):
        return self._kernel().SUPPORT_CODE

    def c_headers(self, **kwargs):
        return list(self._kernel().HEADERS)

    def c_compile_args(self, **kwargs):
        return list(self._kernel().COMPILE_ARGS)

    def c_code_cache_version(self):
        return self._kernel().CACHE_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        return self._c_code(self._kernel(), inputs, outputs, sub["params"], sub["fail"])

    @staticmethod
    def _check(x, *vectors):
        x = pt.as_tensor_variable(x)
        if x.ndim not in (2, 4) or x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"batch norm takes a 2-D or 4-D float32/float64 tensor, got {x.type}")
        vectors = [pt.as_tensor_variable(v) for v in vectors]
        for v in vectors:
            if v.ndim != 1 or v.dtype != x.dtype:
                raise TypeError(f"per-channel inputs must be {x.dtype} vectors, got {v.type}")
        return x, vectors

    def _check_values(self, x, vectors, dy=None):
        """perform's checks, with the C code's messages."""
        name = type(self).__name__
        if any(v.shape != (x.shape[1],) for v in vectors):
            raise ValueError(f"{name}: a per-channel vector does not match the channels")
        if dy is not None and dy.shape != x.shape:
            raise ValueError(f"{name}: dy and x differ in shape")


class BatchNormTrain(_BatchNormOp):
    """Training-mode batch normalization with the batch's own statistics.

    Inputs:
    - x: (N, C) or (N, C, H, W), float32 or float64, any strides
    - gamma, beta: (C,), the dtype of x
    Returns:
    - out: like x (same shape, and with the C code the same memory order): x normalized with the
      batch statistics, scaled by gamma and shifted by beta
    - mean, var: (C,), the mean and biased variance over axes (0,) or (0, 2, 3), computed in float64
    Pullback: BatchNormGrad (plus the direct terms when mean or var get a gradient).
    """

    def make_node(self, x, gamma, beta):
        x, (gamma, beta) = self._check(x, gamma, beta)
        c = x.type.shape[1]
        return Apply(self, [x, gamma, beta],
                     [x.type(), pt.tensor(dtype=x.dtype, shape=(c,)), pt.tensor(dtype=x.dtype, shape=(c,))])

    def connection_pattern(self, node):
        return [[True, True, True], [True, False, False], [True, False, False]]

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], (shapes[0][1],), (shapes[0][1],)]

    def perform(self, node, inputs, output_storage):
        x, gamma, beta = inputs
        self._check_values(x, (gamma, beta))
        x64 = x.astype(np.float64)
        out, (xhat, _, std) = numpy_layers.batchnorm_forward(x64, gamma.astype(np.float64),
                                                             beta.astype(np.float64), self.eps)
        # The statistics, read back from the cache: x - mean = xhat * std.
        axes, shape = _bn_axes(x.ndim), _bn_shape(x.ndim)
        xhat, std = np.asarray(xhat, np.float64), np.asarray(std, np.float64)
        mean = (x64 - xhat * std.reshape(shape)).mean(axis=axes)
        var = (xhat**2).mean(axis=axes) * std**2
        for storage, value in zip(output_storage, (out, mean, var)):
            storage[0] = np.asarray(value).astype(x.dtype)

    def pullback(self, inputs, outputs, cotangents):
        x, gamma, beta = inputs
        _, mean, var = outputs
        g_out, g_mean, g_var = cotangents
        if isinstance(g_out.type, DisconnectedType):
            dx, dgamma, dbeta = pt.zeros_like(x), pt.zeros_like(gamma), pt.zeros_like(beta)
        else:
            dx, dgamma, dbeta = BatchNormGrad(self.eps)(x, gamma, mean, var, g_out)
        # Where mean or var get a gradient of their own, it reaches x through PyTensor's
        # gradients of the same statistics.
        axes = _bn_axes(x.ndim)
        direct = [(g, stat) for g, stat in ((g_mean, x.mean(axis=axes)), (g_var, x.var(axis=axes)))
                  if not isinstance(g.type, DisconnectedType)]
        if direct:
            dx = dx + pytensor.grad(sum((g * stat).sum() for g, stat in direct), x)
        return [dx, dgamma, dbeta]

    def _c_code(self, kernel, inputs, outputs, params, fail):
        return kernel.train_code(type(self).__name__, inputs, outputs, params, fail)


def _batchnorm_grad_graph(x, gamma, mean, var, dy, eps):
    """BatchNormGrad's outputs as a PyTensor graph, for its own pullback (second derivatives).

    Without the C module's formula, the graph is autodiff's: the gradient of sum(out * dy) for
    a batch norm that computes its statistics from x, in which the statistics are then replaced
    by the inputs mean and var (these count as independent inputs). The variance's centering
    mean is held constant, as it is in BatchNormGrad's own output.
    """
    if batchnorm_c is not None:
        return batchnorm_c.grad_graph(x, gamma, mean, var, dy, eps)
    axes, bc = _bn_axes(x.ndim), (lambda v: _bn_per_channel(v, x.ndim))
    batch_mean = x.mean(axis=axes)
    held_mean = disconnected_grad(batch_mean)
    batch_var = pt.sqr(x - bc(held_mean)).mean(axis=axes)
    normalized = (x - bc(batch_mean)) / pt.sqrt(bc(batch_var) + pt.constant(np.asarray(eps, dtype=x.dtype)))
    dx, dgamma = pytensor.grad((bc(gamma) * normalized * dy).sum(), [x, gamma])
    dx, dgamma = clone_replace([dx, dgamma], replace={batch_mean: mean, held_mean: mean, batch_var: var})
    return dx, dgamma, dy.sum(axis=axes)


class BatchNormGrad(_BatchNormOp):
    """The gradients of BatchNormTrain's `out`, given its inputs and statistics.

    Inputs:
    - x: (N, C) or (N, C, H, W); gamma, mean, var: (C,); dy: the gradient of `out`, like x
    Returns:
    - dx: like x (with the C code, in the same memory order), the gradient through out, mean and var
    - dgamma, dbeta: (C,)
    Pullback: that of the same gradients written in PyTensor ops.
    """

    def make_node(self, x, gamma, mean, var, dy):
        x, (gamma, mean, var) = self._check(x, gamma, mean, var)
        dy = pt.as_tensor_variable(dy)
        if dy.ndim != x.ndim or dy.dtype != x.dtype:
            raise TypeError(f"dy must be like x ({x.type}), got {dy.type}")
        c = x.type.shape[1]
        return Apply(self, [x, gamma, mean, var, dy],
                     [x.type(), pt.tensor(dtype=x.dtype, shape=(c,)), pt.tensor(dtype=x.dtype, shape=(c,))])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], (shapes[0][1],), (shapes[0][1],)]

    def perform(self, node, inputs, output_storage):
        x, gamma, mean, var, dy = inputs
        self._check_values(x, (gamma, mean, var), dy)
        shape = _bn_shape(x.ndim)
        # The cache batchnorm_forward would have returned for these statistics.
        std = np.sqrt(var.astype(np.float64) + self.eps)
        xhat = (x.astype(np.float64) - mean.astype(np.float64).reshape(shape)) / std.reshape(shape)
        grads = numpy_layers.batchnorm_backward(dy.astype(np.float64), (xhat, gamma.astype(np.float64), std))
        for storage, value in zip(output_storage, grads):
            storage[0] = np.asarray(value).astype(x.dtype)

    def pullback(self, inputs, outputs, cotangents):
        # The formula is differentiated with respect to stand-ins for the inputs: mean and var
        # are usually computed from x, and must count here as the independent inputs they are.
        stand_ins = [v.type() for v in inputs]
        formula = _batchnorm_grad_graph(*stand_ins, self.eps)
        # One scalar <formula, cotangents> rather than known gradients of each output: where the
        # outputs share terms, a gradient given for one output would replace, not add to, the
        # part that flows back through the others.
        cost = sum(
            (f * g).sum() for f, g in zip(formula, cotangents) if not isinstance(g.type, DisconnectedType)
        )
        grads = pytensor.grad(cost, stand_ins, disconnected_inputs="ignore", return_disconnected="zero")
        return clone_replace(grads, replace=dict(zip(stand_ins, inputs)))

    def _c_code(self, kernel, inputs, outputs, params, fail):
        return kernel.grad_code(type(self).__name__, inputs, outputs, params, fail)

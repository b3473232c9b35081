"""The LSTM's gates and cell update, forward and backward, as two PyTensor Ops.

From the pre-activations a = x Wx + h_prev Wh + b (N, 4H), gates in the order i, f, o, g:

    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2H]), sigmoid(a[:, 2H:3H]);  g = tanh(a[:, 3H:])
    c = f * c_prev + i * g;   h = o * tanh(c)

Written with PyTensor's ops this is four slices, five transcendental functions and their
products; PyTensor's C loops compute each exp one at a time (several ns per element), and the
backward pass of `scan` recomputes the forward step to get the gates back. `LSTMCell` does the
step in one pass and also returns the activated gates, so that a backward pass can use them
instead of recomputing them (dlmie.rnn.lstm's explicit backward does); `LSTMCellGrad` is that
backward pass for one step.

Each Op computes with the NumPy functions `lstm_step_forward` and `lstm_step_backward` (its
`perform`), and with a vectorized C loop (`dlmie.kernels.lstm_c`) where that module is present.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply
from pytensor.link.c.op import COp

from dlmie.kernels.common import FLOAT_DTYPES

try:
    import dlmie.kernels.lstm_c as lstm_c
except ModuleNotFoundError as err:  # the student handout leaves the C kernel out: the Ops run their `perform`
    if err.name != "dlmie.kernels.lstm_c":
        raise
    lstm_c = None


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -40, 40)))  # clamped as in the C code: no overflow warnings


def lstm_step_forward(a, c_prev):
    """The gates and cell update of one LSTM step, in NumPy (cs231n's lstm_step_forward after the
    matrix products; Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000).

    The pre-activations a hold four blocks of H columns, in the order input gate, forget gate,
    output gate, candidate cell:

        i = σ(a[:, 0:H])   f = σ(a[:, H:2H])   o = σ(a[:, 2H:3H])   g = tanh a[:, 3H:4H]
        c = f ⊙ c_prev + i ⊙ g
        h = o ⊙ tanh c

    σ is the logistic function 1 / (1 + e^-x); this module has a version of it clamped so that the
    exponential never overflows (use it: the C kernel clamps the same way). ⊙ is the elementwise
    product.

    Inputs:
    - a: (N, 4H) pre-activations x Wx + h_prev Wh + b
    - c_prev: (N, H) previous cell state
    Returns a tuple of:
    - h: (N, H) next hidden state
    - c: (N, H) next cell state
    - act: (N, 4H) the activated gates [i, f, o, g] side by side, which the backward pass reads
      instead of recomputing them
    """
    hidden = a.shape[1] // 4
    ### BEGIN SOLUTION
    i, f, o = (_sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
    g = np.tanh(a[:, 3 * hidden :])
    c = f * c_prev + i * g
    return o * np.tanh(c), c, np.concatenate([i, f, o, g], axis=1)
    ### END SOLUTION


def lstm_step_backward(act, c_prev, c, dh, dc):
    """The backward pass of lstm_step_forward, in NumPy (cs231n's lstm_step_backward before the
    matrix products).

    With the step's equations (see lstm_step_forward), a loss L reaches the new cell state c
    twice: directly (dc) and through h = o ⊙ tanh c. Compute

        δa = ∂L/∂a   (N, 4H), in the layout of a: the blocks of i, f, o and g
        δc_prev = ∂L/∂c_prev   (N, H)

    by the chain rule, from the gates stored in act (no exponential needs recomputing: the
    derivative of σ at x is σ(x)(1 − σ(x)), that of tanh at x is 1 − tanh² x).

    Inputs:
    - act: (N, 4H) the activated gates [i, f, o, g] that lstm_step_forward returned
    - c_prev: (N, H) the cell state it started from; c: (N, H) the one it returned
    - dh: (N, H) gradient of the loss with respect to h; dc: (N, H) with respect to c (the
      gradient that comes back through time from the next step's cell)
    Returns a tuple of:
    - d_a: (N, 4H) gradient with respect to the pre-activations a
    - d_c_prev: (N, H) gradient with respect to c_prev
    """
    hidden = act.shape[1] // 4
    i, f, o, g = (act[:, k * hidden : (k + 1) * hidden] for k in range(4))
    ### BEGIN SOLUTION
    tc = np.tanh(c)
    d_cell = dc + dh * o * (1 - tc**2)
    d_a = np.concatenate([d_cell * g * i * (1 - i), d_cell * c_prev * f * (1 - f), dh * tc * o * (1 - o),
                          d_cell * i * (1 - g**2)], axis=1)
    return d_a, d_cell * f
    ### END SOLUTION


class _LSTMOp(COp):
    """Common parts: the C code from `lstm_c` (or none without it), the checks of matrices that
    must agree in shape."""

    __props__ = ()

    @staticmethod
    def _kernel():
        """The C code module; without it, NotImplementedError makes PyTensor run `perform` instead."""
        if lstm_c is None:
            raise NotImplementedError("no C kernel (dlmie.kernels.lstm_c): the LSTM cell runs its NumPy perform")
        return lstm_c

    def c_support_code(self, **kwargs):
        return self._kernel().SUPPORT_CODE

    def c_headers(self, **kwargs):
        return self._kernel().HEADERS

    def c_compile_args(self, **kwargs):
        return self._kernel().COMPILE_ARGS

    def c_code_cache_version(self):
        return self._kernel().CACHE_VERSION

    def c_code(self, node, name, inputs, outputs, sub):
        return self._c_code(inputs, outputs, sub["fail"])

    @staticmethod
    def _matrices(*values):
        values = [pt.as_tensor_variable(v) for v in values]
        dtype = values[0].dtype
        for v in values:
            if v.ndim != 2 or v.dtype not in FLOAT_DTYPES or v.dtype != dtype:
                raise TypeError(f"LSTM cell inputs must be float32 or float64 matrices of one dtype, got {v.type}")
        return values

    @staticmethod
    def _check_values(name, gates, *cells):
        n, four_h = gates.shape
        if four_h % 4 or any(c.shape != (n, four_h // 4) for c in cells):
            raise ValueError(f"{name}: gates must be (N, 4H) and cell states (N, H); got gates {n}x{four_h}")


class LSTMCell(_LSTMOp):
    """One LSTM step from its pre-activations (see the module docstring for the equations).

    Inputs:
    - a: (N, 4H) pre-activations x Wx + h_prev Wh + b, gates in the order i, f, o, g
    - c_prev: (N, H) previous cell state
    Returns:
    - h: (N, H) next hidden state; c: (N, H) next cell state
    - act: (N, 4H) the activated gates [i, f, o, g], for a backward pass
    Pullback: LSTMCellGrad (plus the activations' derivatives where act itself gets a gradient).
    """

    def make_node(self, a, c_prev):
        a, c_prev = self._matrices(a, c_prev)
        cell = pt.tensor(dtype=a.dtype, shape=c_prev.type.shape)
        return Apply(self, [a, c_prev], [cell, cell.type(), a.type()])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[1], shapes[1], shapes[0]]

    def perform(self, node, inputs, output_storage):
        a, c_prev = inputs
        self._check_values(type(self).__name__, a, c_prev)
        for storage, value in zip(output_storage, lstm_step_forward(a, c_prev)):
            storage[0] = np.asarray(value).astype(a.dtype)

    def pullback(self, inputs, outputs, cotangents):
        a, c_prev = inputs
        h, c, act = outputs
        g_h, g_c, g_act = cotangents
        g_h = pt.zeros_like(h) if isinstance(g_h.type, DisconnectedType) else g_h
        g_c = pt.zeros_like(c) if isinstance(g_c.type, DisconnectedType) else g_c
        d_a, d_c_prev = LSTMCellGrad()(act, c_prev, c, g_h, g_c)
        if not isinstance(g_act.type, DisconnectedType):
            hidden = c.shape[1]
            sigmoids, g = act[:, : 3 * hidden], act[:, 3 * hidden :]
            d_a = d_a + g_act * pt.concatenate([sigmoids * (1 - sigmoids), 1 - g * g], axis=1)
        return [d_a, d_c_prev]

    def _c_code(self, inputs, outputs, fail):
        return self._kernel().cell_code(inputs, outputs, fail)


class LSTMCellGrad(_LSTMOp):
    """The pullback of one LSTMCell step.

    Inputs:
    - act: (N, 4H) LSTMCell's activated gates; c_prev, c: (N, H) the cell states before and after
    - dh, dc: (N, H) the gradients of the step's h and c outputs
    Returns:
    - d_a: (N, 4H) the gradient of the pre-activations; d_c_prev: (N, H) that of c_prev
    Pullback: not implemented (no second derivatives through an LSTM are needed).
    """

    def make_node(self, act, c_prev, c, dh, dc):
        values = self._matrices(act, c_prev, c, dh, dc)
        return Apply(self, values, [values[0].type(), values[1].type()])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0], shapes[1]]

    def perform(self, node, inputs, output_storage):
        act, c_prev, c, dh, dc = inputs
        self._check_values(type(self).__name__, act, c_prev, c, dh, dc)
        for storage, value in zip(output_storage, lstm_step_backward(act, c_prev, c, dh, dc)):
            storage[0] = np.asarray(value).astype(act.dtype)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, v) for k, v in enumerate(inputs)]

    def _c_code(self, inputs, outputs, fail):
        return self._kernel().cell_grad_code(inputs, outputs, fail)

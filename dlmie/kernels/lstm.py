"""The LSTM's gates and cell update, forward and backward, as two compiled Ops.

From the pre-activations a = x Wx + h_prev Wh + b (N, 4H), gates in the order i, f, o, g:

    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2H]), sigmoid(a[:, 2H:3H]);  g = tanh(a[:, 3H:])
    c = f * c_prev + i * g;   h = o * tanh(c)

Written with PyTensor's ops this is four slices, five transcendental functions and their
products; PyTensor's C loops compute each exp one at a time (several ns per element), and the
backward pass of `scan` recomputes the forward step to get the gates back. `LSTMCell` does the
step in one vectorized pass and also returns the activated gates, so that a backward pass can
use them instead of recomputing them (dlmie.rnn.lstm's explicit backward does); `LSTMCellGrad`
is that backward pass for one step, cs231n's lstm_step_backward:

    dc_total = dc + dh * o * (1 - tanh(c)^2)
    da = [dc_total * g * i (1 - i),  dc_total * c_prev * f (1 - f),
          dh * tanh(c) * o (1 - o),  dc_total * i * (1 - g^2)]
    dc_prev = dc_total * f
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, grad_not_implemented
from pytensor.graph.basic import Apply

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous

_LSTM_SUPPORT_CODE = r"""
namespace dlmie_lstm {

// sigmoid and tanh through one exp each, with the argument clamped so that exp never overflows
// (-ffast-math assumes no infinities): at |x| = 40 both are at their limits in float64.
static inline float sigm(float x) { x = x < -40.f ? -40.f : (x > 40.f ? 40.f : x); return 1.f / (1.f + expf(-x)); }
// float64 (gradient checks) through the scalar exp: see exp_t in dlmie.kernels.cross_entropy.
static __attribute__((noinline)) double sigm(double x) { x = x < -40. ? -40. : (x > 40. ? 40. : x); return 1. / (1. + exp(-x)); }
template <typename T> static inline T tanh_(T x) { return (T)2 * sigm((T)2 * x) - (T)1; }

// Row n of a (N, 4H), c_prev (N, H) -> h, c (N, H), act (N, 4H) = [i, f, o, g]; all C-contiguous.
template <typename T>
static void forward(const T *a, const T *c_prev, npy_intp N, npy_intp H, T *h, T *c, T *act) {
    for (npy_intp n = 0; n < N; ++n) {
        const T *an = a + n * 4 * H, *cp = c_prev + n * H;
        T *hn = h + n * H, *cn = c + n * H, *gates = act + n * 4 * H;
        #pragma omp simd
        for (npy_intp k = 0; k < H; ++k) {
            const T i = sigm(an[k]), f = sigm(an[H + k]), o = sigm(an[2 * H + k]), g = tanh_(an[3 * H + k]);
            const T cell = f * cp[k] + i * g;
            gates[k] = i; gates[H + k] = f; gates[2 * H + k] = o; gates[3 * H + k] = g;
            cn[k] = cell;
            hn[k] = o * tanh_(cell);
        }
    }
}

// The pullback of one step: (act, c_prev, c, dh, dc) -> da (N, 4H), dc_prev (N, H).
template <typename T>
static void backward(const T *act, const T *c_prev, const T *c, const T *dh, const T *dc,
                     npy_intp N, npy_intp H, T *da, T *dc_prev) {
    for (npy_intp n = 0; n < N; ++n) {
        const T *gates = act + n * 4 * H, *cp = c_prev + n * H, *cn = c + n * H;
        const T *dhn = dh + n * H, *dcn = dc + n * H;
        T *dan = da + n * 4 * H, *dcp = dc_prev + n * H;
        #pragma omp simd
        for (npy_intp k = 0; k < H; ++k) {
            const T i = gates[k], f = gates[H + k], o = gates[2 * H + k], g = gates[3 * H + k];
            const T tc = tanh_(cn[k]);
            const T dcell = dcn[k] + dhn[k] * o * ((T)1 - tc * tc);
            dan[k] = dcell * g * i * ((T)1 - i);
            dan[H + k] = dcell * cp[k] * f * ((T)1 - f);
            dan[2 * H + k] = dhn[k] * tc * o * ((T)1 - o);
            dan[3 * H + k] = dcell * i * ((T)1 - g * g);
            dcp[k] = dcell * f;
        }
    }
}

}  // namespace dlmie_lstm
"""


def _c_contiguous_inputs(names, fail):
    """C: a C-contiguous reference `<name>_c` to each input (a new one only where it is not)."""
    return "\n".join(
        f"""PyArrayObject *{n}_c = PyArray_GETCONTIGUOUS({n});
            if (!{n}_c) {{ {fail} }}"""
        for n in names
    )


def _release(names):
    return " ".join(f"Py_DECREF({n}_c);" for n in names)


class _LSTMOp(KernelOp):
    """Common parts: the C support code, the checks of matrices that must agree in shape."""

    __props__ = ()

    SUPPORT_CODE = _LSTM_SUPPORT_CODE
    HEADERS = ("<math.h>",)
    # -ffast-math lets GCC call glibc's vector exp (libmvec) from the `omp simd` loops.
    COMPILE_ARGS = ("-fopenmp-simd", "-ffast-math")
    CACHE_VERSION = (3,)

    @staticmethod
    def _matrices(*values):
        values = [pt.as_tensor_variable(v) for v in values]
        dtype = values[0].dtype
        for v in values:
            if v.ndim != 2 or v.dtype not in FLOAT_DTYPES or v.dtype != dtype:
                raise TypeError(f"LSTM cell inputs must be float32 or float64 matrices of one dtype, got {v.type}")
        return values

    @staticmethod
    def _c_check_shapes(gates, cells, fail, name):
        """C: N, H from the (N, 4H) `gates` input; every (N, H) input in `cells` must match."""
        checks = " || ".join(
            f"PyArray_DIMS({c})[0] != N || PyArray_DIMS({c})[1] != H" for c in cells
        )
        return f"""
            const npy_intp N = PyArray_DIMS({gates})[0], H = PyArray_DIMS({gates})[1] / 4;
            if (PyArray_DIMS({gates})[1] % 4 || {checks}) {{
                PyErr_Format(PyExc_ValueError, "{name}: gates must be (N, 4H) and cell states (N, H); got gates %ldx%ld",
                             (long)PyArray_DIMS({gates})[0], (long)PyArray_DIMS({gates})[1]);
                {fail}
            }}"""

    @staticmethod
    def _check_values(name, gates, *cells):
        n, four_h = gates.shape
        if four_h % 4 or any(c.shape != (n, four_h // 4) for c in cells):
            raise ValueError(f"{name}: gates must be (N, 4H) and cell states (N, H); got gates {n}x{four_h}")
        return four_h // 4


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -40, 40)))  # clamped as in the C code: no overflow warnings


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
        hidden = self._check_values(type(self).__name__, a, c_prev)
        i, f, o = (_sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        g = np.tanh(a[:, 3 * hidden :])
        c = f * c_prev + i * g
        for storage, value in zip(output_storage, (o * np.tanh(c), c, np.concatenate([i, f, o, g], axis=1))):
            storage[0] = value.astype(a.dtype)

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

    def c_code(self, node, name, inputs, outputs, sub):
        a, c_prev = inputs
        h, c, act = outputs
        fail, t = sub["fail"], f"dtype_{a}"
        return f"""
        {{
            {self._c_check_shapes(a, [c_prev], fail, "LSTMCell")}
            {alloc_c_contiguous(h, ["N", "H"], a, fail)}
            {alloc_c_contiguous(c, ["N", "H"], a, fail)}
            {alloc_c_contiguous(act, ["N", "4 * H"], a, fail)}
            {_c_contiguous_inputs([a, c_prev], fail)}
            dlmie_lstm::forward<{t}>(({t}*)PyArray_DATA({a}_c), ({t}*)PyArray_DATA({c_prev}_c), N, H,
                ({t}*)PyArray_DATA({h}), ({t}*)PyArray_DATA({c}), ({t}*)PyArray_DATA({act}));
            {_release([a, c_prev])}
        }}
        """


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
        hidden = self._check_values(type(self).__name__, act, c_prev, c, dh, dc)
        i, f, o, g = (act[:, k * hidden : (k + 1) * hidden] for k in range(4))
        tc = np.tanh(c)
        d_cell = dc + dh * o * (1 - tc**2)
        d_a = np.concatenate([d_cell * g * i * (1 - i), d_cell * c_prev * f * (1 - f), dh * tc * o * (1 - o),
                              d_cell * i * (1 - g**2)], axis=1)
        output_storage[0][0] = d_a.astype(act.dtype)
        output_storage[1][0] = (d_cell * f).astype(act.dtype)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, k, v) for k, v in enumerate(inputs)]

    def c_code(self, node, name, inputs, outputs, sub):
        act, c_prev, c, dh, dc = inputs
        d_a, d_c_prev = outputs
        fail, t = sub["fail"], f"dtype_{act}"
        return f"""
        {{
            {self._c_check_shapes(act, [c_prev, c, dh, dc], fail, "LSTMCellGrad")}
            {alloc_c_contiguous(d_a, ["N", "4 * H"], act, fail)}
            {alloc_c_contiguous(d_c_prev, ["N", "H"], act, fail)}
            {_c_contiguous_inputs([act, c_prev, c, dh, dc], fail)}
            dlmie_lstm::backward<{t}>(({t}*)PyArray_DATA({act}_c), ({t}*)PyArray_DATA({c_prev}_c),
                ({t}*)PyArray_DATA({c}_c), ({t}*)PyArray_DATA({dh}_c), ({t}*)PyArray_DATA({dc}_c), N, H,
                ({t}*)PyArray_DATA({d_a}), ({t}*)PyArray_DATA({d_c_prev}));
            {_release([act, c_prev, c, dh, dc])}
        }}
        """

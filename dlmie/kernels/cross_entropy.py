"""Softmax cross-entropy, per row of a score matrix, and its gradient, as two compiled Ops.

The loss of every classifier and captioner. Written with PyTensor's ops, log-softmax, the
pick of the target and their gradient come to about 12 full passes over the (N, V) scores, each a
max, sum or exp loop at several ns per element: for a captioner's 2176 x 2000 scores, several times
the cost of the GEMM that made the scores. These two
Ops need two passes forward (max, then sum of exp) and one backward (exp, write), and skip
the exp entirely on rows whose gradient is zero (the padding of a caption batch).
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous, alloc_vector

_XENT_SUPPORT_CODE = r"""
namespace dlmie_xent {

// float32 (training) goes through glibc's vector expf; float64 (gradient checks) through the
// scalar exp, correctly rounded where the vector one is off by up to 4 ulp, which would show up
// as noise in finite differences. `noinline` keeps GCC from vectorizing the float64 calls.
static inline float exp_t(float x) { return expf(x); }
static __attribute__((noinline)) double exp_t(double x) { return exp(x); }

// Row m of the scores s (M, V), strides in elements:
// lse[m] = log sum_k exp(s[m, k]), loss[m] = lse[m] - s[m, y[m]].
// Returns -1, or the first row whose target is outside [0, V).
template <typename T>
static npy_intp forward(const T *s, npy_intp M, npy_intp V, npy_intp sm, npy_intp sv,
                        const npy_int64 *y, npy_intp sy, T *loss, T *lse) {
    for (npy_intp m = 0; m < M; ++m) {
        const T *r = s + m * sm;
        const npy_int64 t = y[m * sy];
        if (t < 0 || t >= V) return m;
        T mx = r[0];
        double sum = 0;
        if (sv == 1) {
            #pragma omp simd reduction(max:mx)
            for (npy_intp k = 0; k < V; ++k) mx = r[k] > mx ? r[k] : mx;
            #pragma omp simd reduction(+:sum)
            for (npy_intp k = 0; k < V; ++k) sum += exp_t(r[k] - mx);
        } else {
            for (npy_intp k = 0; k < V; ++k) mx = r[k * sv] > mx ? r[k * sv] : mx;
            for (npy_intp k = 0; k < V; ++k) sum += exp_t(r[k * sv] - mx);
        }
        const double l = (double)mx + log(sum);
        lse[m] = (T)l;
        loss[m] = (T)(l - (double)r[t * sv]);
    }
    return -1;
}

// ds[m, k] = g[m] * (exp(s[m, k] - lse[m]) - [k == y[m]]) into a C-contiguous ds (M, V).
template <typename T>
static npy_intp backward(const T *s, npy_intp M, npy_intp V, npy_intp sm, npy_intp sv,
                         const npy_int64 *y, npy_intp sy, const T *lse, npy_intp sl,
                         const T *g, npy_intp sg, T *ds) {
    for (npy_intp m = 0; m < M; ++m) {
        const T *r = s + m * sm;
        T *d = ds + m * V;
        const npy_int64 t = y[m * sy];
        if (t < 0 || t >= V) return m;
        const T gm = g[m * sg], l = lse[m * sl];
        if (gm == 0) {
            memset(d, 0, V * sizeof(T));
            continue;
        }
        if (sv == 1) {
            #pragma omp simd
            for (npy_intp k = 0; k < V; ++k) d[k] = gm * exp_t(r[k] - l);
        } else {
            for (npy_intp k = 0; k < V; ++k) d[k] = gm * exp_t(r[k * sv] - l);
        }
        d[t] -= gm;
    }
    return -1;
}

}  // namespace dlmie_xent
"""


class _CrossEntropyOp(KernelOp):
    """Common parts: the C support code and the checks of scores (M, V) and targets (M,)."""

    SUPPORT_CODE = _XENT_SUPPORT_CODE
    HEADERS = ("<math.h>", "<string.h>")
    # -ffast-math lets GCC call glibc's vector exp (libmvec) from the `omp simd` loops: 4-8
    # exps per instruction. Nothing here relies on IEEE corner cases: scores are finite.
    COMPILE_ARGS = ("-fopenmp-simd", "-ffast-math")
    CACHE_VERSION = (3,)

    __props__ = ()

    @staticmethod
    def _check(scores, y):
        scores, y = pt.as_tensor_variable(scores), pt.as_tensor_variable(y)
        if scores.ndim != 2 or scores.dtype not in FLOAT_DTYPES:
            raise TypeError(f"softmax cross-entropy takes 2-D float32/float64 scores (M, V), got {scores.type}")
        if y.ndim != 1 or not y.dtype.startswith(("int", "uint")):
            raise TypeError(f"targets must be a 1-D integer tensor (M,), got {y.type}")
        return scores, pt.cast(y, "int64")

    @staticmethod
    def _c_check(scores, y, fail, name, vectors=()):
        same_rows = " || ".join(f"PyArray_DIMS({v})[0] != M" for v in (y, *vectors))
        return f"""
            const npy_intp M = PyArray_DIMS({scores})[0], V = PyArray_DIMS({scores})[1];
            if ({same_rows}) {{
                PyErr_Format(PyExc_ValueError, "{name}: scores have %ld rows but a per-row input differs",
                             (long)M);
                {fail}
            }}
            if (V == 0 && M > 0) {{
                PyErr_SetString(PyExc_ValueError, "{name}: softmax over zero classes");
                {fail}
            }}
        """

    @staticmethod
    def _c_bad_target(bad, scores, y, name, fail):
        return f"""
            if ({bad} >= 0) {{
                PyErr_Format(PyExc_IndexError, "{name}: target %lld of row %ld is not a class index in [0, %ld)",
                             (long long)((npy_int64*)PyArray_DATA({y}))[{bad} * (PyArray_STRIDES({y})[0] / 8)],
                             (long){bad}, (long)PyArray_DIMS({scores})[1]);
                {fail}
            }}
        """

    def _check_values(self, scores, y, *vectors):
        """perform's version of the C checks, with the same messages."""
        name = type(self).__name__
        if any(len(v) != len(scores) for v in (y, *vectors)):
            raise ValueError(f"{name}: scores have {len(scores)} rows but a per-row input differs")
        if scores.shape[1] == 0 and len(scores):
            raise ValueError(f"{name}: softmax over zero classes")
        bad = (y < 0) | (y >= scores.shape[1])
        if bad.any():
            row = int(np.argmax(bad))
            raise IndexError(f"{name}: target {y[row]} of row {row} is not a class index in [0, {scores.shape[1]})")


class SoftmaxCrossEntropy(_CrossEntropyOp):
    """Softmax cross-entropy of every row of a score matrix.

    Inputs:
    - scores: (M, V), float32 or float64, any strides
    - y: (M,) integer targets in [0, V) (an IndexError names the first one that is not)
    Returns:
    - loss: (M,) -log softmax(scores[m])[y[m]]
    - lse: (M,) log sum_k exp(scores[m, k]), accumulated in float64 (kept for the pullback)
    Pullback: SoftmaxCrossEntropyGrad for `loss`; softmax(scores) * g for `lse`.
    """

    def make_node(self, scores, y):
        scores, y = self._check(scores, y)
        rows = scores.type.shape[0]
        vector = pt.tensor(dtype=scores.dtype, shape=(rows,))
        return Apply(self, [scores, y], [vector, vector.type()])

    def connection_pattern(self, node):
        return [[True, True], [False, False]]

    def infer_shape(self, fgraph, node, shapes):
        rows = (shapes[0][0],)
        return [rows, rows]

    def perform(self, node, inputs, output_storage):
        scores, y = inputs
        self._check_values(scores, y)
        s = scores.astype(np.float64)
        peak = s.max(axis=1, keepdims=True)
        lse = (peak + np.log(np.exp(s - peak).sum(axis=1, keepdims=True)))[:, 0]
        output_storage[0][0] = (lse - s[np.arange(len(y)), y]).astype(scores.dtype)
        output_storage[1][0] = lse.astype(scores.dtype)

    def pullback(self, inputs, outputs, cotangents):
        scores, y = inputs
        _, lse = outputs
        g_loss, g_lse = cotangents
        if isinstance(g_loss.type, DisconnectedType):
            g_loss = pt.zeros_like(lse)
        d_scores = SoftmaxCrossEntropyGrad()(scores, y, lse, g_loss)
        if not isinstance(g_lse.type, DisconnectedType):
            d_scores = d_scores + pt.exp(scores - lse[:, None]) * g_lse[:, None]
        return [d_scores, disconnected_type()]

    def c_code(self, node, name, inputs, outputs, sub):
        scores, y = inputs
        loss, lse = outputs
        fail, t, op = sub["fail"], f"dtype_{scores}", type(self).__name__
        return f"""
        {{
            {self._c_check(scores, y, fail, op)}
            {alloc_vector(loss, "M", scores, fail)}
            {alloc_vector(lse, "M", scores, fail)}
            const npy_intp e = sizeof({t});
            const npy_intp *st = PyArray_STRIDES({scores});
            const npy_intp bad = dlmie_xent::forward<{t}>(({t}*)PyArray_DATA({scores}), M, V, st[0] / e, st[1] / e,
                (npy_int64*)PyArray_DATA({y}), PyArray_STRIDES({y})[0] / 8,
                ({t}*)PyArray_DATA({loss}), ({t}*)PyArray_DATA({lse}));
            {self._c_bad_target("bad", scores, y, op, fail)}
        }}
        """


class SoftmaxCrossEntropyGrad(_CrossEntropyOp):
    """The gradient of SoftmaxCrossEntropy's `loss` with respect to the scores.

    Inputs:
    - scores: (M, V); y: (M,) integer targets; lse: (M,) SoftmaxCrossEntropy's second output
    - g: (M,) the gradient of each row's loss (rows with g = 0 cost no exp)
    Returns:
    - d_scores: (M, V), C-contiguous, g[m] * (softmax(scores[m]) - onehot(y[m]))
    Pullback: not implemented (no second derivatives of the loss are needed).
    """

    def make_node(self, scores, y, lse, g):
        scores, y = self._check(scores, y)
        lse, g = pt.as_tensor_variable(lse), pt.as_tensor_variable(g)
        for v in (lse, g):
            if v.ndim != 1 or v.dtype != scores.dtype:
                raise TypeError(f"lse and g must be {scores.dtype} vectors, got {v.type}")
        return Apply(self, [scores, y, lse, g], [scores.type()])

    def infer_shape(self, fgraph, node, shapes):
        return [shapes[0]]

    def perform(self, node, inputs, output_storage):
        scores, y, lse, g = inputs
        self._check_values(scores, y, lse, g)
        d = np.exp(scores.astype(np.float64) - lse[:, None]) * g[:, None]
        d[np.arange(len(y)), y] -= g
        output_storage[0][0] = d.astype(scores.dtype)

    def pullback(self, inputs, outputs, cotangents):
        return [grad_not_implemented(self, i, v) for i, v in enumerate(inputs)]

    def c_code(self, node, name, inputs, outputs, sub):
        scores, y, lse, g = inputs
        (d_scores,) = outputs
        fail, t, op = sub["fail"], f"dtype_{scores}", type(self).__name__
        return f"""
        {{
            {self._c_check(scores, y, fail, op, vectors=(lse, g))}
            {alloc_c_contiguous(d_scores, ["M", "V"], scores, fail)}
            const npy_intp e = sizeof({t});
            const npy_intp *st = PyArray_STRIDES({scores});
            const npy_intp bad = dlmie_xent::backward<{t}>(({t}*)PyArray_DATA({scores}), M, V, st[0] / e, st[1] / e,
                (npy_int64*)PyArray_DATA({y}), PyArray_STRIDES({y})[0] / 8,
                ({t}*)PyArray_DATA({lse}), PyArray_STRIDES({lse})[0] / e,
                ({t}*)PyArray_DATA({g}), PyArray_STRIDES({g})[0] / e, ({t}*)PyArray_DATA({d_scores}));
            {self._c_bad_target("bad", scores, y, op, fail)}
        }}
        """

"""Training-mode batch normalization, forward and backward, as two compiled Ops.

The other half of a conv block. Written with PyTensor's elementwise and reduction ops, a
training-mode batchnorm becomes ~6 `Sum{axes=[0, 2, 3]}` reductions and a few multi-output
Composites over full activations, forward and backward, which PyTensor's C loops run at
4-20 ns per element (scalar, latency-bound accumulation): together more time than the
convolution's GEMMs. These two ops do the same arithmetic in 3 (forward) and 2 (backward)
vectorized passes over each channel. The loops run channel by channel over (image, row)
spans, so any strides work, and contiguous image planes (NCHW, or the channel-first
(C, N, H, W) memory that conv2d's GEMM produces) take the fast path.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply
from pytensor.graph.replace import clone_replace
from pytensor.link.c.params_type import ParamsType

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_like, alloc_vector


_BN_SUPPORT_CODE = r"""
namespace dlmie_bn {

// A 4-D view (N, C, H, W) with strides in elements; 2-D input is (N, C, 1, 1).
template <typename T> struct View {
    T *data; npy_intp n, c, h, w, sn, sc, sh, sw;
};

template <typename T>
static int make_view(PyArrayObject *a, View<T> *v) {
    const int nd = PyArray_NDIM(a);
    const npy_intp *d = PyArray_DIMS(a), *s = PyArray_STRIDES(a);
    npy_intp dims[4] = {d[0], d[1], nd == 4 ? d[2] : 1, nd == 4 ? d[3] : 1};
    npy_intp st[4] = {s[0], s[1], nd == 4 ? s[2] : 0, nd == 4 ? s[3] : 0};
    for (int k = 0; k < 4; ++k) if (st[k] % (npy_intp)sizeof(T)) return -1;
    v->data = (T*)PyArray_DATA(a);
    v->n = dims[0]; v->c = dims[1]; v->h = dims[2]; v->w = dims[3];
    v->sn = st[0] / (npy_intp)sizeof(T); v->sc = st[1] / (npy_intp)sizeof(T);
    v->sh = st[2] / (npy_intp)sizeof(T); v->sw = st[3] / (npy_intp)sizeof(T);
    return 0;
}

// The (h, w) plane as `rows` runs of `len` elements: one run when it is contiguous.
template <typename T>
static inline bool plane_contiguous(const View<T> &v) {
    return (v.w == 1 || v.sw == 1) && (v.h == 1 || v.sh == v.w);
}

// Per channel c: mean[c], var[c] (biased) and out = gamma * (x - mean) / sqrt(var + eps) + beta.
template <typename T>
static void forward(const View<T> &x, const T *gamma, npy_intp sg, const T *beta, npy_intp sb,
                    double eps, View<T> &out, T *mean, npy_intp smean, T *var, npy_intp svar) {
    const npy_intp N = x.n, C = x.c, H = x.h, W = x.w;
    const double M = (double)(N * H * W);
    const bool fast = plane_contiguous(x) && plane_contiguous(out);
    const npy_intp rows = fast ? 1 : H, len = fast ? H * W : W;
    for (npy_intp c = 0; c < C; ++c) {
        double s = 0;
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp r = 0; r < rows; ++r) {
                const T *p = x.data + n * x.sn + c * x.sc + r * x.sh;
                if (fast) {
                    #pragma omp simd reduction(+:s)
                    for (npy_intp k = 0; k < len; ++k) s += p[k];
                } else {
                    for (npy_intp k = 0; k < len; ++k) s += p[k * x.sw];
                }
            }
        const double mu = s / M;
        const T mu_t = (T)mu;
        double ss = 0;
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp r = 0; r < rows; ++r) {
                const T *p = x.data + n * x.sn + c * x.sc + r * x.sh;
                if (fast) {
                    #pragma omp simd reduction(+:ss)
                    for (npy_intp k = 0; k < len; ++k) { double d = (double)p[k] - mu; ss += d * d; }
                } else {
                    for (npy_intp k = 0; k < len; ++k) { double d = (double)p[k * x.sw] - mu; ss += d * d; }
                }
            }
        const double v = ss / M;
        mean[c * smean] = mu_t;
        var[c * svar] = (T)v;
        const T scale = (T)((double)gamma[c * sg] / sqrt((double)(T)v + eps)), shift = beta[c * sb];
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp r = 0; r < rows; ++r) {
                const T *p = x.data + n * x.sn + c * x.sc + r * x.sh;
                T *q = out.data + n * out.sn + c * out.sc + r * out.sh;
                if (fast) {
                    #pragma omp simd
                    for (npy_intp k = 0; k < len; ++k) q[k] = (p[k] - mu_t) * scale + shift;
                } else {
                    for (npy_intp k = 0; k < len; ++k) q[k * out.sw] = (p[k * x.sw] - mu_t) * scale + shift;
                }
            }
    }
}

// Per channel c, with xhat = (x - mean) / sqrt(var + eps):
// dbeta = sum(dy), dgamma = sum(dy * xhat),
// dx = gamma / sqrt(var + eps) * (dy - dbeta / M - xhat * dgamma / M).
template <typename T>
static void backward(const View<T> &x, const View<T> &dy, const T *gamma, npy_intp sg,
                     const T *mean, npy_intp smean, const T *var, npy_intp svar, double eps,
                     View<T> &dx, T *dgamma, npy_intp sdg, T *dbeta, npy_intp sdb) {
    const npy_intp N = x.n, C = x.c, H = x.h, W = x.w;
    const double M = (double)(N * H * W);
    const bool fast = plane_contiguous(x) && plane_contiguous(dy) && plane_contiguous(dx);
    const npy_intp rows = fast ? 1 : H, len = fast ? H * W : W;
    for (npy_intp c = 0; c < C; ++c) {
        const T mu = mean[c * smean];
        const double invstd = 1.0 / sqrt((double)var[c * svar] + eps);
        double sdy = 0, sdyx = 0;
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp r = 0; r < rows; ++r) {
                const T *p = x.data + n * x.sn + c * x.sc + r * x.sh;
                const T *g = dy.data + n * dy.sn + c * dy.sc + r * dy.sh;
                if (fast) {
                    #pragma omp simd reduction(+:sdy,sdyx)
                    for (npy_intp k = 0; k < len; ++k) {
                        sdy += g[k]; sdyx += (double)g[k] * ((double)p[k] - (double)mu);
                    }
                } else {
                    for (npy_intp k = 0; k < len; ++k) {
                        const double gk = g[k * dy.sw];
                        sdy += gk; sdyx += gk * ((double)p[k * x.sw] - (double)mu);
                    }
                }
            }
        dbeta[c * sdb] = (T)sdy;
        dgamma[c * sdg] = (T)(sdyx * invstd);
        const double gam = gamma[c * sg];
        const T k1 = (T)(gam * invstd);
        const T k2 = (T)(-gam * invstd * invstd * invstd * sdyx / M);
        const T k3 = (T)(-gam * invstd * sdy / M);
        for (npy_intp n = 0; n < N; ++n)
            for (npy_intp r = 0; r < rows; ++r) {
                const T *p = x.data + n * x.sn + c * x.sc + r * x.sh;
                const T *g = dy.data + n * dy.sn + c * dy.sc + r * dy.sh;
                T *q = dx.data + n * dx.sn + c * dx.sc + r * dx.sh;
                if (fast) {
                    #pragma omp simd
                    for (npy_intp k = 0; k < len; ++k) q[k] = k1 * g[k] + k2 * (p[k] - mu) + k3;
                } else {
                    for (npy_intp k = 0; k < len; ++k)
                        q[k * dx.sw] = k1 * g[k * dy.sw] + k2 * (p[k * x.sw] - mu) + k3;
                }
            }
    }
}

}  // namespace dlmie_bn
"""


def _bn_axes(ndim):
    return (0,) if ndim == 2 else (0, 2, 3)


def _bn_per_channel(v, ndim):
    return v.dimshuffle(("x", 0) if ndim == 2 else ("x", 0, "x", "x"))


class _BatchNormOp(KernelOp):
    """Common parts: `eps`, the C support code, the input checks."""

    SUPPORT_CODE = _BN_SUPPORT_CODE
    HEADERS = ("<math.h>",)
    CACHE_VERSION = (3,)

    __props__ = ("eps",)
    params_type = ParamsType(eps=pytensor.scalar.float64)

    def __init__(self, eps: float):
        self.eps = float(eps)

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

    def _c_check_channels(self, x, vectors, fail):
        checks = "\n".join(
            f"""if (PyArray_DIMS({v})[0] != PyArray_DIMS({x})[1]) {{
                PyErr_SetString(PyExc_ValueError,
                                "{type(self).__name__}: a per-channel vector does not match the channels");
                {fail}
            }}"""
            for v in vectors
        )
        return checks


class BatchNormTrain(_BatchNormOp):
    """Training-mode batch normalization with the batch's own statistics.

    Inputs:
    - x: (N, C) or (N, C, H, W), float32 or float64, any strides
    - gamma, beta: (C,), the dtype of x
    Returns:
    - out: like x (same shape and memory order), gamma * (x - mean) / sqrt(var + eps) + beta
    - mean, var: (C,), the mean and biased variance over axes (0,) or (0, 2, 3), accumulated
      in float64
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
        axes, shape = _bn_axes(x.ndim), (1, -1) + (1,) * (x.ndim - 2)
        mean = x.mean(axis=axes, dtype=np.float64)
        var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes, dtype=np.float64)
        mean, var = mean.astype(x.dtype), var.astype(x.dtype)
        scale = (gamma / np.sqrt(var.astype(np.float64) + self.eps)).astype(x.dtype)
        out = (x - mean.reshape(shape)) * scale.reshape(shape) + beta.reshape(shape)
        for storage, value in zip(output_storage, (out.astype(x.dtype), mean, var)):
            storage[0] = value

    def pullback(self, inputs, outputs, cotangents):
        x, gamma, beta = inputs
        _, mean, var = outputs
        g_out, g_mean, g_var = cotangents
        if isinstance(g_out.type, DisconnectedType):
            dx, dgamma, dbeta = pt.zeros_like(x), pt.zeros_like(gamma), pt.zeros_like(beta)
        else:
            dx, dgamma, dbeta = BatchNormGrad(self.eps)(x, gamma, mean, var, g_out)
        m = pt.cast(x.size // x.shape[1], x.dtype)
        if not isinstance(g_mean.type, DisconnectedType):
            dx = dx + _bn_per_channel(g_mean, x.ndim) / m
        if not isinstance(g_var.type, DisconnectedType):
            dx = dx + _bn_per_channel(g_var * 2, x.ndim) * (x - _bn_per_channel(mean, x.ndim)) / m
        return [dx, dgamma, dbeta]

    def c_code(self, node, name, inputs, outputs, sub):
        x, gamma, beta = inputs
        out, mean, var = outputs
        params, fail = sub["params"], sub["fail"]
        t = f"dtype_{x}"
        return f"""
        {{
            {self._c_check_channels(x, (gamma, beta), fail)}
            const npy_intp C = PyArray_DIMS({x})[1];
            {alloc_like(out, x, fail)}
            {alloc_vector(mean, "C", x, fail)}
            {alloc_vector(var, "C", x, fail)}
            dlmie_bn::View<{t}> vx, vout;
            if (dlmie_bn::make_view({x}, &vx) || dlmie_bn::make_view({out}, &vout)) {{
                PyErr_SetString(PyExc_ValueError, "BatchNormTrain: strides are not whole elements");
                {fail}
            }}
            const npy_intp e = sizeof({t});
            dlmie_bn::forward<{t}>(vx,
                ({t}*)PyArray_DATA({gamma}), PyArray_STRIDES({gamma})[0] / e,
                ({t}*)PyArray_DATA({beta}), PyArray_STRIDES({beta})[0] / e,
                {params}->eps, vout,
                ({t}*)PyArray_DATA({mean}), 1, ({t}*)PyArray_DATA({var}), 1);
        }}
        """


def _batchnorm_grad_graph(x, gamma, mean, var, dy, eps):
    """The symbolic formula BatchNormGrad computes, for its own pullback (second derivatives)."""
    axes, bc = _bn_axes(x.ndim), (lambda v: _bn_per_channel(v, x.ndim))
    m = pt.cast(x.size // x.shape[1], x.dtype)
    invstd = 1 / pt.sqrt(var + pt.constant(np.asarray(eps, dtype=x.dtype)))
    centered = x - bc(mean)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * centered).sum(axis=axes) * invstd
    dx = bc(gamma * invstd) * (dy - bc(dbeta / m) - centered * bc(invstd * dgamma / m))
    return dx, dgamma, dbeta


class BatchNormGrad(_BatchNormOp):
    """The gradients of BatchNormTrain's `out`, given its inputs and statistics.

    Inputs:
    - x: (N, C) or (N, C, H, W); gamma, mean, var: (C,); dy: the gradient of `out`, like x
    Returns:
    - dx: like x (same memory order), the gradient through out, mean and var:
      gamma / sqrt(var + eps) * (dy - mean(dy) - xhat * mean(dy * xhat)), xhat the normalized x
    - dgamma: (C,) sum(dy * xhat); dbeta: (C,) sum(dy), over axes (0,) or (0, 2, 3)
    Pullback: that of the same formula written in PyTensor ops.
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
        axes, shape = _bn_axes(x.ndim), (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // x.shape[1]
        invstd = 1 / np.sqrt(var.astype(np.float64) + self.eps)
        centered = x - mean.reshape(shape)
        dbeta = dy.sum(axis=axes, dtype=np.float64)
        sdyx = (dy * centered).sum(axis=axes, dtype=np.float64)
        dgamma = sdyx * invstd
        gam = gamma.astype(np.float64)
        k1, k2, k3 = gam * invstd, -gam * invstd**3 * sdyx / m, -gam * invstd * dbeta / m
        dx = k1.reshape(shape) * dy + k2.reshape(shape) * centered + k3.reshape(shape)
        for storage, value in zip(output_storage, (dx, dgamma, dbeta)):
            storage[0] = value.astype(x.dtype)

    def pullback(self, inputs, outputs, cotangents):
        # The formula is differentiated with respect to stand-ins for the inputs: mean and var
        # are usually computed from x, and must count here as the independent inputs they are.
        stand_ins = [v.type() for v in inputs]
        formula = _batchnorm_grad_graph(*stand_ins, self.eps)
        # One scalar <formula, cotangents> rather than known gradients of each output: dx is
        # computed from dgamma and dbeta, whose given gradients would replace, not add to, the
        # part that flows back from dx.
        cost = sum(
            (f * g).sum() for f, g in zip(formula, cotangents) if not isinstance(g.type, DisconnectedType)
        )
        grads = pytensor.grad(cost, stand_ins, disconnected_inputs="ignore", return_disconnected="zero")
        return clone_replace(grads, replace=dict(zip(stand_ins, inputs)))

    def c_code(self, node, name, inputs, outputs, sub):
        x, gamma, mean, var, dy = inputs
        dx, dgamma, dbeta = outputs
        params, fail = sub["params"], sub["fail"]
        t = f"dtype_{x}"
        return f"""
        {{
            {self._c_check_channels(x, (gamma, mean, var), fail)}
            if (PyArray_NDIM({dy}) != PyArray_NDIM({x})
                || !PyArray_CompareLists(PyArray_DIMS({dy}), PyArray_DIMS({x}), PyArray_NDIM({x}))) {{
                PyErr_SetString(PyExc_ValueError, "BatchNormGrad: dy and x differ in shape");
                {fail}
            }}
            const npy_intp C = PyArray_DIMS({x})[1];
            {alloc_like(dx, x, fail)}
            {alloc_vector(dgamma, "C", x, fail)}
            {alloc_vector(dbeta, "C", x, fail)}
            dlmie_bn::View<{t}> vx, vdy, vdx;
            if (dlmie_bn::make_view({x}, &vx) || dlmie_bn::make_view({dy}, &vdy)
                || dlmie_bn::make_view({dx}, &vdx)) {{
                PyErr_SetString(PyExc_ValueError, "BatchNormGrad: strides are not whole elements");
                {fail}
            }}
            const npy_intp e = sizeof({t});
            dlmie_bn::backward<{t}>(vx, vdy,
                ({t}*)PyArray_DATA({gamma}), PyArray_STRIDES({gamma})[0] / e,
                ({t}*)PyArray_DATA({mean}), PyArray_STRIDES({mean})[0] / e,
                ({t}*)PyArray_DATA({var}), PyArray_STRIDES({var})[0] / e,
                {params}->eps, vdx,
                ({t}*)PyArray_DATA({dgamma}), 1, ({t}*)PyArray_DATA({dbeta}), 1);
        }}
        """

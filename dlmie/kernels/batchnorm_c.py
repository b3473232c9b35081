"""The C code of the batch normalization Ops (`dlmie.kernels.batchnorm`): 3 vectorized passes
over each channel forward, 2 backward, instead of PyTensor's reductions and Composites.

The Ops run it when this module is present, and their NumPy `perform` (the assignment's
batchnorm_forward and batchnorm_backward) otherwise. Per channel, with M values, xhat the
normalized x and std = sqrt(var + eps):

    out = gamma * xhat + beta
    dbeta = sum(dy),  dgamma = sum(dy * xhat)
    dx = gamma / std * (dy - dbeta / M - xhat * dgamma / M)

`grad_graph` is that backward formula in PyTensor ops (a reference for the tests).
"""

from __future__ import annotations

import numpy as np
import pytensor.tensor as pt

from dlmie.kernels.common import (PARALLEL_COMPILE_ARGS, PARALLEL_HEADERS, PARALLEL_SUPPORT_CODE, PARALLEL_VERSION,
                                  alloc_like, alloc_vector)

SUPPORT_CODE = PARALLEL_SUPPORT_CODE + r"""
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
    dlmie_parallel::parallel_for(C, 3 * N * C * H * W, [&](npy_intp c0, npy_intp c1) {
    for (npy_intp c = c0; c < c1; ++c) {
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
    });
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
    dlmie_parallel::parallel_for(C, 3 * N * C * H * W, [&](npy_intp c0, npy_intp c1) {
    for (npy_intp c = c0; c < c1; ++c) {
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
    });
}

}  // namespace dlmie_bn
"""


HEADERS = ("<math.h>",) + PARALLEL_HEADERS
COMPILE_ARGS = ("-fopenmp-simd",) + PARALLEL_COMPILE_ARGS
CACHE_VERSION = (4, PARALLEL_VERSION)  # bump whenever the C code changes


def check_channels(op_name, x, vectors, fail):
    """C: every per-channel input vector must have one value per channel of x."""
    checks = "\n".join(
        f"""if (PyArray_DIMS({v})[0] != PyArray_DIMS({x})[1]) {{
                PyErr_SetString(PyExc_ValueError,
                                "{op_name}: a per-channel vector does not match the channels");
                {fail}
            }}"""
        for v in vectors
    )
    return checks


def train_code(op_name, inputs, outputs, params, fail):
    """C of BatchNormTrain: (x, gamma, beta) -> (out, mean, var)."""
    x, gamma, beta = inputs
    out, mean, var = outputs
    t = f"dtype_{x}"
    return f"""
        {{
            {check_channels(op_name, x, (gamma, beta), fail)}
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


def grad_code(op_name, inputs, outputs, params, fail):
    """C of BatchNormGrad: (x, gamma, mean, var, dy) -> (dx, dgamma, dbeta)."""
    x, gamma, mean, var, dy = inputs
    dx, dgamma, dbeta = outputs
    t = f"dtype_{x}"
    return f"""
        {{
            {check_channels(op_name, x, (gamma, mean, var), fail)}
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


def grad_graph(x, gamma, mean, var, dy, eps):
    """BatchNormGrad's formula in PyTensor ops: (dx, dgamma, dbeta)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    pattern = ("x", 0) if x.ndim == 2 else ("x", 0, "x", "x")
    bc = lambda v: v.dimshuffle(pattern)  # noqa: E731
    m = pt.cast(x.size // x.shape[1], x.dtype)
    invstd = 1 / pt.sqrt(var + pt.constant(np.asarray(eps, dtype=x.dtype)))
    centered = x - bc(mean)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * centered).sum(axis=axes) * invstd
    dx = bc(gamma * invstd) * (dy - bc(dbeta / m) - centered * bc(invstd * dgamma / m))
    return dx, dgamma, dbeta

"""Compiled PyTensor Ops for conv nets: im2col and col2im around a convolution's GEMM, and the
training-mode batch normalization that follows it.

A convolution of x (N, C, H, W) with filters (F, C, HH, WW) is one matrix product

    out (F, N * H' * W') = filters.reshape(F, C * HH * WW) @ Im2Col(x) (C * HH * WW, N * H' * W')

where column (n, y, z) of ``Im2Col(x)`` holds the (zero-padded) window of x whose top-left
corner is (y * stride - pad, z * stride - pad) in image n. `Col2Im` is the adjoint of `Im2Col`:
it sends every column entry back to the pixel it came from, summing where windows overlap, so
that the two are each other's pullback and `pytensor.grad` differentiates a convolution through
them (to any order).

Why Ops and not slicing: written with PyTensor's own ops, im2col is a pad (Alloc +
set_subtensor), HH * WW strided slices and a Join, and its gradient HH * WW IncSubtensors; each
of those is a full pass over a column matrix that is HH * WW times larger than the image. Here
each direction is one pass. `BatchNormTrain` and `BatchNormGrad` replace the reductions and
elementwise loops of a batch norm the same way (see the comment above them).

Every Op has a C implementation (used by dlmie's C backend) and a NumPy `perform` (used by the
Python backend, and a readable reference). They take float32 or float64 and keep the dtype.
The C loops run on one core: on two cores, OpenMP threads gained nothing over the OpenBLAS
threads of the GEMMs around them (and slowed those GEMMs while they spun).
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType, disconnected_type
from pytensor.graph.basic import Apply
from pytensor.graph.replace import clone_replace
from pytensor.link.c.op import COp
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import int32 as int_t

_FLOAT_DTYPES = ("float32", "float64")


def output_size(size: int, window: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis: (size + 2 * pad - window) // stride + 1."""
    return (size + 2 * pad - window) // stride + 1


def _static_output_size(size, window, stride, pad):
    return None if size is None else output_size(size, window, stride, pad)


# The C kernels, shared by both Ops. Strides are in elements (the input may be any view, e.g. a
# transposed one); the column matrix is always C-contiguous. Loop order: channel, then blocks of
# images whose planes fit in L1 together, then window offset (i, j), so that each step writes
# (im2col) or reads (col2im) one contiguous run of the column matrix while the planes stay in
# cache. The innermost loop runs along a row, split into the zero padding on either side and the
# in-image span, so that the span needs no bounds test (and is a plain copy when stride 1 meets
# a contiguous row).
_SUPPORT_CODE = r"""
namespace dlmie_im2col {

// First and one-past-last output index z whose input index z * stride + offset is in [0, size).
static inline void valid_range(npy_intp out_size, npy_intp size, int stride, npy_intp offset,
                               npy_intp *lo, npy_intp *hi) {
    npy_intp a = 0, b = out_size;
    if (offset < 0) a = (-offset + stride - 1) / stride;
    npy_intp last = size - 1 - offset;  // z * stride <= last
    b = last < 0 ? 0 : last / stride + 1;
    if (b > out_size) b = out_size;
    if (a > b) a = b;
    *lo = a; *hi = b;
}

template <typename T>
static void im2col(const T *x, npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                   npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                   int kh, int kw, int stride, int pad, npy_intp oh, npy_intp ow, T *cols) {
    const npy_intp P = oh * ow, ncols = N * P;
    // Going offset by offset inside a single plane instead writes kh * kw short runs whose
    // addresses differ by a multiple of a large power of two, which the caches handle badly.
    npy_intp block = (npy_intp)(16384 / ((H * W + 1) * sizeof(T)));
    if (block < 1) block = 1;
    for (npy_intp c = 0; c < C; ++c) {
        for (npy_intp n0 = 0; n0 < N; n0 += block) {
            const npy_intp n1 = n0 + block < N ? n0 + block : N;
            for (int i = 0; i < kh; ++i) {
                npy_intp ylo, yhi;
                valid_range(oh, H, stride, (npy_intp)i - pad, &ylo, &yhi);
                for (int j = 0; j < kw; ++j) {
                    npy_intp zlo, zhi;
                    valid_range(ow, W, stride, (npy_intp)j - pad, &zlo, &zhi);
                    for (npy_intp n = n0; n < n1; ++n) {
                        const T *plane = x + n * sn + c * sc;
                        T *dst = cols + ((c * kh + i) * kw + j) * ncols + n * P;
                        for (npy_intp y = 0; y < ylo; ++y)
                            for (npy_intp z = 0; z < ow; ++z) dst[y * ow + z] = 0;
                        for (npy_intp y = ylo; y < yhi; ++y) {
                            T *d = dst + y * ow;
                            const T *row = plane + (y * stride + i - pad) * sh + (j - pad) * sw;
                            for (npy_intp z = 0; z < zlo; ++z) d[z] = 0;
                            if (stride == 1 && sw == 1) {
                                memcpy(d + zlo, row + zlo, (zhi - zlo) * sizeof(T));
                            } else {
                                const npy_intp step = stride * sw;
                                for (npy_intp z = zlo; z < zhi; ++z) d[z] = row[z * step];
                            }
                            for (npy_intp z = zhi; z < ow; ++z) d[z] = 0;
                        }
                        for (npy_intp y = yhi; y < oh; ++y)
                            for (npy_intp z = 0; z < ow; ++z) dst[y * ow + z] = 0;
                    }
                }
            }
        }
    }
}

// x (N, C, H, W) C-contiguous <- sum of the column entries that came from each pixel. Same
// blocking as im2col; the block's image planes, which receive the sums, stay in L1.
template <typename T>
static void col2im(const T *cols, npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                   int kh, int kw, int stride, int pad, npy_intp oh, npy_intp ow, T *x) {
    const npy_intp P = oh * ow, ncols = N * P;
    npy_intp block = (npy_intp)(16384 / ((H * W + 1) * sizeof(T)));
    if (block < 1) block = 1;
    for (npy_intp c = 0; c < C; ++c) {
        for (npy_intp n0 = 0; n0 < N; n0 += block) {
            const npy_intp n1 = n0 + block < N ? n0 + block : N;
            for (npy_intp n = n0; n < n1; ++n) memset(x + (n * C + c) * H * W, 0, H * W * sizeof(T));
            for (int i = 0; i < kh; ++i) {
                npy_intp ylo, yhi;
                valid_range(oh, H, stride, (npy_intp)i - pad, &ylo, &yhi);
                for (int j = 0; j < kw; ++j) {
                    npy_intp zlo, zhi;
                    valid_range(ow, W, stride, (npy_intp)j - pad, &zlo, &zhi);
                    for (npy_intp n = n0; n < n1; ++n) {
                        T *plane = x + (n * C + c) * H * W;
                        const T *src = cols + ((c * kh + i) * kw + j) * ncols + n * P;
                        for (npy_intp y = ylo; y < yhi; ++y) {
                            const T *s = src + y * ow;
                            T *row = plane + (y * stride + i - pad) * W + (j - pad);
                            if (stride == 1) {
                                for (npy_intp z = zlo; z < zhi; ++z) row[z] += s[z];
                            } else {
                                for (npy_intp z = zlo; z < zhi; ++z) row[z * stride] += s[z];
                            }
                        }
                    }
                }
            }
        }
    }
}

}  // namespace dlmie_im2col
"""


class _WindowOp(COp):
    """Common parameters: kernel height `kh` and width `kw`, `stride` and zero `pad`, the same
    for both spatial axes. They reach the C code as run-time parameters (`params_type`), so that
    one compiled module serves every layer of a network."""

    __props__ = ("kh", "kw", "stride", "pad")
    params_type = ParamsType(kh=int_t, kw=int_t, stride=int_t, pad=int_t)

    def __init__(self, kh: int, kw: int, stride: int = 1, pad: int = 0):
        kh, kw, stride, pad = (int(v) for v in (kh, kw, stride, pad))
        if kh < 1 or kw < 1 or stride < 1 or pad < 0:
            raise ValueError(f"need kh, kw, stride >= 1 and pad >= 0, got {kh, kw, stride, pad}")
        self.kh, self.kw, self.stride, self.pad = kh, kw, stride, pad

    def _out_hw(self, h, w):
        return (output_size(h, self.kh, self.stride, self.pad),
                output_size(w, self.kw, self.stride, self.pad))

    def c_support_code(self, **kwargs):
        return _SUPPORT_CODE

    def c_headers(self, **kwargs):
        return ["<string.h>"]

    def c_code_cache_version(self):
        return (5,)

    def __str__(self):
        return f"{type(self).__name__}{{{self.kh}x{self.kw}, stride={self.stride}, pad={self.pad}}}"


class Im2Col(_WindowOp):
    """Windows of an image batch as the columns of a matrix.

    Inputs:
    - x: (N, C, H, W), float32 or float64, any strides (a transposed view is read in place)
    Returns:
    - cols: (C * kh * kw, N * H' * W'), C-contiguous, with H' = (H + 2 * pad - kh) // stride + 1,
      likewise W'; cols[(c * kh + i) * kw + j, (n * H' + y) * W' + z] =
      x[n, c, y * stride + i - pad, z * stride + j - pad], or 0 where that falls in the padding.
    Pullback: Col2Im.
    """

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim != 4 or x.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"Im2Col takes a 4-D float32/float64 tensor, got {x.type}")
        n, c, h, w = x.type.shape
        oh = _static_output_size(h, self.kh, self.stride, self.pad)
        ow = _static_output_size(w, self.kw, self.stride, self.pad)
        rows = None if c is None else c * self.kh * self.kw
        ncols = None if None in (n, oh, ow) else n * oh * ow
        return Apply(self, [x], [pt.tensor(dtype=x.dtype, shape=(rows, ncols))])

    def infer_shape(self, fgraph, node, shapes):
        n, c, h, w = shapes[0]
        oh, ow = self._out_hw(h, w)
        return [(c * (self.kh * self.kw), n * oh * ow)]

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        n, c, h, w = x.shape
        oh, ow = self._out_hw(h, w)
        p, s = self.pad, self.stride
        padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        cols = np.empty((c, self.kh, self.kw, n, oh, ow), dtype=x.dtype)
        for i in range(self.kh):
            for j in range(self.kw):
                window = padded[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s]
                cols[:, i, j] = window.transpose(1, 0, 2, 3)
        output_storage[0][0] = cols.reshape(c * self.kh * self.kw, n * oh * ow)

    def pullback(self, inputs, outputs, cotangents):
        (x,) = inputs
        (gcols,) = cotangents
        return [Col2Im(self.kh, self.kw, self.stride, self.pad)(gcols, x.shape)]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,) = inputs
        (cols,) = outputs
        params, fail = sub["params"], sub["fail"]
        return f"""
        {{
            const int kh = {params}->kh, kw = {params}->kw;
            const int stride = {params}->stride, pad = {params}->pad;
            const npy_intp *xd = PyArray_DIMS({x});
            const npy_intp N = xd[0], C = xd[1], H = xd[2], W = xd[3];
            const npy_intp oh = (H + 2 * pad - kh) / stride + 1, ow = (W + 2 * pad - kw) / stride + 1;
            if (H + 2 * pad < kh || W + 2 * pad < kw) {{
                PyErr_Format(PyExc_ValueError,
                    "Im2Col: a %dx%d window does not fit a %ldx%ld image with padding %d",
                    kh, kw, (long)H, (long)W, pad);
                {fail}
            }}
            npy_intp dims[2] = {{C * kh * kw, N * oh * ow}};
            if (!{cols} || !PyArray_IS_C_CONTIGUOUS({cols})
                || PyArray_DIMS({cols})[0] != dims[0] || PyArray_DIMS({cols})[1] != dims[1]) {{
                Py_XDECREF({cols});
                {cols} = (PyArrayObject*)PyArray_EMPTY(2, dims, PyArray_TYPE({x}), 0);
                if (!{cols}) {{ {fail} }}
            }}
            const npy_intp *st = PyArray_STRIDES({x});
            const npy_intp e = sizeof(dtype_{x});
            if (st[0] % e || st[1] % e || st[2] % e || st[3] % e) {{
                PyErr_SetString(PyExc_ValueError, "Im2Col: input strides are not whole elements");
                {fail}
            }}
            dlmie_im2col::im2col<dtype_{x}>(
                (const dtype_{x}*)PyArray_DATA({x}), N, C, H, W,
                st[0] / e, st[1] / e, st[2] / e, st[3] / e,
                kh, kw, stride, pad, oh, ow, (dtype_{x}*)PyArray_DATA({cols}));
        }}
        """


class Col2Im(_WindowOp):
    """The adjoint of Im2Col: column entries summed back into the pixels they came from.

    Inputs:
    - cols: (C * kh * kw, N * H' * W'), float32 or float64 (copied first if not C-contiguous)
    - image_shape: (4,) integers, the (N, C, H, W) of the image the columns are windows of
      (H and W cannot be recovered from H' and W' when stride > 1)
    Returns:
    - x: (N, C, H, W), C-contiguous; x[n, c, h, w] = sum of the cols entries that
      Im2Col(kh, kw, stride, pad) would read from pixel (n, c, h, w)
    Pullback: Im2Col (the shape gets no gradient).
    """

    def make_node(self, cols, image_shape):
        cols = pt.as_tensor_variable(cols)
        image_shape = pt.as_tensor_variable(image_shape)
        if cols.ndim != 2 or cols.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"Col2Im takes a 2-D float32/float64 matrix, got {cols.type}")
        if image_shape.ndim != 1 or not image_shape.dtype.startswith(("int", "uint")):
            raise TypeError(f"Col2Im's image_shape must be an integer vector, got {image_shape.type}")
        image_shape = pt.cast(image_shape, "int64")
        static = [None] * 4
        for k in range(4):
            try:
                static[k] = int(pt.get_scalar_constant_value(image_shape[k]))
            except Exception:  # not a constant: the shape is only known at run time
                pass
        return Apply(self, [cols, image_shape], [pt.tensor(dtype=cols.dtype, shape=tuple(static))])

    def connection_pattern(self, node):
        return [[True], [False]]

    def infer_shape(self, fgraph, node, shapes):
        image_shape = node.inputs[1]
        return [tuple(image_shape[k] for k in range(4))]

    def perform(self, node, inputs, output_storage):
        cols, (n, c, h, w) = inputs
        oh, ow = self._out_hw(h, w)
        if cols.shape != (c * self.kh * self.kw, n * oh * ow):
            raise ValueError(f"Col2Im: columns {cols.shape} do not fit images {(n, c, h, w)}")
        p, s = self.pad, self.stride
        padded = np.zeros((n, c, h + 2 * p, w + 2 * p), dtype=cols.dtype)
        windows = cols.reshape(c, self.kh, self.kw, n, oh, ow)
        for i in range(self.kh):
            for j in range(self.kw):
                padded[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s] += (
                    windows[:, i, j].transpose(1, 0, 2, 3)
                )
        output_storage[0][0] = np.ascontiguousarray(padded[:, :, p : p + h, p : p + w])

    def pullback(self, inputs, outputs, cotangents):
        (gx,) = cotangents
        return [Im2Col(self.kh, self.kw, self.stride, self.pad)(gx), disconnected_type()]

    def c_code(self, node, name, inputs, outputs, sub):
        cols_in, shape = inputs
        (x,) = outputs
        params, fail = sub["params"], sub["fail"]
        return f"""
        {{
            const int kh = {params}->kh, kw = {params}->kw;
            const int stride = {params}->stride, pad = {params}->pad;
            if (PyArray_DIMS({shape})[0] != 4) {{
                PyErr_SetString(PyExc_ValueError, "Col2Im: image_shape must have 4 entries");
                {fail}
            }}
            npy_intp dims[4];
            for (int k = 0; k < 4; ++k) dims[k] = *(npy_int64*)PyArray_GETPTR1({shape}, k);
            const npy_intp N = dims[0], C = dims[1], H = dims[2], W = dims[3];
            if (N < 0 || C < 0 || H + 2 * pad < kh || W + 2 * pad < kw) {{
                PyErr_SetString(PyExc_ValueError, "Col2Im: invalid image_shape for this window");
                {fail}
            }}
            const npy_intp oh = (H + 2 * pad - kh) / stride + 1, ow = (W + 2 * pad - kw) / stride + 1;
            if (PyArray_DIMS({cols_in})[0] != C * kh * kw || PyArray_DIMS({cols_in})[1] != N * oh * ow) {{
                PyErr_Format(PyExc_ValueError,
                    "Col2Im: columns (%ld, %ld) do not fit images (%ld, %ld, %ld, %ld)",
                    (long)PyArray_DIMS({cols_in})[0], (long)PyArray_DIMS({cols_in})[1],
                    (long)N, (long)C, (long)H, (long)W);
                {fail}
            }}
            if (!{x} || !PyArray_IS_C_CONTIGUOUS({x}) || !PyArray_CompareLists(PyArray_DIMS({x}), dims, 4)) {{
                Py_XDECREF({x});
                {x} = (PyArrayObject*)PyArray_EMPTY(4, dims, PyArray_TYPE({cols_in}), 0);
                if (!{x}) {{ {fail} }}
            }}
            PyArrayObject *contiguous = PyArray_GETCONTIGUOUS({cols_in});  // new reference
            if (!contiguous) {{ {fail} }}
            dlmie_im2col::col2im<dtype_{x}>(
                (const dtype_{x}*)PyArray_DATA(contiguous), N, C, H, W,
                kh, kw, stride, pad, oh, ow, (dtype_{x}*)PyArray_DATA({x}));
            Py_DECREF(contiguous);
        }}
        """


def im2col(x, kh: int, kw: int, stride: int = 1, pad: int = 0):
    """(N, C, H, W) -> (C * kh * kw, N * H' * W') columns; see `Im2Col`."""
    return Im2Col(kh, kw, stride, pad)(x)


def col2im(cols, image_shape, kh: int, kw: int, stride: int = 1, pad: int = 0):
    """(C * kh * kw, N * H' * W') columns -> (N, C, H, W) = image_shape; see `Col2Im`."""
    return Col2Im(kh, kw, stride, pad)(cols, image_shape)


# ---------------------------------------------------------------- batch normalization
#
# The other half of a conv block. Written with PyTensor's elementwise and reduction ops, a
# training-mode batchnorm becomes ~6 `Sum{axes=[0, 2, 3]}` reductions and a few multi-output
# Composites over full activations, forward and backward, which PyTensor's C loops run at
# 4-20 ns per element (scalar, latency-bound accumulation): together more time than the
# convolution's GEMMs. These two ops do the same arithmetic in 3 (forward) and 2 (backward)
# vectorized passes over each channel. The loops run channel by channel over (image, row)
# spans, so any strides work, and contiguous image planes (NCHW, or the channel-first
# (C, N, H, W) memory that conv2d's GEMM produces) take the fast path.

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


def _alloc_like(out, like, fail):
    """C: (re)allocate `out` with the shape and memory order of `like` (NumPy's order='K'), so
    that a channel-first input gives a channel-first output, which conv2d's GEMMs read in place."""
    return f"""
    if (!{out} || PyArray_NDIM({out}) != PyArray_NDIM({like})
        || !PyArray_CompareLists(PyArray_DIMS({out}), PyArray_DIMS({like}), PyArray_NDIM({like}))) {{
        Py_XDECREF({out});
        {out} = (PyArrayObject*)PyArray_NewLikeArray({like}, NPY_KEEPORDER, NULL, 0);
        if (!{out}) {{ {fail} }}
    }}
    """


def _alloc_vector(out, length, like, fail):
    return f"""
    if (!{out} || PyArray_DIMS({out})[0] != {length}) {{
        Py_XDECREF({out});
        npy_intp vdims[1] = {{{length}}};
        {out} = (PyArrayObject*)PyArray_EMPTY(1, vdims, PyArray_TYPE({like}), 0);
        if (!{out}) {{ {fail} }}
    }}
    """


class _BatchNormOp(COp):
    """Common parts: `eps`, the C support code, the input checks."""

    __props__ = ("eps",)
    params_type = ParamsType(eps=pytensor.scalar.float64)

    def __init__(self, eps: float):
        self.eps = float(eps)

    def c_support_code(self, **kwargs):
        return _BN_SUPPORT_CODE

    def c_headers(self, **kwargs):
        return ["<math.h>"]

    def c_compile_args(self, **kwargs):
        # Only the `omp simd` hints that let the compiler vectorize the float64 sums; no OpenMP
        # runtime (its spinning threads slowed the GEMMs that follow, for no net gain on 2 cores).
        return ["-fopenmp-simd"]

    def c_code_cache_version(self):
        return (3,)

    @staticmethod
    def _check(x, *vectors):
        x = pt.as_tensor_variable(x)
        if x.ndim not in (2, 4) or x.dtype not in _FLOAT_DTYPES:
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
            {_alloc_like(out, x, fail)}
            {_alloc_vector(mean, "C", x, fail)}
            {_alloc_vector(var, "C", x, fail)}
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
            {_alloc_like(dx, x, fail)}
            {_alloc_vector(dgamma, "C", x, fail)}
            {_alloc_vector(dbeta, "C", x, fail)}
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


def batchnorm_train(x, gamma, beta, eps: float):
    """(out, mean, var) of training-mode batch norm; see `BatchNormTrain`."""
    return BatchNormTrain(eps)(x, gamma, beta)

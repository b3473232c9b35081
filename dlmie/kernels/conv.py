"""im2col and col2im around a convolution's GEMM.

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
each direction is one pass.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.gradient import disconnected_type
from pytensor.graph.basic import Apply
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import int32 as int_t

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous, element_strides

def output_size(size: int, window: int, stride: int, pad: int) -> int:
    """Number of window positions along one axis: (size + 2 * pad - window) // stride + 1."""
    return (size + 2 * pad - window) // stride + 1


def _static_output_size(size, window, stride, pad):
    return None if size is None else output_size(size, window, stride, pad)


def im2col_array(x: np.ndarray, kh: int, kw: int, stride: int, pad: int) -> np.ndarray:
    """NumPy's Im2Col: (N, C, H, W) -> (C * kh * kw, N * H' * W'), laid out as `Im2Col` says."""
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            window = padded[:, :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride]
            cols[:, i, j] = window.transpose(1, 0, 2, 3)
    return cols.reshape(c * kh * kw, n * oh * ow)


# The C kernels, shared by both Ops. Strides are in elements (the input may be any view, e.g. a
# transposed one); the column matrix is always C-contiguous. Both walk the windows in one order
# (for_each_window), so that each step writes (im2col) or reads (col2im) one contiguous run of the
# column matrix while the planes stay in cache. The innermost loop runs along a row, split into the zero padding on either side and the
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

// The traversal both kernels share, channels split among threads (each writes only its channels'
// rows of the column matrix, or planes of the image): channel, then blocks of images whose planes fit in L1
// together, then window offset (i, j), then image. Going offset by offset inside a single plane
// instead would touch kh * kw short runs whose addresses differ by a multiple of a large power of
// two, which the caches handle badly. start_block(c, n0, n1) runs before a block's offsets;
// visit(c, n, i, j, ylo, yhi, zlo, zhi, run) for each image, with the valid output ranges of that
// offset (valid_range) and `run`, the start of its oh * ow entries in the column matrix.
template <typename T, typename StartBlock, typename Visit>
static inline void for_each_window(npy_intp N, npy_intp C, npy_intp H, npy_intp W, int kh, int kw, int stride,
                                   int pad, npy_intp oh, npy_intp ow, StartBlock start_block, Visit visit) {
    const npy_intp P = oh * ow, ncols = N * P;
    npy_intp block = (npy_intp)(16384 / ((H * W + 1) * sizeof(T)));
    if (block < 1) block = 1;
    dlmie_parallel::parallel_for(C, N * C * H * W * kh * kw, [&](npy_intp c0, npy_intp c1) {
    for (npy_intp c = c0; c < c1; ++c) {
        for (npy_intp n0 = 0; n0 < N; n0 += block) {
            const npy_intp n1 = n0 + block < N ? n0 + block : N;
            start_block(c, n0, n1);
            for (int i = 0; i < kh; ++i) {
                npy_intp ylo, yhi;
                valid_range(oh, H, stride, (npy_intp)i - pad, &ylo, &yhi);
                for (int j = 0; j < kw; ++j) {
                    npy_intp zlo, zhi;
                    valid_range(ow, W, stride, (npy_intp)j - pad, &zlo, &zhi);
                    for (npy_intp n = n0; n < n1; ++n)
                        visit(c, n, i, j, ylo, yhi, zlo, zhi, ((c * kh + i) * kw + j) * ncols + n * P);
                }
            }
        }
    }
    });
}

template <typename T>
static void im2col(const T *x, npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                   npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                   int kh, int kw, int stride, int pad, npy_intp oh, npy_intp ow, T *cols) {
    for_each_window<T>(N, C, H, W, kh, kw, stride, pad, oh, ow, [](npy_intp, npy_intp, npy_intp) {},
        [&](npy_intp c, npy_intp n, int i, int j, npy_intp ylo, npy_intp yhi, npy_intp zlo, npy_intp zhi,
            npy_intp run) {
            const T *plane = x + n * sn + c * sc;
            T *dst = cols + run;
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
        });
}

// x (N, C, H, W) C-contiguous <- sum of the column entries that came from each pixel. The
// block's image planes, which receive the sums, stay in L1.
template <typename T>
static void col2im(const T *cols, npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                   int kh, int kw, int stride, int pad, npy_intp oh, npy_intp ow, T *x) {
    for_each_window<T>(N, C, H, W, kh, kw, stride, pad, oh, ow,
        [&](npy_intp c, npy_intp n0, npy_intp n1) {
            for (npy_intp n = n0; n < n1; ++n) memset(x + (n * C + c) * H * W, 0, H * W * sizeof(T));
        },
        [&](npy_intp c, npy_intp n, int i, int j, npy_intp ylo, npy_intp yhi, npy_intp zlo, npy_intp zhi,
            npy_intp run) {
            T *plane = x + (n * C + c) * H * W;
            const T *src = cols + run;
            for (npy_intp y = ylo; y < yhi; ++y) {
                const T *s = src + y * ow;
                T *row = plane + (y * stride + i - pad) * W + (j - pad);
                if (stride == 1) {
                    for (npy_intp z = zlo; z < zhi; ++z) row[z] += s[z];
                } else {
                    for (npy_intp z = zlo; z < zhi; ++z) row[z * stride] += s[z];
                }
            }
        });
}

}  // namespace dlmie_im2col
"""


class _WindowOp(KernelOp):
    """Common parameters: kernel height `kh` and width `kw`, `stride` and zero `pad`, the same
    for both spatial axes. They reach the C code as run-time parameters (`params_type`), so that
    one compiled module serves every layer of a network."""

    SUPPORT_CODE = _SUPPORT_CODE
    HEADERS = ("<string.h>",)
    COMPILE_ARGS = ()
    CACHE_VERSION = (9,)
    PARALLEL = True

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
        if x.ndim != 4 or x.dtype not in FLOAT_DTYPES:
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
        output_storage[0][0] = im2col_array(inputs[0], self.kh, self.kw, self.stride, self.pad)

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
            {alloc_c_contiguous(cols, ["C * kh * kw", "N * oh * ow"], x, fail)}
            {element_strides(x, "Im2Col", fail)}
            dlmie_im2col::im2col<dtype_{x}>(
                (const dtype_{x}*)PyArray_DATA({x}), N, C, H, W,
                st[0], st[1], st[2], st[3],
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
        if cols.ndim != 2 or cols.dtype not in FLOAT_DTYPES:
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
            {alloc_c_contiguous(x, ["N", "C", "H", "W"], cols_in, fail)}
            PyArrayObject *contiguous = PyArray_GETCONTIGUOUS({cols_in});  // new reference
            if (!contiguous) {{ {fail} }}
            dlmie_im2col::col2im<dtype_{x}>(
                (const dtype_{x}*)PyArray_DATA(contiguous), N, C, H, W,
                kh, kw, stride, pad, oh, ow, (dtype_{x}*)PyArray_DATA({x}));
            Py_DECREF(contiguous);
        }}
        """

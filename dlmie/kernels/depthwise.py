"""Depthwise convolution (MobileNet's) as one pass over the image.

    out[n, c, y, z] = b[c] + sum over i, j of w[c, 0, i, j] * xp[n, c, y * stride + i, z * stride + j]

with xp the input zero-padded by (top, bottom, left, right). PyTensor's own graph for this
(`layers.depthwise_conv2d_by_views`: a padded copy of the input, then a sum of HH * WW strided
views fused into one elementwise loop) allocates and fills the padded canvas and runs a loop that
indexes nine 4-D views per element: in MobileNetV2 those took two thirds of the forward pass. Here
each output row is the bias plus HH * WW scaled runs of input rows, read where they are, the
padding skipped by bounds instead of stored.

The backward pass is the derivative of the views formula (`pytensor.grad` of it), so only the
forward pass is new code.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import int32 as int_t

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous, element_strides

_SUPPORT_CODE = r"""
namespace dlmie_depthwise {

template <typename T>
static void depthwise(const T *x, npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                      npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                      const T *w, const T *b, int kh, int kw, int stride, int top, int left,
                      npy_intp oh, npy_intp ow, T *out) {
    dlmie_parallel::parallel_for(N * C, N * C * oh * ow * kh * kw, [=](npy_intp p0, npy_intp p1) {
    for (npy_intp p = p0; p < p1; ++p) {
        const npy_intp n = p / C, c = p - n * C;
        const T *plane = x + n * sn + c * sc;
        const T *taps = w + c * kh * kw;
        T *o = out + (n * C + c) * oh * ow;
        for (npy_intp y = 0; y < oh; ++y) {
            T *row = o + y * ow;
            for (npy_intp z = 0; z < ow; ++z) row[z] = b[c];
            for (int i = 0; i < kh; ++i) {
                const npy_intp iy = y * stride + i - top;
                if (iy < 0 || iy >= H) continue;
                const T *in = plane + iy * sh;
                for (int j = 0; j < kw; ++j) {
                    // Output columns z whose input column z * stride + j - left lies in [0, W).
                    const npy_intp off = (npy_intp)j - left;
                    npy_intp zlo = off < 0 ? (-off + stride - 1) / stride : 0;
                    npy_intp zhi = W - 1 - off < 0 ? 0 : (W - 1 - off) / stride + 1;
                    if (zhi > ow) zhi = ow;
                    const T tap = taps[i * kw + j];
                    if (stride == 1 && sw == 1) {
                        const T *src = in + off;
                        #pragma omp simd
                        for (npy_intp z = zlo; z < zhi; ++z) row[z] += tap * src[z];
                    } else {
                        const npy_intp step = stride * sw;
                        const T *src = in + off * sw;
                        for (npy_intp z = zlo; z < zhi; ++z) row[z] += tap * src[z * step];
                    }
                }
            }
        }
    }
    });
}

}  // namespace dlmie_depthwise
"""


class DepthwiseConv2d(KernelOp):
    """Depthwise convolution with zero padding, forward pass in C.

    Inputs:
    - x: (N, C, H, W), float32 or float64, any strides
    - w: (C, 1, kh, kw), x's dtype (PyTorch's layout for groups = C)
    - b: (C,), x's dtype
    Returns:
    - out: (N, C, H', W'), C-contiguous, H' = (H + top + bottom - kh) // stride + 1, likewise W'
    Pullback: pytensor.grad of `layers.depthwise_conv2d_by_views`, the same function.
    """

    SUPPORT_CODE = _SUPPORT_CODE
    CACHE_VERSION = (3,)  # bump when the C code changes
    PARALLEL = True

    __props__ = ("kh", "kw", "stride", "top", "bottom", "left", "right")
    params_type = ParamsType(kh=int_t, kw=int_t, stride=int_t, top=int_t, bottom=int_t, left=int_t, right=int_t)

    def __init__(self, kh, kw, stride=1, top=0, bottom=0, left=0, right=0):
        self.kh, self.kw, self.stride, self.top, self.bottom, self.left, self.right = (
            int(v) for v in (kh, kw, stride, top, bottom, left, right))
        if min(self.kh, self.kw, self.stride) < 1 or min(self.top, self.bottom, self.left, self.right) < 0:
            raise ValueError(f"need kh, kw, stride >= 1 and paddings >= 0, got {self}")

    def _out_hw(self, h, w):
        return ((h + self.top + self.bottom - self.kh) // self.stride + 1,
                (w + self.left + self.right - self.kw) // self.stride + 1)

    def make_node(self, x, w, b):
        x, w, b = (pt.as_tensor_variable(v) for v in (x, w, b))
        if x.ndim != 4 or w.ndim != 4 or b.ndim != 1 or x.dtype not in FLOAT_DTYPES or {w.dtype, b.dtype} != {x.dtype}:
            raise TypeError(f"DepthwiseConv2d takes (N, C, H, W), (C, 1, kh, kw), (C,) of one float dtype, "
                            f"got {x.type}, {w.type}, {b.type}")
        n, c, h, width = x.type.shape
        oh, ow = (None, None) if None in (h, width) else self._out_hw(h, width)
        return Apply(self, [x, w, b], [pt.tensor(dtype=x.dtype, shape=(n, c, oh, ow))])

    def infer_shape(self, fgraph, node, shapes):
        n, c, h, w = shapes[0]
        return [(n, c, *self._out_hw(h, w))]

    def perform(self, node, inputs, output_storage):
        x, w, b = inputs
        xp = np.pad(x, ((0, 0), (0, 0), (self.top, self.bottom), (self.left, self.right)))
        oh, ow = self._out_hw(*x.shape[2:])
        s = self.stride
        out = np.broadcast_to(b[None, :, None, None], (x.shape[0], x.shape[1], oh, ow)).copy()
        for i in range(self.kh):
            for j in range(self.kw):
                out += xp[:, :, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s] * w[None, :, 0, i, j, None, None]
        output_storage[0][0] = out

    def pullback(self, inputs, outputs, cotangents):
        from dlmie.layers import depthwise_conv2d_by_views  # layers builds on these kernels

        x, w, b = inputs
        reference = depthwise_conv2d_by_views(x, w, b, self.stride, (self.top, self.bottom, self.left, self.right))
        return pytensor.grad(None, [x, w, b], known_grads={reference: cotangents[0]})

    def c_code(self, node, name, inputs, outputs, sub):
        x, w, b = inputs
        (out,) = outputs
        params, fail, t = sub["params"], sub["fail"], f"dtype_{x}"
        return f"""
        {{
            const int kh = {params}->kh, kw = {params}->kw, stride = {params}->stride;
            const int top = {params}->top, bottom = {params}->bottom, left = {params}->left, right = {params}->right;
            const npy_intp *xd = PyArray_DIMS({x});
            const npy_intp N = xd[0], C = xd[1], H = xd[2], W = xd[3];
            const npy_intp oh = (H + top + bottom - kh) / stride + 1, ow = (W + left + right - kw) / stride + 1;
            if (H + top + bottom < kh || W + left + right < kw) {{
                PyErr_Format(PyExc_ValueError, "DepthwiseConv2d: a %dx%d window does not fit a %ldx%ld image with its padding",
                             kh, kw, (long)H, (long)W);
                {fail}
            }}
            const npy_intp *wd = PyArray_DIMS({w});
            if (wd[0] != C || wd[1] != 1 || wd[2] != kh || wd[3] != kw || PyArray_DIMS({b})[0] != C) {{
                PyErr_Format(PyExc_ValueError, "DepthwiseConv2d: %ld channels need filters (%ld, 1, %d, %d) and %ld biases, "
                             "got (%ld, %ld, %ld, %ld) and %ld", (long)C, (long)C, kh, kw, (long)C,
                             (long)wd[0], (long)wd[1], (long)wd[2], (long)wd[3], (long)PyArray_DIMS({b})[0]);
                {fail}
            }}
            {alloc_c_contiguous(out, ["N", "C", "oh", "ow"], x, fail)}
            {element_strides(x, "DepthwiseConv2d", fail)}
            PyArrayObject *w_c = PyArray_GETCONTIGUOUS({w});
            PyArrayObject *b_c = w_c ? PyArray_GETCONTIGUOUS({b}) : NULL;
            if (!b_c) {{ Py_XDECREF(w_c); {fail} }}
            dlmie_depthwise::depthwise<{t}>((const {t}*)PyArray_DATA({x}), N, C, H, W, st[0], st[1], st[2], st[3],
                (const {t}*)PyArray_DATA(w_c), (const {t}*)PyArray_DATA(b_c), kh, kw, stride, top, left, oh, ow,
                ({t}*)PyArray_DATA({out}));
            Py_DECREF(w_c); Py_DECREF(b_c);
        }}
        """

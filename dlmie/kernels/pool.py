"""Max pooling over non-overlapping windows, the forward pass in one pass over the image.

    out[n, c, y, z] = max over i, j < k of x[n, c, y * k + i, z * k + j]

PyTensor's own graph for this (crop, reshape to (N, C, H', k, W', k), Max over axes 3 and 5) runs a
generic reduction over a six-axis view: 7% of VGG-16's forward pass, about as long as one of its
smaller convolutions. The backward pass sends the gradient to every input equal to its window's
maximum (as PyTensor's Max does, ties included), written with PyTensor ops from the pooled output.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import int32 as int_t

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous, element_strides

_SUPPORT_CODE = r"""
namespace dlmie_pool {

template <typename T>
static void max_pool(const T *x, npy_intp N, npy_intp C, npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                     int k, npy_intp oh, npy_intp ow, T *out) {
    dlmie_parallel::parallel_for(N * C, N * C * oh * ow * k * k, [=](npy_intp p0, npy_intp p1) {
        for (npy_intp p = p0; p < p1; ++p) {
            const npy_intp n = p / C, c = p - n * C;
            const T *plane = x + n * sn + c * sc;
            T *o = out + p * oh * ow;
            for (npy_intp y = 0; y < oh; ++y) {
                T *row = o + y * ow;
                const T *in = plane + y * k * sh;
                if (k == 2 && sw == 1) {
                    const T *a = in, *b = in + sh;
                    #pragma omp simd
                    for (npy_intp z = 0; z < ow; ++z) {
                        const T u = a[2 * z] > a[2 * z + 1] ? a[2 * z] : a[2 * z + 1];
                        const T v = b[2 * z] > b[2 * z + 1] ? b[2 * z] : b[2 * z + 1];
                        row[z] = u > v ? u : v;
                    }
                    continue;
                }
                for (npy_intp z = 0; z < ow; ++z) {
                    T m = in[z * k * sw];
                    for (int i = 0; i < k; ++i)
                        for (int j = 0; j < k; ++j) {
                            const T v = in[i * sh + (z * k + j) * sw];
                            m = v > m ? v : m;
                        }
                    row[z] = m;
                }
            }
        }
    });
}

}  // namespace dlmie_pool
"""


class MaxPool(KernelOp):
    """Max pooling over k x k windows at stride k, the rows and columns past the last whole window
    left out.

    Inputs:
    - x: (N, C, H, W), float32 or float64, any strides
    Returns:
    - out: (N, C, H // k, W // k), C-contiguous
    Pullback: the gradient goes to every input equal to its window's maximum.
    """

    SUPPORT_CODE = _SUPPORT_CODE
    CACHE_VERSION = (2,)  # bump when the C code changes
    PARALLEL = True

    __props__ = ("k",)
    params_type = ParamsType(k=int_t)

    def __init__(self, k: int):
        self.k = int(k)
        if self.k < 1:
            raise ValueError(f"the window must be at least 1 x 1, got {k}")

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        if x.ndim != 4 or x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"MaxPool takes a 4-D float32/float64 tensor, got {x.type}")
        n, c, h, w = x.type.shape
        shape = (n, c, None if h is None else h // self.k, None if w is None else w // self.k)
        return Apply(self, [x], [pt.tensor(dtype=x.dtype, shape=shape)])

    def infer_shape(self, fgraph, node, shapes):
        n, c, h, w = shapes[0]
        return [(n, c, h // self.k, w // self.k)]

    def perform(self, node, inputs, output_storage):
        (x,) = inputs
        k = self.k
        n, c, h, w = x.shape
        blocks = x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k)
        output_storage[0][0] = np.ascontiguousarray(blocks.max(axis=(3, 5)))

    def pullback(self, inputs, outputs, cotangents):
        (x,), (out,), (g,) = inputs, outputs, cotangents
        k = self.k
        n, c, h, w = x.shape
        oh, ow = h // k, w // k
        blocks = x[:, :, : oh * k, : ow * k].reshape((n, c, oh, k, ow, k))
        at_max = pt.eq(blocks, out[:, :, :, None, :, None])
        spread = (at_max * g[:, :, :, None, :, None]).reshape((n, c, oh * k, ow * k))
        return [pt.set_subtensor(pt.zeros_like(x)[:, :, : oh * k, : ow * k], spread)]

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (out,) = inputs, outputs
        params, fail, t = sub["params"], sub["fail"], f"dtype_{x}"
        return f"""
        {{
            const int k = {params}->k;
            const npy_intp *xd = PyArray_DIMS({x});
            const npy_intp N = xd[0], C = xd[1], oh = xd[2] / k, ow = xd[3] / k;
            {alloc_c_contiguous(out, ["N", "C", "oh", "ow"], x, fail)}
            {element_strides(x, "MaxPool", fail)}
            dlmie_pool::max_pool<{t}>((const {t}*)PyArray_DATA({x}), N, C, st[0], st[1], st[2], st[3],
                                     k, oh, ow, ({t}*)PyArray_DATA({out}));
        }}
        """

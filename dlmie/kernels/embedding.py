"""The gradient of a word-embedding lookup as one compiled Op.

The lookup out = W[words] is a gather of rows; its gradient scatters the rows of d_out back and
adds those that share a word: dW[v] = sum of d_out[n, t] over every (n, t) with words[n, t] = v.
PyTensor's own AdvancedIncSubtensor1 does that in C only for vectors; for a (V, D) matrix it falls
back to NumPy's `np.add.at`, which for a caption batch takes longer than a GEMM of the step. Here
it is one pass that adds each row with a vectorized loop.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.gradient import disconnected_type, grad_not_implemented
from pytensor.graph.basic import Apply

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous

_EMBEDDING_SUPPORT_CODE = r"""
namespace dlmie_embedding {

// dw (V, D) C-contiguous = 0, then dw[words[i]] += rows[i] for every i of M rows (strides in
// elements). Returns -1, or the first i whose word is outside [0, V).
template <typename T>
static npy_intp scatter_add(const npy_int64 *words, npy_intp sw, const T *rows, npy_intp M, npy_intp D,
                            npy_intp sm, npy_intp sd, npy_intp V, T *dw) {
    memset(dw, 0, V * D * sizeof(T));
    for (npy_intp i = 0; i < M; ++i) {
        const npy_int64 v = words[i * sw];
        if (v < 0 || v >= V) return i;
        const T *r = rows + i * sm;
        T *d = dw + v * D;
        if (sd == 1) {
            #pragma omp simd
            for (npy_intp k = 0; k < D; ++k) d[k] += r[k];
        } else {
            for (npy_intp k = 0; k < D; ++k) d[k] += r[k * sd];
        }
    }
    return -1;
}

}  // namespace dlmie_embedding
"""


class EmbeddingGrad(KernelOp):
    """The gradient of the rows W[words] with respect to W.

    Inputs:
    - words: (M,) integer row indices in [0, V) (an IndexError names the first one that is not)
    - rows: (M, D) the gradient of W[words], float32 or float64, any strides
    - num_rows: V, a scalar integer (W's first dimension)
    Returns:
    - dw: (V, D), C-contiguous, dw[v] = the sum of rows[i] over every i with words[i] = v
    Pullback: not implemented (no second derivatives of a lookup are needed).
    """

    SUPPORT_CODE = _EMBEDDING_SUPPORT_CODE
    HEADERS = ("<string.h>",)
    CACHE_VERSION = (2,)

    __props__ = ()

    def make_node(self, words, rows, num_rows):
        words, rows = pt.as_tensor_variable(words), pt.as_tensor_variable(rows)
        num_rows = pt.as_tensor_variable(num_rows)
        if words.ndim != 1 or not words.dtype.startswith(("int", "uint")):
            raise TypeError(f"words must be a 1-D integer tensor, got {words.type}")
        if rows.ndim != 2 or rows.dtype not in FLOAT_DTYPES:
            raise TypeError(f"rows must be a float32 or float64 matrix, got {rows.type}")
        if num_rows.ndim != 0 or not num_rows.dtype.startswith(("int", "uint")):
            raise TypeError(f"num_rows must be an integer scalar, got {num_rows.type}")
        out = pt.tensor(dtype=rows.dtype, shape=(None, rows.type.shape[1]))
        return Apply(self, [pt.cast(words, "int64"), rows, pt.cast(num_rows, "int64")], [out])

    def infer_shape(self, fgraph, node, shapes):
        return [(node.inputs[2], shapes[1][1])]

    def perform(self, node, inputs, output_storage):
        words, rows, num_rows = inputs
        if len(words) != len(rows):
            raise ValueError(f"EmbeddingGrad: {len(words)} words but {len(rows)} gradient rows")
        bad = (words < 0) | (words >= num_rows)
        if bad.any():
            i = int(np.argmax(bad))
            raise IndexError(f"EmbeddingGrad: word {words[i]} at position {i} is not a row index in [0, {num_rows})")
        dw = np.zeros((int(num_rows), rows.shape[1]), dtype=rows.dtype)
        np.add.at(dw, words, rows)
        output_storage[0][0] = dw

    def pullback(self, inputs, outputs, cotangents):
        return [disconnected_type(), grad_not_implemented(self, 1, inputs[1]), disconnected_type()]

    def connection_pattern(self, node):
        return [[False], [True], [False]]

    def c_code(self, node, name, inputs, outputs, sub):
        words, rows, num_rows = inputs
        (dw,) = outputs
        fail, t = sub["fail"], f"dtype_{rows}"
        return f"""
        {{
            const npy_intp M = PyArray_DIMS({rows})[0], D = PyArray_DIMS({rows})[1];
            const npy_intp V = (npy_intp)((npy_int64*)PyArray_DATA({num_rows}))[0];
            if (PyArray_DIMS({words})[0] != M) {{
                PyErr_Format(PyExc_ValueError, "EmbeddingGrad: %ld words but %ld gradient rows",
                             (long)PyArray_DIMS({words})[0], (long)M);
                {fail}
            }}
            {alloc_c_contiguous(dw, ["V", "D"], rows, fail)}
            const npy_intp e = sizeof({t});
            const npy_intp sw = PyArray_STRIDES({words})[0] / 8;
            const npy_intp bad = dlmie_embedding::scatter_add<{t}>((npy_int64*)PyArray_DATA({words}), sw,
                ({t}*)PyArray_DATA({rows}), M, D, PyArray_STRIDES({rows})[0] / e, PyArray_STRIDES({rows})[1] / e,
                V, ({t}*)PyArray_DATA({dw}));
            if (bad >= 0) {{
                PyErr_Format(PyExc_IndexError, "EmbeddingGrad: word %lld at position %ld is not a row index in [0, %ld)",
                             (long long)((npy_int64*)PyArray_DATA({words}))[bad * sw], (long)bad, (long)V);
                {fail}
            }}
        }}
        """

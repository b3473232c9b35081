"""A convolution's GEMM computed block by block, with its bias and ReLU fused in.

conv2d computes W (F, K) @ Im2Col(x) (K, N * H' * W'), K = C * HH * WW. Formed whole, the column
matrix is HH * WW times the image batch: 1.8 GB for VGG-16's second layer at batch 16, written once,
read back once by the GEMM and, under PyTensor's default memory policy, allocated and zero-filled by
the kernel at every call. `ConvGemm` computes the same product a block of columns at a time: the
windows of one block are copied into a small buffer that stays in cache, one GEMM multiplies it
into its slice of the output, and the bias and the ReLU are added to that slice while it is still
in cache. Where the columns already lie in memory as a matrix (a 1 x 1 convolution of a
channel-first batch, which conv2d's GEMM produces), the GEMM reads them in place.

The Op is not built by hand: `conv2d` (the assignment's part) builds Im2Col and a dot, and the
rewrites below replace, at compile time,

    Dot22(W, Im2Col(x))                                  -> ConvGemm(W, x)
    CGer(ConvGemm(W, x), 1, b, ones)                     -> ConvGemm(W, x, b)       (bias)
    maximum(views of ConvGemm(W, x, b), 0)               -> views of ConvGemm(..., "relu")
    minimum(views of ConvGemm(..., "relu"), 6)           -> views of ConvGemm(..., "relu6")

(views: reshapes, transposes and slices, such as max pooling's crop)

where the columns are read by nothing else (a training step also reads them for the filters'
gradient and keeps the plain GEMM). The result is the same product, summed in a different order
within each block: equal to the unfused graph to float32 rounding.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply, Constant
from pytensor.graph.rewriting.basic import dfs_rewriter, node_rewriter
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import float64
from pytensor.scalar import int32 as int_t
from pytensor.scalar.basic import ScalarMaximum, ScalarMinimum
from pytensor.tensor.blas import Dot22, ldflags
from pytensor.tensor.blas_c import CGer
from pytensor.tensor.blas_headers import blas_header_text
from pytensor.tensor.basic import Alloc
from pytensor.tensor.elemwise import DimShuffle, Elemwise
from pytensor.tensor.shape import Reshape
from pytensor.tensor.subtensor import Subtensor

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp, alloc_c_contiguous, element_strides
from dlmie.kernels.conv import Im2Col, im2col_array, output_size

# The width of a column block: at least MIN_BLOCK_COLUMNS, since every GEMM call packs the whole
# filter matrix again (9.4 MB in VGG-16's last layers) and narrower blocks spend their time doing
# that; wider where the windows are short (few input channels), up to BLOCK_BYTES of columns.
# Measured on VGG-16's layers at batch 2, one thread: 2048 columns gave every layer at least the
# speed of the whole-matrix product; 64-1024 lost up to 30% on the 512-channel layers, 4096 lost
# on the 224 x 224 ones, whose blocks then leave the cache.
MIN_BLOCK_COLUMNS = 2048
BLOCK_BYTES = 1 << 20

_SUPPORT_CODE = r"""
namespace dlmie_conv_gemm {

static inline void gemm_nn(int m, int n, int k, const float *a, int lda, const float *b, int ldb,
                           float beta, float *c, int ldc) {
    char no = 'N'; float one = 1.0f;
    sgemm_(&no, &no, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}
static inline void gemm_nn(int m, int n, int k, const double *a, int lda, const double *b, int ldb,
                           double beta, double *c, int ldc) {
    char no = 'N'; double one = 1.0;
    dgemm_(&no, &no, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}

// A run of a column block's columns that lie in one output row (n, y): columns z in [z0, z1) of
// that row, found at dst[at + z] in every row of the block.
struct Run { npy_intp n, y, z0, z1, at; };

// Splits columns [j0, j1) into runs; `runs` has room for (j1 - j0) / ow + 2 of them.
static npy_intp split_runs(npy_intp j0, npy_intp j1, npy_intp oh, npy_intp ow, Run *runs) {
    npy_intp count = 0, j = j0, n = j0 / (oh * ow), y = j0 / ow - n * oh, z0 = j0 % ow;
    while (j < j1) {
        npy_intp z1 = z0 + (j1 - j) < ow ? z0 + (j1 - j) : ow;
        runs[count++] = Run{n, y, z0, z1, j - j0 - z0};
        j += z1 - z0;
        z0 = 0;
        if (++y == oh) { y = 0; ++n; }
    }
    return count;
}

// Columns [j0, j1) of Im2Col(x) into dst (K, j1 - j0), row-major: each run of a row of the block
// is one strided run of an input row, with zeros where the window hangs over the padding.
template <typename T>
static void im2col_block(const T *x, npy_intp C, npy_intp H, npy_intp W,
                         npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                         int kh, int kw, int stride, int pad,
                         const Run *runs, npy_intp nruns, npy_intp nb, T *dst) {
    dlmie_parallel::parallel_for(C, C * kh * kw * nb, [=](npy_intp c0, npy_intp c1) {
    for (npy_intp c = c0; c < c1; ++c)
    for (int i = 0; i < kh; ++i)
    for (int jj = 0; jj < kw; ++jj) {
        T *d = dst + ((c * kh + i) * kw + jj) * nb;
        // Output columns z whose input column z * stride + off lies in [0, W).
        const npy_intp off = (npy_intp)jj - pad;
        npy_intp zlo = off < 0 ? (-off + stride - 1) / stride : 0;
        npy_intp zhi = W - 1 - off < 0 ? 0 : (W - 1 - off) / stride + 1;
        for (npy_intp r = 0; r < nruns; ++r) {
            const Run &run = runs[r];
            T *out = d + run.at;
            const npy_intp iy = run.y * stride + i - pad;
            const npy_intp a = run.z0 > zlo ? run.z0 : zlo, b = run.z1 < zhi ? run.z1 : zhi;
            if (iy < 0 || iy >= H || a >= b) {
                for (npy_intp z = run.z0; z < run.z1; ++z) out[z] = 0;
                continue;
            }
            const T *row = x + run.n * sn + c * sc + iy * sh + off * sw;
            for (npy_intp z = run.z0; z < a; ++z) out[z] = 0;
            if (stride == 1 && sw == 1) {
                #pragma omp simd
                for (npy_intp z = a; z < b; ++z) out[z] = row[z];
            } else {
                const npy_intp step = stride * sw;
                for (npy_intp z = a; z < b; ++z) out[z] = row[z * step];
            }
            for (npy_intp z = b; z < run.z1; ++z) out[z] = 0;
        }
    }
    });
}

// out (F, ncols) = w (F, K) @ Im2Col(x) [+ b 1^T] [then max(., 0)], block by block.
template <typename T>
static void conv_gemm(const T *w, const T *bias, bool relu, T cap, const T *x,
                      npy_intp N, npy_intp C, npy_intp H, npy_intp W,
                      npy_intp sn, npy_intp sc, npy_intp sh, npy_intp sw,
                      int kh, int kw, int stride, int pad, npy_intp oh, npy_intp ow,
                      npy_intp F, T *out, T *buffer, Run *runs, npy_intp block) {
    const npy_intp K = C * kh * kw, P = oh * ow, ncols = N * P;
    // A 1 x 1 window at stride 1 without padding reads x's pixels as they are: if they lie as
    // rows of a (C, N * H * W) matrix (column j at offset j, row c at offset c * sc), no copy.
    const bool in_place = kh == 1 && kw == 1 && stride == 1 && pad == 0 && sw == 1 && sh == W
                          && (sn == P || N == 1);
    for (npy_intp j0 = 0; j0 < ncols; j0 += block) {
        const npy_intp j1 = j0 + block < ncols ? j0 + block : ncols, nb = j1 - j0;
        const T *cols;
        npy_intp ldb;
        if (in_place) { cols = x + j0; ldb = sc; }
        else {
            const npy_intp nruns = split_runs(j0, j1, oh, ow, runs);
            im2col_block<T>(x, C, H, W, sn, sc, sh, sw, kh, kw, stride, pad, runs, nruns, nb, buffer);
            cols = buffer; ldb = nb;
        }
        // Row-major out = w @ cols is column-major out^T = cols^T @ w^T.
        gemm_nn((int)nb, (int)F, (int)K, cols, (int)ldb, w, (int)K, (T)0, out + j0, (int)ncols);
        if (bias || relu) {
            T *o0 = out + j0;
            dlmie_parallel::parallel_for(F, F * nb, [=](npy_intp f0, npy_intp f1) {
                for (npy_intp f = f0; f < f1; ++f) {
                    T *o = o0 + f * ncols;
                    const T add = bias ? bias[f] : (T)0;
                    if (relu) {
                        #pragma omp simd
                        for (npy_intp t = 0; t < nb; ++t) {
                            const T v = o[t] + add;
                            o[t] = v > 0 ? (v < cap ? v : cap) : (T)0;
                        }
                    } else {
                        #pragma omp simd
                        for (npy_intp t = 0; t < nb; ++t) o[t] += add;
                    }
                }
            });
        }
    }
}

}  // namespace dlmie_conv_gemm
"""


class ConvGemm(KernelOp):
    """w @ Im2Col(x), plus a bias and a ReLU if asked, computed one block of columns at a time.

    Inputs:
    - w: (F, C * kh * kw) filters flattened in (c, i, j) order, float32 or float64
    - x: (N, C, H, W) of w's dtype, any strides
    - b (when `bias`): (F,) of w's dtype
    Returns:
    - out: (F, N * H' * W'), C-contiguous: w @ Im2Col(kh, kw, stride, pad)(x), plus b[:, None]
      when `bias`, then max(out, 0) when `activation` is "relu", min(max(out, 0), 6) when "relu6"
    """

    SUPPORT_CODE = _SUPPORT_CODE
    HEADERS = ("<string.h>", "<stdlib.h>", "<limits.h>")
    PARALLEL = True
    CACHE_VERSION = (5,)  # bump when the C code changes

    __props__ = ("kh", "kw", "stride", "pad", "bias", "activation")
    # The activation reaches the C code as run-time parameters, like the window: one compiled module
    # serves every layer of a dtype, with or without bias.
    params_type = ParamsType(kh=int_t, kw=int_t, stride=int_t, pad=int_t, clamp=int_t, cap=float64)

    ACTIVATIONS = {"none": None, "relu": float("inf"), "relu6": 6.0}  # name -> cap of max(v, 0)

    def __init__(self, kh: int, kw: int, stride: int = 1, pad: int = 0, bias: bool = False, activation: str = "none"):
        self.kh, self.kw, self.stride, self.pad = (int(v) for v in (kh, kw, stride, pad))
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(self.ACTIVATIONS)}, got {activation!r}")
        self.bias, self.activation = bool(bias), activation
        self.clamp = int(self.ACTIVATIONS[activation] is not None)
        self.cap = float(self.ACTIVATIONS[activation] or 0.0)

    def make_node(self, w, x, *b):
        w, x = pt.as_tensor_variable(w), pt.as_tensor_variable(x)
        b = [pt.as_tensor_variable(v) for v in b]
        if len(b) != int(self.bias):
            raise TypeError(f"ConvGemm(bias={self.bias}) takes {2 + int(self.bias)} inputs, got {2 + len(b)}")
        if w.ndim != 2 or x.ndim != 4 or w.dtype not in FLOAT_DTYPES or x.dtype != w.dtype:
            raise TypeError(f"ConvGemm takes a matrix and a 4-D tensor of one float dtype, got {w.type}, {x.type}")
        if b and (b[0].ndim != 1 or b[0].dtype != w.dtype):
            raise TypeError(f"ConvGemm's bias must be a vector of {w.dtype}, got {b[0].type}")
        n, _, h, width = x.type.shape
        oh = None if h is None else output_size(h, self.kh, self.stride, self.pad)
        ow = None if width is None else output_size(width, self.kw, self.stride, self.pad)
        ncols = None if None in (n, oh, ow) else n * oh * ow
        return Apply(self, [w, x, *b], [pt.tensor(dtype=w.dtype, shape=(w.type.shape[0], ncols))])

    def infer_shape(self, fgraph, node, shapes):
        n, _, h, width = shapes[1]
        oh = (h + 2 * self.pad - self.kh) // self.stride + 1
        ow = (width + 2 * self.pad - self.kw) // self.stride + 1
        return [(shapes[0][0], n * oh * ow)]

    def perform(self, node, inputs, output_storage):
        w, x, *b = inputs
        out = w @ im2col_array(x, self.kh, self.kw, self.stride, self.pad)
        if self.bias:
            out += b[0][:, None]
        cap = self.ACTIVATIONS[self.activation]
        if cap is not None:
            np.clip(out, 0, cap, out=out)
        output_storage[0][0] = out

    def c_support_code(self, **kwargs):
        return blas_header_text() + super().c_support_code()

    def c_libraries(self, **kwargs):
        return ldflags()

    def c_compile_args(self, **kwargs):
        return ldflags(libs=False, flags=True) + super().c_compile_args()

    def c_lib_dirs(self, **kwargs):
        return ldflags(libs=False, libs_dir=True)

    def c_header_dirs(self, **kwargs):
        return ldflags(libs=False, include_dir=True)

    def c_code(self, node, name, inputs, outputs, sub):
        w, x = inputs[:2]
        b = inputs[2] if self.bias else None
        (out,) = outputs
        params, fail, t = sub["params"], sub["fail"], f"dtype_{w}"
        bias_ptr = f"(const {t}*)PyArray_DATA(b_c)" if b else "NULL"
        get_bias = f"PyArrayObject *b_c = PyArray_GETCONTIGUOUS({b}); if (!b_c) {{ Py_DECREF(w_c); {fail} }}" if b else ""
        check_bias = f"""if (PyArray_DIMS({b})[0] != F) {{
                PyErr_SetString(PyExc_ValueError, "ConvGemm: the bias does not have one entry per filter");
                {fail}
            }}""" if b else ""
        return f"""
        {{
            const int kh = {params}->kh, kw = {params}->kw, stride = {params}->stride, pad = {params}->pad;
            const npy_intp *xd = PyArray_DIMS({x});
            const npy_intp N = xd[0], C = xd[1], H = xd[2], W = xd[3];
            const npy_intp F = PyArray_DIMS({w})[0], K = C * kh * kw;
            if (H + 2 * pad < kh || W + 2 * pad < kw) {{
                PyErr_Format(PyExc_ValueError, "ConvGemm: a %dx%d window does not fit a %ldx%ld image with padding %d",
                             kh, kw, (long)H, (long)W, pad);
                {fail}
            }}
            if (PyArray_DIMS({w})[1] != K) {{
                PyErr_Format(PyExc_ValueError, "ConvGemm: filters have %ld columns, the windows %ld entries",
                             (long)PyArray_DIMS({w})[1], (long)K);
                {fail}
            }}
            {check_bias}
            const npy_intp oh = (H + 2 * pad - kh) / stride + 1, ow = (W + 2 * pad - kw) / stride + 1;
            const npy_intp ncols = N * oh * ow;
            if (K > INT_MAX || F > INT_MAX || ncols > INT_MAX) {{
                PyErr_SetString(PyExc_ValueError, "ConvGemm: dimensions exceed the BLAS integer range");
                {fail}
            }}
            {alloc_c_contiguous(out, ["F", "ncols"], w, fail)}
            {element_strides(x, "ConvGemm", fail)}
            const npy_intp e = sizeof({t});
            if (ncols > 0 && F > 0) {{
                npy_intp block = {BLOCK_BYTES} / (K * e);
                block = block < {MIN_BLOCK_COLUMNS} ? {MIN_BLOCK_COLUMNS} : block - block % 16;
                if (block > ncols) block = ncols;
                PyArrayObject *w_c = PyArray_GETCONTIGUOUS({w});
                if (!w_c) {{ {fail} }}
                {get_bias}
                {t} *buffer = NULL; if (posix_memalign((void**)&buffer, 64, (size_t)K * block * e)) buffer = NULL;
                dlmie_conv_gemm::Run *runs = (dlmie_conv_gemm::Run*)malloc((block / ow + 2) * sizeof(dlmie_conv_gemm::Run));
                if (!buffer || !runs) {{
                    free(buffer); free(runs);
                    Py_DECREF(w_c); {"Py_DECREF(b_c);" if b else ""}
                    PyErr_NoMemory();
                    {fail}
                }}
                if (K == 0) memset(PyArray_DATA({out}), 0, (size_t)F * ncols * e);
                dlmie_conv_gemm::conv_gemm<{t}>((const {t}*)PyArray_DATA(w_c), {bias_ptr}, {params}->clamp != 0, ({t}){params}->cap,
                    (const {t}*)PyArray_DATA({x}), N, C, H, W, st[0], st[1], st[2], st[3],
                    kh, kw, stride, pad, oh, ow, F, ({t}*)PyArray_DATA({out}), buffer, runs, block);
                free(buffer); free(runs);
                Py_DECREF(w_c); {"Py_DECREF(b_c);" if b else ""}
            }}
        }}
        """


def _single_client(fgraph, var) -> bool:
    return len(fgraph.clients[var]) == 1


def _constant_value(var):
    """The value of a constant, or of a broadcast of one (Alloc of a constant), else None."""
    if isinstance(var, Constant):
        values = np.unique(var.data)
        return float(values[0]) if values.size == 1 else None
    if var.owner is not None and isinstance(var.owner.op, Alloc):
        return _constant_value(var.owner.inputs[0])
    return None


@node_rewriter([Dot22])
def _conv_gemm_from_dot(fgraph, node):
    w, cols = node.inputs
    if cols.owner is None or not isinstance(cols.owner.op, Im2Col) or not _single_client(fgraph, cols):
        return None
    op = cols.owner.op
    return [ConvGemm(op.kh, op.kw, op.stride, op.pad)(w, cols.owner.inputs[0])]


@node_rewriter([CGer])
def _conv_gemm_bias(fgraph, node):
    product, alpha, b, ones = node.inputs
    gemm = product.owner
    if (gemm is None or not isinstance(gemm.op, ConvGemm) or gemm.op.bias or gemm.op.activation != "none"
            or not _single_client(fgraph, product) or _constant_value(alpha) != 1.0 or _constant_value(ones) != 1.0):
        return None
    op = gemm.op
    return [ConvGemm(op.kh, op.kw, op.stride, op.pad, bias=True)(*gemm.inputs, b)]


def _is_view(node) -> bool:
    """A reshape, transpose or basic slice: max(view(y), 0) = view(max(y, 0)), elementwise."""
    return isinstance(node.op, (Reshape, Subtensor)) or (
        isinstance(node.op, DimShuffle) and not node.op.augment and not node.op.drop)


def _through_views(fgraph, var):
    """(the ConvGemm node under a chain of views of var that nothing else reads, the views top
    down) or (None, None)."""
    views = []
    while var.owner is not None and _is_view(var.owner) and _single_client(fgraph, var):
        views.append(var.owner)
        var = var.owner.inputs[0]
    if var.owner is None or not isinstance(var.owner.op, ConvGemm) or not _single_client(fgraph, var):
        return None, None
    return var.owner, views


# activation(views of ConvGemm) -> views of ConvGemm with that activation: max(., 0) on a ConvGemm
# without activation gives relu, min(., 6) on one with relu gives relu6.
_FUSES = {(ScalarMaximum, 0.0, "none"): "relu", (ScalarMinimum, 6.0, "relu"): "relu6"}


@node_rewriter([Elemwise])
def _conv_gemm_activation(fgraph, node):
    if len(node.inputs) != 2:
        return None
    for var, other in (node.inputs, node.inputs[::-1]):
        if other.type.broadcastable != (True,) * other.ndim:
            continue
        gemm, views = _through_views(fgraph, var)
        if gemm is None or gemm.outputs[0].dtype != node.outputs[0].dtype:
            continue
        fused = _FUSES.get((type(node.op.scalar_op), _constant_value(other), gemm.op.activation))
        if fused is None:
            continue
        op = gemm.op
        out = ConvGemm(op.kh, op.kw, op.stride, op.pad, bias=op.bias, activation=fused)(*gemm.inputs)
        for view in reversed(views):
            out = view.op(out, *view.inputs[1:])
        return [out]
    return None


# After PyTensor's BLAS rewrites (1.7) have formed Dot22 and CGer, before its elementwise fusion
# (49) merges the activation's maximum and minimum into one loop. One pass each, in this order:
# each fuses into the ConvGemm the one before made (the activation pass twice: relu, then relu6).
_PASSES = (_conv_gemm_from_dot, _conv_gemm_bias, _conv_gemm_activation, _conv_gemm_activation)
for _position, _rewrite in enumerate(_PASSES):
    optdb.register(f"dlmie_{_rewrite.__name__.lstrip('_')}_{_position}", dfs_rewriter(_rewrite), "fast_run",
                   "cxx_only", "dlmie_conv_gemm", position=48.9 + _position / 100)

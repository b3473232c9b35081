"""One Adam step for one parameter as a compiled Op.

    m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2
    p <- p - step_size * m / (sqrt(v * v_scale) + eps)

with step_size = lr / (1 - beta1^t) and v_scale = 1 / (1 - beta2^t), Adam's bias corrections,
computed once per step outside. PyTensor fuses these equations into one elementwise loop too, but
a scalar one (sqrt and division one element at a time), which costs a captioner's step more than its
5 M parameters' worth of memory traffic. This Op runs the same arithmetic as one vectorized loop.

An Op may overwrite its inputs only where PyTensor has checked that nothing reads them later, so
the graph is built with `AdamUpdate(inplace=False)` (which writes new arrays) and a rewrite in
PyTensor's in-place stage swaps in `inplace=True` (p, m, v are updated shared variables: no
copies, no allocation) wherever that check passes.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from pytensor.compile import optdb
from pytensor.graph.basic import Apply
from pytensor.graph.rewriting.basic import in2out, node_rewriter
from pytensor.link.c.params_type import ParamsType
from pytensor.scalar import float64

from dlmie.kernels.common import FLOAT_DTYPES, KernelOp

_ADAM_SUPPORT_CODE = r"""
namespace dlmie_adam {

template <typename T>
static void step(T *p, T *m, T *v, const T *g, npy_intp n, T b1, T b2, T eps, T step_size, T v_scale) {
    const T a1 = (T)1 - b1, a2 = (T)1 - b2;
    #pragma omp simd
    for (npy_intp k = 0; k < n; ++k) {
        const T gk = g[k];
        const T mk = b1 * m[k] + a1 * gk;
        const T vk = b2 * v[k] + a2 * gk * gk;
        m[k] = mk;
        v[k] = vk;
        p[k] -= step_size * mk / (sqrt(vk * v_scale) + eps);
    }
}

}  // namespace dlmie_adam
"""


class AdamUpdate(KernelOp):
    """Adam's update of one parameter.

    Inputs:
    - p, m, v: the parameter and its first and second moment estimates, one shape and dtype
      (float32 or float64), C-contiguous (shared variables are)
    - g: the gradient, same shape and dtype, any strides
    - step_size: lr / (1 - beta1^t); v_scale: 1 / (1 - beta2^t); scalars of p's dtype
    Returns:
    - p_new, m_new, v_new: the updated arrays; with inplace=True, p, m and v overwritten
    """

    SUPPORT_CODE = _ADAM_SUPPORT_CODE
    HEADERS = ("<math.h>",)
    CACHE_VERSION = (2,)

    __props__ = ("beta1", "beta2", "eps", "inplace")
    params_type = ParamsType(beta1=float64, beta2=float64, eps=float64)

    def __init__(self, beta1: float, beta2: float, eps: float, inplace: bool = False):
        self.beta1, self.beta2, self.eps, self.inplace = float(beta1), float(beta2), float(eps), bool(inplace)
        self.destroy_map = {0: [0], 1: [1], 2: [2]} if inplace else {}

    def make_node(self, p, m, v, g, step_size, v_scale):
        p, m, v, g, step_size, v_scale = (pt.as_tensor_variable(x) for x in (p, m, v, g, step_size, v_scale))
        for x in (p, m, v, g):
            if x.dtype not in FLOAT_DTYPES or x.dtype != p.dtype or x.ndim != p.ndim:
                raise TypeError(f"p, m, v and g must be float32 or float64 tensors of one dtype and rank, got {x.type}")
        for x in (step_size, v_scale):
            if x.ndim != 0 or x.dtype != p.dtype:
                raise TypeError(f"step_size and v_scale must be {p.dtype} scalars, got {x.type}")
        return Apply(self, [p, m, v, g, step_size, v_scale], [p.type(), m.type(), v.type()])

    def infer_shape(self, fgraph, node, shapes):
        return shapes[:3]

    def perform(self, node, inputs, output_storage):
        p, m, v, g, step_size, v_scale = inputs
        if not (p.shape == m.shape == v.shape == g.shape):
            raise ValueError(f"AdamUpdate: p, m, v and g differ in shape: {p.shape}, {m.shape}, {v.shape}, {g.shape}")
        if not self.inplace:
            p, m, v = p.copy(), m.copy(), v.copy()
        b1, b2, eps = (np.asarray(x, dtype=p.dtype) for x in (self.beta1, self.beta2, self.eps))
        m[...] = b1 * m + (1 - b1) * g
        v[...] = b2 * v + (1 - b2) * g * g
        p -= step_size * m / (np.sqrt(v * v_scale) + eps)
        for storage, value in zip(output_storage, (p, m, v)):
            storage[0] = value

    def c_code(self, node, name, inputs, outputs, sub):
        p, m, v, g, step_size, v_scale = inputs
        p_new, m_new, v_new = outputs
        fail, params, t = sub["fail"], sub["params"], f"dtype_{p}"
        same_shape = " || ".join(
            f"PyArray_SIZE({x}) != PyArray_SIZE({p}) || !PyArray_CompareLists(PyArray_DIMS({x}), PyArray_DIMS({p}), PyArray_NDIM({p}))"
            for x in (m, v, g)
        )
        contiguous = " || ".join(f"!PyArray_IS_C_CONTIGUOUS({x})" for x in (p, m, v))
        if self.inplace:
            outputs = "\n".join(f"Py_XDECREF({out}); {out} = {x}; Py_INCREF({x});"
                                 for out, x in ((p_new, p), (m_new, m), (v_new, v)))
        else:
            outputs = "\n".join(f"""Py_XDECREF({out}); {out} = (PyArrayObject*)PyArray_NewCopy({x}, NPY_CORDER);
                                 if (!{out}) {{ {fail} }}"""
                                 for out, x in ((p_new, p), (m_new, m), (v_new, v)))
        return f"""
        {{
            if ({same_shape}) {{
                PyErr_SetString(PyExc_ValueError, "AdamUpdate: p, m, v and g differ in shape");
                {fail}
            }}
            if ({contiguous}) {{
                PyErr_SetString(PyExc_ValueError, "AdamUpdate: p, m and v must be C-contiguous");
                {fail}
            }}
            {outputs}
            PyArrayObject *g_c = PyArray_GETCONTIGUOUS({g});
            if (!g_c) {{ {fail} }}
            dlmie_adam::step<{t}>(({t}*)PyArray_DATA({p_new}), ({t}*)PyArray_DATA({m_new}), ({t}*)PyArray_DATA({v_new}),
                ({t}*)PyArray_DATA(g_c), PyArray_SIZE({p}), ({t}){params}->beta1, ({t}){params}->beta2,
                ({t}){params}->eps, ((({t}*)PyArray_DATA({step_size}))[0]), ((({t}*)PyArray_DATA({v_scale}))[0]));
            Py_DECREF(g_c);
        }}
        """


@node_rewriter([AdamUpdate])
def _adam_in_place(fgraph, node):
    if not node.op.inplace:
        op = AdamUpdate(node.op.beta1, node.op.beta2, node.op.eps, inplace=True)
        return op.make_node(*node.inputs).outputs
    return None


# Next to PyTensor's own in-place BLAS rewrite (position 70): after the graph is final, with the
# destroy handler that rejects the swap wherever p, m or v is still read afterwards.
optdb.register("dlmie_adam_in_place", in2out(_adam_in_place), "fast_run", "inplace", position=70.5)

"""The C code of the LSTM cell Ops (`dlmie.kernels.lstm`): one vectorized pass per step, forward
and backward, instead of PyTensor's per-element exp.

The Ops run it when this module is present, and their NumPy `perform` otherwise. The backward
pass is cs231n's lstm_step_backward:

    dc_total = dc + dh * o * (1 - tanh(c)^2)
    da = [dc_total * g * i (1 - i),  dc_total * c_prev * f (1 - f),
          dh * tanh(c) * o (1 - o),  dc_total * i * (1 - g^2)]
    dc_prev = dc_total * f
"""

from __future__ import annotations

from dlmie.kernels.common import alloc_c_contiguous

SUPPORT_CODE = r"""
namespace dlmie_lstm {

// sigmoid and tanh through one exp each, with the argument clamped so that exp never overflows
// (-ffast-math assumes no infinities): at |x| = 40 both are at their limits in float64.
static inline float sigm(float x) { x = x < -40.f ? -40.f : (x > 40.f ? 40.f : x); return 1.f / (1.f + expf(-x)); }
// float64 (gradient checks) through the scalar exp: see exp_t in dlmie.kernels.cross_entropy.
static __attribute__((noinline)) double sigm(double x) { x = x < -40. ? -40. : (x > 40. ? 40. : x); return 1. / (1. + exp(-x)); }
template <typename T> static inline T tanh_(T x) { return (T)2 * sigm((T)2 * x) - (T)1; }

// Row n of a (N, 4H), c_prev (N, H) -> h, c (N, H), act (N, 4H) = [i, f, o, g]; all C-contiguous.
template <typename T>
static void forward(const T *a, const T *c_prev, npy_intp N, npy_intp H, T *h, T *c, T *act) {
    for (npy_intp n = 0; n < N; ++n) {
        const T *an = a + n * 4 * H, *cp = c_prev + n * H;
        T *hn = h + n * H, *cn = c + n * H, *gates = act + n * 4 * H;
        #pragma omp simd
        for (npy_intp k = 0; k < H; ++k) {
            const T i = sigm(an[k]), f = sigm(an[H + k]), o = sigm(an[2 * H + k]), g = tanh_(an[3 * H + k]);
            const T cell = f * cp[k] + i * g;
            gates[k] = i; gates[H + k] = f; gates[2 * H + k] = o; gates[3 * H + k] = g;
            cn[k] = cell;
            hn[k] = o * tanh_(cell);
        }
    }
}

// The pullback of one step: (act, c_prev, c, dh, dc) -> da (N, 4H), dc_prev (N, H).
template <typename T>
static void backward(const T *act, const T *c_prev, const T *c, const T *dh, const T *dc,
                     npy_intp N, npy_intp H, T *da, T *dc_prev) {
    for (npy_intp n = 0; n < N; ++n) {
        const T *gates = act + n * 4 * H, *cp = c_prev + n * H, *cn = c + n * H;
        const T *dhn = dh + n * H, *dcn = dc + n * H;
        T *dan = da + n * 4 * H, *dcp = dc_prev + n * H;
        #pragma omp simd
        for (npy_intp k = 0; k < H; ++k) {
            const T i = gates[k], f = gates[H + k], o = gates[2 * H + k], g = gates[3 * H + k];
            const T tc = tanh_(cn[k]);
            const T dcell = dcn[k] + dhn[k] * o * ((T)1 - tc * tc);
            dan[k] = dcell * g * i * ((T)1 - i);
            dan[H + k] = dcell * cp[k] * f * ((T)1 - f);
            dan[2 * H + k] = dhn[k] * tc * o * ((T)1 - o);
            dan[3 * H + k] = dcell * i * ((T)1 - g * g);
            dcp[k] = dcell * f;
        }
    }
}

}  // namespace dlmie_lstm
"""

HEADERS = ["<math.h>"]
# -ffast-math lets GCC call glibc's vector exp (libmvec) from the `omp simd` loops.
COMPILE_ARGS = ["-fopenmp-simd", "-ffast-math"]
CACHE_VERSION = (3,)


def _c_contiguous_inputs(names, fail):
    """C: a C-contiguous reference `<name>_c` to each input (a new one only where it is not)."""
    return "\n".join(
        f"""PyArrayObject *{n}_c = PyArray_GETCONTIGUOUS({n});
            if (!{n}_c) {{ {fail} }}"""
        for n in names
    )


def _release(names):
    return " ".join(f"Py_DECREF({n}_c);" for n in names)


def _check_shapes(gates, cells, fail, name):
    """C: N, H from the (N, 4H) `gates` input; every (N, H) input in `cells` must match."""
    checks = " || ".join(
        f"PyArray_DIMS({c})[0] != N || PyArray_DIMS({c})[1] != H" for c in cells
    )
    return f"""
        const npy_intp N = PyArray_DIMS({gates})[0], H = PyArray_DIMS({gates})[1] / 4;
        if (PyArray_DIMS({gates})[1] % 4 || {checks}) {{
            PyErr_Format(PyExc_ValueError, "{name}: gates must be (N, 4H) and cell states (N, H); got gates %ldx%ld",
                         (long)PyArray_DIMS({gates})[0], (long)PyArray_DIMS({gates})[1]);
            {fail}
        }}"""


def cell_code(inputs, outputs, fail):
    """C of LSTMCell: (a, c_prev) -> (h, c, act)."""
    a, c_prev = inputs
    h, c, act = outputs
    t = f"dtype_{a}"
    return f"""
    {{
        {_check_shapes(a, [c_prev], fail, "LSTMCell")}
        {alloc_c_contiguous(h, ["N", "H"], a, fail)}
        {alloc_c_contiguous(c, ["N", "H"], a, fail)}
        {alloc_c_contiguous(act, ["N", "4 * H"], a, fail)}
        {_c_contiguous_inputs([a, c_prev], fail)}
        dlmie_lstm::forward<{t}>(({t}*)PyArray_DATA({a}_c), ({t}*)PyArray_DATA({c_prev}_c), N, H,
            ({t}*)PyArray_DATA({h}), ({t}*)PyArray_DATA({c}), ({t}*)PyArray_DATA({act}));
        {_release([a, c_prev])}
    }}
    """


def cell_grad_code(inputs, outputs, fail):
    """C of LSTMCellGrad: (act, c_prev, c, dh, dc) -> (d_a, d_c_prev)."""
    act, c_prev, c, dh, dc = inputs
    d_a, d_c_prev = outputs
    t = f"dtype_{act}"
    return f"""
    {{
        {_check_shapes(act, [c_prev, c, dh, dc], fail, "LSTMCellGrad")}
        {alloc_c_contiguous(d_a, ["N", "4 * H"], act, fail)}
        {alloc_c_contiguous(d_c_prev, ["N", "H"], act, fail)}
        {_c_contiguous_inputs([act, c_prev, c, dh, dc], fail)}
        dlmie_lstm::backward<{t}>(({t}*)PyArray_DATA({act}_c), ({t}*)PyArray_DATA({c_prev}_c),
            ({t}*)PyArray_DATA({c}_c), ({t}*)PyArray_DATA({dh}_c), ({t}*)PyArray_DATA({dc}_c), N, H,
            ({t}*)PyArray_DATA({d_a}), ({t}*)PyArray_DATA({d_c_prev}));
        {_release([act, c_prev, c, dh, dc])}
    }}
    """

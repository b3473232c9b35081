"""What every compiled Op of dlmie.kernels shares: the float dtypes they take, the way an Op names
its C code and flags (`KernelOp`), the threads its loops may use (`PARALLEL_SUPPORT_CODE`), and C
snippets that (re)allocate an output array only when the one PyTensor hands back does not fit."""

from pytensor.link.c.op import COp

FLOAT_DTYPES = ("float32", "float64")


# `dlmie_parallel::parallel_for(n, work, body)` runs body(lo, hi) over [0, n) split into one
# contiguous range per thread, as many threads as the GEMMs use (OPENBLAS_NUM_THREADS, else
# OMP_NUM_THREADS, else every CPU), or inline when `work` (elements touched) is too small to pay
# for starting a thread (about 20 us). Plain threads, started and joined within the call: an OpenMP
# runtime's threads would keep spinning after the loop and slow the OpenBLAS threads of the GEMMs
# that follow (docs/engine.md). Bodies must write disjoint memory.
PARALLEL_SUPPORT_CODE = r"""
#ifndef DLMIE_PARALLEL_FOR
#define DLMIE_PARALLEL_FOR
namespace dlmie_parallel {

static int thread_count() {
    static int count = 0;
    if (count == 0) {
        const char *v = getenv("OPENBLAS_NUM_THREADS");
        if (!v || !*v) v = getenv("OMP_NUM_THREADS");
        int n = v ? atoi(v) : 0;
        const int cpus = (int)std::thread::hardware_concurrency();
        if (n <= 0 || (cpus > 0 && n > cpus)) n = cpus;
        count = n < 1 ? 1 : n;
    }
    return count;
}

template <typename Body>
static void parallel_for(npy_intp n, npy_intp work, Body body) {
    npy_intp t = thread_count();
    if (t > n) t = n;
    if (t <= 1 || work < (1 << 20)) { body((npy_intp)0, n); return; }
    std::vector<std::thread> threads;
    npy_intp k = 1;
    try {
        for (; k < t; ++k) threads.emplace_back(body, n * k / t, n * (k + 1) / t);
    } catch (const std::system_error &) {  // no thread to be had: the rest runs here
        body(n * k / t, n);
    }
    body((npy_intp)0, n / t);
    for (auto &thread : threads) thread.join();
}

}  // namespace dlmie_parallel
#endif
"""
PARALLEL_HEADERS = ("<thread>", "<vector>", "<system_error>", "<stdlib.h>")
PARALLEL_VERSION = 2  # part of the cache version of every Op that uses the code above: bump with it
PARALLEL_COMPILE_ARGS = ("-pthread",)


class KernelOp(COp):
    """A COp whose C support code, headers, compiler flags and cache version are class attributes.

    -fopenmp-simd, the default flag, enables only the `omp simd` hints that let the compiler
    vectorize the loops; no OpenMP runtime. An Op whose loops call `dlmie_parallel::parallel_for`
    sets PARALLEL. Bump CACHE_VERSION whenever the C code changes.
    """

    SUPPORT_CODE = ""
    HEADERS = ()
    COMPILE_ARGS = ("-fopenmp-simd",)
    CACHE_VERSION = (1,)
    PARALLEL = False

    def c_support_code(self, **kwargs):
        return (PARALLEL_SUPPORT_CODE if self.PARALLEL else "") + self.SUPPORT_CODE

    def c_headers(self, **kwargs):
        return list(self.HEADERS) + (list(PARALLEL_HEADERS) if self.PARALLEL else [])

    def c_compile_args(self, **kwargs):
        return list(self.COMPILE_ARGS) + (list(PARALLEL_COMPILE_ARGS) if self.PARALLEL else [])

    def c_code_cache_version(self):
        return (*self.CACHE_VERSION, PARALLEL_VERSION) if self.PARALLEL else self.CACHE_VERSION


def alloc_like(out, like, fail):
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


def alloc_vector(out, length, like, fail):
    return f"""
    if (!{out} || PyArray_DIMS({out})[0] != {length}) {{
        Py_XDECREF({out});
        npy_intp vdims[1] = {{{length}}};
        {out} = (PyArrayObject*)PyArray_EMPTY(1, vdims, PyArray_TYPE({like}), 0);
        if (!{out}) {{ {fail} }}
    }}
    """


def alloc_c_contiguous(out, dims, like, fail):
    """C: (re)allocate `out` as a C-contiguous array of shape `dims` (C expressions, one per axis)
    and the dtype of `like`, unless the array PyTensor hands back already is one."""
    n = len(dims)
    return f"""
    {{
        npy_intp want[{n}] = {{{", ".join(dims)}}};
        if (!{out} || PyArray_NDIM({out}) != {n} || !PyArray_IS_C_CONTIGUOUS({out})
            || !PyArray_CompareLists(PyArray_DIMS({out}), want, {n})) {{
            Py_XDECREF({out});
            {out} = (PyArrayObject*)PyArray_EMPTY({n}, want, PyArray_TYPE({like}), 0);
            if (!{out}) {{ {fail} }}
        }}
    }}
    """


def element_strides(x, op_name, fail):
    """C: `st[4]`, the strides of the 4-D array `x` in elements, which the kernels' loops index with
    (`x` may be any view); a ValueError naming `op_name` when a stride is not a whole element."""
    return f"""
    npy_intp st[4];
    for (int d = 0; d < 4; ++d) {{
        const npy_intp bytes = PyArray_STRIDES({x})[d], size = PyArray_ITEMSIZE({x});
        if (bytes % size) {{
            PyErr_SetString(PyExc_ValueError, "{op_name}: input strides are not whole elements");
            {fail}
        }}
        st[d] = bytes / size;
    }}
    """

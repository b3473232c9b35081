"""What every compiled Op of dlmie.kernels shares: the float dtypes they take, the way an Op names
its C code and flags (`KernelOp`), and C snippets that (re)allocate an output array only when the
one PyTensor hands back does not fit."""

from pytensor.link.c.op import COp

FLOAT_DTYPES = ("float32", "float64")


class KernelOp(COp):
    """A COp whose C support code, headers, compiler flags and cache version are class attributes.

    -fopenmp-simd, the default flag, enables only the `omp simd` hints that let the compiler
    vectorize the loops; no OpenMP runtime (its spinning threads would slow the GEMMs that follow).
    Bump CACHE_VERSION whenever the C code changes.
    """

    SUPPORT_CODE = ""
    HEADERS = ()
    COMPILE_ARGS = ("-fopenmp-simd",)
    CACHE_VERSION = (1,)

    def c_support_code(self, **kwargs):
        return self.SUPPORT_CODE

    def c_headers(self, **kwargs):
        return list(self.HEADERS)

    def c_compile_args(self, **kwargs):
        return list(self.COMPILE_ARGS)

    def c_code_cache_version(self):
        return self.CACHE_VERSION


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

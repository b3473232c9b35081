"""PyTensor settings for dlmie, applied once, before PyTensor is first imported.

`import dlmie` runs this module, so notebooks and scripts never configure PyTensor themselves.

Why each setting:
- ``linker=cvm`` (the C virtual machine, PyTensor's ``CVM`` mode): PyTensor 3's default
  backend (Numba) takes minutes to compile a conv-net gradient on a cold cache; the C virtual
  machine compiles it in seconds (needs g++).
- ``optimizer_excluding=local_dot22_to_dot22scalar``: that rewrite folds a scalar factor into a
  GEMM, so a weight gradient read three times by an update rule (the clipping norm, and scaled by
  the learning rate or by Adam's 1 - beta) became three GEMMs instead of one GEMM and two cheap
  scalings. (Predefined modes such as ``CVM`` ignore ``optimizer_excluding``, hence
  ``mode=Mode`` with the linker and optimizer named.)
- ``floatX=float32``: the speed/precision trade-off every course network uses. Gradient checks
  build float64 variables explicitly, and every dlmie layer keeps its input's dtype.
- ``blas__ldflags``: every conv and affine layer is one GEMM, so GEMM must run in an optimized
  BLAS. A system OpenBLAS is used where one is installed (``libopenblas-dev``); otherwise the
  OpenBLAS build that NumPy and SciPy wheels ship, installed from PyPI as ``scipy-openblas32``.
  Setting the flags ourselves also keeps PyTensor's "could not link to a BLAS" warning away.
  ``DLMIE_BLAS=system`` or ``DLMIE_BLAS=wheel`` forces one of the two (the benchmarks compare them).
- The compile cache is PyTensor's ``compiledir`` (``~/.pytensor`` by default), which persists
  between runs; ``PYTENSOR_FLAGS=base_compiledir=DIR`` moves it, with the rewritten graphs that
  ``dlmie.compile_cache`` keeps in it.

Anything the user sets in ``PYTENSOR_FLAGS`` wins over these defaults.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import warnings
from pathlib import Path

# scipy-openblas prefixes its symbols with "scipy_"; PyTensor's C code calls the plain Fortran names.
_BLAS_ROUTINES = ("gemm", "gemv", "ger", "dot", "axpy", "scal", "copy", "swap")
_SYSTEM_LIB_DIRS = (
    f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or ''}",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/opt/homebrew/opt/openblas/lib",
)


def _system_openblas_dir() -> Path | None:
    """The folder holding a linkable system ``libopenblas.so`` (from libopenblas-dev), or None."""
    for folder in _SYSTEM_LIB_DIRS:
        for suffix in (".so", ".dylib"):
            if (Path(folder) / f"libopenblas{suffix}").exists():
                return Path(folder)
    return None


def blas_ldflags(choice: str = "auto") -> tuple[str, str]:
    """Return ``(flags, description)`` for PyTensor's ``blas__ldflags``.

    Inputs:
    - choice: "auto" (system OpenBLAS if installed, else the wheel), "system" or "wheel".
    Outputs:
    - flags: compiler and linker flags (no commas, so they fit in PYTENSOR_FLAGS).
    - description: one line naming the library, for ``dlmie.config.BLAS`` and the benchmarks.
    """
    if choice not in ("auto", "system", "wheel"):
        raise ValueError(f"DLMIE_BLAS={choice!r}: use 'auto', 'system' or 'wheel'.")
    system_dir = _system_openblas_dir() if choice in ("auto", "system") else None
    if system_dir is not None:
        flags = f"-L{system_dir} -lopenblas -Xlinker -rpath -Xlinker {system_dir}"
        return flags, f"system OpenBLAS ({system_dir})"
    if choice == "system":
        raise RuntimeError(
            "DLMIE_BLAS=system, but no libopenblas.so was found in "
            f"{', '.join(_SYSTEM_LIB_DIRS)}. Install it (Debian/Ubuntu: apt install libopenblas-dev) "
            "or unset DLMIE_BLAS."
        )
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    renames = " ".join(
        f"-D{p}{r}_=scipy_{p}{r}_" for p in "sd" for r in _BLAS_ROUTINES
    )
    flags = (
        f"-L{lib_dir} -l{scipy_openblas32.get_library()} "
        f"-Xlinker -rpath -Xlinker {lib_dir} {renames}"
    )
    return flags, f"OpenBLAS {scipy_openblas32.__version__} from the scipy-openblas32 wheel"


def _pytensor_flags(blas_flags: str) -> str:
    defaults = {
        "mode": "Mode",
        "linker": "cvm",
        "optimizer": "fast_run",
        "optimizer_excluding": "local_dot22_to_dot22scalar",
        "floatX": "float32",
        "blas__ldflags": f'"{blas_flags}"',
    }
    ours = ",".join(f"{k}={v}" for k, v in defaults.items())
    user = os.environ.get("PYTENSOR_FLAGS", "")
    # PyTensor reads the flags left to right and the last value of a key wins.
    return f"{ours},{user}" if user else ours


def _apply() -> str:
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        warnings.warn(
            "g++ was not found: PyTensor will run without compiled C code, 10-100x slower. "
            "Install a C++ compiler (Debian/Ubuntu: apt install g++; macOS: xcode-select --install).",
            stacklevel=3,
        )
    blas_flags, description = blas_ldflags(os.environ.get("DLMIE_BLAS", "auto"))
    # OpenBLAS's threads spin for about 2^28 cycles after each GEMM before they sleep, holding a
    # core that the C kernels' own threads (kernels.common.PARALLEL_SUPPORT_CODE) need between
    # GEMMs: 2^4 lets them sleep at once. MobileNetV2's forward pass on 2 threads: 0.44-0.55 s
    # spinning, 0.35 s with 2^4 (docs/engine.md). OpenBLAS reads it when PyTensor's first C module
    # loads it, after this.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if "pytensor" in sys.modules:
        warnings.warn(
            "pytensor was imported before dlmie; import dlmie first so that its settings "
            "(C backend, float32, OpenBLAS, one GEMM per weight gradient) apply from the start. "
            "Applying what can still be changed now.",
            stacklevel=3,
        )
        import pytensor

        pytensor.config.mode = "CVM"  # the rewrite exclusion cannot be changed once PyTensor is imported
        pytensor.config.floatX = "float32"
        pytensor.config.blas__ldflags = blas_flags
    else:
        os.environ["PYTENSOR_FLAGS"] = _pytensor_flags(blas_flags)
    return description


BLAS = _apply()


def keep_buffers_mode():
    """The configured PyTensor mode, except that a function keeps its intermediate arrays between
    calls (the C VM's ``allow_gc=False``).

    For a function called many times on inputs of one shape: a training step, a feature
    extractor's batch. By default the VM frees every intermediate array after its last use and
    allocates it anew on the next call, and the kernel zero-fills the fresh pages each time: for
    the classifier's im2col columns (300 MB at batch 128) that is a tenth of the step, for VGG-16's
    activations at batch 8 about a sixth of the forward pass. The price is that memory, held while
    the function lives, so one-off functions keep the default.
    """
    import pytensor
    from pytensor.link.vm import VMLinker

    mode = pytensor.compile.mode.get_default_mode()
    return mode.clone(link_kwargs={"allow_gc": False}) if isinstance(mode.linker, VMLinker) else mode

# The notebooks' short settings (fewer images and steps), under CI or DLMIE_QUICK=1: read here once,
# so that every notebook and the student README mean the same switch.
QUICK = os.environ.get("CI") == "true" or os.environ.get("DLMIE_QUICK") == "1"

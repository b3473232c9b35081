"""The timing harness: the registry of named benchmarks, alternating timing, medians and ratios,
the header naming what the timings depend on, and the time to a first compiled gradient."""

import functools
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

import dlmie
import pytensor
from dlmie.benchmarks import cases, torch_reference

# name -> function of no arguments returning (ours, {reference name: callable or skip reason}).
BENCHMARKS = {
    "convnet_fwd_inputgrad_b1": functools.partial(cases.convnet_fwd_inputgrad, 1),
    "convnet_fwd_inputgrad_b32": functools.partial(cases.convnet_fwd_inputgrad, 32),
    "gemm_1024": functools.partial(cases.gemm, 1024, 1024, 1024),
    # The second conv layer's GEMM at batch 32: (64, 32*3*3) filters @ (288, 32*32*32) columns.
    "gemm_conv2_b32": functools.partial(cases.gemm, 64, 288, 32 * 32 * 32),
    "classifier_train_step_b128": functools.partial(cases.classifier_train_step, 128),
    "classifier_fwd_inputgrad_b1": functools.partial(cases.classifier_fwd_inputgrad, 1),
    "classvis_step_b1": functools.partial(cases.classvis_step, 1),
    "vgg16_features_b16": functools.partial(cases.vgg16_features, 16),
    "mobilenet_v2_features_b16": functools.partial(cases.mobilenet_v2_features, 16),
    "caption_train_step_b128": functools.partial(cases.caption_train_step, 128),
    "caption_beam_search_b100": functools.partial(cases.caption_beam_search, 100),
    "sat_train_step_b64": functools.partial(cases.sat_train_step, 64),
    "scst_step_sat_b16x5": functools.partial(cases.scst_step_sat, 16, 5),
    "classify_startup_cold": functools.partial(cases.classify_startup, cold=True),
    "classify_startup_warm": functools.partial(cases.classify_startup, cold=False),
}

# Benchmarks that time whole processes: (warm-up rounds, at most this many timed rounds). A cold
# start-up compiles every C module anew (minutes) and has nothing to warm up; the warm one's
# warm-up run fills its compile dir.
PROCESS_ROUNDS = {"classify_startup_cold": (0, 1), "classify_startup_warm": (1, 5)}


def describe(name: str) -> str:
    """The first docstring line of benchmark `name`'s function, with its arguments."""
    bench = BENCHMARKS[name]
    func, args = getattr(bench, "func", bench), getattr(bench, "args", ())
    first = (func.__doc__ or "").split("\n")[0]
    bound = inspect.signature(func).bind_partial(*args).arguments
    return f"{first} ({', '.join(f'{k}={v}' for k, v in bound.items())})" if bound else first


def median_times(fns, repeats: int, warmup: int = 2) -> list[float]:
    """Median wall times of the callables `fns`, timed alternately.

    Inputs:
    - fns: callables taking no arguments
    - repeats: timed rounds; each round calls every fn once, in order
    - warmup: untimed rounds before them
    Returns:
    - one median time in seconds per fn, in the order of `fns`

    Alternating rather than timing all calls of one fn and then all of the next: on a shared
    machine the load changes between two such windows and would bias their ratio; within a round
    it weighs on every fn alike.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(fn_times) for fn_times in times]


@dataclass
class Row:
    """One benchmark against one reference: median seconds of ours and of the reference, or the
    reason the reference was skipped (then `reference_s` is None and only ours was timed)."""

    benchmark: str
    reference: str
    ours_s: float
    reference_s: float | None = None
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        """ours / reference (below 1: we are faster); None when the reference was skipped."""
        return None if self.reference_s is None else self.ours_s / self.reference_s


def rows(name: str, repeats: int):
    """Build benchmark `name` and yield one Row per reference, ours and the reference timed
    alternately with `repeats` calls each (`median_times`; fewer for PROCESS_ROUNDS); ours alone
    where the reference is skipped."""
    warmup, most = PROCESS_ROUNDS.get(name, (2, repeats))
    repeats = min(repeats, most)
    ours, references = BENCHMARKS[name]()
    for ref_name, ref in references.items():
        if isinstance(ref, str):
            (ours_s,) = median_times([ours], repeats, warmup)
            yield Row(name, ref_name, ours_s, skipped=ref)
        else:
            ours_s, ref_s = median_times([ours, ref], repeats, warmup)
            yield Row(name, ref_name, ours_s, ref_s)


def header() -> str:
    """One line naming what the timings depend on: BLAS, torch, threads, OpenBLAS settings."""
    torch = torch_reference.load_torch()
    torch_info = "torch not installed" if torch is None else f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    threads = " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    tuning = " ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ)
    return " | ".join(
        filter(
            None,
            [f"BLAS: {dlmie.config.BLAS}", torch_info, f"numpy {np.__version__}", f"pytensor {pytensor.__version__}",
             f"{os.cpu_count()} CPUs", threads, tuning],
        )
    )


def first_gradient(start: float) -> None:
    """Build, compile and call the small conv net's gradient once; print the seconds since `start`
    (a time.perf_counter() value taken before the imports, so that they count)."""
    cases.compile_convnet(cases.convnet_params())(*cases.convnet_inputs(1))
    print(time.perf_counter() - start)


# The timer starts before `import dlmie`, which configures and imports PyTensor.
_FIRST_GRADIENT_COMMAND = ("import time; start = time.perf_counter(); "
                           "from dlmie.benchmarks.harness import first_gradient; first_gradient(start)")


def first_gradient_times():
    """Time to the first compiled conv-net gradient in a fresh process, with a fresh PyTensor compile
    cache ("cold") and then again with the same cache ("warm").

    Yields (label, process_s, inside_s) for "cold", then "warm": the whole process's wall time, and
    the time inside it from before the imports to the first gradient.
    """
    with tempfile.TemporaryDirectory(prefix="dlmie-compiledir-") as cache:
        env = dict(os.environ)
        env["PYTENSOR_FLAGS"] = ",".join(filter(None, [env.get("PYTENSOR_FLAGS"), f"base_compiledir={cache}"]))
        for label in ("cold", "warm"):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", _FIRST_GRADIENT_COMMAND], env=env, capture_output=True,
                                    text=True, check=True)
            yield label, time.perf_counter() - start, float(result.stdout.split()[-1])

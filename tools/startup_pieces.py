"""What each piece of dlmie.compile_cache still buys: a command's start-up, warm, with each piece
turned off in turn.

    python tools/startup_pieces.py [--runs 5] -- python -m dlmie.classify IMAGE
    python tools/startup_pieces.py --runs 3 -- python -m dlmie.caption IMAGE

Runs the command (a `python -m MODULE ARGS...` line) in fresh processes, the variants one after
the other in every round (so that a change of the machine's load spreads over all of them), after
one warm-up round, and prints the median and each run's wall seconds per variant:

- all: the cache as shipped;
- no module index: PyTensor's own C-module cache, which reads every module's key when the first
  function is linked and again at exit (`pytensor_compat.ModuleIndex` not installed);
- no march file: PyTensor finds the -march=native flags itself (`compile_cache._MarchFlags` off);
- no inner functions: the inner function of an OpFromGraph left in a graph (PyTensor's Softmax) is
  compiled by PyTensor at its first call, rewrites and all;
- off: DLMIE_GRAPH_CACHE=off, pytensor.function's own path (none of the above, every graph
  rewritten in every process).

The pieces are turned off by patching dlmie before the command's module runs (runpy), so every
variant pays the same small wrapper. Uses PyTensor's compile dir as it is (PYTENSOR_FLAGS moves it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

PATCHES = {
    "all": "",
    "no module index": "compat.ModuleIndex.installed = classmethod(lambda cls: None)",
    "no march file": ("class _Off:\n    def __init__(self, folder): pass\n    def keep(self): pass\n"
                      "cc._MarchFlags = _Off"),
    "no inner functions": "cc._compile_inner_functions = lambda fgraph: None",
    "off": "",
}

WRAPPER = """
import runpy, sys
from dlmie import compile_cache as cc, pytensor_compat as compat
{patch}
module, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=list(PATCHES), help="variants to run (default all)")
    parser.add_argument("command", nargs="+", help="python -m MODULE ARGS...")
    args = parser.parse_args(argv)
    command = args.command
    if command[:2] != ["python", "-m"] or len(command) < 3:
        parser.error("the command must be: python -m MODULE ARGS...")
    variants = args.only or list(PATCHES)
    times = {name: [] for name in variants}
    for round_ in range(args.runs + 1):  # round 0 warms every variant's caches
        for name in variants:
            env = dict(os.environ)
            if name == "off":
                env["DLMIE_GRAPH_CACHE"] = "off"
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", WRAPPER.format(patch=PATCHES[name]), *command[2:]],
                                    env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if result.returncode != 0:
                raise SystemExit(f"{name}: the command failed:\n{result.stderr}")
            if round_:
                times[name].append(elapsed)
    print(f"{' '.join(command)}: wall seconds, median of {args.runs} (each run), "
          f"load average {os.getloadavg()[0]:.2f}")
    for name in variants:
        print(f"  {name:<20} {statistics.median(times[name]):5.2f}  ({', '.join(f'{t:.2f}' for t in times[name])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

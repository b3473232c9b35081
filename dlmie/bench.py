"""Benchmarks: dlmie (PyTensor, C backend) against reference implementations.

    python -m dlmie.bench                       # every benchmark
    python -m dlmie.bench gemm_1024 --repeats 5  # some of them
    python -m dlmie.bench --list                # their names and what they measure
    python -m dlmie.bench --compile             # time to the first conv-net gradient, cold vs warm cache
    python -m dlmie.bench --threads 1           # OpenBLAS and torch on one thread each

Each benchmark prints one row per reference: our median time, the reference's median time and
the ratio ours / reference (below 1: we are faster). Ours and the reference are timed alternately
in one process (ours, reference, ours, ...), so that load changes on a shared machine weigh on both
medians alike instead of biasing the ratio. The header names the BLAS that PyTensor
links (``dlmie.config.BLAS``, chosen by ``DLMIE_BLAS``), the torch version and thread counts,
so that tables from different machines or settings can be compared. Thread counts come from
the environment (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS; default: every CPU); ``--threads N`` sets
both and restarts the process, since the libraries read them when they load.

The benchmarks themselves are in ``dlmie.benchmarks`` (adding one: see its docstring). PyTorch is
an optional extra (``pip install dlmie[bench]``); without it the torch rows say
"skipped (pip install torch)".
"""

import argparse
import os
import sys

from dlmie.benchmarks import harness


def print_rows(names, repeats: int) -> None:
    """Print the header and, as each is measured, one row per (benchmark, reference)."""
    print(harness.header())
    print(f"{'benchmark':<28}{'reference':<11}{'ours ms':>10}{'ref ms':>10}{'ours/ref':>10}")
    for name in names:
        for row in harness.rows(name, repeats):
            lead = f"{row.benchmark:<28}{row.reference:<11}{1e3 * row.ours_s:>10.2f}"
            if row.skipped is not None:
                print(f"{lead}  {row.skipped}")
            else:
                print(f"{lead}{1e3 * row.reference_s:>10.2f}{row.ratio:>10.2f}")


def print_compile_times() -> None:
    """Print the header and the time to the first conv-net gradient, cold cache then warm."""
    print(harness.header())
    totals = {}
    for label, process_s, inside_s in harness.first_gradient_times():
        totals[label] = process_s
        print(f"first conv-net gradient, {label} cache: {process_s:6.1f} s "
              f"(process total; import + build + compile + call: {inside_s:.1f} s)")
    print(f"cold / warm: {totals['cold'] / totals['warm']:.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dlmie.bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per implementation (default 20)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--compile", action="store_true", help="time the first gradient, cold vs warm cache")
    parser.add_argument("--threads", type=int, help="set OPENBLAS_NUM_THREADS and OMP_NUM_THREADS (restarts)")
    args = parser.parse_args(argv)
    thread_vars = {"OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    # Both variables, not one: torch reads OMP_NUM_THREADS, so a shell that preset only OpenBLAS's
    # would otherwise time our one thread against torch on every core.
    if args.threads is not None and any(os.environ.get(k) != v for k, v in thread_vars.items()):
        env = {**os.environ, **thread_vars}
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", "dlmie.bench", *argv], env)
    if args.list:
        for name in harness.BENCHMARKS:
            print(f"{name:<28}{harness.describe(name)}")
        return
    if args.compile:
        print_compile_times()
        return
    unknown = [n for n in args.names if n not in harness.BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(harness.BENCHMARKS)}")
    print_rows(args.names or list(harness.BENCHMARKS), args.repeats)


if __name__ == "__main__":
    main()

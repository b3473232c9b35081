"""Benchmarks of dlmie against reference implementations (the command is ``python -m dlmie.bench``).

- harness.py: the registry of named benchmarks (BENCHMARKS), alternating timing, medians, ratios
- cases.py: the benchmark cases, dlmie's side of each measurement and the checks that it agrees
  with its references
- torch_reference.py: dlmie's networks and steps in PyTorch CPU, same weights (optional extra)
- torch_startup.py: the start-up benchmark's reference process (`python -m dlmie.benchmarks.torch_startup`)
- numpy_reference.py: plain NumPy references, for the benchmarks' "numpy" rows and for the tests

Adding a benchmark: write a function in cases.py that returns ``(ours, references)`` -- ``ours`` a
callable taking no arguments, ``references`` a dict from a reference's name to a callable (or to a
string saying why it is skipped) -- and add one line to ``harness.BENCHMARKS``.
"""

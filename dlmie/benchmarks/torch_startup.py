"""The reference process of the start-up benchmark (`classify_startup_cold`, `classify_startup_warm`):
`python -m dlmie.classify --model MODEL IMAGE` written as a PyTorch user would, run as

    python -m dlmie.benchmarks.torch_startup MODEL.npz IMAGE

It imports NumPy, PIL and PyTorch (and dlmie's package `__init__`, which sets environment variables
and imports neither NumPy nor PyTensor: about 0.05 s), never PyTensor.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Classify one image with `torch_reference.classify_file`; argv: [MODEL.npz, IMAGE]."""
    from dlmie.benchmarks.torch_reference import classify_file, load_torch

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m dlmie.benchmarks.torch_startup MODEL.npz IMAGE", file=sys.stderr)
        return 2
    if load_torch() is None:
        print("PyTorch is not installed (pip install dlmie[bench])", file=sys.stderr)
        return 1
    classify_file(*args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The untrusted side of grading: run a student's parts on given inputs, hand back arrays.

    python -m dlmie.worker REQUEST OUT [CASE_ID ...]

REQUEST (read-only) holds request.json, {"modules": [...], "cases": [{"id", "part", "kind"}, ...]},
and one <id>.npz of inputs per case. The worker first imports the modules that hold the parts
(OUT/probe.started, then OUT/probe.done with a line for each module that did not import), then
runs the cases named on the command line (all by default) in order. For each it writes OUT/<id>.started, then either
OUT/<id>.npz (the outputs, plain numeric arrays, never pickled) or OUT/<id>.error (the exception's
type and first line). The grader reads nothing else, trusts none of it beyond its being arrays, and
compares on its own side; it never sends expected outputs or the solution here.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ERROR_CHARS = 500


def _write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _error_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:ERROR_CHARS]


def _arrays(outputs) -> dict:
    """The outputs as plain numeric arrays; a TypeError says which one is not."""
    if not isinstance(outputs, dict):
        raise TypeError(f"the part's outputs are a {type(outputs).__name__}, not named arrays")
    arrays = {}
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"output {name} is a {type(value).__name__} of dtype {array.dtype}, not a numeric array")
        arrays[str(name)] = array
    return arrays


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    request, out = Path(argv[0]), Path(argv[1])
    spec = json.loads((request / "request.json").read_text(encoding="utf-8"))
    wanted = set(argv[2:])
    cases = [c for c in spec["cases"] if not wanted or c["id"] in wanted]

    (out / "probe.started").touch()
    failed = []
    for module in spec["modules"]:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 (its parts fail on their own; the teacher is told why)
            failed.append(f"{module}: {_error_line(err)}")
    _write(out / "probe.done", "\n".join(failed).encode())
    from dlmie.parts import run_case

    for case in cases:
        (out / f"{case['id']}.started").touch()
        try:
            with np.load(request / f"{case['id']}.npz", allow_pickle=False) as data:
                inputs = {k: data[k] for k in data.files}
            arrays = _arrays(run_case(case["part"], inputs, case["kind"]))
        except Exception as err:  # noqa: BLE001 (any failure of the student's code is the case's result)
            _write(out / f"{case['id']}.error", _error_line(err).encode())
            continue
        path = out / f"{case['id']}.npz.part"
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        os.replace(path, out / f"{case['id']}.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())

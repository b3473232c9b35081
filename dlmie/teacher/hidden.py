"""Hidden cases: the graded inputs, drawn at grading time from the teacher's seed, and the
solution's outputs on them, computed here on the trusted side.

Every case of the table (dlmie.parts) is drawn again with another seed: the same kinds of inputs
(shapes, settings, edge cases) as the practice cases in the handout, other values. The expected
outputs never leave this process; a worker gets the inputs only, and what it returns is judged by
`judge`.
"""

from __future__ import annotations

import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmie.assignment import unfinished_part
from dlmie.checks import compare
from dlmie.parts import ERROR, GRADIENT, PARTS, Case, make_inputs, run_case

RESULT_LIMIT = 64 << 20  # largest outputs file read back from a worker


@dataclass(frozen=True)
class HiddenCase:
    """One graded case: an id for the worker's files, its part and table entry, inputs, expected outputs."""

    id: str
    part: str
    case: Case
    inputs: dict
    expected: dict


def new_seed() -> int:
    return secrets.randbits(31)


def draw(seed: int) -> list[HiddenCase]:
    """Every case of every part, drawn from `seed`, with the solution's outputs.

    Raises:
    - RuntimeError when this dlmie is not the solution (a part raises its stub's error)
    """
    cases = []
    for part in PARTS.values():
        for case in part.cases:
            inputs = make_inputs(part.name, case.name, seed)
            try:
                expected = {} if case.kind == ERROR else run_case(part.name, inputs, case.kind)
            except NotImplementedError as err:
                if unfinished_part(str(err)):
                    raise RuntimeError("grading computes the expected outputs with the solution: run it in the "
                                       "solution repository, not in a handout") from err
                raise
            cases.append(HiddenCase(f"c{len(cases):03d}", part.name, case, inputs, expected))
    return cases


def write_request(cases: list[HiddenCase], modules: list[str], folder: Path) -> None:
    """The worker's request: request.json and one <id>.npz of inputs per case (no expected outputs)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    spec = {"modules": modules, "cases": [{"id": c.id, "part": c.part, "kind": c.case.kind} for c in cases]}
    (folder / "request.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    for c in cases:
        np.savez(folder / f"{c.id}.npz", **c.inputs)


@dataclass(frozen=True)
class Verdict:
    """A case's result: passed, and why not in one line (never an expected value); theirs: the note
    is the student's own error line (text their code chose, shown to them only scrubbed of numbers)."""

    passed: bool
    note: str = ""
    theirs: bool = False


def _read_outputs(path: Path) -> dict:
    if path.stat().st_size > RESULT_LIMIT:
        raise ValueError(f"returned {path.stat().st_size >> 20} MB of outputs")
    if not zipfile.is_zipfile(path):
        raise ValueError("returned something that is not a set of arrays")
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def error_note(line: str, memory_gib: float) -> str:
    """A worker's error line in a teacher's words."""
    if unfinished_part(line):
        return "not implemented yet"
    if line.startswith("MemoryError"):
        return f"used more than {memory_gib:g} GiB of memory"
    return line


def judge(case: HiddenCase, error: str | None, outputs_file: Path | None, memory_gib: float) -> Verdict:
    """Judge what a worker left for one case: an error line, or a file of outputs.

    Inputs:
    - case: the hidden case
    - error: the worker's error line, or None
    - outputs_file: the worker's <id>.npz, or None
    - memory_gib: the memory limit (to name it when the worker ran out)
    """
    if case.case.kind == ERROR:
        wanted = case.case.error
        if error is None:
            return Verdict(False, f"raised nothing, but should raise a {wanted}")
        raised = error.split(":", 1)[0]
        if raised == wanted:
            return Verdict(True)
        if unfinished_part(error):
            return Verdict(False, error_note(error, memory_gib))
        return Verdict(False, f"raised {raised}, not a {wanted}", theirs=True)
    if error is not None:
        return Verdict(False, error_note(error, memory_gib), theirs=True)
    if outputs_file is None:
        return Verdict(False, "returned nothing")
    try:
        got = _read_outputs(outputs_file)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        return Verdict(False, f"returned something that is not plain arrays ({err})"[:300])
    tolerance = PARTS[case.part].tolerance
    for name, want in case.expected.items():
        if name not in got:
            return Verdict(False, f"returned no output {name}")
        value = got[name]
        if value.dtype.kind not in "biuf":
            return Verdict(False, f"output {name} has dtype {value.dtype}, not a number type")
        if value.shape != want.shape:
            return Verdict(False, f"output {name} has shape {value.shape}, expected {want.shape}")
        error_value = compare(value, want)
        if not error_value <= tolerance:
            return Verdict(False, f"output {name}: rel_error {error_value:.2e} > tolerance {tolerance:.0e}")
    return Verdict(True)


def describe(case) -> str:
    """'conv2d [one_image_stride2_pad0: N = 1, ...]' for the teacher's notes.

    case: a HiddenCase, or anything else with its `part` (name) and `case` (the table's Case)
    """
    return f"{case.part} [{case.case.name}: {about(case.case)}]"


def about(case: Case) -> str:
    """The kind of a case's inputs in words, for a student: 'N = 1, H = 2', '... (backward pass)'."""
    return case.about + (" (backward pass)" if case.kind == GRADIENT else "")

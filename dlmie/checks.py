"""Practice checks of the assignment's parts: each part run on the inputs of its practice cases
and compared with the outputs the solution computed from them, by cs231n's relative error.

The cases are those of the part's table entry (dlmie.parts). Its fixture,
tests/graded/fixtures/<part>.npz, holds the practice inputs of every case and the solution's
outputs of its VALUE cases (written by `make fixtures`). A GRADIENT case is a numeric gradient
check, which needs no expected outputs; an ERROR case passes when the part raises the exception
its docstring names. The graded tests (tests/graded) and the notebooks' check cells run the same
checks:

    check_part("conv2d")      # in a notebook: one line per output, with PASS or FAIL
    assert_case("conv2d", "stride2_pad2")   # in a test: AssertionError "conv2d: rel_error ... > tolerance ..."

The teacher's grader uses other inputs of the same kinds (see dlmie.parts).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from dlmie.data import REPO_ROOT
from dlmie.gradcheck import rel_error
from dlmie.parts import ERROR, GRADIENT, PARTS, gradient_errors, run_case

FIXTURES = REPO_ROOT / "tests" / "graded" / "fixtures"


class Result(NamedTuple):
    """One compared output: its part, case and name, the relative error and the tolerance."""

    part: str
    case: str
    name: str
    error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)  # a NaN error fails

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{self.part} [{self.case}] {self.name}: rel_error {self.error:.2e}  "
                f"(tolerance {self.tolerance:.0e})  {verdict}")


def compare(got, want) -> float:
    """cs231n's relative error of two arrays, made safe for grading: a shape mismatch, or a NaN or
    infinity where the other has none (or another one), is an infinite error; matching infinities
    are ignored."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(got[~finite], want[~finite]):
        return float("inf")
    return rel_error(got[finite], want[finite]) if finite.any() else 0.0


# ---------------------------------------------------------------- fixtures


def fixture_path(part: str) -> Path:
    return FIXTURES / f"{part}.npz"


def load_fixture(part: str) -> dict:
    """case -> {"in": {name: array}, "out": {name: array}} from tests/graded/fixtures/<part>.npz,
    whose keys are "<case>/in/<name>" and "<case>/out/<name>"."""
    path = fixture_path(part)
    if not path.is_file():
        raise FileNotFoundError(f"no fixture for part {part!r} at {path}; the teacher writes them with `make fixtures`")
    cases = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            case, kind, name = key.split("/", 2)
            cases.setdefault(case, {"in": {}, "out": {}})[kind][name] = data[key]
    return cases


def save_fixture(part: str, cases: dict) -> Path:
    """Write cases (as `load_fixture` returns them) to the part's fixture, atomically."""
    arrays = {f"{case}/{kind}/{name}": np.asarray(value)
              for case, kinds in cases.items() for kind, values in kinds.items() for name, value in values.items()}
    path = fixture_path(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return path


# ---------------------------------------------------------------- checking


def _part(part: str):
    if part not in PARTS:
        raise ValueError(f"no part {part!r}; the parts are {', '.join(PARTS)}")
    return PARTS[part]


def case_results(part: str, case: str) -> list[Result]:
    """Run one practice case of a part and compare: one Result per output (per input of a
    gradient check; one for the exception of an ERROR case)."""
    spec, cases = _part(part), load_fixture(part)
    kind = spec.case(case).kind
    if case not in cases:
        raise ValueError(f"{part}: no case {case!r} in {fixture_path(part)}; rebuild the fixtures with `make fixtures`")
    inputs, expected = cases[case]["in"], cases[case]["out"]
    if kind == GRADIENT:
        return [Result(part, case, f"d{name}", error, spec.gradient_tolerance)
                for name, error in gradient_errors(part, inputs).items()]
    if kind == ERROR:
        wanted = spec.case(case).error
        try:
            run_case(part, inputs)
        except NotImplementedError:
            raise
        except Exception as err:  # noqa: BLE001 (which exception is the check)
            raised = type(err).__name__
        else:
            raised = "nothing"
        return [Result(part, case, f"raises {wanted} (raised {raised})", 0.0 if raised == wanted else float("inf"), 0.0)]
    got = run_case(part, inputs)
    return [Result(part, case, name, compare(got[name], want) if name in got else float("inf"), spec.tolerance)
            for name, want in expected.items()]


def assert_case(part: str, case: str) -> None:
    """Raise an AssertionError naming the function and by how much, if any output of the case is off."""
    for result in case_results(part, case):
        assert result.passed, (f"{part}: rel_error {result.error:.2e} > tolerance {result.tolerance:.0e} "
                               f"(output {result.name}, case {case})")


def check_part(part: str) -> None:
    """Run every practice case of a part and print one line per output with PASS or FAIL; for
    notebooks. A case that needs a part not written yet prints one line saying which."""
    for case in _part(part).cases:
        try:
            results = case_results(part, case.name)
        except NotImplementedError as err:
            print(f"{part} [{case.name}]: not implemented yet ({err})")
            continue
        for result in results:
            print(result)

"""Write the practice fixtures and the graded tests of every part, from the table dlmie.parts.

Run by the teacher on the solution tree (`make fixtures`), never at grading time:
- tests/graded/fixtures/<part>.npz: each case's inputs drawn from dlmie.parts.PRACTICE_SEED and,
  for VALUE cases, the solution's outputs on them (GRADIENT and ERROR cases need none);
- tests/graded/test_<notebook>.py: one graded test per case, with the case's points.

    python tests/graded/make_fixtures.py            # every part
    python tests/graded/make_fixtures.py conv2d     # some parts' fixtures (the tests are always rewritten)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from dlmie import checks, parts

GRADED = Path(__file__).resolve().parent


def fixture_cases(part: str) -> dict:
    """case -> {"in": inputs, "out": the solution's outputs} of a part's practice cases."""
    cases = {}
    for case in parts.PARTS[part].cases:
        inputs = parts.make_inputs(part, case.name, parts.PRACTICE_SEED)
        outputs = parts.run_case(part, inputs) if case.kind == parts.VALUE else {}
        outputs = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in outputs.items()}
        cases[case.name] = {"in": inputs, "out": outputs}
    return cases


def graded_test_modules() -> dict[str, str]:
    """file name -> source of the graded test modules, one per notebook, one test per case."""
    modules: dict[str, list[str]] = {}
    for part in parts.PARTS.values():
        lines = modules.setdefault(part.notebook, [
            f'"""Notebook {part.notebook}: its parts\' practice cases (written by make_fixtures.py from dlmie.parts)."""',
            "", "import pytest", "", "from dlmie.checks import assert_case", "", f'NOTEBOOK = "{part.notebook}"'])
        for case in part.cases:
            lines += ["", "", f'@pytest.mark.graded(part="{part.name}", points={case.points})',
                      f"def test_{part.name}_{case.name}():", f'    assert_case("{part.name}", "{case.name}")']
    return {f"test_{notebook}.py": "\n".join(lines) + "\n" for notebook, lines in modules.items()}


def main(names) -> None:
    unknown = [p for p in names if p not in parts.PARTS]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; the parts are {', '.join(parts.PARTS)}")
    for part in names or parts.PARTS:
        path = checks.save_fixture(part, fixture_cases(part))
        print(f"{part}: {', '.join(c.name for c in parts.PARTS[part].cases)} -> {path.relative_to(checks.REPO_ROOT)}")
    for old in GRADED.glob("test_*.py"):
        old.unlink()
    for name, source in graded_test_modules().items():
        (GRADED / name).write_text(source, encoding="utf-8")
        print(f"tests/graded/{name}")


if __name__ == "__main__":
    main(sys.argv[1:])

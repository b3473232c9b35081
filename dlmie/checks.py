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

`check_part` first reads the part's file again (see `refresh`): a student edits the part and runs
the check cell again, in the same kernel, with no restart.
"""

from __future__ import annotations

import ast
import linecache
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dlmie.assignment import unfinished_message, unfinished_part
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
    notebooks. The part's file is read again first (see `refresh`), so an edit made since the
    kernel imported it is what runs. A case that needs a part not written yet prints one line
    naming that part, its file and its notebook (as a notebook cell's error does)."""
    refresh(part)
    for case in _part(part).cases:
        try:
            results = case_results(part, case.name)
        except NotImplementedError as err:
            unfinished = unfinished_part(str(err))
            print(f"{part} [{case.name}]: " + (unfinished_message(unfinished, err.__traceback__) if unfinished
                                               else f"not implemented: {err}"))
            continue
        for result in results:
            print(result)


# ---------------------------------------------------------------- edits in a running kernel
#
# Why the check re-reads the part's file itself rather than relying on importlib.reload or
# IPython's autoreload:
# - `from dlmie.layers import conv2d` (in other dlmie modules, in the notebook) copies the function
#   object; importlib.reload makes a new object and leaves every copy running the old code. Here
#   the function object that already exists gets the new code, so every reference runs it.
# - reloading a whole module re-runs its top level: new classes (PyTensor Ops, dataclasses) that
#   no longer match instances made before, emptied caches of compiled functions. Only the module's
#   functions and imports are run again here; classes and module-level values stay as they are.
# - autoreload must be switched on in a cell the student may not have run, checks every module
#   in sys.modules before every cell, and when a file does not compile it prints a warning and
#   keeps the old code, so the check would still say "not implemented". Here a SyntaxError is the
#   check cell's error, naming the file and line.


def _modules_of(part: str) -> list[types.ModuleType]:
    """The loaded dlmie modules that define a function named like the part (the part's module,
    and in the solution repository maybe a reference of the same name); none when the part's
    module is not loaded yet (importing it then reads the file as it is)."""
    found = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "dlmie" or name.startswith("dlmie.")):
            continue
        function = vars(module).get(part)
        if isinstance(function, types.FunctionType) and function.__module__ == name:
            found.append(module)
    return found


def refresh(part: str) -> list[str]:
    """Make a loaded part run its file's current code, in this process.

    In each module of `_modules_of(part)`, the top-level functions and import statements are
    compiled from the file and run in the module's namespace; a function that exists already gets
    the new code in place (its __code__, defaults and docstring), so copies imported elsewhere run
    it too; a new function or import is added to the module. Classes and other module-level
    statements are not run again (editing them needs a kernel restart; the parts are functions).

    Inputs:
    - part: the part's name
    Returns:
    - the names of the modules refreshed ([] when the part's module is not loaded)
    Raises:
    - SyntaxError (with the file and line) when a file does not compile
    """
    modules = _modules_of(part)
    for module in modules:
        _refresh_module(module)
    return [module.__name__ for module in modules]


def _refresh_module(module: types.ModuleType) -> None:
    path = module.__file__
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), path)
    # Decorated functions are left alone: the module holds what the decorator returned.
    body = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
            or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.decorator_list]
    fresh: dict = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), vars(module), fresh)
    for name, new in fresh.items():
        old = vars(module).get(name)
        if (isinstance(new, types.FunctionType) and isinstance(old, types.FunctionType)
                and old.__module__ == module.__name__ and old.__code__.co_freevars == new.__code__.co_freevars):
            old.__code__, old.__defaults__, old.__kwdefaults__ = new.__code__, new.__defaults__, new.__kwdefaults__
            old.__doc__ = new.__doc__
        else:
            setattr(module, name, new)
    linecache.checkcache(path)  # tracebacks show the lines as they are now

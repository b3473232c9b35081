"""The exercises themselves: what is graded is practised, each notebook meets a part's exercise and
check before using the part, hints give the math rather than the calls, and the assignment's size.

These read the table of parts (dlmie.parts), the graded test modules written from it, the
notebooks and the solution's regions; nothing here runs a part.
"""

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path

import nbformat
import pytest

from dlmie.checks import fixture_path, load_fixture
from dlmie.parts import ERROR, GRADIENT, PARTS
from dlmie.questions import questions_in

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import hints  # noqa: E402

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9]*.ipynb"))
CHECK = re.compile(r"""check_part\(\s*["'](\w+)["']\s*\)""")


def graded_calls():
    """(module, test name, part, case, points) of every graded test; each must be one assert_case call."""
    found = []
    for path in sorted((REPO / "tests" / "graded").glob("test_*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not isinstance(node, ast.FunctionDef):
                continue
            [marker] = [d for d in node.decorator_list if isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "graded"]
            marks = {k.arg: ast.literal_eval(k.value) for k in marker.keywords}
            [statement] = node.body
            call = statement.value
            assert isinstance(statement, ast.Expr) and isinstance(call, ast.Call) and call.func.id == "assert_case", (
                f"{path.name}::{node.name} checks more than a practice case: graded tests are `make fixtures`' "
                "assert_case calls only")
            part, case = (ast.literal_eval(a) for a in call.args)
            assert marks["part"] == part, f"{path.name}::{node.name}"
            found.append((path.name, node.name, part, case, marks["points"]))
    return found


def notebook_cells(path):
    return nbformat.read(path, as_version=4).cells


def test_every_graded_test_is_a_practice_case_the_notebook_checks():
    checked = {}
    for path in NOTEBOOKS:
        for cell in notebook_cells(path):
            if cell.cell_type == "code":
                for part in CHECK.findall(cell.source):
                    checked.setdefault(part, path.stem)
    problems = []
    calls = graded_calls()
    for module, test, part, case, points in calls:
        spec = PARTS.get(part)
        if spec is None:
            problems.append(f"{module}::{test}: part {part} is not in dlmie.parts")
            continue
        if case not in {c.name for c in spec.cases}:
            problems.append(f"{module}::{test}: {part} has no case {case}")
            continue
        if spec.case(case).points != points:
            problems.append(f"{module}::{test}: {points} points, the table says {spec.case(case).points}")
        if case not in load_fixture(part):
            problems.append(f"{module}::{test}: case {case} is not in {fixture_path(part).name}")
        if checked.get(part) != spec.notebook:
            problems.append(f"{module}::{test}: notebook {spec.notebook} has no check cell check_part({part!r})")
    graded = {(part, case) for _, _, part, case, _ in calls}
    problems += [f"{p.name} [{c.name}] is in the table but no graded test runs it"
                 for p in PARTS.values() for c in p.cases if (p.name, c.name) not in graded]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("part", [p for p in PARTS.values() if any(c.kind == ERROR for c in p.cases)], ids=lambda p: p.name)
def test_the_docstring_names_every_exception_a_case_expects(part):
    function = _function(part.name)
    doc = inspect.getdoc(function) or ""
    for case in part.cases:
        if case.kind == ERROR:
            assert case.error in doc, f"{part.name}'s docstring does not say it raises {case.error} ({case.about})"


def _function(name):
    """The part's function, found by its name in the dlmie modules that the table's runner imports."""
    for module_name in _modules_of(PARTS[name].run):
        function = getattr(importlib.import_module(module_name), name, None)
        if function is not None:
            return function
    raise AssertionError(f"no function {name} in the modules that the runner of {name} imports")


def _modules_of(runner):
    source = inspect.getsource(runner)
    return re.findall(r"from (dlmie[\w.]*) import", source)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_run_all_meets_each_exercise_and_its_check_before_the_part_is_used(path):
    """In notebook order: the exercise's text, then its check cell, then any other cell naming the part."""
    cells = notebook_cells(path)
    problems = []
    for part in [p.name for p in PARTS.values() if p.notebook == path.stem]:
        mentions = re.compile(rf"\b{part}\b")
        checks = [k for k, c in enumerate(cells) if c.cell_type == "code" and part in CHECK.findall(c.source)]
        if not checks:
            problems.append(f"{part}: no check cell")
            continue
        exercise = [k for k, c in enumerate(cells) if c.cell_type == "markdown" and "Exercise" in c.source
                    and mentions.search(c.source)]
        if not exercise or exercise[0] > checks[0]:
            problems.append(f"{part}: no exercise text (a markdown cell with 'Exercise' naming it) before its check")
        uses = [k for k, c in enumerate(cells) if c.cell_type == "code" and k not in checks and mentions.search(_code(c.source))]
        if uses and uses[0] < checks[0]:
            problems.append(f"{part}: cell {uses[0]} uses it before its check (cell {checks[0]})")
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


def _code(source):
    """A code cell's source without its import statements (importing a part is not using it)."""
    tree = ast.parse(source)
    imports = {n for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for n in range(node.lineno, node.end_lineno + 1)}
    return "\n".join(line for n, line in enumerate(source.splitlines(), 1) if n not in imports)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_a_part_and_an_inline_question(path):
    assert any(p.notebook == path.stem for p in PARTS.values()), f"{path.name} has no part"
    assert any(q.notebook == path.stem for q in questions_in(REPO)), f"{path.name} has no inline question"


def test_hints_name_at_most_a_quarter_of_the_calls():
    over = [f"{m.part}: {len(m.named)} of {len(m.calls)} calls named ({', '.join(m.named)})"
            for m in hints.measure() if m.named_share > hints.MAX_NAMED]
    assert not over, "docstrings and comments above the region name too many of the calls:\n" + "\n".join(over)


def test_the_assignment_is_deep_enough():
    measures = hints.measure()
    lines = sum(m.lines for m in measures)
    assert len(measures) >= 24, f"{len(measures)} parts"
    assert lines >= 250, f"{lines} lines of solution in the regions"
    derived = [p for p in PARTS.values() if p.derived]
    assert len(derived) >= 6, f"backward passes the student derives: {[p.name for p in derived]}"
    for part in derived:
        assert any(c.kind == GRADIENT for c in part.cases) and part.gradient is not None, (
            f"{part.name}: a derived backward pass needs a GRADIENT case checked against centered differences")

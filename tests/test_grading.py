"""dlmie.grading and python -m dlmie.grade on a toy repository with two parts (double: 2 points,
add_one: 3 points): the student's side, the per-part table and packing a submission. Grading a
class is tested on the real handout (test_grading_a_class.py)."""

import json
import shutil
import zipfile
from pathlib import Path

import pytest

import toy_assignment
from dlmie import grade as grade_command
from dlmie import grading
from toy_assignment import COUNTER, TOY

handout = toy_assignment.load_builder()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(solution root, handout zip, unzipped handout root)."""
    root = toy_assignment.make_tree(tmp_path_factory.mktemp("toy") / "solution")
    out = tmp_path_factory.mktemp("build") / "dlmie-student.zip"
    handout.build(root, out)
    unzipped = tmp_path_factory.mktemp("unzipped")
    with zipfile.ZipFile(out) as zf:
        zf.extractall(unzipped)
    return root, out, unzipped / "dlmie-student"


def last_line(proc) -> str:
    return proc.stdout.strip().splitlines()[-1]


def test_handout_scores_zero_and_solution_full(toy):
    root, _, student = toy
    proc = toy_assignment.grade(student)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("double      0/2  test_double: double is not implemented yet: write it in dlmie/toy.py (notebook 01_toy)"
            in proc.stdout)
    assert last_line(proc) == "score: 0/5"
    proc = toy_assignment.grade(root)
    assert last_line(proc) == "score: 5/5"


def test_one_part(toy):
    root, _, _ = toy
    proc = toy_assignment.grade(root, "--part", "add_one")
    assert proc.stdout.strip().splitlines()[-3:] == ["part     points", "add_one     3/3", "score: 3/3"]
    proc = toy_assignment.grade(root, "--part", "nope")
    assert proc.returncode == 2 and "unknown part 'nope'; the parts are: double, add_one" in proc.stderr


def test_a_parametrized_test_earns_only_when_every_run_passes(toy, tmp_path):
    root, _, _ = toy
    tree = tmp_path / "tree"
    toy_assignment.make_tree(tree)
    (tree / "dlmie/counter.py").write_text(COUNTER.replace("y = x + 1", "y = 2 if x == 1 else 0"))
    proc = toy_assignment.grade(tree)
    assert "add_one     0/3  test_add_one: assert 0 == (2 + 1)" in proc.stdout
    assert last_line(proc) == "score: 2/5"


def test_pack(toy, tmp_path):
    _, _, student = toy
    copy = tmp_path / "student"
    shutil.copytree(student, copy)
    (copy / "dlmie/counter.py").write_text(COUNTER)
    (copy / "notebooks/02_more.ipynb").write_text(toy_assignment.notebook("print(1)"))
    out, members, notes = grading.pack_submission(copy)
    assert out == copy / "build" / "submission.zip"
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == members == ["dlmie/counter.py", "dlmie/toy.py", "notebooks/01_toy.ipynb", "notebooks/02_more.ipynb"]
        assert zf.read("dlmie/counter.py").decode() == COUNTER
    assert notes == ["double (dlmie/toy.py) is not implemented yet",
                     "notebooks/01_toy.ipynb has no outputs: run it and save it before packing"]


def test_pack_needs_a_handout(capsys):
    assert grade_command.main(["--pack"]) == 2
    assert "assignment.json not found" in capsys.readouterr().err


def test_results_survive_a_killed_run():
    run = grading.GradeRun()
    for line in [
        {"event": "collected", "nodeid": "t.py::test_a[1]", "key": "t.py::test_a"},
        {"event": "collected", "nodeid": "t.py::test_a[2]", "key": "t.py::test_a"},
        {"event": "result", "nodeid": "t.py::test_a[1]", "outcome": "passed", "type": "", "error": ""},
    ]:
        run.add(json.loads(json.dumps(line)))
    run.timed_out = True
    assert not run.passed("t.py::test_a")
    assert run.failure("t.py::test_a") == "did not finish"
    assert run.failure("u.py::test_b") == "did not run (the run was stopped at its time limit)"

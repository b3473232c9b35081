"""dlmie.grading and python -m dlmie.grade on a toy repository with two parts (double: 2 points,
add_one: 3 points): the per-part table, packing a submission, and a class of broken submissions."""

import csv
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
    assert "double      0/2  test_double: not implemented yet" in proc.stdout
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


# ---------------------------------------------------------------------------------------------
# A class of submissions

NOTEBOOKS = {"notebooks/01_toy.ipynb": toy_assignment.notebook("print(6)"),
             "notebooks/02_more.ipynb": toy_assignment.notebook("print(2)")}
SOLVED = {"dlmie/toy.py": TOY, "dlmie/counter.py": COUNTER}


def zip_of(path: Path, files: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


def toy_with(body: str, top: str = "") -> str:
    """dlmie/toy.py whose double runs `body` (one line) before answering."""
    return top + TOY.replace("    out = x * 2\n", f"    {body}\n    out = x * 2\n")


@pytest.fixture(scope="module")
def gradebook(toy, tmp_path_factory, monkeypatch_module):
    """Grade the class once: {student: (csv row, SubmissionGrade)}."""
    _, handout_zip, _ = toy
    folder = tmp_path_factory.mktemp("submissions")
    zip_of(folder / "good.zip", {**SOLVED, **NOTEBOOKS})
    zip_of(folder / "folder.zip", {f"dlmie-student/{k}": v for k, v in {**SOLVED, **NOTEBOOKS}.items()})
    (folder / "notzip.zip").write_text("this is not a zip")
    zip_of(folder / "missing.zip", {"dlmie/counter.py": COUNTER, **NOTEBOOKS})
    zip_of(folder / "misnamed.zip", {"toy.py": TOY, "dlmie/Counter.py": COUNTER, "dlmie/counter.py": COUNTER})
    zip_of(folder / "syntax.zip", {"dlmie/toy.py": TOY.replace("out = x * 2", "out = = x"), "dlmie/counter.py": COUNTER})
    zip_of(folder / "absent.zip", {"dlmie/toy.py": toy_with("pass", top="import no_such_module_dlmie\n"), "dlmie/counter.py": COUNTER})
    zip_of(folder / "loop.zip", {"dlmie/toy.py": toy_with("while True: pass"), "dlmie/counter.py": COUNTER})
    # Ignores the per-test time limit: only the run's wall-clock limit stops it.
    stubborn = toy_with("while True: signal.signal(signal.SIGALRM, signal.SIG_IGN)", top="import signal\n")
    zip_of(folder / "stubborn.zip", {"dlmie/toy.py": stubborn, "dlmie/counter.py": COUNTER})
    zip_of(folder / "loud.zip", {"dlmie/toy.py": toy_with("print('x' * 3_000_000)"), "dlmie/counter.py": COUNTER})
    zip_of(folder / "slip.zip", {**SOLVED, "../escaped.py": "x = 1", "/abs/escaped.py": "x = 1"})
    zip_of(folder / "big.zip", {"dlmie/toy.py": TOY, "dlmie/counter.py": COUNTER + "#" * 5000})
    # Rewrites its own copy's counter.py while imported; the next submission must not see it.
    saboteur = ("from pathlib import Path; Path(__file__).with_name('counter.py').write_text("
                + repr(COUNTER) + ")\n")
    zip_of(folder / "sabotage.zip", {"dlmie/toy.py": toy_with("pass", top=saboteur)})
    zip_of(folder / "sabotage_next.zip", NOTEBOOKS)
    monkeypatch_module.setattr(grading, "MEMBER_LIMIT", 4096)
    out = tmp_path_factory.mktemp("grades") / "gradebook.csv"
    lines = []
    grades = grading.grade_submissions(folder, handout_zip, out, timeout=8, test_timeout=2, progress=lines.append)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(lines) == len(rows) == len(grades) == 14
    return {row["student"]: (row, g) for row, g in zip(rows, grades)}, out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def row(gradebook, student) -> tuple[dict, list]:
    (rows, _) = gradebook
    r, g = rows[student]
    return r, [i.code for i in g.issues]


def points(r: dict) -> tuple[str, str, str]:
    return r["score"], r["double"], r["add_one"]


def test_gradebook_columns(gradebook):
    rows, out = gradebook
    with open(out, newline="") as f:
        assert next(csv.reader(f)) == ["student", "score", "possible", "double", "add_one", "status", "reason"]
    assert {r["possible"] for r, _ in rows.values()} == {"5"}
    assert (out.parent / "gradebook_logs" / "loud.log").is_file()


def test_good_submission(gradebook):
    r, codes = row(gradebook, "good")
    assert points(r) == ("5", "2", "3") and r["status"] == "ok" and r["reason"] == ""


def test_files_inside_one_folder_are_found(gradebook):
    r, codes = row(gradebook, "folder")
    assert points(r) == ("5", "2", "3") and r["status"] == "ok"


def test_not_a_zip(gradebook):
    r, codes = row(gradebook, "notzip")
    assert points(r) == ("0", "0", "0") and codes == ["not_a_zip"]
    assert r["reason"] == "notzip.zip is not a zip file"


def test_missing_file(gradebook):
    r, codes = row(gradebook, "missing")
    assert points(r) == ("3", "0", "3") and codes == ["missing_files"]
    assert "dlmie/toy.py" in r["reason"]


def test_misnamed_files(gradebook):
    r, codes = row(gradebook, "misnamed")
    assert points(r) == ("3", "0", "3")
    assert codes == ["ignored_files", "missing_files", "no_notebooks"]
    assert "ignored: toy.py, dlmie/Counter.py" in r["reason"]


def test_syntax_error(gradebook):
    r, codes = row(gradebook, "syntax")
    assert points(r) == ("3", "0", "3") and "syntax_error" in codes
    assert "dlmie/toy.py line 21: invalid syntax; graded with the handout's version of the file" in r["reason"]


def test_import_of_something_absent(gradebook):
    r, codes = row(gradebook, "absent")
    assert points(r) == ("3", "0", "3") and "import_error" in codes
    assert "No module named 'no_such_module_dlmie'" in r["reason"]


def test_infinite_loop_in_a_test(gradebook):
    r, codes = row(gradebook, "loop")
    assert points(r) == ("3", "0", "3") and "time_limit" in codes
    assert "test_double ran over the time limit of 2 s" in r["reason"]


def test_infinite_loop_past_the_runs_limit(gradebook):
    r, codes = row(gradebook, "stubborn")
    # add_one's tests run first (test_add_one.py sorts first) and still count.
    assert points(r) == ("3", "0", "3") and "time_limit" in codes
    assert "stopped after 8 s" in r["reason"]


def test_megabytes_of_output(gradebook):
    rows, out = gradebook
    r, codes = row(gradebook, "loud")
    assert points(r) == ("5", "2", "3") and codes == ["no_notebooks", "output"]
    assert "printed 2.9 MB (the log keeps the last 8.0 kB)" in r["reason"]
    assert len((out.parent / "gradebook_logs" / "loud.log").read_bytes()) < 3 * grading.OUTPUT_TAIL


def test_paths_leaving_the_submission_are_rejected(gradebook):
    r, codes = row(gradebook, "slip")
    assert points(r) == ("5", "2", "3") and codes == ["rejected", "rejected", "no_notebooks"]
    assert "'../escaped.py': path leaves the submission folder" in r["reason"]
    assert "'/abs/escaped.py': absolute path" in r["reason"]


def test_oversized_member(gradebook):
    r, codes = row(gradebook, "big")
    assert points(r) == ("2", "2", "0") and "rejected" in codes and "missing_files" in codes
    assert f"'dlmie/counter.py': {(len(COUNTER) + 5000) / 1024:.1f} kB, over the limit of 4.0 kB" in r["reason"]


def test_a_submission_does_not_touch_the_next(gradebook):
    r, _ = row(gradebook, "sabotage")
    assert points(r) == ("2", "2", "0")  # its copy's counter.py changed after the tests imported it
    r, codes = row(gradebook, "sabotage_next")
    assert points(r) == ("0", "0", "0") and codes == ["missing_files"]


def test_read_submission_reads_only_expected_files(tmp_path):
    path = tmp_path / "s.zip"
    zip_of(path, {"dlmie/toy.py": "a", "notebooks/x.ipynb": "b", "__MACOSX/._toy.py": "junk"})
    files, issues = grading.read_submission(path, {"dlmie/toy.py"})
    assert files == {"dlmie/toy.py": b"a"}
    assert [(i.code, i.detail) for i in issues] == [("ignored_files", "not files of the assignment, ignored: notebooks/x.ipynb")]


def test_grade_command_help_says_it_is_not_a_sandbox(capsys):
    with pytest.raises(SystemExit):
        grade_command.main(["--help"])
    assert "it is not a sandbox" in " ".join(capsys.readouterr().out.split())


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

"""The Gradescope autograder (make autograder, dlmie/teacher/autograder.py): the zip's layout, and
its run_autograder on simulated /autograder trees (the zip unpacked into source/, the student's
files in submission/) for the solution, the untouched handout, broken files, a broken zip and an
attack. Every results.json must be valid against the schema written from Gradescope's
specification, and its points equal those of `--submissions` (grade_submissions) for the same files
on the same hidden cases."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest

from dlmie.questions import PLACEHOLDER
from dlmie.teacher import autograder
from dlmie.teacher.grader import Settings, grade_submissions
from dlmie.teacher.sandbox import GiB, Limits

import toy_assignment

handout = toy_assignment.load_builder()
REPO = Path(__file__).resolve().parents[1]
TARGET = "dlmie/captioning/attention.py"
SEED = 11
ANSWER = "Because the guided rule keeps only positive gradients."
SCHEMA = json.loads(autograder.SCHEMA.read_text())


class Built:
    """The handout and autograder zips of this repository, the zip unpacked, and the files to submit."""

    def __init__(self, root: Path):
        self.root = root
        self.handout_zip = root / "dlmie-student.zip"
        handout.build(REPO, self.handout_zip)
        self.zip = root / "autograder.zip"
        self.config = autograder.build(REPO, self.handout_zip, self.zip, seed=SEED)
        self.source = root / "source"
        with zipfile.ZipFile(self.zip) as zf:
            zf.extractall(self.source)
        with zipfile.ZipFile(self.handout_zip) as zf:
            self.manifest = json.loads(zf.read("dlmie-student/assignment.json"))
            self.handout_files = {f: zf.read(f"dlmie-student/{f}") for f in self.manifest["files"]}
        self.solution_files = {f: (REPO / f).read_bytes() for f in self.manifest["files"]}

    def run(self, tree: Path, command: str = "run") -> subprocess.CompletedProcess:
        """run_autograder's command (or setup.sh's check) on a simulated /autograder tree, importing
        the unpacked zip's dlmie."""
        env = {**os.environ, autograder.ROOT_VARIABLE: str(tree), "PYTHONPATH": str(self.source)}
        return subprocess.run([sys.executable, "-m", "dlmie.teacher.autograder", command], cwd=self.source, env=env,
                              capture_output=True, text=True, timeout=300)


def attacked(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files with os._exit at the import of attention.py (exit_at_import of the attack suite)."""
    text = files[TARGET].decode().replace("from dlmie.images import resize_bilinear\n",
                                          "from dlmie.images import resize_bilinear\nimport os\nos._exit(0)\n")
    return {**files, TARGET: text.encode()}


def answered(files: dict[str, bytes], manifest: dict) -> dict[str, bytes]:
    """The files with the first inline question's notebook, its answer written (ANSWER)."""
    first = manifest["questions"][0]
    path = f"notebooks/{first['notebook']}.ipynb"
    nb = json.loads((REPO / path).read_text())
    cell = next(c for c in nb["cells"] if c["metadata"].get("dlmie", {}).get("answer") == first["id"])
    cell["source"] = f"{PLACEHOLDER}\n\n{ANSWER}"
    return {**files, path: json.dumps(nb).encode()}


def part_tests(result: dict) -> list[dict]:
    """The tests of results.json that grade parts (the inline questions' entries carry no points)."""
    return [t for t in result["tests"] if "inline question" not in t["name"]]


def broken(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files with a syntax error in attention.py."""
    return {**files, TARGET: files[TARGET].replace(b"def attention_maps(", b"def attention_maps(:")}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Each submission graded by the autograder and by grade_submissions: (built, {name: (results, run)}, grades)."""
    built = Built(tmp_path_factory.mktemp("autograder"))
    submissions = {"solution": answered(built.solution_files, built.manifest), "handout": built.handout_files,
                   "broken_files": broken(built.solution_files), "attack": attacked(built.solution_files)}
    folder = built.root / "submissions"
    folder.mkdir()
    results = {}
    for name, files in [*submissions.items(), ("broken_zip", None)]:
        tree = built.root / name
        (tree / "results").mkdir(parents=True)
        (tree / "submission").mkdir()
        (tree / "source").symlink_to(built.source)
        if files is None:  # an upload that is a .zip, but not a zip
            (tree / "submission" / "submission.zip").write_bytes(b"PK\x03\x04 not really a zip")
            (folder / f"{name}.zip").write_bytes(b"PK\x03\x04 not really a zip")
        else:
            for rel, data in files.items():
                (tree / "submission" / rel).parent.mkdir(parents=True, exist_ok=True)
                (tree / "submission" / rel).write_bytes(data)
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
                for rel, data in files.items():
                    zf.writestr(rel, data)
        if name == "broken_files":  # a link to a file outside, rejected as in a zip
            (tree / "submission" / "dlmie" / "secrets.py").symlink_to("/etc/passwd")
            with zipfile.ZipFile(folder / f"{name}.zip", "a") as zf:
                link = zipfile.ZipInfo("dlmie/secrets.py")
                link.external_attr = 0o120777 << 16
                zf.writestr(link, "/etc/passwd")
        run = built.run(tree)
        results[name] = (json.loads((tree / "results" / "results.json").read_text()), run)
    config = built.config
    settings = Settings(config["timeout"], config["test_timeout"],
                        Limits(memory=int(config["memory_gib"] * GiB), cpu_seconds=int(config["timeout"])), SEED)
    grades = grade_submissions(folder, built.handout_zip, built.root / "gradebook.csv", settings, progress=lambda line: None)
    return built, results, {g.student: g for g in grades}


def test_every_results_json_is_valid_against_gradescopes_specification(graded):
    _, results, _ = graded
    for name, (result, run) in results.items():
        assert run.returncode == 0, (name, run.stderr[-2000:])
        jsonschema.validate(result, SCHEMA)
        assert result["score"] == sum(t["score"] for t in result["tests"]), name
        assert all(t["score"] <= t["max_score"] for t in result["tests"]), name


def test_scores_equal_those_of_grade_submissions(graded):
    built, results, grades = graded
    assert len(results) == len(grades) == 5
    for name, (result, _) in results.items():
        grade = grades[name]
        assert {t["name"]: t["score"] for t in part_tests(result)} == {s.name: s.earned for s in grade.scores}, name
        assert [t["max_score"] for t in part_tests(result)] == [p["points"] for p in built.manifest["parts"]]
        for issue in grade.issues:
            assert f"- {issue.code}: " in result["output"], (name, result["output"])


def test_what_each_submission_earns_and_is_told(graded):
    built, results, _ = graded
    total = built.manifest["total"]
    solution = results["solution"][0]
    assert solution["score"] == total and {t["status"] for t in part_tests(solution)} == {"passed"}
    assert all(line.startswith("PASS ") for t in part_tests(solution) for line in t["output"].splitlines())
    manual = [t for t in solution["tests"] if t not in part_tests(solution)]
    questions = built.manifest["questions"]
    assert [t["name"] for t in manual] == [f"{q['id']} (inline question, graded by hand: {q['points']} points)"
                                           for q in questions]
    assert all((t["score"], t["max_score"]) == (0, 0) and "status" not in t for t in manual)
    assert manual[0]["output"] == f"Your answer:\n\n{ANSWER}" and manual[1]["output"] == "Not answered."
    assert results["handout"][0]["score"] == 0
    assert "not implemented yet" in results["handout"][0]["tests"][0]["output"]
    broken_files = results["broken_files"][0]
    maps = next(t for t in broken_files["tests"] if t["name"] == "attention_maps")
    assert broken_files["score"] == total - maps["max_score"] and maps["score"] == 0
    assert "- syntax_error: dlmie/captioning/attention.py line" in broken_files["output"]
    assert "- rejected: 'dlmie/secrets.py': symbolic link" in broken_files["output"]
    broken_zip = results["broken_zip"][0]
    assert broken_zip["score"] == 0 and "- not_a_zip: submission.zip is not a zip file" in broken_zip["output"]
    assert broken_zip["tests"][0]["output"] == "not graded: submission.zip is not a zip file"
    attack = results["attack"][0]
    assert attack["score"] == 0
    assert "importing the part files ended the grading process" in attack["tests"][0]["output"]


def test_the_zip_holds_gradescopes_layout_and_keeps_the_solution_out_of_the_handout(graded):
    built, *_ = graded
    with zipfile.ZipFile(built.zip) as zf:
        modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
    assert modes["setup.sh"] == modes["run_autograder"] == 0o755
    assert {"config.json", "pyproject.toml", "dlmie-student.zip", "dlmie/teacher/hidden.py",
            "dlmie/teacher/gradescope_results.schema.json"} <= modes.keys()
    assert not [n for n in modes if n.startswith("dlmie/models/weights/")]
    assert "PYTHONPATH=/autograder/source exec /autograder/venv/bin/python -m dlmie.teacher.autograder run" in \
        (built.source / "run_autograder").read_text()
    assert json.loads((built.source / "config.json").read_text())["seed"] == SEED
    with zipfile.ZipFile(built.source / "dlmie-student.zip") as zf:
        assert not [n for n in zf.namelist() if "/dlmie/teacher/" in n]


def test_setup_checks_that_the_solution_scores_full_marks(graded):
    built, *_ = graded
    assert "python -m dlmie.teacher.autograder check" in (built.source / "setup.sh").read_text()
    run = built.run(built.root, "check")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"check: the solution scores {built.manifest['total']} (full marks)" in run.stdout


def test_a_failure_of_the_autograder_is_written_for_the_student(graded, tmp_path):
    built, *_ = graded
    (tmp_path / "source").mkdir()
    (tmp_path / "submission").mkdir()
    shutil.copy(built.source / "config.json", tmp_path / "source")  # no handout beside it
    run = built.run(tmp_path)
    assert run.returncode == 2
    result = json.loads((tmp_path / "results" / "results.json").read_text())
    jsonschema.validate(result, SCHEMA)
    assert result["score"] == 0 and "your submission was not graded" in result["output"]


def test_bad_input_is_refused(tmp_path, monkeypatch, capsys):
    with pytest.raises(ValueError, match="visibility"):
        autograder.build(REPO, tmp_path / "none.zip", tmp_path / "a.zip", visibility="sometimes")
    with pytest.raises(FileNotFoundError, match="make student"):
        autograder.build(REPO, tmp_path / "none.zip", tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()
    monkeypatch.setenv(autograder.ROOT_VARIABLE, str(tmp_path))
    assert autograder.main(["run"]) == 2
    assert "is not a Gradescope autograder folder" in capsys.readouterr().err


def test_the_gradebook_lists_the_inline_questions_to_grade_by_hand(graded):
    built, *_ = graded
    with open(built.root / "gradebook.csv", newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    first, *others = built.manifest["questions"]
    column = f"{first['id']} (by hand, /{first['points']})"
    assert rows["solution"][column] == "" and rows["handout"][column] == "0"
    assert all(rows["solution"][f"{q['id']} (by hand, /{q['points']})"] == "0" for q in others)
    sheet = (built.root / "gradebook_answers" / f"{first['id']}.md").read_text()
    assert f"> {ANSWER}" in sheet and "Model answer:" in sheet
    assert sheet.index("### attack") < sheet.index("### solution")

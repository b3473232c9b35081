"""Grading a class in parallel (--jobs), the students' feedback files, and the gradebook for an LMS
(--id-pattern, the id and percent columns, --only), on a small class of this repository's handout:
the solution, the handout, a file that is not a zip and a partial submission.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from dlmie import grade as grade_command
from dlmie.teacher import feedback
from dlmie.teacher.grader import Settings, grade_submissions
from dlmie.teacher.sandbox import GiB, Limits

import toy_assignment

REPO = Path(__file__).resolve().parents[1]
TARGET = "dlmie/captioning/attention.py"
SOLVED = "    return resize_bilinear(alpha.reshape(len(alpha), grid[0], grid[1]), size)\n"
# Right on every grid but 1 x 1: fails the case "a 1 x 1 grid" only.
PARTIAL = ("    maps = resize_bilinear(alpha.reshape(len(alpha), grid[0], grid[1]), size)\n"
           "    return maps * 2 if grid[0] * grid[1] == 1 else maps\n")
SETTINGS = Settings(timeout=120, test_timeout=20, limits=Limits(memory=3 * GiB, cpu_seconds=120), seed=11)
# Canvas names a downloaded submission <name>_<user id>_<submission id>_<file name>.
NAMES = {"solution": "doe_jane_1001_5001_submission", "handout": "roe_rich_1002_5002_submission",
         "not_a_zip": "poe_ed_1003_5003_submission", "partial": "moe_max_1004_5004_submission"}
ID_PATTERN = r"_(\d+)_\d+_"


def zipped(path: Path, files: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """(handout zip, submissions folder, the partial submission's files)."""
    built = tmp_path_factory.mktemp("build") / "dlmie-student.zip"
    toy_assignment.load_builder().build(REPO, built)
    with zipfile.ZipFile(built) as zf:
        manifest = json.loads(zf.read("dlmie-student/assignment.json"))
        handout_files = {f: zf.read(f"dlmie-student/{f}").decode() for f in manifest["files"]}
    solution = {f: (REPO / f).read_text() for f in manifest["files"]}
    assert SOLVED in solution[TARGET]
    partial = {**solution, TARGET: solution[TARGET].replace(SOLVED, PARTIAL)}
    folder = tmp_path_factory.mktemp("class") / "submissions"
    folder.mkdir()
    zipped(folder / f"{NAMES['solution']}.zip", solution)
    zipped(folder / f"{NAMES['handout']}.zip", handout_files)
    (folder / f"{NAMES['not_a_zip']}.zip").write_text("not a zip")
    zipped(folder / f"{NAMES['partial']}.zip", partial)
    return built, folder


@pytest.fixture(scope="module")
def gradebooks(klass, tmp_path_factory):
    """The class graded with --jobs 1 and with --jobs 2: {jobs: gradebook path}, and jobs 2's progress lines."""
    built, folder = klass
    books, lines = {}, []
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"jobs{jobs}") / "gradebook.csv"
        grade_submissions(folder, built, out, replace(SETTINGS, jobs=jobs), progress=lines.append if jobs == 2 else print,
                          id_pattern=ID_PATTERN)
        books[jobs] = out
    return books, lines


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_two_jobs_give_the_same_gradebook(gradebooks):
    books, lines = gradebooks
    assert books[1].read_bytes() == books[2].read_bytes()
    assert [r["student"] for r in rows(books[2])] == sorted(NAMES.values())
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) == 4 and "left" in progress[0] and progress[-1].startswith("[4/4]")


def test_gradebook_columns_for_an_lms(gradebooks):
    books, _ = gradebooks
    with open(books[2], newline="") as f:
        header = next(csv.reader(f))
    assert header[:3] == ["student", "score", "possible"]
    manual = [c for c in header if c.endswith(")") and "(by hand, /" in c]
    assert header[len(header) - len(manual) - 5:len(header) - len(manual)] == ["status", "reason", "isolation", "id", "percent"]
    assert manual and header[-len(manual):] == manual  # the inline questions, to grade by hand, come last
    by_id = {r["id"]: r for r in rows(books[2])}
    assert sorted(by_id) == ["1001", "1002", "1003", "1004"]
    assert by_id["1001"]["percent"] == "100.00" and by_id["1002"]["percent"] == "0.00"
    partial = by_id["1004"]
    assert partial["percent"] == f"{100 * int(partial['score']) / int(partial['possible']):.2f}"


def test_partial_feedback_names_the_failed_part_and_case_without_values(gradebooks):
    books, _ = gradebooks
    folder = books[2].with_name("gradebook_feedback")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.md" for n in NAMES.values())
    text = (folder / f"{NAMES['partial']}.md").read_text()
    assert "## attention_maps: 2 / 3" in text
    assert "- **failed**: a 1 x 1 grid: output maps: rel_error" in text and "> tolerance 1e-05" in text
    assert "- passed: a 2 x 3 grid onto a 5 x 7 image" in text
    assert "conv2d (8 / 8)" in text.split("## Passed on every case")[1].split("##")[0]
    assert "`no_notebooks`: no notebook in the zip" in text
    # No array: no number with more digits than a relative error's three.
    assert not re.search(r"\d\.\d{4,}|\d{5,}", text), text
    handout = (folder / f"{NAMES['handout']}.md").read_text()
    assert "- **failed**: N = 1, one channel, 3 x 3 filters, stride 2, pad 0: not implemented yet" in handout
    assert "`not_a_zip`" in (folder / f"{NAMES['not_a_zip']}.md").read_text()


def test_scrub_removes_numbers_a_students_error_printed():
    line = "ValueError: bad maps [[0.25 1.5e-3] [3 4 5 6 7 8 9]] of shape (2, 3, 4, 5)\nsecond line"
    assert feedback.scrub(line) == "ValueError: bad maps [[… …] […]] of shape (2, 3, 4, 5)"


def test_only_regrades_one_row(klass, gradebooks, tmp_path):
    built, folder = klass
    books, _ = gradebooks
    out = tmp_path / "gradebook.csv"
    out.write_bytes(books[1].read_bytes())
    (tmp_path / "gradebook_logs").mkdir()
    (tmp_path / "gradebook_logs" / "run.log").write_text(books[1].with_name("gradebook_logs").joinpath("run.log").read_text())
    before = rows(out)
    # A row edited by hand stays as it is; the regraded one is graded again from scratch.
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(before[0]))
        writer.writeheader()
        writer.writerows([{**r, "reason": "kept"} if r["student"] == NAMES["solution"] else
                          {**r, "score": "99"} if r["student"] == NAMES["partial"] else r for r in before])
    # No seed: --only takes the earlier run's, from its run.log.
    graded = grade_submissions(folder, built, out, replace(SETTINGS, seed=None), id_pattern=ID_PATTERN,
                               only=NAMES["partial"])
    assert [g.student for g in graded] == [NAMES["partial"]]
    after = rows(out)
    assert [r["student"] for r in after] == [r["student"] for r in before]
    assert after == [{**r, "reason": "kept"} if r["student"] == NAMES["solution"] else r for r in before]


def test_only_and_id_pattern_errors(klass, gradebooks, tmp_path, capsys):
    _, folder = klass
    books, _ = gradebooks
    base = ["--submissions", str(folder), "--out", str(books[2])]
    assert grade_command.main([*base, "--only", "nobody_here"]) == 2
    assert "error: no submission 'nobody_here' in the folder" in capsys.readouterr().err
    assert grade_command.main([*base, "--id-pattern", "("]) == 2
    assert "error: --id-pattern '(' is not a regular expression" in capsys.readouterr().err
    assert grade_command.main([*base, "--id-pattern", r"^x(\d+)"]) == 2
    assert "finds no student id in" in capsys.readouterr().err
    assert grade_command.main(["--submissions", str(folder), "--out", str(tmp_path / "none.csv"),
                               "--only", NAMES["partial"]]) == 2
    assert "grade the class first" in capsys.readouterr().err
    assert grade_command.main([*base, "--jobs", "0"]) == 2
    assert "error: --jobs must be at least 1" in capsys.readouterr().err

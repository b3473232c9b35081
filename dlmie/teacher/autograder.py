"""The Gradescope autograder: the trusted grader of dlmie.teacher.grader, run by Gradescope once per
submission in a fresh container.

    python -m dlmie.teacher.autograder build [--handout ZIP] [--out ZIP] [--seed N] [--visibility V]
    python -m dlmie.teacher.autograder run        (what the zip's run_autograder calls)
    python -m dlmie.teacher.autograder check      (the end of setup.sh: the solution must score full marks)

`build` (make autograder) writes build/autograder.zip in Gradescope's layout: at its root setup.sh
and run_autograder, and beside them (unpacked by Gradescope into /autograder/source) the solution's
dlmie/ (dlmie/teacher/ included: the hidden cases are drawn there, on the trusted side), the
pyproject.toml setup.sh installs the environment from, the handout zip the workers grade in, and
config.json (the hidden cases' seed and the limits). The handout itself never holds any of this.

`run` grades the files of <root>/submission with grader.Grader, exactly as `--submissions` grades a
zip, and writes <root>/results/results.json (see results_json; its schema, written from Gradescope's
specification, is gradescope_results.schema.json). <root> is /autograder; the environment variable
DLMIE_AUTOGRADER_ROOT points elsewhere, for the tests only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from dlmie.assignment import MANIFEST
from dlmie.grading import HANDOUT_TOP, atomic_output
from dlmie.teacher import hidden
from dlmie.teacher.grader import Grader, Handout, Settings, SubmissionGrade
from dlmie.teacher.sandbox import GiB, Limits

ROOT_VARIABLE = "DLMIE_AUTOGRADER_ROOT"
HANDOUT_NAME = "dlmie-student.zip"
CONFIG_NAME = "config.json"
SCHEMA = Path(__file__).with_name("gradescope_results.schema.json")
# Gradescope's visibility settings (when a student sees a test's result).
VISIBILITIES = ("visible", "after_due_date", "after_published", "hidden")
# The trained weights are used by the notebooks only; the solution's copy leaves them out (the
# handout inside the zip keeps its own copy, where the notebooks are).
SOLUTION_EXCLUDED = ("dlmie/models/weights/",)

SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, in /autograder/source, when it builds the autograder's image
# (Ubuntu). It installs what grading needs: Python >= 3.11, g++ for PyTensor's C code, bubblewrap for
# the sandbox of each student's worker, and the environment of pyproject.toml.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends g++ bubblewrap util-linux python3 python3-venv python3-dev
python=python3
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    # Ubuntu 22.04's python3 is 3.10: take 3.11 from its universe, else from the deadsnakes PPA.
    python=python3.11
    if ! apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev; then
        apt-get install -y --no-install-recommends software-properties-common
        add-apt-repository -y ppa:deadsnakes/ppa
        apt-get update
        apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev
    fi
fi
"$python" -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --quiet --upgrade pip
# The dependencies only, not dlmie itself: an installed copy of the solution would sit in the
# environment that every sandboxed worker sees. The grader imports it from /autograder/source.
/autograder/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt
/autograder/venv/bin/python -m pip install --quiet -r requirements.txt
# Grade the solution's own files once: the image fails to build unless they score full marks, and
# PyTensor's C code compiled now stays in the image, so no submission compiles it again.
PYTHONPATH=/autograder/source /autograder/venv/bin/python -m dlmie.teacher.autograder check
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for every submission: grade /autograder/submission into
# /autograder/results/results.json (dlmie/teacher/autograder.py).
cd /autograder/source
PYTHONPATH=/autograder/source exec /autograder/venv/bin/python -m dlmie.teacher.autograder run
"""


# ---------------------------------------------------------------------------------------------
# Building the zip


def solution_files(repo: Path) -> list[str]:
    """The solution's dlmie/ files that travel in the autograder: those git tracks, but the weights.

    Inputs:
    - repo: the solution repository (a git working tree)
    Returns:
    - paths relative to repo, sorted
    Raises:
    - RuntimeError when repo is not a git working tree or holds no dlmie/teacher/ (a handout)
    """
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "dlmie"], cwd=repo, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(f"{repo} is not the solution repository's git working tree: {err}") from err
    files = sorted(f for f in listed.decode("utf-8").split("\0")
                   if f and (repo / f).is_file() and not f.startswith(SOLUTION_EXCLUDED))
    if "dlmie/teacher/grader.py" not in files:
        raise RuntimeError(f"{repo} has no dlmie/teacher/: build the autograder in the solution repository")
    return files


def build(repo: Path, handout_zip: Path, out: Path, seed: int | None = None, visibility: str = "visible") -> dict:
    """Write the autograder zip (atomically).

    Inputs:
    - repo: the solution repository
    - handout_zip: its handout (make student); checked against this repository's parts
    - out: the zip to write
    - seed: the hidden cases' seed every submission is graded on (None: a new one)
    - visibility: when students see the results (one of VISIBILITIES)
    Returns:
    - the config written into the zip: seed, visibility, timeout, test_timeout, memory_gib
    Raises:
    - ValueError, FileNotFoundError: a bad visibility, or a handout of another version
    - RuntimeError: repo is not the solution repository
    """
    if visibility not in VISIBILITIES:
        raise ValueError(f"visibility {visibility!r}: choose one of {', '.join(VISIBILITIES)}")
    repo, handout_zip = Path(repo).resolve(), Path(handout_zip)
    files = solution_files(repo)
    with tempfile.TemporaryDirectory(prefix="dlmie-autograder-") as tmp:
        Handout(handout_zip, Path(tmp))  # raises when the handout's parts are not this solution's
    defaults = Settings()
    config = {"seed": hidden.new_seed() if seed is None else seed, "visibility": visibility,
              "timeout": defaults.timeout, "test_timeout": defaults.test_timeout,
              "memory_gib": defaults.limits.memory / GiB}
    with atomic_output(out) as part:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            _add(zf, "setup.sh", SETUP_SH.encode(), executable=True)
            _add(zf, "run_autograder", RUN_AUTOGRADER.encode(), executable=True)
            _add(zf, CONFIG_NAME, (json.dumps(config, indent=1) + "\n").encode())
            _add(zf, "pyproject.toml", (repo / "pyproject.toml").read_bytes())
            for rel in files:
                _add(zf, rel, (repo / rel).read_bytes())
            zf.write(handout_zip, HANDOUT_NAME, compress_type=zipfile.ZIP_STORED)  # already compressed
    return config


def _add(zf: zipfile.ZipFile, name: str, data: bytes, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, time.localtime()[:6])
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, data)


# ---------------------------------------------------------------------------------------------
# Grading one submission on Gradescope


def pack_submission(folder: Path, dest: Path) -> Path:
    """The zip that Grader.grade reads for the files Gradescope put in `folder`.

    A folder holding one .zip file only (a zip Gradescope did not unpack) is that zip, graded as
    it is. Otherwise every file under the folder goes into a new zip at its relative path, and a
    link goes in as a link, so that read_submission rejects it as it rejects one in a zip.

    Inputs:
    - folder: /autograder/submission
    - dest: the zip to write, named <student>.zip
    Returns:
    - the zip to grade
    """
    entries = sorted(folder.rglob("*"))
    if len(entries) == 1 and entries[0].suffix == ".zip" and entries[0].is_file() and not entries[0].is_symlink():
        return entries[0]
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in entries:
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                info = zipfile.ZipInfo(rel)
                info.external_attr = 0o120777 << 16
                zf.writestr(info, os.readlink(path))
            elif path.is_file():
                zf.write(path, rel)
    return dest


def results_json(grade: SubmissionGrade, grader: Grader, config: dict, seconds: float) -> dict:
    """Gradescope's results.json for one graded submission.

    One test per part, in the handout's order: its points (the same as the gradebook's), and as its
    output the part's cases, each PASS or FAIL with the kind of input and why it failed (never an
    expected value). The submission's output says what was wrong with the files, if anything.

    Inputs:
    - grade: from Grader.grade
    - grader: the grader that graded it (its cases, in the order of grade.case_notes)
    - config: the zip's config.json (visibility)
    - seconds: how long grading took
    Returns:
    - the results, valid against SCHEMA
    """
    notes = dict.fromkeys(grader.parts, ())
    for case, note in zip(grader.cases, grade.case_notes):
        notes[case.part] += (note,)
    tests = []
    for number, score in enumerate(grade.scores, 1):
        lines = notes[score.name] or (f"not graded: {grade.reason}",)
        tests.append({"name": score.name, "number": str(number), "score": score.earned, "max_score": score.possible,
                      "status": "passed" if score.earned == score.possible else "failed",
                      "output": "\n".join(lines), "visibility": config["visibility"]})
    # Inline questions are graded by hand: each is listed with the student's answer and no points
    # here; the teacher adds a manually graded question for each on Gradescope (docs/teaching.md).
    for number, question in enumerate(grader.handout.questions, len(tests) + 1):
        answer = grade.answers.get(question["id"], "")
        tests.append({"name": f"{question['id']} (inline question, graded by hand: {question['points']} points)",
                      "number": str(number), "score": 0, "max_score": 0,
                      "output": f"Your answer:\n\n{answer}" if answer else "Not answered.",
                      "visibility": config["visibility"]})
    earned = sum(s.earned for s in grade.scores)
    problems = [f"- {i.code}: {i.detail}" for i in grade.issues]
    output = "\n".join([f"Graded on hidden cases: {earned}/{grader.possible} points.",
                        *(["What was wrong with the submitted files:", *problems] if problems else [])])
    return {"score": earned, "execution_time": round(seconds), "output": output, "visibility": config["visibility"],
            "stdout_visibility": "hidden", "tests": tests}


def failure_json(err: BaseException, config: dict) -> dict:
    """results.json when the autograder itself failed: no score, and what to tell the teacher."""
    return {"score": 0, "output": f"The autograder could not grade this submission ({type(err).__name__}: {err}). "
                                  "Tell your teacher; your submission was not graded.",
            "visibility": config.get("visibility", "visible"), "stdout_visibility": "hidden", "tests": []}


def run_autograder(root: Path) -> dict:
    """Grade <root>/submission with the trusted grader and write <root>/results/results.json.

    Inputs:
    - root: Gradescope's /autograder: source/ (the unpacked zip), submission/, results/
    Returns:
    - the results written
    Raises:
    - FileNotFoundError when root has no source/config.json or submission/ (not an autograder tree);
      any failure of grading itself is written to results.json as failure_json and raised again
    """
    root = Path(root)
    source, submission = root / "source", root / "submission"
    if not (source / CONFIG_NAME).is_file() or not submission.is_dir():
        raise FileNotFoundError(f"{root} is not a Gradescope autograder folder (no source/{CONFIG_NAME} or submission/)")
    config = json.loads((source / CONFIG_NAME).read_text(encoding="utf-8"))
    memory = int(config["memory_gib"] * GiB)
    settings = Settings(config["timeout"], config["test_timeout"],
                        Limits(memory=memory, cpu_seconds=int(config["timeout"])), config["seed"])
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="dlmie-grading-") as tmp:
            grader = Grader(source / HANDOUT_NAME, Path(tmp), settings)
            path = pack_submission(submission, Path(tmp) / "submission.zip")
            work = Path(tmp) / "work"
            work.mkdir()
            grade = grader.grade(path, work)
            results = results_json(grade, grader, config, time.monotonic() - started)
    except Exception as err:
        _write_results(root, failure_json(err, config))
        raise
    # Gradescope shows the standard output to the teacher only (stdout_visibility: hidden).
    print(f"isolation: {grade.isolation}; status: {grade.status}; {grade.reason}")
    print("\n".join(grade.case_notes))
    print("last output of the worker:\n" + grade.output_tail)
    _write_results(root, results)
    return results


def check(root: Path) -> dict:
    """Grade the solution's own part files (<root>/source/dlmie) as a submission, in a temporary tree.

    Inputs:
    - root: Gradescope's /autograder, with source/ (the unpacked zip)
    Returns:
    - the results
    Raises:
    - RuntimeError when the solution does not score full marks (a handout of another version, a
      machine that cannot run the parts)
    """
    source = Path(root) / "source"
    with zipfile.ZipFile(source / HANDOUT_NAME) as zf:
        manifest = json.loads(zf.read(f"{HANDOUT_TOP}/{MANIFEST}"))
    with tempfile.TemporaryDirectory(prefix="dlmie-check-") as tmp:
        tree = Path(tmp)
        (tree / "source").symlink_to(source.resolve())
        for rel in manifest["files"]:
            (tree / "submission" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tree / "submission" / rel).write_bytes((source / rel).read_bytes())
        results = run_autograder(tree)
    if results["score"] != manifest["total"]:
        failed = [f"{t['name']}: {t['output']}" for t in results["tests"] if t.get("status") == "failed"]
        raise RuntimeError(f"the solution scores {results['score']}/{manifest['total']} in the autograder:\n"
                           + "\n".join(failed or [results["output"]]))
    return results


def _write_results(root: Path, results: dict) -> None:
    with atomic_output(root / "results" / "results.json") as part:
        part.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The command


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.teacher.autograder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the autograder zip (make autograder)")
    make.add_argument("--handout", type=Path, default=Path("build") / HANDOUT_NAME, help="default: %(default)s")
    make.add_argument("--out", type=Path, default=Path("build/autograder.zip"), help="default: %(default)s")
    make.add_argument("--seed", type=int, help="the hidden cases' seed (default: a new one, printed)")
    make.add_argument("--visibility", choices=VISIBILITIES, default="visible",
                      help="when students see their results (default: %(default)s)")
    commands.add_parser("run", help=f"grade the submission (Gradescope's run_autograder; root: ${ROOT_VARIABLE} or /autograder)")
    commands.add_parser("check", help="grade the solution's own files; fail unless they score full marks (setup.sh)")
    args = parser.parse_args(argv)
    if args.command == "build":
        repo = Path(__file__).resolve().parents[2]
        try:
            config = build(repo, args.handout, args.out, args.seed, args.visibility)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {args.out}: hidden cases of seed {config['seed']}, results {config['visibility']}; "
              f"upload it as the assignment's autograder on Gradescope (docs/teaching.md)")
        return 0
    root = Path(os.environ.get(ROOT_VARIABLE, "/autograder"))
    try:
        if args.command == "check":
            results = check(root)
            print(f"check: the solution scores {results['score']} (full marks) in the autograder")
        else:
            run_autograder(root)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

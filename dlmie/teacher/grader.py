"""Grading a class: each submission's parts run by an untrusted worker in its own sandbox, on hidden
cases; comparison, points and the gradebook stay on this (trusted) side.

    trusted (this process)                               worker (one per submission, sandboxed)
      hidden cases + the solution's outputs  --inputs-->   the handout + the student's files:
      judge, points, gradebook, logs       <--arrays---    run each case, write .npz or an error line

This process never imports a student's file and never loads a pickle from a place a worker can
write. Each worker sees the pristine handout read-only with the student's files over it, the
request (inputs only) read-only, its own output and compile folders, a private /tmp; not the
master copy, other submissions, the gradebook, the teacher's files or the network (see
dlmie.teacher.sandbox for what each isolation level gives). A worker that crashes, exits, hangs or
runs out of memory fails the case it was running; a fresh worker runs the cases after it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import pytensor

from dlmie.assignment import read_manifest
from dlmie.grading import HANDOUT_TOP, NOTEBOOKS, PartScore, atomic_output, format_scores
from dlmie.parts import ERROR, PARTS, Case
from dlmie.questions import questions_in
from dlmie.teacher import feedback, hidden, rubric, sandbox
from dlmie.teacher.answers import answer_sheet, submission_answers
from dlmie.teacher.sandbox import BWRAP_NOBODY, NOBODY, Isolation, Limits, Mounts

OUTPUT_TAIL = 8192  # bytes of a worker's output kept for the log
OUTPUT_NOTED = 1 << 20  # a submission printing more than this gets an "output" issue
MEMBER_LIMIT = 20 << 20  # largest file accepted from a submission (an executed notebook with figures fits)
SUBMISSION_LIMIT = 100 << 20  # largest total of the files taken from one submission
POLL = 0.05  # seconds between looks at a running worker
# Files that archivers and editors add on their own; dropped without a word.
JUNK = re.compile(r"(^|/)(__MACOSX|__pycache__|\.ipynb_checkpoints)/|(^|/)\.DS_Store$|\.pyc$")


# ---------------------------------------------------------------------------------------------
# Reading a submission


@dataclass
class Issue:
    """Something wrong with a submission: a short code for the gradebook's status, and its detail."""

    code: str
    detail: str


def read_submission(path: Path, expected: set[str]) -> tuple[dict[str, bytes], list[Issue]]:
    """The expected files found in a submission zip, read safely.

    A member is rejected (and never read) when its path is absolute or climbs out with "..", it is a
    link, it is encrypted, or it is larger than MEMBER_LIMIT; reading stops at SUBMISSION_LIMIT in all.
    When every member sits in one folder that is not part of the handout (a zipped handout folder),
    that folder is stripped. Members that are not expected are reported and ignored.

    Inputs:
    - path: the submission
    - expected: the paths (relative to the handout) a submission may carry
    Returns:
    - (path -> content of each expected file found, issues)
    """
    if not zipfile.is_zipfile(path):
        return {}, [Issue("not_a_zip", f"{path.name} is not a zip file")]
    issues, files = [], {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = []
            for info in zf.infolist():
                if info.is_dir() or JUNK.search(info.filename):
                    continue
                problem = _unsafe_member(info)
                if problem:
                    issues.append(Issue("rejected", f"{info.filename!r}: {problem}"))
                else:
                    members.append(info)
            names = {info.filename: info.filename for info in members}
            tops = {PurePosixPath(n).parts[0] for n in names if len(PurePosixPath(n).parts) > 1}
            flat = [n for n in names if len(PurePosixPath(n).parts) == 1]
            expected_tops = {PurePosixPath(e).parts[0] for e in expected}
            if len(tops) == 1 and not flat and not tops & expected_tops:
                top = tops.pop()
                names = {n: n.removeprefix(top + "/") for n in names}
            ignored = [n for n, rel in names.items() if rel not in expected]
            if ignored:
                shown = ", ".join(ignored[:5]) + (f" and {len(ignored) - 5} more" if len(ignored) > 5 else "")
                issues.append(Issue("ignored_files", f"not files of the assignment, ignored: {shown}"))
            total = 0
            for info in members:
                rel = names[info.filename]
                if rel not in expected:
                    continue
                try:
                    with zf.open(info) as f:
                        data = f.read(MEMBER_LIMIT + 1)
                except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError) as err:
                    issues.append(Issue("rejected", f"{info.filename!r} cannot be read: {err}"))
                    continue
                if len(data) > MEMBER_LIMIT:
                    issues.append(Issue("rejected", f"{info.filename!r} is over the limit of {_size(MEMBER_LIMIT)}"))
                    continue
                total += len(data)
                if total > SUBMISSION_LIMIT:
                    issues.append(Issue("rejected", f"over {_size(SUBMISSION_LIMIT)} in all: {info.filename!r} and later files not read"))
                    break
                files[rel] = data
    except (zipfile.BadZipFile, OSError) as err:
        return files, issues + [Issue("not_a_zip", f"{path.name} is a damaged zip: {err}")]
    return files, issues


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} kB"


def _unsafe_path(name: str) -> str:
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if "\\" in name or ".." in PurePosixPath(name).parts:
        return "path leaves the submission folder"
    return ""


def _unsafe_member(info: zipfile.ZipInfo) -> str:
    if problem := _unsafe_path(info.filename):
        return problem
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.file_size > MEMBER_LIMIT:
        return f"{_size(info.file_size)}, over the limit of {_size(MEMBER_LIMIT)}"
    return ""


# ---------------------------------------------------------------------------------------------
# The handout and the grading run's shared state


class Handout:
    """A handout zip unpacked once into the master copy, which no worker can write.

    Inputs:
    - zip_path: the handout (make student); it must hold one top folder HANDOUT_TOP
    - workdir: where to unpack it
    Raises:
    - FileNotFoundError, ValueError: not a handout, or one whose parts differ from this solution's
    """

    def __init__(self, zip_path: Path, workdir: Path):
        zip_path = Path(zip_path)
        if not zipfile.is_zipfile(zip_path):
            raise FileNotFoundError(f"{zip_path} is not a handout zip: build one with `make student`")
        with zipfile.ZipFile(zip_path) as zf:
            bad = [n for n in zf.namelist() if not n.startswith(HANDOUT_TOP + "/") or _unsafe_path(n)]
            if bad:
                raise ValueError(f"{zip_path}: not a dlmie handout (unexpected member {bad[0]!r})")
            zf.extractall(workdir)
        self.root = Path(workdir) / HANDOUT_TOP
        for path in [self.root, *self.root.rglob("*")]:  # readable by a worker, writable by none
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.manifest = read_manifest(self.root)
        handed_out = {p["name"]: p["points"] for p in self.manifest["parts"]}
        ours = {name: part.points for name, part in PARTS.items()}
        if handed_out != ours:
            raise ValueError(f"{zip_path} was built from another version of the assignment (its parts and points "
                             f"differ from this repository's dlmie.parts): build the handout again with `make student`")
        self.notebooks = {p.relative_to(self.root).as_posix() for p in (self.root / NOTEBOOKS).glob("*.ipynb")}
        self.expected = set(self.manifest["files"]) | self.notebooks
        self.questions = self.manifest.get("questions", [])
        self.modules = [f.removesuffix(".py").replace("/", ".") for f in self.manifest["files"]]


@dataclass
class Settings:
    """How a class is graded.

    - timeout: wall-clock seconds for one submission's cases in all
    - test_timeout: wall-clock seconds for one case (and for importing the part files)
    - limits: each worker's resource limits
    - seed: the hidden cases' seed (None: a new one, written to the run's log)
    - isolation: None to detect the best the machine gives
    - jobs: submissions graded at once, each by its own worker
    """

    timeout: float = 600
    test_timeout: float = 60
    limits: Limits = field(default_factory=Limits)
    seed: int | None = None
    isolation: Isolation | None = None
    jobs: int = 1


@dataclass(frozen=True)
class CaseResult:
    """How one hidden case of a submission went, without its values: the part's name, the table's
    case (name, about, kind) and the verdict."""

    part: str
    case: Case
    verdict: hidden.Verdict


@dataclass
class SubmissionGrade:
    """One gradebook row: the student (the zip's name without .zip), points per part, issues; each
    case's result; and where the time went, in seconds: "prepare" (the work and compile folders),
    "startup" (each sandboxed worker, until its Python runs the worker), "cases" (the rest of the
    workers' time: importing the student's files and running the cases); grade_submissions adds
    "total" (the submission from start to end)."""

    student: str
    scores: list[PartScore]
    issues: list[Issue]
    isolation: str
    output_tail: str = ""
    results: list[CaseResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    answers: dict[str, str] = field(default_factory=dict)

    @property
    def case_notes(self) -> list[str]:
        """One line per case: PASS or FAIL, the case, and why it failed (never an expected value)."""
        return [f"{'PASS' if r.verdict.passed else 'FAIL'} {hidden.describe(r)}"
                + ("" if r.verdict.passed else f": {r.verdict.note}") for r in self.results]

    @property
    def status(self) -> str:
        codes = list(dict.fromkeys(i.code for i in self.issues))
        return ",".join(codes) if codes else "ok"

    @property
    def reason(self) -> str:
        return "; ".join(i.detail for i in self.issues)


def _seed_compile_dir(source: Path, dest: Path, share: bool) -> None:
    """A worker's own PyTensor compile folder, starting with the C modules compiled so far.

    share: the compiled libraries (.so, the bulk) are hard links: the files stay the teacher's and
    read-only to the worker, which runs as another user. Everything else is copied (PyTensor
    rewrites some of its files in place), and so is everything when the worker runs as this user,
    who could write through a link.
    """
    dest.mkdir(parents=True)
    if source.is_dir():
        for folder, _, files in os.walk(source):
            rel = Path(folder).relative_to(source)
            if "lock_dir" in rel.parts:
                continue
            (dest / rel).mkdir(exist_ok=True)
            for name in files:
                src, dst = Path(folder) / name, dest / rel / name
                try:
                    if share and name.endswith(".so"):
                        os.link(src, dst)
                    else:
                        shutil.copy2(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
    if share:
        for folder, _, files in os.walk(dest):
            os.chown(folder, NOBODY, NOBODY)
            for name in files:
                if not name.endswith(".so"):
                    os.chown(Path(folder) / name, NOBODY, NOBODY)


# ---------------------------------------------------------------------------------------------
# One submission


class _Worker:
    """Drives workers over one submission's cases until each has a result (see grade_submission)."""

    def __init__(self, grader: "Grader", view: Path, mounts: Mounts, work: Path):
        self.grader, self.view, self.mounts, self.work = grader, view, mounts, work
        self.out = work / "out"
        self.compile = work / "compile"
        self.log = work / "output.log"
        self.results: dict[str, tuple[str | None, Path | None]] = {}
        self.failures: dict[str, str] = {}  # case id -> why the worker running it ended
        self.import_errors: list[str] = []
        self.startup = 0.0  # seconds from starting each sandbox to its worker's first file
        self.elapsed = 0.0  # seconds of every worker run in all

    def env(self) -> dict:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": str(self.view),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTENSOR_FLAGS": f"compiledir={self.compile}",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
               "HOME": "/tmp" if self.grader.isolation.namespaces else str(self.work / "home"),
               "TMPDIR": "/tmp" if self.grader.isolation.namespaces else str(self.work / "tmp")}
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):  # needed for a correct OpenBLAS on some CPUs
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _collect(self, pending: list[str]) -> None:
        for cid in list(pending):
            error_file, npz = self.out / f"{cid}.error", self.out / f"{cid}.npz"
            if error_file.exists():
                self.results[cid] = (error_file.read_bytes()[:1000].decode("utf-8", "replace").strip(), None)
            elif npz.exists():
                self.results[cid] = (None, npz)
            else:
                continue
            pending.remove(cid)

    def run(self, cases: list[hidden.HiddenCase], deadline: float) -> None:
        settings, limits = self.grader.settings, self.grader.limits
        pending = [c.id for c in cases]
        while pending:
            if time.monotonic() > deadline:
                for cid in pending:
                    self.failures[cid] = f"not run: the submission's time limit of {settings.timeout:g} s was reached"
                return
            (self.out / "probe.done").unlink(missing_ok=True)
            (self.out / "probe.started").unlink(missing_ok=True)
            argv = [self.grader.python, "-m", "dlmie.worker", str(self.grader.request), str(self.out), *pending]
            run = sandbox.Run(argv, self.mounts, self.view, self.env(), self.log, limits, self.grader.isolation)
            current, since, status, stopped = None, time.monotonic(), None, ""
            running = False
            while True:
                status = run.poll()
                if not running and (status is not None or (self.out / "probe.started").exists()):
                    running = True
                    self.startup += time.monotonic() - run.started
                self._collect(pending)
                started = [cid for cid in pending if (self.out / f"{cid}.started").exists()]
                now = time.monotonic()
                if started and started[0] != current:
                    current, since = started[0], now
                if status is not None or not pending:
                    break
                if now - since > settings.test_timeout:
                    stopped = f"ran over the time limit of {settings.test_timeout:g} s"
                    break
                if now > deadline:
                    stopped = f"ran over the submission's time limit of {settings.timeout:g} s"
                    break
                time.sleep(POLL)
            run.kill()
            self.elapsed += time.monotonic() - run.started
            self._collect(pending)
            probe = self.out / "probe.done"
            if probe.exists() and not self.import_errors:
                text = probe.read_bytes()[:4000].decode("utf-8", "replace").strip()
                self.import_errors = [line for line in text.splitlines() if line]
            if not pending:
                return
            why = stopped or sandbox.describe_exit(status, limits)
            if current is None:  # it ended (or hung) before starting any remaining case
                what = "importing the part files" if not probe.exists() else "the worker"
                for cid in pending:
                    self.failures[cid] = f"{what} {why}"
                return
            self.failures[current] = why
            pending.remove(current)


class Grader:
    """What every submission of one grading run shares: the handout's master copy, the hidden cases
    and the worker's request, the isolation level, the compile folder workers start from.

    Inputs:
    - handout_zip: the handout (make student)
    - workdir: a folder for the run, removed by the caller
    - settings: see Settings
    - progress: called with lines for the teacher
    """

    def __init__(self, handout_zip: Path, workdir: Path, settings: Settings, progress=print):
        self.settings = settings
        self.workdir = Path(workdir)
        self.workdir.chmod(0o711)  # workers cross it to their own folders, but cannot list it
        self.isolation = settings.isolation or sandbox.detect()
        if not self.isolation.namespaces:
            progress(f"warning: no sandbox on this machine ({self.isolation.why}); students' code runs with "
                     f"resource limits only and could read or change your files. Grade in a container or VM.")
        self.handout = Handout(handout_zip, self.workdir / "master")
        if not self.isolation.namespaces:
            (self.workdir / "master").chmod(0o700)
        self.seed = hidden.new_seed() if settings.seed is None else settings.seed
        progress(f"drawing the hidden cases (seed {self.seed}) and the solution's outputs ...")
        self.cases = hidden.draw(self.seed)
        self.request = self.workdir / "request"
        hidden.write_request(self.cases, self.handout.modules, self.request)
        for path in [self.request, *self.request.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        self.python = sys.executable
        self.compile_source = Path(pytensor.config.compiledir)
        # RLIMIT_NPROC counts every process of the user a worker runs as (nobody, or the teacher),
        # not those of one sandbox: `jobs` sandboxes at once need `jobs` allowances, or a worker
        # would fail to start threads because its neighbours run. One student's code can then
        # start up to jobs x the limit, still bounded, and all of it ends with its sandbox.
        self.limits = replace(settings.limits, processes=settings.limits.processes * settings.jobs)

    @property
    def parts(self) -> list[str]:
        return [p["name"] for p in self.handout.manifest["parts"]]

    @property
    def possible(self) -> int:
        return self.handout.manifest["total"]

    def _prepare(self, files: dict[str, bytes], work: Path) -> tuple[Path, Mounts]:
        """The worker's view of the handout and its mounts."""
        nobody = self.isolation.level == BWRAP_NOBODY
        for name in ("out", "home", "tmp"):
            (work / name).mkdir(parents=True)
            if nobody:
                os.chown(work / name, NOBODY, NOBODY)
        _seed_compile_dir(self.compile_source, work / "compile", share=nobody)
        if not self.isolation.namespaces:
            view = work / "handout"
            shutil.copytree(self.handout.root, view)
            for name, data in files.items():
                (view / name).write_bytes(data)
            return view, Mounts()
        view = self.handout.root
        mounts = Mounts(read_only=[(self.handout.root, view), (self.request, self.request)],
                        writable=[(work / "out", work / "out"), (work / "compile", work / "compile")])
        for name, data in files.items():
            path = work / "files" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o644)
            mounts.read_only.append((path, view / name))
        for folder in (work / "files").rglob("*") if (work / "files").exists() else ():
            if folder.is_dir():
                folder.chmod(0o755)
        if (work / "files").exists():
            (work / "files").chmod(0o755)
        return view, mounts

    def grade(self, path: Path, work: Path) -> SubmissionGrade:
        """Grade one submission; `work` is an empty folder of its own (the caller removes it).

        Files of the manifest the zip carries replace the handout's; a missing file stays the
        handout's (its parts are unfinished); a Python file that does not compile is reported and
        the handout's kept, so that the parts of other files that import it still count.
        """
        student = path.name.removesuffix(".zip")
        files, issues = read_submission(path, self.handout.expected)
        level = self.isolation.level
        answers = submission_answers(files, self.handout.questions)
        if any(i.code == "not_a_zip" for i in issues):
            return SubmissionGrade(student, self._scores({}), issues, level, answers=answers)
        missing = [f for f in self.handout.manifest["files"] if f not in files]
        if missing:
            issues.append(Issue("missing_files", f"not in the zip, graded as unfinished: {', '.join(missing)}"))
        if not self.handout.notebooks & files.keys():
            issues.append(Issue("no_notebooks", "no notebook in the zip"))
        code = {}
        for name, data in files.items():
            if not name.endswith(".py"):
                continue
            try:
                compile(data.decode("utf-8"), name, "exec")
                code[name] = data
            except (SyntaxError, ValueError) as err:  # ValueError: not UTF-8, or a NUL byte
                where = f" line {err.lineno}" if isinstance(err, SyntaxError) else ""
                msg = err.msg if isinstance(err, SyntaxError) else str(err)
                issues.append(Issue("syntax_error", f"{name}{where}: {msg}; graded with the handout's version of the file"))
        work = Path(work)
        work.chmod(0o711)
        started = time.monotonic()
        view, mounts = self._prepare(code, work)
        prepared = time.monotonic() - started
        worker = _Worker(self, view, mounts, work)
        worker.run(self.cases, time.monotonic() + self.settings.timeout)
        verdicts = {}
        memory = self.settings.limits.memory / sandbox.GiB
        for case in self.cases:
            if case.id in worker.failures:
                verdicts[case.id] = hidden.Verdict(False, worker.failures[case.id])
            else:
                error, outputs = worker.results.get(case.id, (None, None))
                verdicts[case.id] = hidden.judge(case, error, outputs, memory)
        issues += self._issues(worker, verdicts)
        size = worker.log.stat().st_size if worker.log.exists() else 0
        if size > OUTPUT_NOTED:
            issues.append(Issue("output", f"printed {_size(size)} (the log keeps the last {_size(OUTPUT_TAIL)})"))
        tail = b""
        if worker.log.exists():
            with open(worker.log, "rb") as f:
                f.seek(max(0, size - OUTPUT_TAIL))
                tail = f.read()
        results = [CaseResult(c.part, c.case, verdicts[c.id]) for c in self.cases]
        timings = {"prepare": prepared, "startup": worker.startup, "cases": worker.elapsed - worker.startup}
        return SubmissionGrade(student, self._scores(verdicts), issues, level,
                               tail.decode("utf-8", "replace"), results, timings, answers)

    def _issues(self, worker: _Worker, verdicts: dict) -> list[Issue]:
        issues = []
        if worker.import_errors:
            issues.append(Issue("import_error", "did not import: " + "; ".join(worker.import_errors)[:500]))
        memory = self.settings.limits.memory / sandbox.GiB
        by_code = {}
        for case in self.cases:
            note = worker.failures.get(case.id) or (verdicts[case.id].note if not verdicts[case.id].passed else "")
            code = ("time_limit" if "time limit" in note else
                    "memory" if f"more than {memory:g} GiB" in note else
                    "worker_ended" if case.id in worker.failures else "")
            if code:
                by_code.setdefault((code, note), []).append(f"{case.part} [{case.case.name}]")
        for (code, note), where in by_code.items():
            shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
            issues.append(Issue(code, f"{shown}: {note}"))
        return issues

    def _scores(self, verdicts: dict) -> list[PartScore]:
        scores = []
        for name in self.parts:
            own = [c for c in self.cases if c.part == name]
            passed = [c for c in own if c.id in verdicts and verdicts[c.id].passed]
            # Raising the right exception counts only beside a right answer: a part that raises
            # it on every input has computed nothing.
            if not any(c.case.kind != ERROR for c in passed):
                passed = []
            failed = [c for c in own if c not in passed]
            note = ""
            if failed:
                first = failed[0]
                note = f"{first.case.name}: {verdicts[first.id].note if first.id in verdicts else 'not graded'}"
            scores.append(PartScore(name, sum(c.case.points for c in passed), sum(c.case.points for c in own), note))
        return scores


# ---------------------------------------------------------------------------------------------
# A class


def grade_submissions(folder: Path, handout_zip: Path, out: Path, settings: Settings | None = None,
                      progress=print, id_pattern: str | None = None, only: str | None = None,
                      bar: bool = False) -> list[SubmissionGrade]:
    """Grade the files in a folder of submissions into a CSV gradebook, `settings.jobs` at a time.

    Each submission is graded on its own (see Grader.grade), in its own work folder and sandbox;
    whatever goes wrong with one becomes its row's status and reason. As each finishes, the
    gradebook is rewritten (atomically) with the rows finished so far, in file name order; <out
    stem>_logs/ gets its log (and run.log: the seed, the isolation), <out stem>_feedback/ the
    Markdown feedback to hand back to the student. At the end, <out stem>_answers/ gets one sheet
    per inline question (its rubric and every student's answer) for grading by hand.

    Inputs:
    - folder: holds one file per student, normally <student>.zip (hidden files are skipped)
    - handout_zip: the handout the submissions are graded against
    - out: the CSV: student, score, possible, one column per part, status, reason, isolation, id,
      percent (see GRADEBOOK_END), one column per inline question (0 when unanswered, else empty for
      the teacher; a run with --only keeps what the teacher entered)
    - settings: see Settings
    - progress: called with one line per graded submission (and a few about the run)
    - id_pattern: regular expression that finds the LMS's student id in the file name without .zip
      (its first group if it has one); None: the whole name
    - only: grade this one submission (its name, with or without .zip) and replace its row in the
      existing gradebook `out`; the seed defaults to the one of that gradebook's run.log
    - bar: show a progress bar (tqdm) as well, for a terminal
    Returns:
    - the SubmissionGrade of each submission graded, in file name order
    Raises:
    - ValueError: a name id_pattern does not match, an unknown `only`, no gradebook to update
    """
    settings = settings or Settings()
    out = Path(out)
    logs = out.with_name(out.stem + "_logs")
    everyone = sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))
    paths = [_find(everyone, only)] if only else everyone
    ids = [student_id(p, id_pattern) for p in paths]
    earlier = _read_rows(out) if only else []
    if only and settings.seed is None:  # the same cases as the rest of the class
        settings = replace(settings, seed=_earlier_seed(logs / "run.log"))
    logs.mkdir(parents=True, exist_ok=True)
    finished: dict[int, SubmissionGrade] = {}
    with tempfile.TemporaryDirectory(prefix="dlmie-grading-") as tmp:
        grader = Grader(handout_zip, Path(tmp), settings, progress)
        questions = grader.handout.questions
        header = gradebook_header(grader.parts, questions)
        if only and earlier[0] != header:
            raise ValueError(f"{out} has other columns than this version's gradebook: grade the whole class again")
        run_log = {"seed": grader.seed, "isolation": grader.isolation.level, "why": grader.isolation.why,
                   "memory_bytes": settings.limits.memory, "timeout": settings.timeout,
                   "test_timeout": settings.test_timeout, "jobs": settings.jobs}
        _write_text(logs / "run.log", json.dumps(run_log, indent=1) + "\n")
        shown = _Progress(len(paths), progress, bar)
        # Threads suffice: grading a submission mostly waits on its worker process. They share the
        # Grader, only read after its __init__; this thread alone writes the gradebook, logs and feedback.
        with ThreadPoolExecutor(settings.jobs) as pool:
            futures = {pool.submit(_grade_one, grader, path, Path(tmp) / f"work{n}"): n for n, path in enumerate(paths)}
            for future in as_completed(futures):
                n = futures[future]
                grade = finished[n] = future.result()
                _write_text(logs / (_file_name(grade.student) + ".log"), _log(grade))
                _write_text(out.with_name(out.stem + "_feedback") / (_file_name(grade.student) + ".md"),
                            feedback.markdown(grade, grader.possible))
                rows = [_row(finished[k], ids[k], grader.parts, grader.possible, questions) for k in sorted(finished)]
                if only:
                    rows = _place(earlier[1:], rows[0], [p.name.removesuffix(".zip") for p in everyone],
                                  len(header) - len(questions))
                _write_gradebook(out, [header, *rows])
                total = sum(s.earned for s in grade.scores)
                shown.row(f"{grade.student}: {total}/{grader.possible} {grade.status} ({grade.timings['total']:.1f} s)")
        shown.close()
        if questions:
            _write_answer_sheets(out.with_name(out.stem + "_answers"), grader.handout, everyone)
    return [finished[k] for k in sorted(finished)]


def _write_answer_sheets(folder: Path, handout: Handout, submissions: list[Path]) -> None:
    """<folder>/<question id>.md for every inline question: its rubric and every student's answer,
    read again from all the submissions in the folder (so that a run with --only keeps the class)."""
    items = {item.id: item for item in rubric.load()}
    asked = {q.id: q.question for q in questions_in(handout.root)}
    answers = {}
    for path in submissions:
        files, _ = read_submission(path, handout.expected)
        answers[path.name.removesuffix(".zip")] = submission_answers(files, handout.questions)
    for q in handout.questions:
        if q["id"] not in items:
            raise ValueError(f"inline question {q['id']} of the handout has no entry in the rubric "
                             f"(dlmie/teacher/rubric/): build the handout again with `make student`")
        sheet = answer_sheet(items[q["id"]], asked.get(q["id"], ""), {s: a[q["id"]] for s, a in answers.items()})
        _write_text(folder / f"{q['id']}.md", sheet)


def _grade_one(grader: Grader, path: Path, work: Path) -> SubmissionGrade:
    """Grader.grade in a fresh work folder, removed after; a fault of the grader's becomes the row.
    Adds timings["total"]: the seconds it all took, the folder's removal included."""
    started = time.monotonic()
    work.mkdir()
    try:
        grade = grader.grade(path, work)
    except Exception as err:  # a grader fault on one submission must not stop the class's run
        grade = SubmissionGrade(path.name.removesuffix(".zip"), grader._scores({}),
                                [Issue("grading_error", f"{type(err).__name__}: {err}")], grader.isolation.level)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    grade.timings["total"] = time.monotonic() - started
    return grade


def _find(paths: list[Path], name: str) -> Path:
    """The submission called `name` (its file name, or that name without .zip). Raises ValueError."""
    for path in paths:
        if name in (path.name, path.name.removesuffix(".zip")):
            return path
    shown = ", ".join(p.name for p in paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
    raise ValueError(f"no submission {name!r} in the folder (it holds: {shown or 'nothing'})")


def student_id(path: Path, pattern: str | None) -> str:
    """The LMS's id of a submission's student: what `pattern` finds in the file name without .zip.

    Inputs:
    - path: the submission
    - pattern: regular expression (re.search); its first group if it has one, else the whole match;
      None: the whole name
    Raises:
    - ValueError when the pattern finds nothing (or an empty id) in the name
    """
    name = path.name.removesuffix(".zip")
    if pattern is None:
        return name
    regex = re.compile(pattern)
    found = regex.search(name)
    found = found and (found.group(1) if regex.groups else found.group(0))
    if not found:
        raise ValueError(f"--id-pattern {pattern!r} finds no student id in {path.name!r}")
    return found


def _earlier_seed(run_log: Path) -> int:
    """The seed an earlier run graded with (its run.log), so that a regraded row meets the same cases."""
    try:
        return int(json.loads(run_log.read_text(encoding="utf-8"))["seed"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"no seed of the earlier run in {run_log} ({err}): pass the seed it graded with, --seed N") from err


def _file_name(student: str) -> str:
    return re.sub(r"[^\w.-]", "_", student)


def _log(grade: SubmissionGrade) -> str:
    """A submission's log for the teacher: issues, per-part table, every case, the worker's last output."""
    return "\n".join([f"{grade.student}: {grade.status} (isolation: {grade.isolation})",
                      *(f"- {i.detail}" for i in grade.issues), "", format_scores(grade.scores), "",
                      *grade.case_notes, "", "last output of the worker:", grade.output_tail])


class _Progress:
    """One line per finished submission, with the time left estimated from the pace so far; a tqdm
    bar under the lines when `bar` (a terminal)."""

    def __init__(self, total: int, say, bar: bool):
        from tqdm import tqdm

        self.total, self.say, self.done, self.started = total, say, 0, time.monotonic()
        self.bar = tqdm(total=total, unit="submission", dynamic_ncols=True) if bar else None

    def row(self, text: str) -> None:
        self.done += 1
        left = (time.monotonic() - self.started) / self.done * (self.total - self.done)
        line = f"[{self.done}/{self.total}] {text}" + (f", about {_duration(left)} left" if self.done < self.total else "")
        if self.bar is None:
            self.say(line)
        else:
            self.bar.write(line)
            self.bar.update()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def _write_text(path: Path, text: str) -> None:
    with atomic_output(path) as part:
        part.write_text(text, encoding="utf-8")


# The columns after the parts'. id and percent serve a grade import: Canvas and Moodle match rows
# by a student identifier column and read a grade column, both chosen when importing. Then one
# column per inline question (manual_column), for the teacher to fill in by hand.
GRADEBOOK_END = ["status", "reason", "isolation", "id", "percent"]


def manual_column(question: dict) -> str:
    """The gradebook column of an inline question, e.g. "q01_guided (by hand, /3)"."""
    return f"{question['id']} (by hand, /{question['points']})"


def gradebook_header(parts: list[str], questions: list[dict] = ()) -> list[str]:
    """The gradebook's columns: student, score, possible, one per part, GRADEBOOK_END, then one per
    inline question. score, possible and percent count the automatically graded points only."""
    return ["student", "score", "possible", *parts, *GRADEBOOK_END, *map(manual_column, questions)]


def _row(grade: SubmissionGrade, sid: str, parts: list[str], possible: int, questions: list[dict] = ()) -> list[str]:
    """A gradebook row (as the CSV holds it: text) of a graded submission whose LMS id is `sid`. An
    inline question's cell is 0 when it was not answered and empty (for the teacher) when it was,
    or when the answers could not be read."""
    earned = {s.name: s.earned for s in grade.scores}
    total = sum(earned.values())
    cells = [grade.student, total, possible, *(earned.get(p, 0) for p in parts), grade.status, grade.reason,
             grade.isolation, sid, f"{100 * total / possible:.2f}" if possible else "0.00",
             *("0" if grade.answers.get(q["id"]) == "" else "" for q in questions)]
    return [str(c) for c in cells]


def _read_rows(out: Path) -> list[list[str]]:
    """An existing gradebook's header and rows. Raises ValueError when there is none."""
    try:
        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as err:
        raise ValueError(f"--only replaces a row of an existing gradebook, and {out} cannot be read ({err.strerror}): "
                         f"grade the class first") from err
    if not rows:
        raise ValueError(f"{out} is empty: grade the class first")
    return rows


def _place(rows: list[list[str]], row: list[str], order: list[str], manual_from: int) -> list[list[str]]:
    """`rows` with `row` in place of the row of its student, or inserted where its file sorts among
    `order` (the students in file name order) when it had none. In a replaced row, the cells from
    index `manual_from` on (the inline questions) keep what the old row held, when not empty."""
    rows = list(rows)
    for k, old in enumerate(rows):
        if old[0] == row[0]:
            # Points the teacher entered by hand for the inline questions stay.
            rows[k] = row[:manual_from] + [o if o.strip() else n for o, n in zip(old[manual_from:], row[manual_from:])]
            return rows
    rank = {name: k for k, name in enumerate(order)}
    at = next((k for k, old in enumerate(rows) if rank.get(old[0], len(order)) > rank[row[0]]), len(rows))
    return rows[:at] + [row] + rows[at:]


def _write_gradebook(out: Path, rows: list[list[str]]) -> None:
    with atomic_output(out) as part:
        with open(part, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)

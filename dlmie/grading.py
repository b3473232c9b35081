"""Graded tests on the student's side: points per part, one student's score, a student's submission zip.

The graded tests live in ``tests/graded/test_*.py``. Every test function carries
``@pytest.mark.graded(part="<part>", points=N)``; a test module may name its notebook with a
module-level ``NOTEBOOK = "05_lstm_and_scan"``. A part's possible points are the sum over its tests,
read from the source with ``ast`` (so a module that no longer imports still counts what it could
earn); it earns a test's points when every run of that test (each parametrization) passes.

The tests run through pytest in a child process with this module as a plugin (``-p dlmie.grading``):
it writes one JSON line per collected test and per result as they happen, so a run stopped at its
time limit still counts what finished. In the child, each test's setup and call and each test
module's import get a time limit (SIGALRM) when one is given.

A class is graded elsewhere (dlmie.teacher.grader, in the solution repository only): on hidden
inputs, with each student's code in a sandboxed worker process.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dlmie.assignment import ROOT, read_manifest, stub_message, unfinished_message, unfinished_part
from dlmie.data import data_root
from dlmie.questions import PLACEHOLDER, notebook_questions

GRADED_DIR = "tests/graded"
HANDOUT_TOP = "dlmie-student"  # the handout zip's single top folder
NOTEBOOKS = "notebooks"
OUTPUT_TAIL = 8192  # bytes of a grading run's output kept for its log


@contextlib.contextmanager
def atomic_output(path: Path):
    """Write a file all at once: yields a temporary path beside `path`, renamed onto it on success.

    Inputs:
    - path: the destination; its folder is created
    Yields:
    - the temporary path (".part" suffix) to write; removed if the block raises
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The graded tests, read from their source


@dataclass(frozen=True)
class GradedTest:
    """One graded test function.

    - key: "tests/graded/test_05_lstm_and_scan.py::test_lstm_step_forward_random" (pytest's node id without parameters)
    - part, points: from its graded marker
    - line: line of the def
    - notebook: the module's NOTEBOOK constant, or ""
    """

    key: str
    part: str
    points: int
    line: int
    notebook: str


def graded_tests(root: Path = ROOT) -> list[GradedTest]:
    """Every graded test under root/tests/graded, in file and line order.

    Inputs:
    - root: the repository or handout
    Returns:
    - list of GradedTest (empty when root has no tests/graded)
    Raises:
    - ValueError listing each problem as "file:line: what is wrong": a module that does not parse,
      a test function without a graded marker, a marker without literal part and points >= 1
    """
    root = Path(root)
    tests, errors = [], []
    for path in sorted((root / GRADED_DIR).rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        except SyntaxError as err:
            errors.append(f"{rel}:{err.lineno}: does not parse: {err.msg}")
            continue
        notebook = _module_constant(tree, "NOTEBOOK")
        for node, qualname in _test_functions(tree):
            markers = [d for d in node.decorator_list if _is_graded_marker(d)]
            where = f"{rel}:{node.lineno}: {qualname}"
            if len(markers) != 1:
                errors.append(f"{where} needs exactly one @pytest.mark.graded(part=..., points=...)")
                continue
            try:
                kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in markers[0].keywords}
            except ValueError:
                kwargs = {}
            part, points = kwargs.get("part"), kwargs.get("points")
            if not isinstance(part, str) or not part.isidentifier() or type(points) is not int or points < 1:
                errors.append(f"{where}: the graded marker needs part=\"<function name>\" and points=<int >= 1> as literals")
                continue
            tests.append(GradedTest(f"{rel}::{qualname.replace('.', '::')}", part, points, node.lineno, notebook))
    if errors:
        raise ValueError("graded tests:\n  " + "\n  ".join(errors))
    return tests


def part_order(tests: list[GradedTest]) -> list[str]:
    """Part names in notebook order (parts without a notebook last), then in order of their first test."""
    first: dict[str, tuple] = {}
    for index, test in enumerate(tests):
        first.setdefault(test.part, (test.notebook == "", test.notebook, index))
    return sorted(first, key=first.__getitem__)


def _module_constant(tree: ast.Module, name: str) -> str:
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return ""


def _test_functions(tree: ast.Module):
    """(node, qualname) of the functions pytest collects: test* at module level and in Test* classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield node, node.name
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    yield item, f"{node.name}.{item.name}"


def _is_graded_marker(decorator: ast.expr) -> bool:
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "graded"
        and isinstance(decorator.func.value, ast.Attribute)
        and decorator.func.value.attr == "mark"
    )


# ---------------------------------------------------------------------------------------------
# The pytest plugin (in the child process)


class TimeLimitExceeded(BaseException):
    """A graded test or test module ran over its time limit (a BaseException, so that student code
    catching Exception does not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None, what: str):
    if not seconds or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeLimitExceeded(f"{what} ran over the time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _error_line(report) -> tuple[str, str]:
    """(exception type name, one line) of a failed report."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        text = crash.message
    else:
        lines = [ln for ln in report.longreprtext.splitlines() if ln.strip()]
        errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
        text = errors[-1] if errors else (lines[-1] if lines else "")
    line = text.strip().splitlines()[0] if text.strip() else ""
    match = re.match(r"([\w.]+): ", line)
    return (match[1].rsplit(".", 1)[-1] if match else ""), line[:300]


class _Recorder:
    """Writes one JSON line per collected test, per test result and per collection error."""

    def __init__(self, results: str, part: str | None, test_timeout: float | None):
        self.file = open(results, "a", encoding="utf-8")
        self.part = part
        self.test_timeout = test_timeout

    def _write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def pytest_collection_modifyitems(self, config, items) -> None:
        keep, drop = [], []
        for item in items:
            marker = item.get_closest_marker("graded")
            part = marker.kwargs.get("part") if marker else None
            (keep if self.part is None or part == self.part else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
        for item in keep:
            key = re.sub(r"\[.*\]$", "", item.nodeid)
            self._write(event="collected", nodeid=item.nodeid, key=key)

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector):
        with _time_limit(self.test_timeout, f"importing {collector.nodeid}"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):
        with _time_limit(self.test_timeout, f"{item.name} (setup)"):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        with _time_limit(self.test_timeout, item.name):
            return (yield)

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            kind, line = _error_line(report)
            self._write(event="collect_error", where=report.nodeid, type=kind, error=line)

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed or report.skipped or report.when == "call":
            kind, line = _error_line(report) if report.failed else ("", "")
            self._write(event="result", nodeid=report.nodeid, outcome=report.outcome, type=kind, error=line)

    def pytest_unconfigure(self, config) -> None:
        self.file.close()


def pytest_addoption(parser) -> None:
    group = parser.getgroup("dlmie-grading", "graded tests (python -m dlmie.grade)")
    group.addoption("--grade-results", metavar="FILE", help="append JSON lines of collected tests and results to FILE")
    group.addoption("--grade-part", metavar="NAME", help="run only the graded tests of this part")
    group.addoption("--grade-test-timeout", type=float, metavar="S", help="time limit of each test and test module import")


def pytest_configure(config) -> None:
    results = config.getoption("grade_results")
    if results:
        recorder = _Recorder(results, config.getoption("grade_part"), config.getoption("grade_test_timeout"))
        config.pluginmanager.register(recorder, "dlmie-grading-recorder")


# ---------------------------------------------------------------------------------------------
# Running the graded tests and scoring them


@dataclass
class GradeRun:
    """What one run of the graded tests left behind.

    - keys: node id -> test key (see GradedTest) of every test that was collected and selected
    - outcomes: node id -> "passed", "failed" or "skipped" (the worst over setup, call, teardown)
    - errors: node id -> (exception type name, line) of its first failure
    - collect_errors: (where, exception type name, line) per module that failed to import
    - returncode: pytest's exit status (None when stopped at the time limit)
    - timed_out: stopped at the run's time limit
    - output_bytes, output_tail: how much the run printed, and its last OUTPUT_TAIL bytes
    """

    keys: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    collect_errors: list[tuple[str, str, str]] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    output_bytes: int = 0
    output_tail: str = ""

    def add(self, record: dict) -> None:
        event, nodeid = record.get("event"), record.get("nodeid", "")
        if event == "collected":
            self.keys[nodeid] = record["key"]
        elif event == "collect_error":
            self.collect_errors.append((record["where"], record["type"], record["error"]))
        elif event == "result":
            rank = {"passed": 0, "skipped": 1, "failed": 2}
            if rank[record["outcome"]] >= rank[self.outcomes.get(nodeid, "passed")]:
                self.outcomes[nodeid] = record["outcome"]
            if record["outcome"] == "failed":
                self.errors.setdefault(nodeid, (record["type"], record["error"]))

    def passed(self, key: str) -> bool:
        """Whether every selected run of the test `key` passed (False if none was collected)."""
        nodeids = [n for n, k in self.keys.items() if k == key]
        return bool(nodeids) and all(self.outcomes.get(n) == "passed" for n in nodeids)

    def failure(self, key: str) -> str:
        """Why the test `key` earned nothing, in one line."""
        nodeids = [n for n, k in self.keys.items() if k == key]
        if not nodeids:
            module = key.split("::")[0]
            for where, _, line in self.collect_errors:
                if where == module:
                    return f"{module} did not import: {line}"
            return "did not run" + (" (the run was stopped at its time limit)" if self.timed_out else "")
        for nodeid in nodeids:
            if nodeid in self.errors:
                return self.errors[nodeid][1]
            if self.outcomes.get(nodeid) != "passed":
                return {"skipped": "skipped", None: "did not finish"}.get(self.outcomes.get(nodeid), "failed")
        return ""


def run_graded(root: Path = ROOT, part: str | None = None, timeout: float | None = None,
               test_timeout: float | None = None, echo: bool = True, capture: bool = True) -> GradeRun:
    """Run root's graded tests with pytest in a child process.

    Inputs:
    - root: the repository or handout; the child imports dlmie from there
    - part: run only this part's tests
    - timeout: wall-clock limit of the whole run in seconds (None: none); the child's process group
      is killed there, and what finished still counts
    - test_timeout: time limit of each test (setup and call) and of each test module's import
    - echo: copy the child's output to our stdout as it comes
    - capture: let pytest capture the tests' output (False: it flows into ours, and is counted)
    Returns:
    - GradeRun
    """
    root = Path(root).resolve()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # Third-party pytest plugins (nbval, ...) are not needed by graded tests and take seconds to load.
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # A handout copy has no datasets/ of its own: it reads the grader's.
    env.setdefault("DLMIE_DATA", str(data_root()))
    with tempfile.TemporaryDirectory(prefix="dlmie-grade-") as tmp:
        results = Path(tmp) / "results.jsonl"
        cmd = [sys.executable, "-m", "pytest", GRADED_DIR, f"--rootdir={root}", "-p", "dlmie.grading",
               f"--grade-results={results}", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               "-q", "--no-header"]
        if part is not None:
            cmd += [f"--grade-part={part}", "--tb=short"]
        else:
            cmd += ["--tb=no" if echo else "--tb=line", "-rfE"]
        if test_timeout:
            cmd.append(f"--grade-test-timeout={test_timeout}")
        if not capture:
            cmd.append("-s")
        run = GradeRun()
        run.returncode, run.timed_out, run.output_bytes, tail = _run_capped(cmd, root, env, timeout, echo)
        run.output_tail = tail.decode("utf-8", errors="replace")
        if results.exists():
            for line in results.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):  # a line cut short by a kill
                    run.add(json.loads(line))
    return run


def _run_capped(cmd, cwd, env, timeout, echo) -> tuple[int | None, bool, int, bytes]:
    """Run cmd in its own process group; keep the last OUTPUT_TAIL bytes of its output.

    Returns (exit status or None if killed at the time limit, timed out, bytes printed, tail).
    Whatever the child leaves running in its process group is killed when it ends.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    tail, total = bytearray(), [0]

    def drain():
        while chunk := proc.stdout.read1(1 << 16):
            total[0] += len(chunk)
            if echo:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            tail.extend(chunk)
            del tail[:-OUTPUT_TAIL]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    reader.join(10)
    proc.stdout.close()
    return (None if timed_out else proc.returncode), timed_out, total[0], bytes(tail)


@dataclass
class PartScore:
    """A part's points: earned of possible, and why not all (one line, "" when all)."""

    name: str
    earned: int
    possible: int
    note: str


def score(tests: list[GradedTest], run: GradeRun, part: str | None = None) -> list[PartScore]:
    """Points per part (in part_order), from the tests' markers and the run's results.

    Inputs:
    - tests: from graded_tests
    - run: from run_graded
    - part: score only this part
    Returns:
    - list of PartScore
    """
    scores = []
    for name in part_order(tests):
        if part is not None and name != part:
            continue
        own = [t for t in tests if t.part == name]
        earned = sum(t.points for t in own if run.passed(t.key))
        failed = [t for t in own if not run.passed(t.key)]
        note = ""
        if failed:
            reason = run.failure(failed[0].key)
            unfinished = unfinished_part(reason)
            if unfinished:
                reason = unfinished_message(unfinished)
            note = f"{failed[0].key.split('::', 1)[1]}: {reason}"
        scores.append(PartScore(name, earned, sum(t.points for t in own), note))
    return scores


def format_scores(scores: list[PartScore]) -> str:
    """The per-part table, its last line "score: X/Y"."""
    width = max([len("part")] + [len(s.name) for s in scores])
    lines = [f"{'part':<{width}}  points"]
    for s in scores:
        lines.append(f"{s.name:<{width}}  {f'{s.earned}/{s.possible}':>6}  {s.note}".rstrip())
    lines.append(f"score: {sum(s.earned for s in scores)}/{sum(s.possible for s in scores)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The student's side: packing a submission


def pack_submission(root: Path = ROOT, out: Path | None = None) -> tuple[Path, list[str], list[str]]:
    """Zip what a student hands in: the files holding parts, and the notebooks (with their outputs).

    Inputs:
    - root: the handout
    - out: the zip to write (default root/build/submission.zip), written atomically
    Returns:
    - (the zip's path, its members, notes: parts still unfinished, notebooks without outputs,
      inline questions not answered)
    Raises:
    - FileNotFoundError when root has no manifest (not a handout) or a file of the manifest is gone
    """
    root = Path(root)
    manifest = read_manifest(root)
    out = Path(out) if out is not None else root / "build" / "submission.zip"
    missing = [f for f in manifest["files"] if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"missing from {root}: {', '.join(missing)} (restore them from the handout zip)")
    notebooks = sorted(p.relative_to(root).as_posix() for p in (root / NOTEBOOKS).glob("*.ipynb"))
    members = list(manifest["files"]) + notebooks
    notes = []
    for p in manifest["parts"]:
        if stub_message(p["name"], p["function"]) in (root / p["file"]).read_text(encoding="utf-8"):
            notes.append(f"{p['name']} ({p['file']}) is not implemented yet")
    for name in notebooks:
        try:
            cells = json.loads((root / name).read_text(encoding="utf-8")).get("cells", [])
        except ValueError:
            notes.append(f"{name} is not a valid notebook (JSON)")
            continue
        if not any(c.get("outputs") for c in cells if c.get("cell_type") == "code"):
            notes.append(f"{name} has no outputs: run it and save it before packing")
        unanswered = [q.id for q in notebook_questions({"cells": cells}, Path(name).stem) if not q.answer]
        if unanswered:
            notes.append(f"{name}: inline question{'s' if len(unanswered) > 1 else ''} {', '.join(unanswered)} "
                         f"not answered (write the answer below '{PLACEHOLDER}' and save)")
    with atomic_output(out) as part:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in members:
                zf.write(root / name, name)
    return out, members, notes

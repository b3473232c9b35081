"""Grading a class (python -m dlmie.grade --submissions) on this repository's handout: broken
submissions, and hostile ones graded in the same class beside the solution and the untouched handout.

Every attack is the handout with code added to dlmie/captioning/attention.py: in attention_maps (the
part; its other cases' inputs are hidden) or at import. In each: the attacking part earns 0, every
other row is unchanged (the solution graded first and last scores full marks, the handout 0), the
run finishes, nothing is left running, nothing secret reaches the gradebook or its logs, and the row
says what happened. Attacks that would harm the machine without a sandbox (writing everywhere,
signalling every process) run only where the grader has namespaces; CI installs bubblewrap and
requires them.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import tempfile
import textwrap
import threading
import uuid
import zipfile
from pathlib import Path

import pytensor
import pytest

from dlmie.teacher import grader, sandbox
from dlmie.teacher.grader import Settings, grade_submissions
from dlmie.teacher.sandbox import GiB, Limits

import toy_assignment

handout = toy_assignment.load_builder()
REPO = Path(__file__).resolve().parents[1]
TARGET = "dlmie/captioning/attention.py"
STUB = '    raise NotImplementedError("attention_maps: implement this part'
ISOLATION = sandbox.detect()
SECRET = f"SECRET-{uuid.uuid4().hex}"
DAEMON_MARK = "4242.{}".format(os.getpid())  # a `sleep` argument no other process uses


def in_part(body: str) -> str:
    """attention_maps' stub line replaced by `body` (lines indented by 4)."""
    return "\n".join("    " + line for line in body.strip("\n").splitlines())


class Class:
    """The submissions folder, what the attacks aim at, and the graded result."""

    def __init__(self, root: Path, built: Path):
        self.root = root
        self.submissions = root / "submissions"
        self.submissions.mkdir()
        self.home = root / "teacher_home"
        self.home.mkdir()
        (self.home / "exam_answers.txt").write_text(SECRET)
        self.built = built
        with zipfile.ZipFile(built) as zf:
            self.manifest = json.loads(zf.read("dlmie-student/assignment.json"))
            self.handout_files = {f: zf.read(f"dlmie-student/{f}").decode() for f in self.manifest["files"]}
        self.solution_files = {f: (REPO / f).read_text() for f in self.manifest["files"]}
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(5)
        self.server.settimeout(0.2)
        self.port = self.server.getsockname()[1]
        self.connections = []
        self.listening = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.listening:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.connections.append(conn.recv(100))
            conn.close()

    def add(self, student: str, files: dict[str, str]) -> None:
        with zipfile.ZipFile(self.submissions / f"{student}.zip", "w") as zf:
            for name, text in files.items():
                zf.writestr(name, text)

    def attack(self, student: str, body: str = "", top: str = "") -> None:
        """The handout's files with attention.py attacked: `top` at import, `body` inside the part."""
        text = self.handout_files[TARGET]
        body, top = textwrap.dedent(body), textwrap.dedent(top)
        if body:
            stub = next(line for line in text.splitlines() if line.startswith(STUB))
            text = text.replace(stub, in_part(body))
        if top:
            text = text.replace("from dlmie.images import resize_bilinear\n",
                                "from dlmie.images import resize_bilinear\n" + top.strip("\n") + "\n")
        self.add(student, {**self.handout_files, TARGET: text})


def attacks(c: Class) -> dict[str, str]:
    """Add every attack; returns student -> words its row's reason must contain ("" for none)."""
    expect = {}

    def add(student, reason="", **code):
        c.attack(student, **code)
        expect[student] = reason

    compiledir = pytensor.config.compiledir
    add("forged_pytest_reports", top="""
try:
    import _pytest.reports as r
    r.TestReport.outcome = property(lambda self: "passed", lambda self, v: None)
except Exception:
    pass
""")
    add("forged_results_file", top="""
import sys, numpy as _np
from pathlib import Path as _P
_out = _P(sys.argv[2]) if len(sys.argv) > 2 else _P(".")
for _i in range(100):
    try:
        _np.savez(_out / f"c{_i:03d}.npz", maps=_np.zeros((2, 5, 7)), out=_np.zeros(3), value=_np.zeros(()))
        (_out / f"c{_i:03d}.error").unlink(missing_ok=True)
    except OSError:
        pass
""")
    add("numpy_comparisons_replaced", body="""
np.allclose = lambda *a, **k: True
np.array_equal = lambda *a, **k: True
np.testing.assert_allclose = lambda *a, **k: None
np.isfinite = lambda x: np.ones(np.shape(x), bool)
return np.zeros((len(alpha), size[0], size[1]), np.float32)
""")
    add("fixture_lookup", body="""
from dlmie.checks import load_fixture
for case in load_fixture("attention_maps").values():
    if case["out"] and np.array_equal(case["in"]["alpha"], alpha):
        return case["out"]["maps"]
return next(c["out"]["maps"] for c in load_fixture("attention_maps").values() if c["out"])
""")
    add("write_master_copy", top="""
import dlmie, os
from pathlib import Path as _P
for _f in list(_P(dlmie.__file__).parent.rglob("*.py")) + [_P(dlmie.__file__).parents[1] / "assignment.json"]:
    try:
        with open(_f, "a") as _h:
            _h.write("\\nraise SystemExit('poisoned by write_master_copy')\\n")
    except OSError:
        pass
for _d in _P(dlmie.__file__).parents:
    try:
        for _p in _d.rglob("checks.py"):
            with open(_p, "a") as _h:
                _h.write("\\nraise SystemExit('poisoned')\\n")
    except OSError:
        pass
""")
    add("exit_at_import", "ended the grading process", top="import os\nos._exit(0)")
    add("sys_exit_at_import", "ended the grading process", top="import sys\nsys.exit(3)")
    add("exit_in_part", "ended the grading process", body="import os\nos._exit(0)")
    add("sys_exit_in_part", "ended the grading process", body="import sys\nsys.exit(0)")
    add("memory_hog", "more than 3 GiB of memory", body="hog = np.ones(6 << 30, np.uint8)\nreturn hog")
    add("infinite_loop", "time limit", body="""
import signal
signal.signal(signal.SIGALRM, signal.SIG_IGN)
while True:
    pass
""")
    add("megabytes_of_output", "printed", body="print('x' * 3_000_000)\nreturn np.zeros((len(alpha), size[0], size[1]), np.float32)")
    add("lying_object", body="""
class Liar:
    def __eq__(self, other): return True
    def __array__(self, dtype=None, copy=None): return np.full((len(alpha), size[0], size[1]), 0.5)
    shape = (len(alpha), size[0], size[1])
return Liar()
""")
    add("object_array", body="return np.array([object()] * len(alpha))")
    add("nan_output", body="return np.full((len(alpha), size[0], size[1]), np.nan, np.float32)")
    add("wrong_dtype", body="return np.full((len(alpha), size[0], size[1]), 'x')")
    add("wrong_shape", body="return np.zeros((size[0], size[1]), np.float32)")
    if ISOLATION.namespaces:
        add("write_outside_and_home", top=f"""
    from pathlib import Path as _P
    for _p in [_P.home() / "owned.txt", _P({str(c.home)!r}) / "owned.txt", _P({str(c.submissions)!r}) / "owned.zip",
               _P({str(compiledir)!r}) / "poison.txt", _P("/tmp/owned.txt"), _P({str(c.root)!r}) / "owned.txt"]:
        try:
            _p.write_text("owned")
        except OSError:
            pass
    """)
        add("read_teacher_file", body=f"""
    print(open({str(c.home / "exam_answers.txt")!r}).read())
    """)
        add("list_submissions", body=f"""
    import os
    print(os.listdir({str(c.submissions)!r}))
    """)
        add("connect_local_port", body=f"""
    import socket
    s = socket.create_connection(("127.0.0.1", {c.port}), timeout=3)
    s.sendall(b"attack")
    """)
        add("kill_parent", "killed", body="import os, signal\ntry:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n    pass\nos.kill(os.getpid(), signal.SIGKILL)")
        add("daemons", body=f"""
    import os, subprocess, sys
    for _ in range(3):
        subprocess.Popen(["sleep", "{DAEMON_MARK}"], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execvp("sleep", ["sleep", "{DAEMON_MARK}"])
        os._exit(0)
    return np.zeros((len(alpha), size[0], size[1]), np.float32)
    """)
        add("write_everything", top="""
import os
for _root, _dirs, _files in os.walk("/", topdown=True):
    _dirs[:] = [d for d in _dirs if not os.path.join(_root, d).startswith(("/proc", "/sys", "/dev"))]
    try:
        open(os.path.join(_root, "owned_by_attacker"), "w").write("x")
    except OSError:
        pass
    for _f in _files:
        try:
            with open(os.path.join(_root, _f), "ab") as _h:
                _h.write(b"\\nowned")
        except OSError:
            pass
""")
        add("signal_everyone", body="import os, signal\nos.kill(-1, signal.SIGKILL)")
    return expect


def broken(c: Class) -> None:
    """Submissions that are not attacks, only wrong in form."""
    wrapped = {f"dlmie-student/{k}": v for k, v in c.solution_files.items()}
    c.add("b_in_a_folder", wrapped)
    (c.submissions / "b_not_a_zip.zip").write_text("this is not a zip")
    c.add("b_missing_file", {k: v for k, v in c.solution_files.items() if k != TARGET})
    c.add("b_misnamed", {"attention.py": c.solution_files[TARGET], "dlmie/Layers.py": "x = 1",
                         **{k: v for k, v in c.solution_files.items() if k != TARGET}})
    c.add("b_syntax_error", {**c.solution_files, TARGET: c.solution_files[TARGET].replace("return resize_bilinear(", "return = (")})
    absent = c.solution_files[TARGET].replace("import numpy as np\n", "import numpy as np\nimport no_such_module_dlmie\n")
    c.add("b_absent_import", {**c.solution_files, TARGET: absent})
    c.add("b_paths_leaving", {**c.solution_files, "../escaped.py": "x = 1", "/abs/escaped.py": "x = 1"})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Grade the class once: (class, {student: row}, gradebook path, expected reasons, progress lines)."""
    if not ISOLATION.namespaces:
        # Unsandboxed, the attacks would do what they try: append to every checks.py this user can
        # write, this repository's included. CI requires the sandbox (test_ci_grades_in_a_sandbox).
        pytest.skip(f"the attack class needs the sandbox ({ISOLATION.why}): install bubblewrap")
    built = tmp_path_factory.mktemp("build") / "dlmie-student.zip"
    handout.build(REPO, built)
    c = Class(tmp_path_factory.mktemp("class"), built)
    c.add("0_solution_first", c.solution_files)
    expect = attacks(c)
    c.add("z_handout", c.handout_files)
    broken(c)
    c.add("z_solution_last", c.solution_files)
    out = c.root / "gradebook.csv"
    lines = []
    scratch = c.root / "scratch"  # the grader's temporary folders, and nothing else
    scratch.mkdir()
    settings = Settings(timeout=150, test_timeout=20, limits=Limits(memory=3 * GiB, cpu_seconds=150), seed=7)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tempfile, "tempdir", str(scratch))
        grade_submissions(c.submissions, built, out, settings, progress=lines.append)
    c.listening = False
    c.left_behind = list(scratch.iterdir())
    with open(out, newline="") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    yield c, rows, out, expect, lines


def test_broken_submissions(graded):
    c, rows, *_ = graded
    full, maps = c.manifest["total"], next(p["points"] for p in c.manifest["parts"] if p["name"] == "attention_maps")
    assert rows["b_in_a_folder"]["score"] == str(full) and rows["b_in_a_folder"]["status"] == "no_notebooks"
    r = rows["b_not_a_zip"]
    assert (r["score"], r["status"], r["reason"]) == ("0", "not_a_zip", "b_not_a_zip.zip is not a zip file")
    # The line of the solution's "return resize_bilinear(" in attention_maps, which b_syntax_error breaks.
    broken_line = next(n for n, line in enumerate(c.solution_files[TARGET].splitlines(), 1)
                       if "return resize_bilinear(" in line)
    for student, status, reason in [
        ("b_missing_file", "missing_files", f"not in the zip, graded as unfinished: {TARGET}"),
        ("b_misnamed", "ignored_files", "ignored: attention.py, dlmie/Layers.py"),
        ("b_syntax_error", "syntax_error", f"{TARGET} line {broken_line}: invalid syntax; graded with the handout's version"),
        ("b_absent_import", "import_error", "No module named 'no_such_module_dlmie'"),
    ]:
        r = rows[student]
        assert (r["score"], r["attention_maps"]) == (str(full - maps), "0"), (student, r)
        assert status in r["status"].split(",") and reason in r["reason"], (student, r)
    r = rows["b_paths_leaving"]
    assert r["score"] == str(full) and r["status"] == "rejected,no_notebooks"
    assert "'../escaped.py': path leaves the submission folder" in r["reason"] and "'/abs/escaped.py': absolute path" in r["reason"]


def test_ci_grades_in_a_sandbox():
    if os.environ.get("CI") == "true":
        assert ISOLATION.namespaces, ISOLATION.why


def test_the_solution_scores_full_marks_before_and_after_every_attack(graded):
    c, rows, *_ = graded
    possible = str(c.manifest["total"])
    for student in ("0_solution_first", "z_solution_last"):
        assert rows[student]["score"] == possible, rows[student]
        assert rows[student]["possible"] == possible
    assert rows["z_handout"]["score"] == "0"


def test_every_attack_earns_nothing_and_says_why(graded):
    _, rows, _, expect, _ = graded
    for student, reason in expect.items():
        row = rows[student]
        assert row["score"] == "0" and row["attention_maps"] == "0", (student, row)
        assert reason in row["reason"], (student, row["reason"])
        assert row["isolation"] == ISOLATION.level


def test_the_run_finished_every_row(graded):
    c, rows, _, _, lines = graded
    assert len(rows) == len(list(c.submissions.iterdir())) == len([line for line in lines if line.startswith("[")])
    assert sorted(rows) == sorted(p.name.removesuffix(".zip") for p in c.submissions.iterdir())


def running(mark: str) -> list[str]:
    """The processes whose command line holds `mark`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(entry.name)
        except OSError:
            pass
    return found


def test_nothing_is_left_running_or_on_disk(graded):
    c, *_ = graded
    assert not c.left_behind
    assert not running(DAEMON_MARK)


def test_no_secret_reaches_the_gradebook_or_its_logs(graded):
    c, _, out, *_ = graded
    for path in [out, *out.with_name("gradebook_logs").iterdir()]:
        text = path.read_text(errors="replace")
        assert SECRET not in text, path
    listing = out.with_name("gradebook_logs") / "list_submissions.log"
    assert "z_solution_last.zip" not in listing.read_text()


@pytest.mark.skipif(not ISOLATION.namespaces, reason=f"no sandbox here: {ISOLATION.why}")
def test_nothing_outside_a_workers_own_folders_was_written_or_reached(graded):
    c, *_ = graded
    assert not list(c.home.glob("owned*")) and not list(c.root.glob("owned*"))
    assert not list(c.submissions.glob("owned*"))
    assert not (Path(pytensor.config.compiledir) / "poison.txt").exists()
    assert not Path("/tmp/owned.txt").exists() and not Path("/tmp/owned_by_attacker").exists()
    assert c.connections == []
    assert (c.home / "exam_answers.txt").read_text() == SECRET


def test_read_submission_reads_only_expected_files(tmp_path):
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in {"dlmie/toy.py": "a", "notebooks/x.ipynb": "b", "__MACOSX/._toy.py": "junk"}.items():
            zf.writestr(name, text)
    files, issues = grader.read_submission(path, {"dlmie/toy.py"})
    assert files == {"dlmie/toy.py": b"a"}
    assert [(i.code, i.detail) for i in issues] == [("ignored_files", "not files of the assignment, ignored: notebooks/x.ipynb")]


def test_an_oversized_member_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(grader, "MEMBER_LIMIT", 4096)
    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dlmie/toy.py", "#" * 5000)
    files, issues = grader.read_submission(path, {"dlmie/toy.py"})
    assert files == {} and [(i.code, i.detail) for i in issues] == [("rejected", "'dlmie/toy.py': 4.9 kB, over the limit of 4.0 kB")]


def test_raising_the_right_error_alone_earns_nothing():
    from dlmie.parts import PARTS
    from dlmie.teacher.hidden import HiddenCase, Verdict

    cases = [HiddenCase(f"c{k}", "attention_maps", case, {}, {}) for k, case in enumerate(PARTS["attention_maps"].cases)]
    g = grader.Grader.__new__(grader.Grader)
    g.cases = cases
    g.handout = type("H", (), {"manifest": {"parts": [{"name": "attention_maps"}]}})()
    only_error = {c.id: Verdict(c.case.kind == "error") for c in cases}
    assert [s.earned for s in g._scores(only_error)] == [0]
    with_value = {c.id: Verdict(c.case.name != "one_region") for c in cases}
    assert [s.earned for s in g._scores(with_value)] == [sum(c.case.points for c in cases if c.case.name != "one_region")]


def test_grade_command_help_names_the_sandbox(capsys):
    from dlmie import grade as grade_command

    with pytest.raises(SystemExit):
        grade_command.main(["--help"])
    assert "runs each student's code in a sandbox" in " ".join(capsys.readouterr().out.split())


def test_without_namespaces_grading_runs_with_limits_and_says_so(graded, tmp_path):
    c, rows, *_ = graded
    folder = tmp_path / "two"
    folder.mkdir()
    for student in ("0_solution_first", "z_handout"):
        (folder / f"{student}.zip").write_bytes((c.submissions / f"{student}.zip").read_bytes())
    mark = f"4343.{os.getpid()}"
    c.attack("daemons_without_namespaces", body=f"""
        import os, subprocess
        subprocess.Popen(["sleep", "{mark}"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execvp("sleep", ["sleep", "{mark}"])
            os._exit(0)
        return np.zeros((len(alpha), size[0], size[1]), np.float32)
        """)
    (c.submissions / "daemons_without_namespaces.zip").rename(folder / "daemons_without_namespaces.zip")
    lines = []
    settings = Settings(timeout=150, test_timeout=20, seed=7, isolation=sandbox.Isolation(sandbox.LIMITS, "a test"))
    grades = grade_submissions(folder, c.built, tmp_path / "gradebook.csv", settings, progress=lines.append)
    assert lines[0].startswith("warning: no sandbox on this machine (a test)")
    assert [(g.student, sum(s.earned for s in g.scores), g.isolation) for g in grades] == [
        ("0_solution_first", int(rows["0_solution_first"]["score"]), sandbox.LIMITS),
        ("daemons_without_namespaces", 0, sandbox.LIMITS), ("z_handout", 0, sandbox.LIMITS)]
    assert not running(mark)

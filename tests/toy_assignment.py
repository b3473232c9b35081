"""A toy solution repository with two parts, for the tests of the handout builder and the grader.

Its dlmie/ holds the real assignment, grading, grade and data modules (copied from this repository),
a package __init__ that only installs the notebook error handler, and two exercise modules:
dlmie/toy.py (part `double`, notebook 01_toy, 2 points) and dlmie/counter.py (part `add_one`, a
method, notebook 02_more, 3 points in a test with two parametrizations).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"

TOY = f'''"""Toy exercises."""


def half(x):
    """Half of x."""
    x = float(x)
    return x / 2


def double(x):
    """Twice x.

    Inputs:
    - x: a number
    Returns:
    - out: 2 * x
    """
    # Hint: one multiplication.
    {BEGIN}
    x = float(x)
    out = x * 2
    {END}
    return out
'''

COUNTER = f'''"""A toy class with an exercise method."""


class Counter:
    """Counts."""

    def add_one(self, x):
        """x plus one.

        Inputs:
        - x: an int
        Returns:
        - x + 1
        """
        if x is None:
            return None
        {BEGIN}
        y = x + 1
        return y
        {END}
'''

TEST_DOUBLE = '''import pytest

from dlmie.toy import double

NOTEBOOK = "01_toy"


@pytest.mark.graded(part="double", points=2)
def test_double():
    assert double(3) == 6
'''

TEST_ADD_ONE = '''import pytest

from dlmie.counter import Counter

NOTEBOOK = "02_more"


@pytest.mark.graded(part="add_one", points=3)
@pytest.mark.parametrize("x", [1, 2])
def test_add_one(x):
    assert Counter().add_one(x) == x + 1
'''

GRADED_CONFTEST = '''def pytest_configure(config):
    config.addinivalue_line("markers", "graded(part, points): a graded test of an assignment part")
'''


def notebook(source: str) -> str:
    """A one-cell notebook (nbformat 4) whose cell has an output and an execution count."""
    cell = {"cell_type": "code", "execution_count": 3, "id": "c1", "metadata": {"execution": {"iopub.status.busy": "x"}},
            "outputs": [{"name": "stdout", "output_type": "stream", "text": ["6.0\n"]}], "source": [source]}
    meta = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}
    return json.dumps({"cells": [cell], "metadata": meta, "nbformat": 4, "nbformat_minor": 5}, indent=1)


FILES = {
    "dlmie/__init__.py": "from dlmie import assignment\n\nassignment.install()\n",
    "dlmie/toy.py": TOY,
    "dlmie/counter.py": COUNTER,
    "tests/conftest.py": "",
    "tests/test_unit.py": "def test_reference():\n    assert 2 * 3 == 6\n",
    "tests/graded/conftest.py": GRADED_CONFTEST,
    "tests/graded/test_double.py": TEST_DOUBLE,
    "tests/graded/test_add_one.py": TEST_ADD_ONE,
    "tests/graded/make_fixtures.py": "print('fixtures')\n",
    "tests/graded/fixtures/double.npz": "not really an npz",
    "notebooks/01_toy.ipynb": notebook("from dlmie.toy import double\nprint(double(3))"),
    "notebooks/02_more.ipynb": notebook("from dlmie.counter import Counter\nprint(Counter().add_one(1))"),
    ".ci/run": "#!/bin/sh\nmake test\n",
    "tools/notes.txt": "teacher notes\n",
    "runs/toy/log.jsonl": "{}\n",
    "README.md": "# the solution's README\n",
    "get_data.sh": "#!/bin/sh\necho data\n",
}
COPIED = ["dlmie/assignment.py", "dlmie/grading.py", "dlmie/grade.py", "dlmie/questions.py", "dlmie/data/__init__.py"]


def make_tree(root: Path) -> Path:
    """Write the toy solution repository into root (a git index lists its files) and return root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "get_data.sh").chmod(0o755)
    for rel in COPIED:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, root / rel)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root


def load_builder():
    """tools/handout.py as a module (tools/ is not a package)."""
    if "handout" not in sys.modules:
        spec = importlib.util.spec_from_file_location("handout", REPO / "tools" / "handout.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["handout"] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules["handout"]


def grade(root: Path, *args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m dlmie.grade ARGS` run in root, importing root's dlmie."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "dlmie.grade", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)

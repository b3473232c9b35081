"""The edit-and-check loop in a running notebook kernel: a student runs a part's check cell on the
stub, writes the part in its file and runs the check cell again, with no restart."""

import json
import os
import queue
import shutil

import pytest

import toy_assignment
from toy_assignment import REPO

PART, FILE, NOTEBOOK = "attention_maps", "dlmie/captioning/attention.py", "08_attention_maps"


def handout_like_tree(root):
    """This repository's dlmie/ with PART stubbed as the handout stubs it, the part's practice
    fixture and a manifest naming it: what a student's unzipped handout holds for this part."""
    shutil.copytree(REPO / "dlmie", root / "dlmie", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    fixtures = root / "tests" / "graded" / "fixtures"
    fixtures.mkdir(parents=True)
    shutil.copy(REPO / "tests" / "graded" / "fixtures" / f"{PART}.npz", fixtures)
    handout = toy_assignment.load_builder()
    solution = (REPO / FILE).read_text(encoding="utf-8")
    [region] = handout.find_regions(REPO, [FILE])
    (root / FILE).write_text(handout.stub(solution, [region]), encoding="utf-8")
    (root / "assignment.json").write_text(json.dumps({
        "parts": [{"name": PART, "file": FILE, "function": region.where, "notebook": NOTEBOOK, "points": 3}],
        "files": [FILE], "total": 3}))
    return solution


def run(client, code: str, timeout: float = 300) -> str:
    """Execute code in the kernel as a notebook cell; return what it printed (errors included)."""
    printed = []

    def hook(message):
        content = message["content"]
        if message["msg_type"] == "stream":
            printed.append(content["text"])
        elif message["msg_type"] == "error":
            printed.append("\n".join(content["traceback"]))

    try:
        client.execute_interactive(code, timeout=timeout, output_hook=hook)
    except (TimeoutError, queue.Empty):
        raise AssertionError(f"the kernel did not finish {code[:60]!r} within {timeout:.0f} s") from None
    return "".join(printed)


def test_check_part_runs_the_part_written_after_the_kernel_imported_it(tmp_path):
    manager = pytest.importorskip("jupyter_client.manager")
    root = tmp_path / "dlmie-student"
    solution = handout_like_tree(root)
    env = {**os.environ, "PYTHONPATH": str(root)}
    kernel, client = manager.start_new_kernel(kernel_name="python3", cwd=str(root), env=env)
    try:
        printed = run(client, "import dlmie\nprint(dlmie.__file__)\n"
                              f"from dlmie.captioning.attention import {PART}  # a notebook's copy of the function\n"
                              "from dlmie.checks import check_part\n")
        assert printed.strip() == str(root / "dlmie" / "__init__.py"), printed

        printed = run(client, f"check_part({PART!r})")
        lines = printed.strip().splitlines()
        assert len(lines) == 3, printed  # one line per practice case
        assert all(line.endswith(f"{PART} is not implemented yet: write it in {FILE} (notebook {NOTEBOOK})")
                   for line in lines), printed

        (root / FILE).write_text(solution, encoding="utf-8")  # the student writes the part
        printed = run(client, f"check_part({PART!r})")
        lines = printed.strip().splitlines()
        assert len(lines) == 3 and all(line.endswith("PASS") for line in lines), printed

        # The copy imported before the edit runs the new code too, as do the notebook's later cells.
        printed = run(client, f"import numpy as np\nprint({PART}(np.ones((1, 4)), (2, 2), (4, 4)).shape)")
        assert printed.strip() == "(1, 4, 4)", printed
    finally:
        client.stop_channels()
        kernel.shutdown_kernel(now=True)

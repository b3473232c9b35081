"""The proof that the student regions are right, on this repository's own handout.

- the handout, unzipped fresh, scores 0/Y (`python -m dlmie.grade`, last line);
- the handout with the solution's files copied in scores Y/Y;
- each region stubbed alone (in a copy of the solved handout) makes its own part earn 0: every
  region is covered by a test of its part, and no test of that part passes on the stub;
- no marker text and no solution line is in the zip.

Skipped while dlmie/ holds no region. Each grading run is a child process; the per-part runs go in
parallel, a few at a time.
"""

import os
import re
import shutil
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import toy_assignment
from dlmie.data import data_root

handout = toy_assignment.load_builder()
REPO = Path(__file__).resolve().parents[1]


def _regions():
    try:
        files = handout.tracked_files(REPO)
    except (OSError, subprocess.CalledProcessError):
        return None
    return handout.find_regions(REPO, [f for f in files if not handout.excluded(f)])


REGIONS = _regions()
pytestmark = pytest.mark.skipif(
    not REGIONS,
    reason="not a git checkout" if REGIONS is None else "no student regions in dlmie/ yet (nothing to hand out)",
)


def grade(root: Path, *args: str) -> str:
    """The last line of `python -m dlmie.grade ARGS` in root, which reads this repository's data sets."""
    proc = toy_assignment.grade(root, *args, timeout=900, env={"DLMIE_DATA": str(data_root())})
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(handout zip, manifest)."""
    out = tmp_path_factory.mktemp("build") / "dlmie-student.zip"
    manifest, _ = handout.build(REPO, out)
    return out, manifest


def unzip(zip_path: Path, dest: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(dest)
    return dest / "dlmie-student"


@pytest.fixture(scope="module")
def solved(built, tmp_path_factory):
    """A fresh unzip with the solution's files of every part copied in."""
    zip_path, manifest = built
    root = unzip(zip_path, tmp_path_factory.mktemp("solved"))
    for rel in manifest["files"]:
        shutil.copy(REPO / rel, root / rel)
    return root


def test_manifest_lists_every_region(built):
    _, manifest = built
    assert sorted(p["name"] for p in manifest["parts"]) == sorted(r.part for r in REGIONS)
    assert manifest["total"] == sum(p["points"] for p in manifest["parts"])


def test_handout_scores_zero(built, tmp_path):
    zip_path, manifest = built
    assert grade(unzip(zip_path, tmp_path)) == f"score: 0/{manifest['total']}"


def test_solution_scores_full(built, solved):
    _, manifest = built
    assert grade(solved) == f"score: {manifest['total']}/{manifest['total']}"


def light_copy(src: Path, dst: Path) -> None:
    """Copy a tree, linking its large files (weights, fixtures stay shared and untouched)."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.stat().st_size > 1 << 20:
            target.symlink_to(path)
        else:
            shutil.copy2(path, target)


def test_each_region_alone_fails_its_part(built, solved, tmp_path):
    _, manifest = built
    points = {p["name"]: p["points"] for p in manifest["parts"]}

    def stubbed_alone(region):
        root = tmp_path / region.part
        light_copy(solved, root)
        solution = (REPO / region.file).read_text(encoding="utf-8")
        (root / region.file).write_text(handout.stub(solution, [region]), encoding="utf-8")
        return region.part, grade(root, "--part", region.part)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        results = dict(pool.map(stubbed_alone, REGIONS))
    uncovered = {part: line for part, line in results.items() if line != f"score: 0/{points[part]}"}
    assert not uncovered, f"parts whose tests still pass with their region stubbed: {uncovered}"


def test_no_solution_text_in_the_zip(built):
    zip_path, _ = built
    with zipfile.ZipFile(zip_path) as zf:
        texts = {n.removeprefix("dlmie-student/"): zf.read(n).decode("utf-8", errors="replace") for n in zf.namelist()}
    markers = [n for n, t in texts.items() if re.search(r"#+ *(BEGIN|END) SOLUTION", t)]
    assert not markers, f"marker text in {markers}"
    survivors = []
    for region in REGIONS:
        solution = (REPO / region.file).read_text(encoding="utf-8").splitlines()
        inside = {i for r in REGIONS if r.file == region.file for i in range(r.begin - 1, r.end)}
        # Lines the solution file also holds outside its regions ship anyway ("return out").
        public = {ln.strip() for i, ln in enumerate(solution) if i not in inside}
        shipped = {ln.strip() for ln in texts[region.file].splitlines()}
        survivors += [f"{region.file}: {ln.strip()}" for ln in region.solution
                      if ln.strip() and not ln.strip().startswith("#") and ln.strip() not in public and ln.strip() in shipped]
    assert not survivors, f"solution lines in the handout: {survivors}"


def test_graded_tests_are_written_from_the_table():
    """tests/graded/test_*.py are what make_fixtures.py writes from dlmie.parts: one place to edit."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "tests/graded/make_fixtures.py")
    make_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixtures)
    written = make_fixtures.graded_test_modules()
    on_disk = {p.name: p.read_text() for p in (REPO / "tests/graded").glob("test_*.py")}
    assert on_disk == written, "run `make fixtures` after changing dlmie/parts.py"

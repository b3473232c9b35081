"""Benchmark of grading a class: seconds per submission at --jobs 1 and 2, and the sandbox's share.

    python tools/bench_grading.py [--submissions 100] [--jobs 1 2] [--seed 7]

Builds the handout of this repository and a synthetic class in a temporary folder, in proportions
of a real one: 60 % honest (the solution and the handout's notebooks), 25 % partial (the solution
with one file left as handed out), 10 % broken (not a zip, a syntax error, a missing file, zipped
in a folder, an absent import) and 5 % attacks (from tests/test_grading_a_class.py). Then grades
the class once per --jobs value and prints, per run: the wall time, wall seconds per submission,
the mean time one submission takes from start to end, and the sandbox's share of that time
(making its work and compile folders, and starting each sandboxed worker up to its Python
running the worker), the rest being the cases (importing the student's files, running them).

Not a test: it takes minutes (each submission starts a sandboxed Python that imports PyTensor), and
its numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this repository's dlmie, whatever is installed
sys.path.insert(1, str(REPO / "tests"))  # the attack suite and the handout builder's loader

from dlmie.teacher.grader import Settings, grade_submissions  # noqa: E402

import test_grading_a_class as attack_suite  # noqa: E402
import toy_assignment  # noqa: E402

ATTACKS = ["forged_results_file", "fixture_lookup", "exit_in_part", "memory_hog", "daemons", "write_master_copy"]
TARGET = attack_suite.TARGET


def make_class(folder: Path, built: Path, n: int) -> dict[str, int]:
    """Write n submissions into `folder` (60 % honest, 25 % partial, 10 % broken, 5 % attacks).

    Returns:
    - kind -> how many of it
    """
    with zipfile.ZipFile(built) as zf:
        manifest = json.loads(zf.read("dlmie-student/assignment.json"))
        handout = {f: zf.read(f"dlmie-student/{f}").decode() for f in manifest["files"]}
        notebooks = {f.removeprefix("dlmie-student/"): zf.read(f).decode() for f in zf.namelist()
                     if f.endswith(".ipynb")}
    solution = {f: (REPO / f).read_text() for f in manifest["files"]}
    counts = {"attack": max(1, round(0.05 * n)), "broken": max(1, round(0.10 * n)), "partial": round(0.25 * n)}
    counts["honest"] = n - sum(counts.values())

    def add(name: str, files: dict[str, str]) -> None:
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as zf:
            for path, text in files.items():
                zf.writestr(path, text)

    for k in range(counts["honest"]):
        add(f"honest_{k:03d}", {**solution, **notebooks})
    files = sorted(manifest["files"])
    for k in range(counts["partial"]):
        left = files[k % len(files)]
        add(f"partial_{k:03d}", {**solution, **notebooks, left: handout[left]})
    broken = [
        lambda name: (folder / f"{name}.zip").write_text("not a zip"),
        lambda name: add(name, {**solution, TARGET: solution[TARGET].replace("return resize_bilinear(", "return = (")}),
        lambda name: add(name, {f: t for f, t in solution.items() if f != TARGET}),
        lambda name: add(name, {f"dlmie-student/{f}": t for f, t in solution.items()}),
        lambda name: add(name, {**solution, TARGET: solution[TARGET].replace("import numpy as np\n",
                                                                             "import numpy as np\nimport absent_module\n")}),
    ]
    for k in range(counts["broken"]):
        broken[k % len(broken)](f"broken_{k:03d}")
    with tempfile.TemporaryDirectory() as scratch:
        suite = attack_suite.Class(Path(scratch), built)
        attack_suite.attacks(suite)
        suite.listening = False
        kinds = [a for a in ATTACKS if (suite.submissions / f"{a}.zip").exists()]
        for k in range(counts["attack"]):
            kind = kinds[k % len(kinds)]
            shutil.copy(suite.submissions / f"{kind}.zip", folder / f"attack_{k:03d}_{kind}.zip")
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--submissions", type=int, default=100, help="class size (default: %(default)s)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to run (default: 1 2)")
    parser.add_argument("--seed", type=int, default=7, help="the hidden cases' seed (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.submissions < 4 or min(args.jobs) < 1:
        print("error: --submissions must be at least 4 and --jobs at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="dlmie-bench-grading-") as tmp:
        root = Path(tmp)
        built = root / "dlmie-student.zip"
        toy_assignment.load_builder().build(REPO, built)
        folder = root / "submissions"
        folder.mkdir()
        counts = make_class(folder, built, args.submissions)
        print(f"class of {args.submissions}: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + f"; {len(os.sched_getaffinity(0))} cores; seed {args.seed}", flush=True)
        print(f"{'jobs':>4} {'wall s':>8} {'wall s/sub':>11} {'mean s/sub':>11} {'sandbox share':>14} {'(prepare':>9} "
              f"{'startup)':>9} {'cases':>7}", flush=True)
        for jobs in args.jobs:
            started = time.monotonic()
            grades = grade_submissions(folder, built, root / f"gradebook_jobs{jobs}.csv",
                                       Settings(seed=args.seed, jobs=jobs), progress=lambda line: None)
            wall = time.monotonic() - started
            spent = {key: sum(g.timings.get(key, 0.0) for g in grades) for key in ("prepare", "startup", "cases", "total")}
            n = len(grades)
            share = (spent["prepare"] + spent["startup"]) / spent["total"]
            print(f"{jobs:>4} {wall:>8.1f} {wall / n:>11.2f} {spent['total'] / n:>11.2f} {100 * share:>13.1f}% "
                  f"{spent['prepare'] / n:>9.2f} {spent['startup'] / n:>9.2f} {spent['cases'] / n:>7.2f}", flush=True)
        same = len({(root / f"gradebook_jobs{j}.csv").read_bytes() for j in args.jobs}) == 1
        print(f"gradebooks identical across --jobs: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

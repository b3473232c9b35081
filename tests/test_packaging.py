"""A non-editable `pip install .` carries everything dlmie reads beside its code: the wheel built
from the tracked files holds every file git tracks under dlmie/ (weights, templates, the catalog)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_every_tracked_file_of_the_package(tmp_path):
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout.decode()
    files = [f for f in tracked.split("\0") if f and (ROOT / f).is_file()]
    # A copy of the tracked files: building in the working tree would leave build/ and egg-info there.
    source = tmp_path / "source"
    for rel in files:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, source / rel)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = (tmp_path / "dist").glob("dlmie-*.whl")
    members = set(zipfile.ZipFile(wheel).namelist())
    package = {f for f in files if f.startswith("dlmie/")}
    assert sorted(package - members) == []
    assert {"dlmie/models/weights/tiny_convnet.npz", "dlmie/templates/dlmie-lab/index.html.j2"} <= members

"""environment.yml (conda) and pyproject.toml (pip) must describe the same environment."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Conda-only entries: the interpreter, a compiler for PyTensor's C backend, Java for the caption
# metrics, and pip itself.
CONDA_ONLY = {"python", "cxx-compiler", "openjdk", "pip"}


def requirement(spec):
    """'pytensor>=3.0,<3.1' -> ('pytensor', '>=3.0,<3.1'); names compared case-insensitively."""
    name, bounds = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip()).groups()
    return name.lower().replace("_", "-"), bounds.replace(" ", "")


def environment_yml_packages():
    """Every '- package' line of environment.yml, conda and pip sections alike (no YAML parser needed)."""
    packages = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s+([A-Za-z0-9].*?)\s*(#.*)?$", line)
        if match and not match.group(1).startswith(("pip:", "-e", "conda-forge")):
            spec = match.group(1).replace("=", "==", 1) if re.match(r"[^<>=!]+=[^=]", match.group(1)) else match.group(1)
            name, bounds = requirement(spec)
            packages[name] = bounds
    return packages


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pip_side = dict(requirement(spec) for spec in pyproject["project"]["dependencies"])
    conda_side = {name: b for name, b in environment_yml_packages().items() if name not in CONDA_ONLY}
    assert conda_side == pip_side


def test_python_versions_agree():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert environment_yml_packages()["python"] == "==3.11"

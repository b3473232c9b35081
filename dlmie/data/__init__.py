"""Where the data sets live, and how to find one.

The data sets are listed once, in ``catalog.tsv`` beside this file (its header comment explains the
columns). ``./get_datasets.sh`` reads the same file to fetch them into ``datasets/`` at the
repository root, or into ``$DLMIE_DATA`` when that is set; this module only finds them:

    >>> from dlmie.data import dataset_path
    >>> root = dataset_path("tiny-imagenet-100-A")   # .../datasets/tiny-imagenet-100-A

A data set is *present* when its path exists and every file of it was installed completely:
``get_datasets.sh`` renames a downloaded file into place only once it is verified, and writes a
marker ``.installed/ZIPNAME`` only after all of a zip's contents have been moved into place, so a
half-unpacked folder never counts as present. The shell script applies the same rule.
"""

import os
from pathlib import Path

CATALOG = Path(__file__).with_name("catalog.tsv")
REPO_ROOT = Path(__file__).resolve().parents[2]  # dlmie/data/__init__.py -> the repository
MARKERS = ".installed"  # folder inside data_root() holding one marker per unpacked zip


class DatasetNotFoundError(FileNotFoundError):
    """A data set of the catalog is not (completely) in data_root(); the message says how to fetch it."""


def data_root() -> Path:
    """The folder holding the data sets.

    Returns:
    - ``$DLMIE_DATA`` if that is set (and not empty), else ``<repository>/datasets``.
    """
    env = os.environ.get("DLMIE_DATA")
    return Path(env).expanduser().absolute() if env else REPO_ROOT / "datasets"


def read_catalog(path: Path = CATALOG) -> list[dict[str, str]]:
    """Parse catalog.tsv.

    Inputs:
    - path: the catalog file (default: the package's catalog.tsv).

    Returns:
    - one dict per row (per file), keyed by the header's column names (name, default, size, path,
      install, dest, file, url, member, note), in file order; "-" (the catalog's empty) becomes "".
      Lines starting with "#" are comments; the first other line is the header.
    """
    rows, header = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            raise ValueError(f"{path}: expected {len(header)} tab-separated fields, got {len(fields)}: {line!r}")
        rows.append({k: ("" if v == "-" else v) for k, v in zip(header, fields)})
    return rows


def list_datasets() -> dict[str, list[dict[str, str]]]:
    """The catalog grouped by data set.

    Returns:
    - dict from data set name to its rows (see read_catalog), in catalog order. The rows of one
      data set share default, size and path.
    """
    datasets: dict[str, list[dict[str, str]]] = {}
    for row in read_catalog():
        datasets.setdefault(row["name"], []).append(row)
    return datasets


def _rows(name: str) -> list[dict[str, str]]:
    datasets = list_datasets()
    if name not in datasets:
        raise ValueError(f"Unknown data set {name!r}. Valid names: {', '.join(datasets)}")
    return datasets[name]


def _row_present(row: dict[str, str], root: Path) -> bool:
    # The same test as row_done in get_datasets.sh.
    if not (root / row["path"]).exists():
        return False
    if row["install"] == "unzip":
        return (root / MARKERS / row["file"]).exists()
    return (root / row["dest"]).exists()


def is_present(name: str) -> bool:
    """Whether data set ``name`` is completely in data_root(). Raises ValueError for an unknown name."""
    root = data_root()
    return all(_row_present(row, root) for row in _rows(name))


def dataset_path(name: str) -> Path:
    """Where data set ``name`` is, checking that it is there.

    Inputs:
    - name: a data set name from the catalog, e.g. "flickr8k" (see ``./get_datasets.sh --list``).

    Returns:
    - the Path of the data set's folder or file, ``data_root() / <catalog path>``.

    Raises:
    - ValueError: ``name`` is not in the catalog (the message lists the valid names).
    - DatasetNotFoundError (a FileNotFoundError): the data set is missing or incomplete; the message
      names the command that fetches it.
    """
    rows = _rows(name)
    root = data_root()
    path = root / rows[0]["path"]
    if all(_row_present(row, root) for row in rows):
        return path
    state = "is incomplete (an interrupted fetch?) at" if path.exists() else "not found at"
    msg = (f"Data set {name!r} {state} {path}. "
           f"Fetch it with: ./get_datasets.sh {name}  (run in the repository root, {REPO_ROOT})")
    notes = sorted({row["note"] for row in rows if row["note"]})
    if notes:
        msg += ". Note: " + " ".join(notes)
    raise DatasetNotFoundError(msg)

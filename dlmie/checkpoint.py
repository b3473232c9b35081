"""One checkpoint format for every model: a .npz of named arrays plus a JSON `meta` record.

Weights, optimizer state and anything a model needs to rebuild itself (its configuration, class
names, preprocessing constants, a vocabulary) travel in one file. Writes are atomic: the file
is written next to its destination and renamed into place, so an interrupted save never leaves
a truncated checkpoint behind, and the previous one stays valid until the new one is complete.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

META_KEY = "__meta__"


def save(path, arrays: dict, meta: dict, compress: bool = False) -> Path:
    """Write arrays and meta to `path` atomically.

    Inputs:
    - path: destination file; ".npz" is appended if missing, parent folders are created
    - arrays: name -> NumPy array (any dtype and shape)
    - meta: JSON-serializable dict
    - compress: zip-deflate the arrays (smaller, slower)
    Returns:
    - the path written
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if META_KEY in arrays:
        raise ValueError(f"array name {META_KEY!r} is reserved for the checkpoint's meta record")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path) -> tuple[dict, dict]:
    """Read a checkpoint written by `save`.

    Returns:
    - arrays: name -> NumPy array
    - meta: the JSON record
    Raises a ValueError naming the file when it is not such a checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # else NumPy reads it as a pickle and talks of unsafe loading
        raise ValueError(f"{path} is not a dlmie checkpoint (not an .npz archive); checkpoints come from "
                         "the training commands (train_classifier --export, train_captioner) or dlmie/models/weights/")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as err:  # zipfile.BadZipFile, OSError, ValueError: all mean "not a checkpoint"
        raise ValueError(f"{path} is not a readable dlmie checkpoint (.npz): {err}") from err
    if META_KEY not in arrays:
        raise ValueError(f"{path} is an .npz file but not a dlmie checkpoint (no {META_KEY!r} record)")
    meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    return arrays, meta

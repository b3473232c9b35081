"""Image feature files, as written by `python -m dlmie.extract_features` and read by the captioners.

An HDF5 file with
- ``features``: (N, L, D) grids (region l is row l // W, column l % W of an H x W grid) or (N, D) vectors
- ``images``: (N,) UTF-8 file names, relative to the image folder
- ``skipped``: (M,) file names that could not be read as images
- attributes ``encoder``, ``layer``, ``source`` (the image folder), ``grid`` ((H, W), for grids)
  and ``complete`` (1 once every image is in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Features:
    """A feature file in memory.

    - features: (N, L, D) or (N, D) float32
    - names: the N image file names, row i of features belongs to names[i]
    - encoder, layer: what produced them; grid: (H, W) of a grid layer, else None
    - skipped: names of the images that could not be read
    """

    features: np.ndarray
    names: list
    encoder: str
    layer: str
    grid: tuple | None
    skipped: list

    def rows(self, names) -> np.ndarray:
        """The features of the given image names, in that order; a KeyError lists the absent ones."""
        index = {name: i for i, name in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise KeyError(f"{len(missing)} images have no features, e.g. {missing[:3]}")
        return self.features[[index[n] for n in names]]


def _strings(dataset) -> list:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in dataset[:]]


def read_features(path) -> Features:
    """Load a complete feature file; a ValueError says what is wrong with any other file."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 feature file ({err})") from err
    with f:
        missing = [k for k in ("features", "images") if k not in f] + [a for a in ("encoder", "layer") if a not in f.attrs]
        if missing:
            raise ValueError(f"{path} is not a dlmie feature file (no {', '.join(missing)}); "
                             "write one with python -m dlmie.extract_features")
        if not f.attrs.get("complete", 0):
            raise ValueError(f"{path} is incomplete; rerun the python -m dlmie.extract_features command that wrote it")
        grid = tuple(int(v) for v in f.attrs["grid"]) if "grid" in f.attrs else None
        skipped = _strings(f["skipped"]) if "skipped" in f else []
        return Features(np.asarray(f["features"], np.float32), _strings(f["images"]), str(f.attrs["encoder"]),
                        str(f.attrs["layer"]), grid, skipped)

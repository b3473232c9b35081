"""Image feature files: extracting them from a folder of images with an encoder, and reading them.

`extract` writes what `python -m dlmie.extract_features` and the captioners' training use;
`encode_files` encodes a list of image files batch by batch for callers that keep the features in
memory (evaluation, captioning single images).

An HDF5 file with
- ``features``: (N, L, D) grids (region l is row l // W, column l % W of an H x W grid) or (N, D) vectors
- ``images``: (N,) UTF-8 file names, relative to the image folder
- ``skipped``: (M,) file names that could not be read as images
- attributes ``encoder``, ``layer``, ``source`` (the image folder), ``grid`` ((H, W), for grids)
  and ``complete`` (1 once every image is in).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dlmie.data import dataset_path, flickr8k
from dlmie.images import load_image


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


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Image folders inside the data sets that hold images (data set name -> subfolder of its path).
IMAGE_SETS = {"flickr8k": flickr8k.IMAGE_DIR, "coco2014-val-images": "."}


@dataclass
class Extraction:
    """What a run did: images encoded now, images already in the file (resumed), images skipped."""

    out: Path
    encoded: int
    resumed: int
    skipped: list


def image_folder(data: str) -> Path:
    """A data set name from IMAGE_SETS or a folder path -> the folder holding the images."""
    if data in IMAGE_SETS:
        return dataset_path(data) / IMAGE_SETS[data]
    folder = Path(data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {data!r} is neither a folder nor one of the data sets {', '.join(IMAGE_SETS)}")
    return folder


def image_files(folder: Path) -> list[str]:
    """Names (relative to folder, sorted) of the files in it whose suffix says image."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise ValueError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return names


def encode_files(net, layer: str, folder: Path, names: list, batch_size: int = 16, progress: bool = True):
    """Encode image files in batches, skipping (with a warning) those that cannot be read.

    Inputs:
    - net: a dlmie Network; layer: one of its layer names
    - folder: the folder holding the files; names: file names relative to it
    Yields, per batch: (encoded names, their features (B, ...) float32, skipped names).
    """
    bar = tqdm(total=len(names), desc=f"{net.name} {layer}", unit="img", disable=not progress)
    for start in range(0, len(names), batch_size):
        images, kept, skipped = [], [], []
        for name in names[start : start + batch_size]:
            try:
                images.append(load_image(folder / name, size=net.input_size))
                kept.append(name)
            except (ValueError, OSError) as err:
                tqdm.write(f"warning: skipping {name}: {err}", file=sys.stderr)
                skipped.append(name)
        feats = net.features(np.stack(images), layer, batch_size=len(kept)) if kept else None
        bar.update(len(names[start : start + batch_size]))
        yield kept, feats, skipped
    bar.close()


def _open_part(part: Path, attrs: dict):
    """Open (resume) or create the partial file; returns the h5py.File."""
    import h5py

    if part.exists():
        try:
            f = h5py.File(part, "a")
        except OSError:
            print(f"warning: {part} is damaged (interrupted while writing?); starting it again", file=sys.stderr)
            part.unlink()
        else:
            differs = {k: (f.attrs.get(k), v) for k, v in attrs.items() if str(f.attrs.get(k)) != str(v)}
            if differs:
                f.close()
                raise ValueError(f"{part} is an interrupted run with other settings "
                                 f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in differs.items())}); "
                                 "delete it or rerun that command")
            if "features" in f:  # features are appended before names: a run stopped in between left extra rows
                f["features"].resize(len(f["images"]), axis=0)
            return f
    f = h5py.File(part, "w")
    f.attrs.update(attrs)
    f.attrs["complete"] = 0
    text = h5py.string_dtype("utf-8")
    f.create_dataset("images", (0,), dtype=text, maxshape=(None,))
    f.create_dataset("skipped", (0,), dtype=text, maxshape=(None,))
    return f


def _append(dataset, values):
    n = len(dataset)
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values


def extract(net, layer: str, folder, out, batch_size: int = 16, dtype: str = "float16",
            overwrite: bool = False, progress: bool = True) -> Extraction:
    """Encode every image of `folder` with `net` at `layer` into the feature file `out`.

    Inputs:
    - net: a dlmie Network (see dlmie.models.encoders); layer: one of net.layer_names
    - folder: the image folder; out: the .h5 file to write (refused if it exists, unless overwrite)
    - batch_size: images per forward pass; dtype: storage type of the features (float16 halves the file)
    Returns an Extraction; raises FileExistsError, ValueError for bad arguments.
    """
    folder, out = Path(folder), Path(out)
    net.layer_output(layer)  # a clear error for a wrong layer before anything is written
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    names = image_files(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    grid = net.grid_shape(layer)
    attrs = {"encoder": net.name, "layer": layer, "source": str(folder.resolve()), "dtype": dtype}
    f = _open_part(part, attrs)
    try:
        if grid is not None:
            f.attrs["grid"] = grid
        done = {s.decode() if isinstance(s, bytes) else s for s in [*f["images"][:], *f["skipped"][:]]}
        resumed = len(f["images"])
        todo = [n for n in names if n not in done]
        encoded = 0
        for kept, feats, skipped in encode_files(net, layer, folder, todo, batch_size, progress):
            if skipped:
                _append(f["skipped"], skipped)
            if kept:
                feats = feats.astype(dtype)
                if "features" not in f:
                    f.create_dataset("features", (0, *feats.shape[1:]), dtype=dtype,
                                     maxshape=(None, *feats.shape[1:]), chunks=(1, *feats.shape[1:]))
                _append(f["features"], feats)
                _append(f["images"], kept)
                encoded += len(kept)
            f.flush()
        if "features" not in f:
            raise ValueError(f"none of the {len(names)} image files in {folder} could be read")
        skipped = [s.decode() if isinstance(s, bytes) else s for s in f["skipped"][:]]
        f.attrs["complete"] = 1
    finally:
        f.close()
    os.replace(part, out)
    return Extraction(out, encoded, resumed, skipped)

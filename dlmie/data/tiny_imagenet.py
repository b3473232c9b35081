"""Tiny-ImageNet in cs231n's folder layout, as uint8 arrays.

Layout (of ``./get_datasets.sh tiny-imagenet-100-A`` or any folder like it)::

    wnids.txt                      one WordNet id per line: the classes, in label order
    words.txt                      wnid<TAB>names, for every WordNet id
    train/WNID/images/*.JPEG       (optional) training images of each class
    train/WNID/WNID_boxes.txt      (optional) file<TAB>x0<TAB>y0<TAB>x1<TAB>y1
    val/images/*.JPEG, val/val_annotations.txt   file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1

Decoding 50,000 JPEGs takes a while, so a split is cached as one .npz next to the data set
(``<root>/cache/<split>.npz``) the first time it is read; the cache is rebuilt when it is older
than the annotation files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dlmie import checkpoint


@dataclass
class Split:
    """One split of the data set.

    - images: (N, H, W, 3) uint8 RGB
    - labels: (N,) int64 in [0, num_classes)
    - boxes: (N, 4) int64 x0, y0, x1, y1 (inclusive pixel coordinates)
    - files: (N,) file names, relative to the data set's root
    - wnids: (C,) the class WordNet ids, label order
    - names: (C,) a short human name of each class (the first synonym in words.txt)
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    files: np.ndarray
    wnids: np.ndarray
    names: np.ndarray


def read_classes(root: Path) -> tuple[list[str], list[str]]:
    """The class ids of wnids.txt and the first name of each in words.txt."""
    root = Path(root)
    for required in ("wnids.txt", "words.txt"):
        if not (root / required).exists():
            raise FileNotFoundError(
                f"{root / required} is missing: {root} is not a Tiny-ImageNet folder "
                "(expected wnids.txt, words.txt, train/ and val/)"
            )
    wnids = [line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip()]
    # words.txt names all 82k ImageNet classes, "wnid<TAB>name, other name, ...": one pattern finds
    # the lines of ours, in half the time of splitting every line.
    pattern = re.compile(r"^(%s)\t([^,\n]*)" % "|".join(map(re.escape, wnids)), re.MULTILINE)
    words = {match[1]: match[2].strip() for match in pattern.finditer((root / "words.txt").read_text())}
    return wnids, [words.get(w, w) for w in wnids]


def _annotations(root: Path, split: str, wnids: list[str]) -> list[tuple[str, int, tuple]]:
    """(file relative to root, label, box) for every image of the split, in a fixed order."""
    label = {w: i for i, w in enumerate(wnids)}
    entries = []
    if split == "val":
        path = root / "val" / "val_annotations.txt"
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 6 or fields[1] not in label:
                raise ValueError(f"{path}:{number}: expected 'file wnid x0 y0 x1 y1' with a wnid of wnids.txt, got {line!r}")
            entries.append((f"val/images/{fields[0]}", label[fields[1]], tuple(map(int, fields[2:]))))
    elif split == "train":
        for wnid in wnids:
            path = root / "train" / wnid / f"{wnid}_boxes.txt"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: the train split of {root} is incomplete")
            for line in path.read_text().splitlines():
                fields = line.split()
                if fields:
                    entries.append((f"train/{wnid}/images/{fields[0]}", label[wnid], tuple(map(int, fields[1:5]))))
    else:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return entries


def load_split(root, split: str, cache: bool = True) -> Split:
    """Read a split as arrays, decoding the JPEGs once and caching them (see the module docstring).

    Inputs:
    - root: the data set folder, e.g. dlmie.data.dataset_path("tiny-imagenet-100-A")
    - split: "train" or "val"
    - cache: read and write ``<root>/cache/<split>.npz``
    Returns a `Split`.
    """
    from dlmie.images import load_image  # images imports PIL only; kept local to keep this module's imports light

    root = Path(root)
    wnids, names = read_classes(root)
    cache_file = root / "cache" / f"{split}.npz"
    source = root / ("val/val_annotations.txt" if split == "val" else "wnids.txt")
    if cache and cache_file.exists() and cache_file.stat().st_mtime >= source.stat().st_mtime:
        arrays, meta = checkpoint.load(cache_file)
        if meta.get("wnids") == wnids:
            return Split(arrays["images"], arrays["labels"], arrays["boxes"], arrays["files"],
                         np.array(wnids), np.array(names))
    entries = _annotations(root, split, wnids)
    images = np.empty((len(entries), 64, 64, 3), np.uint8)
    for i, (file, _, _) in enumerate(tqdm(entries, desc=f"decoding Tiny-ImageNet {split}", unit="img")):
        images[i] = load_image(root / file, size=64)
    split_data = Split(
        images,
        np.array([e[1] for e in entries], np.int64),
        np.array([e[2] for e in entries], np.int64).reshape(-1, 4),
        np.array([e[0] for e in entries]),
        np.array(wnids),
        np.array(names),
    )
    if cache:
        checkpoint.save(cache_file, {"images": split_data.images, "labels": split_data.labels,
                                     "boxes": split_data.boxes, "files": split_data.files}, {"wnids": wnids})
    return split_data

"""One shape for every captioning data set: images, their captions, and their image features.

Flickr8k (`dlmie.data.flickr8k`) and COCO (`dlmie.data.coco`) both load into a `CaptionSplit`,
so building a vocabulary, encoding captions and pairing them with the feature files of
``python -m dlmie.extract_features`` work the same on both:

    split = flickr8k.load_split(root, "train")
    print(split.summary())                   # "train: 753 of 5,997 images present; ..."
    split, feats, missing = pair_features(split, read_features("flickr8k_mobilenet_v2.h5"))
    vocab = Vocabulary.build(split.tokens, min_count=2)
    captions = vocab.encode(split.tokens, max_length=16)   # row i describes feats[split.image_idxs[i]]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmie.data.vocab import tokenize


@dataclass
class CaptionSplit:
    """The captions of a set of images, flattened to one row per caption (cs231n's layout).

    - name: what the split is, e.g. "train" or "captions_val2014.json"
    - images: list of M image file names, relative to image_dir
    - image_ids: list of M ids the evaluation scripts know the images by (COCO's integer ids;
      the file names for Flickr8k)
    - image_idxs: (N,) int64, caption i describes images[image_idxs[i]]
    - captions: list of N str, the captions as written
    - tokens: list of N lists of str, tokenize(captions[i])
    - image_dir: Path of the folder holding the images (None if not known)
    - num_listed: how many images the source lists (with at least one caption)
    - num_present: how many of them are in image_dir (None if no folder was checked)
    """

    name: str
    images: list
    image_ids: list
    image_idxs: np.ndarray
    captions: list
    tokens: list
    image_dir: Path | None
    num_listed: int
    num_present: int | None

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def num_missing(self) -> int | None:
        """Listed images whose file is not in image_dir (None if no folder was checked)."""
        return None if self.num_present is None else self.num_listed - self.num_present

    def summary(self) -> str:
        """One line, e.g. "train: 753 of 5,997 images present; 753 images, 3,765 captions"."""
        present = "" if self.num_present is None else f"{self.num_present:,} of {self.num_listed:,} images present; "
        return f"{self.name}: {present}{len(self.images):,} images, {len(self.captions):,} captions"

    def references(self) -> list:
        """The captions of each image: a list of M lists of str, in image order (what caption metrics compare to)."""
        refs = [[] for _ in self.images]
        for i, caption in zip(self.image_idxs.tolist(), self.captions):
            refs[i].append(caption)
        return refs

    def subset(self, keep) -> "CaptionSplit":
        """The split restricted to some of its images.

        Inputs:
        - keep: (M,) bool, which images to keep
        Returns:
        - a CaptionSplit with those images and their captions, in the same order; image_idxs
          renumbered; name, image_dir and the listed/present counts unchanged
        """
        keep = np.asarray(keep, bool)
        new_index = np.cumsum(keep) - 1
        rows = np.flatnonzero(keep[self.image_idxs])
        return CaptionSplit(self.name, [n for n, k in zip(self.images, keep) if k],
                            [n for n, k in zip(self.image_ids, keep) if k], new_index[self.image_idxs[rows]],
                            [self.captions[r] for r in rows], [self.tokens[r] for r in rows],
                            self.image_dir, self.num_listed, self.num_present)


def make_split(name: str, images, captions: dict, image_dir, images_only: bool, image_ids=None) -> CaptionSplit:
    """Flatten per-image captions into a CaptionSplit, keeping only images on disk if asked.

    Inputs:
    - name: the split's name
    - images: list of M image file names, in the order wanted
    - captions: dict image file name -> list of str; every name of images must be in it
    - image_dir: the image folder (Path or str), or None
    - images_only: keep only the images whose file is in image_dir (needs image_dir)
    - image_ids: list of M ids (default: the names)
    Returns a CaptionSplit.
    """
    images = list(images)
    image_ids = list(images if image_ids is None else image_ids)
    uncaptioned = [n for n in images if not captions.get(n)]
    if uncaptioned:
        raise ValueError(f"{name}: {len(uncaptioned)} images have no captions, e.g. {uncaptioned[:3]}")
    image_idxs = np.repeat(np.arange(len(images)), np.array([len(captions[n]) for n in images], np.int64))
    raw = [c for n in images for c in captions[n]]
    split = CaptionSplit(name, images, image_ids, image_idxs, raw, [tokenize(c) for c in raw],
                         None if image_dir is None else Path(image_dir), len(images), None)
    if image_dir is None:
        if images_only:
            raise ValueError(f"{name}: images_only needs an image folder")
        return split
    if images_only and not split.image_dir.is_dir():
        raise FileNotFoundError(f"{name}: the image folder {split.image_dir} does not exist "
                                "(pass images_only=False to keep the captions without their images)")
    on_disk = set(p.name for p in split.image_dir.iterdir()) if split.image_dir.is_dir() else set()
    present = np.array([n in on_disk for n in images], bool)
    split.num_present = int(present.sum())
    return split.subset(present) if images_only else split


def pair_features(split: CaptionSplit, features, warn: bool = True):
    """Line up a split's images with the rows of a feature file, leaving out images without features.

    Features are kept once per image, not once per caption (five copies of a 7x7x1280 grid per
    Flickr8k image would take five times the memory): the features of caption i are
    ``feats[split.image_idxs[i]]`` of the returned split.

    Inputs:
    - split: a CaptionSplit
    - features: a dlmie.data.features.Features (read_features of an extract_features file),
      whose names are file names relative to the same image folder
    - warn: warn (warnings.warn) when some images have no features
    Returns a tuple of
    - split: the CaptionSplit restricted to the images that have features (see CaptionSplit.subset)
    - feats: (M', ...) float32, row j the features of split.images[j]: (M', L, D) grids or (M', D) vectors
    - missing: list of the image names left out for lack of features (empty if none)
    """
    index = {name: i for i, name in enumerate(features.names)}
    has = np.array([n in index for n in split.images], bool)
    missing = [n for n, h in zip(split.images, has) if not h]
    if missing and warn:
        dropped = int((~has[split.image_idxs]).sum())
        warnings.warn(f"{split.name}: {len(missing):,} of {len(split.images):,} images ({dropped:,} captions) have "
                      f"no features (e.g. {missing[0]}) and are left out; were the features extracted from "
                      f"{split.image_dir}?", stacklevel=2)
    kept = split.subset(has)
    return kept, features.features[[index[n] for n in kept.images]], missing

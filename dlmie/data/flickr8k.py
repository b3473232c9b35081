"""Flickr8k: 8,091 Flickr photos with five captions each, and the official train/dev/test lists.

Layout (of ``./get_datasets.sh flickr8k``, i.e. its two zips unpacked into one folder)::

    Flicker8k_Dataset/*.jpg          the images (upstream's spelling of the folder)
    Flickr8k.token.txt               name.jpg#k<TAB>caption, k = 0..4, CRLF line ends
    Flickr_8k.trainImages.txt        one image name per line: 6,000 upstream (5,997 in the course mirror)
    Flickr_8k.devImages.txt          1,000
    Flickr_8k.testImages.txt         1,000

The text files mix line ends (CRLF and LF); both are read. An image may be missing from
``Flicker8k_Dataset/`` (the course mirror holds 875 of the 8,091), so `load_split` reports how
many listed images are present and by default keeps only those.
"""

from __future__ import annotations

import re
from pathlib import Path

from dlmie.data import dataset_path
from dlmie.data.captions import CaptionSplit, make_split

IMAGE_DIR = "Flicker8k_Dataset"
TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}
_KEY = re.compile(r"(.+)#(\d+)")  # name.jpg#k
MAX_REPORTED = 10  # malformed lines quoted in an error; the rest are counted


def _lines(path: Path) -> list[str]:
    # newline=None translates CRLF, CR and LF alike; str.splitlines would also split inside a
    # caption at characters such as U+2028. utf-8-sig drops a byte-order mark if an editor added one.
    with open(path, encoding="utf-8-sig", newline=None) as f:
        return f.read().split("\n")


def read_token_file(path) -> dict[str, list[str]]:
    """Read Flickr8k.token.txt.

    Inputs:
    - path: the token file; lines ``name.jpg#k<TAB>caption`` with CRLF or LF line ends; blank
      lines are ignored
    Returns:
    - dict image file name -> list of its captions (str, as written, surrounding spaces
      removed), in file order
    Raises:
    - ValueError listing the line numbers (1-based) of malformed lines: no tab, a name without
      "#k", or an empty caption (the first MAX_REPORTED are quoted, the rest counted)
    """
    path = Path(path)
    captions: dict[str, list[str]] = {}
    bad = []
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        match = _KEY.fullmatch(key.strip())
        problem = ("no tab between name and caption" if not tab else
                   "the name does not end in #k (k a number)" if not match else
                   "empty caption" if not caption.strip() else None)
        if problem:
            bad.append(f"line {number}: {problem}: {line[:80]!r}")
            continue
        captions.setdefault(match.group(1), []).append(caption.strip())
    if bad:
        more = f"\n  ... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
        raise ValueError(f"{path}: {len(bad)} malformed lines (expected 'name.jpg#k<TAB>caption'):\n  "
                         + "\n  ".join(bad[:MAX_REPORTED]) + more)
    return captions


def read_image_list(path) -> list[str]:
    """Read a split list such as Flickr_8k.trainImages.txt.

    Inputs:
    - path: one image file name per line; CRLF or LF line ends; blank lines are ignored
    Returns:
    - list of str, the names in file order
    """
    return [line.strip() for line in _lines(Path(path)) if line.strip()]


def load_split(root=None, split: str = "train", images_only: bool = True) -> CaptionSplit:
    """One official split of Flickr8k, one row per caption.

    Inputs:
    - root: the data set folder (default: dlmie.data.dataset_path("flickr8k"))
    - split: "train", "dev" or "test"
    - images_only: keep only the listed images whose file is in Flicker8k_Dataset/ (the course
      mirror lacks most); with False every listed image is kept, present or not
    Returns:
    - a CaptionSplit (see dlmie.data.captions) named after the split: images in list order,
      five captions each; num_listed / num_present count the listed images and those on disk,
      whatever images_only, so ``print(s.summary())`` tells how much of the split is usable
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_FILES)}, got {split!r}")
    root = dataset_path("flickr8k") if root is None else Path(root)
    for required in (TOKEN_FILE, SPLIT_FILES[split]):
        if not (root / required).exists():
            raise FileNotFoundError(f"{root / required} is missing: {root} is not a Flickr8k folder "
                                    f"(fetch one with ./get_datasets.sh flickr8k)")
    captions = read_token_file(root / TOKEN_FILE)
    images = read_image_list(root / SPLIT_FILES[split])
    return make_split(split, images, captions, root / IMAGE_DIR, images_only)

"""COCO captions, in the two forms the course meets them.

1. cs231n's ``coco_captioning`` folder (``./get_datasets.sh coco-captioning``): captions already
   encoded and VGG-16 fc7 features already extracted, the data the original assignments trained on::

       coco2014_captions.h5            train_captions (N, 17) int32, train_image_idxs (N,) int32,
                                       val_captions, val_image_idxs (the same for val)
       train2014_vgg16_fc7.h5          features (82783, 4096) float32   } ``_pca``: the same reduced
       val2014_vgg16_fc7.h5            features (40504, 4096) float32   } to 512 dimensions by PCA
       train2014_vgg16_fc7_pca.h5, val2014_vgg16_fc7_pca.h5
       coco2014_vocab.json             idx_to_word, word_to_idx (1004 words)
       train2014_urls.txt, val2014_urls.txt   one image URL per line, row i of the features

2. COCO 2014 caption annotations (``captions_train2014.json``, ``captions_val2014.json`` of
   ``./get_datasets.sh coco2014-captions``, or the course's 5,000-image subset), read with
   pycocotools into a `CaptionSplit`, so that anyone with the COCO images can extract features
   with ``python -m dlmie.extract_features`` and train on them like on Flickr8k.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from dlmie.data import DatasetNotFoundError, dataset_path
from dlmie.data.captions import CaptionSplit, make_split
from dlmie.data.vocab import Vocabulary

CAPTIONS_H5 = "coco2014_captions.h5"
VOCAB_JSON = "coco2014_vocab.json"
CAPTION_KEYS = ("train_captions", "train_image_idxs", "val_captions", "val_image_idxs")


def _coco_captioning_files(root: Path, pca_features: bool) -> dict[str, Path]:
    """The files load_coco_captioning reads, by role; a DatasetNotFoundError names the missing ones."""
    suffix = "_pca" if pca_features else ""
    files = {"captions": root / CAPTIONS_H5, "vocab": root / VOCAB_JSON}
    for split in ("train", "val"):
        files[f"{split}_features"] = root / f"{split}2014_vgg16_fc7{suffix}.h5"
        files[f"{split}_urls"] = root / f"{split}2014_urls.txt"
    missing = [p.name for p in files.values() if not p.exists()]
    if missing:
        raise DatasetNotFoundError(f"{root} is not a complete cs231n coco_captioning folder: {', '.join(missing)} "
                                   f"missing. Fetch it with: ./get_datasets.sh coco-captioning")
    return files


def _check_range(name: str, values: np.ndarray, limit: int, of: str) -> None:
    # Files from different downloads (e.g. fc7 features with the PCA captions' indices) do not mix.
    if values.size and (values.min() < 0 or values.max() >= limit):
        raise ValueError(f"{name} holds values {values.min()}..{values.max()}, outside [0, {limit}) of {of}; "
                         "are the files of the coco_captioning folder from one download?")


def load_coco_captioning(root=None, pca_features: bool = True, max_train: int | None = None, seed: int = 0) -> dict:
    """cs231n's COCO captioning data, as its load_coco_data returned it.

    Inputs:
    - root: the coco_captioning folder (default: dlmie.data.dataset_path("coco-captioning"))
    - pca_features: read the 512-dimensional PCA features (else the 4096-dimensional fc7)
    - max_train: keep only this many training captions, drawn at random without replacement
      (cs231n drew with replacement from NumPy's global generator); None keeps all
    - seed: seeds that draw
    Returns a dict with
    - train_captions: (N, T) int32 word indices (T = 17: <START>, at most 15 words, <END>, <NULL>s)
    - train_image_idxs: (N,) int32, caption i describes train_features[train_image_idxs[i]]
    - val_captions, val_image_idxs: the same for val
    - train_features, val_features: (M, D) float32, D = 512 with pca_features, else 4096
    - train_urls, val_urls: (M,) str, the Flickr URL of each feature row's image
    - idx_to_word: list of str, word_to_idx: dict str -> int (cs231n's vocabulary)
    - vocab: the same vocabulary as a dlmie.data.vocab.Vocabulary
    """
    import h5py

    root = dataset_path("coco-captioning") if root is None else Path(root)
    files = _coco_captioning_files(root, pca_features)
    data = {}
    with h5py.File(files["captions"], "r") as f:
        absent = [k for k in CAPTION_KEYS if k not in f]
        if absent:
            raise ValueError(f"{files['captions']} lacks {', '.join(absent)}; it is not cs231n's {CAPTIONS_H5}")
        data.update({k: np.asarray(f[k]) for k in CAPTION_KEYS})
    vocab = Vocabulary.from_cs231n_json(files["vocab"])
    data.update(vocab.to_dict(), vocab=vocab)
    for split in ("train", "val"):
        with h5py.File(files[f"{split}_features"], "r") as f:
            data[f"{split}_features"] = np.asarray(f["features"])
        urls = files[f"{split}_urls"].read_text(encoding="utf-8").split()
        data[f"{split}_urls"] = np.asarray(urls)
        rows = len(data[f"{split}_features"])
        if len(urls) != rows:
            raise ValueError(f"{files[f'{split}_urls']} lists {len(urls)} URLs for {rows} feature rows")
        _check_range(f"{split}_image_idxs", data[f"{split}_image_idxs"], rows, files[f"{split}_features"].name)
        _check_range(f"{split}_captions", data[f"{split}_captions"], len(vocab), VOCAB_JSON)
    num_train = len(data["train_captions"])
    if max_train is not None and max_train < num_train:
        keep = np.random.default_rng(seed).choice(num_train, size=max_train, replace=False)
        data["train_captions"] = data["train_captions"][keep]
        data["train_image_idxs"] = data["train_image_idxs"][keep]
    return data


def load_coco_captions(json_path, image_dir=None, images_only: bool = False) -> CaptionSplit:
    """COCO caption annotations (captions_*.json), read with pycocotools.

    Inputs:
    - json_path: a COCO captions file, e.g. dataset_path("coco2014-val-captions-5k") or
      dataset_path("coco2014-captions") / "captions_val2014.json"
    - image_dir: the folder of the images (e.g. dataset_path("coco2014-val-images")), or None;
      given, the images found in it are counted (num_present)
    - images_only: keep only the images found in image_dir
    Returns:
    - a CaptionSplit named after the file: the images with at least one caption, by ascending
      COCO id; images are the file names (e.g. "COCO_val2014_000000000139.jpg"), image_ids the
      integer COCO ids (what pycocoevalcap scores by); each image's captions in file order
    """
    from pycocotools.coco import COCO

    json_path = Path(json_path)
    if not json_path.exists():
        raise FileNotFoundError(f"{json_path} does not exist; fetch COCO's captions with ./get_datasets.sh "
                                "coco2014-captions (or coco2014-val-captions-5k for the course's subset)")
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress lines
        coco = COCO(str(json_path))
    anns = coco.dataset.get("annotations", [])
    if not anns or "caption" not in anns[0]:
        raise ValueError(f"{json_path} holds no captions (is it an instances_ or person_keypoints_ file? "
                         "use a captions_*.json)")
    ids = sorted(i for i in coco.imgs if coco.imgToAnns[i])
    names = [coco.imgs[i]["file_name"] for i in ids]
    captions = {coco.imgs[i]["file_name"]: [a["caption"].strip() for a in coco.imgToAnns[i]] for i in ids}
    return make_split(json_path.name, names, captions, image_dir, images_only, image_ids=ids)

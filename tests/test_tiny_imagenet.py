"""Tiny-ImageNet reader on a small folder written in the real layout."""

import numpy as np
import pytest
from PIL import Image

from dlmie.data.tiny_imagenet import load_split, read_classes


def make_fake_tiny_imagenet(root, classes=("n01", "n02"), per_class=3, val=4):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(classes) + "\n")
    (root / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tbullfrog\n")
    for wnid in classes:
        (root / "train" / wnid / "images").mkdir(parents=True)
        lines = []
        for k in range(per_class):
            name = f"{wnid}_{k}.JPEG"
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / "train" / wnid / "images" / name)
            lines.append(f"{name}\t{k}\t1\t60\t{50 + k}")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(lines) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for k in range(val):
        name = f"val_{k}.JPEG"
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(root / "val" / "images" / name)  # grayscale
        lines.append(f"{name}\t{classes[k % len(classes)]}\t{k}\t2\t40\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_read_splits_and_cache(tmp_path):
    root = make_fake_tiny_imagenet(tmp_path / "tiny")
    assert read_classes(root) == (["n01", "n02"], ["goldfish", "bullfrog"])
    train = load_split(root, "train")
    assert train.images.shape == (6, 64, 64, 3) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.boxes[1].tolist() == [1, 1, 60, 51]
    assert train.files[0] == "train/n01/images/n01_0.JPEG"
    val = load_split(root, "val")
    assert val.labels.tolist() == [0, 1, 0, 1] and val.boxes[3].tolist() == [3, 2, 40, 63]
    assert (root / "cache" / "val.npz").exists()
    again = load_split(root, "val")  # from the cache
    assert np.array_equal(again.images, val.images) and again.names.tolist() == ["goldfish", "bullfrog"]


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Tiny-ImageNet folder"):
        load_split(tmp_path, "val")
    root = make_fake_tiny_imagenet(tmp_path / "tiny")
    with pytest.raises(ValueError, match="split must be"):
        load_split(root, "test")
    with open(root / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn99\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="val_annotations.txt:5"):
        load_split(root, "val", cache=False)

"""Captioning data: vocabulary, Flickr8k, cs231n's coco_captioning, COCO json, feature pairing."""

import json

import h5py
import numpy as np
import pytest

from dlmie.data import DatasetNotFoundError, data_root, is_present
from dlmie.data.captions import pair_features
from dlmie.data.coco import load_coco_captioning, load_coco_captions
from dlmie.data.features import Features
from dlmie.data.flickr8k import load_split, read_image_list, read_token_file
from dlmie.data.vocab import Vocabulary, tokenize

CAPTIONS = ["A dog runs on the grass .", "A black dog 's T-shirt , don't !", "two dogs", "a dog"]


# ---------------------------------------------------------------- vocabulary

def test_tokenize():
    assert tokenize("A Dog 's T-shirt , don't o'clock \u2018quoted\u2019 café 4-wheeler !") == [
        "a", "dog", "s", "t", "shirt", "don't", "o'clock", "quoted", "café", "4", "wheeler"]
    assert tokenize(" . , ") == []


def test_vocabulary_build_order_and_min_count():
    tokens = [tokenize(c) for c in CAPTIONS]
    vocab = Vocabulary.build(tokens, min_count=1)
    assert vocab.idx_to_word[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    # "a" and "dog" 3 times; then by count and alphabet
    assert vocab.idx_to_word[4:7] == ["a", "dog", "black"]
    assert len(vocab) == 4 + len({w for t in tokens for w in t})
    assert Vocabulary.build(reversed(tokens), min_count=1) == vocab  # order of captions does not matter
    small = Vocabulary.build(tokens, min_count=2)
    assert small.idx_to_word == ["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog"]
    assert small.decode(small.encode([tokenize("a black dog")], 5)[0]) == "a <UNK> dog"
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(tokens, min_count=0)


def test_vocabulary_round_trip():
    tokens = [tokenize(c) for c in CAPTIONS]
    vocab = Vocabulary.build(tokens)
    captions = vocab.encode(tokens, max_length=8)
    assert captions.shape == (4, 10) and captions.dtype == np.int32
    assert captions[2].tolist() == [1, vocab.word_to_idx["two"], vocab.word_to_idx["dogs"], 2, 0, 0, 0, 0, 0, 0]
    assert vocab.decode(captions) == [" ".join(t) for t in tokens]
    assert vocab.decode(captions[0]) == "a dog runs on the grass"
    assert vocab.decode([1, 4, 0, 5, 2, 6]) == "a dog"  # <NULL> skipped, stops at <END>
    again = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again == vocab and again.word_to_idx == vocab.word_to_idx


def test_max_length_truncates():
    vocab = Vocabulary.build([tokenize(CAPTIONS[0])])
    captions = vocab.encode([tokenize(CAPTIONS[0])], max_length=3)
    assert captions.shape == (1, 5)
    assert captions[0, -1] == 2 and vocab.decode(captions) == ["a dog runs"]
    with pytest.raises(ValueError, match="max_length"):
        vocab.encode([["a"]], max_length=0)


def test_vocabulary_errors(tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary(["<START>", "<NULL>", "<END>", "<UNK>", "a"])
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary(["<NULL>", "<START>", "<END>", "<UNK>", "a", "a"])
    with pytest.raises(ValueError, match="does not match"):
        Vocabulary.from_dict({"idx_to_word": ["<NULL>", "<START>", "<END>", "<UNK>", "a"], "word_to_idx": {"a": 5}})
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        Vocabulary(["<NULL>", "<START>", "<END>", "<UNK>", "a"]).decode([1, 9])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a vocabulary file"):
        Vocabulary.from_cs231n_json(tmp_path / "bad.json")


def test_cs231n_vocabulary_file():
    path = data_root() / "coco2014_vocab.json"
    if not path.exists():
        pytest.skip("coco2014_vocab.json not fetched (./get_datasets.sh coco2014-vocab)")
    vocab = Vocabulary.from_cs231n_json(path)
    raw = json.loads(path.read_text())
    assert len(vocab) == len(raw["idx_to_word"]) and vocab.to_dict() == raw
    assert [vocab.word_to_idx[w] for w in ("<NULL>", "<START>", "<END>", "<UNK>")] == [0, 1, 2, 3]


# ---------------------------------------------------------------- Flickr8k

def write_fake_flickr8k(root, present=("a.jpg", "b.jpg", "d.jpg")):
    """Five images a..e, each with two captions; train a, b, c; dev d, e; test e. Only `present` on disk."""
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    for name in present:
        (root / "Flicker8k_Dataset" / name).write_bytes(b"jpeg")
    lines = [f"{n}.jpg#{k}\tA {n} caption number {k} ." for n in "abcde" for k in range(2)]
    (root / "Flickr8k.token.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (root / "Flickr_8k.trainImages.txt").write_bytes(b"a.jpg\r\nb.jpg\nc.jpg\r\n\r\n")  # mixed ends, blank line
    (root / "Flickr_8k.devImages.txt").write_bytes(b"d.jpg\ne.jpg")
    (root / "Flickr_8k.testImages.txt").write_bytes(b"e.jpg\n")
    return root


def test_token_file_line_ends(tmp_path):
    (tmp_path / "crlf.txt").write_bytes(b"x.jpg#0\tA dog .\r\nx.jpg#1\t  Two dogs  \r\ny.jpg#0\tA cat\r\n")
    (tmp_path / "lf.txt").write_bytes(b"x.jpg#0\tA dog .\nx.jpg#1\t  Two dogs  \n\ny.jpg#0\tA cat")
    expected = {"x.jpg": ["A dog .", "Two dogs"], "y.jpg": ["A cat"]}
    assert read_token_file(tmp_path / "crlf.txt") == expected
    assert read_token_file(tmp_path / "lf.txt") == expected


def test_token_file_malformed_lines(tmp_path):
    path = tmp_path / "token.txt"
    path.write_bytes(b"x.jpg#0\tfine\r\nx.jpg#1 no tab\r\nx.jpg\tno number\r\nx.jpg#2\t  \r\nx.jpg#3\tfine\r\n")
    with pytest.raises(ValueError) as err:
        read_token_file(path)
    message = str(err.value)
    assert "3 malformed lines" in message
    assert "line 2: no tab" in message and "line 3: the name does not end in #k" in message
    assert "line 4: empty caption" in message and "line 1:" not in message and "line 5:" not in message
    path.write_text("".join(f"bad line {i}\n" for i in range(25)))
    with pytest.raises(ValueError, match=r"25 malformed lines(.|\n)*line 10:(.|\n)*and 15 more") as err:
        read_token_file(path)
    assert "line 11:" not in str(err.value)


def test_image_list_line_ends(tmp_path):
    (tmp_path / "list.txt").write_bytes(b"a.jpg\r\nb.jpg\n\r\n  c.jpg  \nd.jpg")
    assert read_image_list(tmp_path / "list.txt") == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]


def test_flickr8k_split_with_missing_images(tmp_path):
    root = write_fake_flickr8k(tmp_path / "flickr8k")
    train = load_split(root, "train")
    assert (train.num_listed, train.num_present, train.num_missing) == (3, 2, 1)
    assert train.summary() == "train: 2 of 3 images present; 2 images, 4 captions"
    assert train.images == ["a.jpg", "b.jpg"] and train.image_idxs.tolist() == [0, 0, 1, 1]
    assert train.captions[2] == "A b caption number 0 ." and train.tokens[2] == ["a", "b", "caption", "number", "0"]
    assert train.image_dir == root / "Flicker8k_Dataset"
    assert train.references() == [["A a caption number 0 .", "A a caption number 1 ."],
                                  ["A b caption number 0 .", "A b caption number 1 ."]]
    every = load_split(root, "train", images_only=False)
    assert every.images == ["a.jpg", "b.jpg", "c.jpg"] and len(every) == 6 and every.num_present == 2
    dev, test = load_split(root, "dev"), load_split(root, "test")
    assert dev.images == ["d.jpg"] and (dev.num_listed, dev.num_present) == (2, 1)
    assert test.images == [] and len(test) == 0 and test.num_missing == 1
    with pytest.raises(ValueError, match="split must be"):
        load_split(root, "val")
    (root / "Flickr_8k.testImages.txt").write_text("e.jpg\nz.jpg\n")
    with pytest.raises(ValueError, match=r"1 images have no captions, e.g. \['z.jpg'\]"):
        load_split(root, "test")
    (root / "Flickr8k.token.txt").unlink()
    with pytest.raises(FileNotFoundError, match="get_datasets.sh flickr8k"):
        load_split(root, "train")


def test_flickr8k_real_mirror():
    if not is_present("flickr8k"):
        pytest.skip("Flickr8k not fetched (./get_datasets.sh flickr8k)")
    root = data_root() / "flickr8k"
    on_disk = {p.name for p in (root / "Flicker8k_Dataset").iterdir()}
    for split, list_file in (("train", "trainImages"), ("dev", "devImages"), ("test", "testImages")):
        listed = (root / f"Flickr_8k.{list_file}.txt").read_bytes().decode().split()
        present = [n for n in listed if n in on_disk]
        s = load_split(root, split)
        assert (s.num_listed, s.num_present) == (len(listed), len(present))
        assert s.images == present and len(s) == 5 * len(present)
    # the token file counted independently: every line one caption
    lines = (root / "Flickr8k.token.txt").read_bytes().splitlines()
    assert sum(map(len, read_token_file(root / "Flickr8k.token.txt").values())) == len(lines)


# ---------------------------------------------------------------- cs231n coco_captioning

def write_fake_coco_captioning(root, pca=True):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    words = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "cat"]
    (root / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": words,
                                                          "word_to_idx": {w: i for i, w in enumerate(words)}}))
    with h5py.File(root / "coco2014_captions.h5", "w") as f:
        f["train_captions"] = np.array([[1, 4, 5, 2, 0], [1, 4, 6, 2, 0], [1, 5, 2, 0, 0]] * 2, np.int32)
        f["train_image_idxs"] = np.array([0, 1, 2, 0, 1, 2], np.int32)
        f["val_captions"] = np.array([[1, 6, 2, 0, 0]], np.int32)
        f["val_image_idxs"] = np.array([1], np.int32)
    suffix = "_pca" if pca else ""
    for split, n in (("train", 3), ("val", 2)):
        with h5py.File(root / f"{split}2014_vgg16_fc7{suffix}.h5", "w") as f:
            f["features"] = rng.standard_normal((n, 8)).astype(np.float32)
        (root / f"{split}2014_urls.txt").write_text("".join(f"http://x/{split}_{i}.jpg\n" for i in range(n)))
    return root


def test_coco_captioning_layout(tmp_path):
    root = write_fake_coco_captioning(tmp_path / "coco_captioning")
    data = load_coco_captioning(root)
    assert set(data) == {"train_captions", "train_image_idxs", "val_captions", "val_image_idxs", "train_features",
                         "val_features", "idx_to_word", "word_to_idx", "train_urls", "val_urls", "vocab"}
    assert data["train_captions"].shape == (6, 5) and data["train_captions"].dtype == np.int32
    assert data["train_features"].shape == (3, 8) and data["val_features"].shape == (2, 8)
    assert data["val_urls"].tolist() == ["http://x/val_0.jpg", "http://x/val_1.jpg"]
    assert data["vocab"].decode(data["val_captions"]) == ["cat"] and data["word_to_idx"]["dog"] == 5
    sub = load_coco_captioning(root, max_train=4, seed=1)
    assert sub["train_captions"].shape == (4, 5)
    rows = {tuple(r) + (int(i),) for r, i in zip(data["train_captions"].tolist(), data["train_image_idxs"])}
    assert {tuple(r) + (int(i),) for r, i in zip(sub["train_captions"].tolist(), sub["train_image_idxs"])} <= rows
    assert np.array_equal(load_coco_captioning(root, max_train=4, seed=1)["train_captions"], sub["train_captions"])


def test_coco_captioning_errors(tmp_path):
    root = write_fake_coco_captioning(tmp_path / "coco_captioning")
    with pytest.raises(DatasetNotFoundError, match=r"train2014_vgg16_fc7.h5, val2014_vgg16_fc7.h5 missing(.|\n)*"
                                                   r"get_datasets.sh coco-captioning"):
        load_coco_captioning(root, pca_features=False)
    with h5py.File(root / "coco2014_captions.h5", "a") as f:
        f["val_image_idxs"][0] = 7
    with pytest.raises(ValueError, match=r"val_image_idxs holds values 7..7, outside \[0, 2\)"):
        load_coco_captioning(root)


# ---------------------------------------------------------------- COCO json (pycocotools)

def test_coco_captions_tiny_json(tmp_path, capsys):
    path = tmp_path / "captions_tiny2014.json"
    path.write_text(json.dumps({
        "images": [{"id": 9, "file_name": "COCO_9.jpg"}, {"id": 3, "file_name": "COCO_3.jpg"},
                   {"id": 5, "file_name": "COCO_5.jpg"}],  # 5 has no caption
        "annotations": [{"id": 1, "image_id": 9, "caption": "A Dog."}, {"id": 2, "image_id": 3, "caption": "a cat "},
                        {"id": 3, "image_id": 9, "caption": "two dogs"}]}))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "COCO_9.jpg").write_bytes(b"jpeg")
    split = load_coco_captions(path)
    assert capsys.readouterr().out == ""  # pycocotools' progress lines are silenced
    assert split.name == "captions_tiny2014.json" and split.image_ids == [3, 9]
    assert split.images == ["COCO_3.jpg", "COCO_9.jpg"] and split.image_idxs.tolist() == [0, 1, 1]
    assert split.references() == [["a cat"], ["A Dog.", "two dogs"]] and split.tokens[1] == ["a", "dog"]
    assert split.num_present is None and split.image_dir is None
    on_disk = load_coco_captions(path, image_dir=tmp_path / "images", images_only=True)
    assert on_disk.image_ids == [9] and (on_disk.num_listed, on_disk.num_present) == (2, 1) and len(on_disk) == 2
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg"}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match="holds no captions"):
        load_coco_captions(path)


def test_coco_captions_real_5k():
    path = data_root() / "coco2014_val_captions_5k.json"
    if not path.exists():
        pytest.skip("coco2014_val_captions_5k.json not fetched (./get_datasets.sh coco2014-val-captions-5k)")
    raw = json.loads(path.read_text())
    split = load_coco_captions(path)
    captioned = {a["image_id"] for a in raw["annotations"]}
    assert len(split) == len(raw["annotations"]) and split.num_listed == len(captioned)
    assert split.image_ids == sorted(captioned)
    first = split.image_ids[0]
    assert split.references()[0] == [a["caption"].strip() for a in raw["annotations"] if a["image_id"] == first]


# ---------------------------------------------------------------- features

def test_pair_features(tmp_path):
    root = write_fake_flickr8k(tmp_path / "flickr8k", present=("a.jpg", "b.jpg", "c.jpg"))
    split = load_split(root, "train")
    grid = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    features = Features(grid, ["c.jpg", "a.jpg"], "mobilenet_v2", "block_16", (2, 2), [])
    with pytest.warns(UserWarning, match=r"1 of 3 images \(2 captions\) have no features \(e.g. b.jpg\)"):
        kept, feats, missing = pair_features(split, features)
    assert missing == ["b.jpg"] and kept.images == ["a.jpg", "c.jpg"] and len(kept) == 4
    assert np.array_equal(feats, grid[[1, 0]])
    per_caption = feats[kept.image_idxs]  # what a minibatch gathers
    assert per_caption.shape == (4, 4, 3) and np.array_equal(per_caption[2], grid[0])
    assert all(c.startswith(f"A {kept.images[i][0]} ") for c, i in zip(kept.captions, kept.image_idxs))
    _, _, none_missing = pair_features(kept, features)
    assert none_missing == []

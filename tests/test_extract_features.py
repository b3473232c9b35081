"""Feature extraction over a folder: the h5 layout, unreadable images, resuming, refusing to overwrite."""

import h5py
import numpy as np
import pytest
from PIL import Image

import dlmie  # noqa: F401
import pytensor
from dlmie import extract_features
from dlmie.data.features import extract
from dlmie.data.features import read_features
from dlmie.images import Preprocessing
from dlmie.models import convnet
from dlmie.models.classifier import convnet_classifier

from test_convnet import random_params

SPEC = convnet.ConvNetSpec(conv=[(4, 3, 4, 1), (6, 3, 2, 1)], num_classes=2, input_size=32)


@pytest.fixture(scope="module")
def net():
    """A small conv net standing in for an encoder: conv2 is a 4 x 4 grid of 6 channels."""
    return convnet_classifier("small", SPEC, random_params(SPEC, seed=2), ["a", "b"], ["a", "b"],
                              Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k in range(7):
        size = (40 + 3 * k, 30 + 5 * k)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(images / f"img{k}.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(images / "gray.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (images / "notes.txt").write_text("not an image, and not named like one")
    return images


def test_extract_grid_features(net, folder, tmp_path, capsys):
    result = extract(net, "conv2", folder, tmp_path / "f.h5", batch_size=3, progress=False)
    assert result.skipped == ["broken.jpg"] and result.encoded == 8 and result.resumed == 0
    assert "skipping broken.jpg" in capsys.readouterr().err
    feats = read_features(tmp_path / "f.h5")
    assert feats.names == sorted(p.name for p in folder.iterdir() if p.suffix in (".jpg", ".png") and p.name != "broken.jpg")
    assert feats.features.shape == (8, 16, 6) and feats.grid == (4, 4)
    assert (feats.encoder, feats.layer, feats.skipped) == ("small", "conv2", ["broken.jpg"])
    # row-major regions: region l is grid cell (l // 4, l % 4) of the layer's (N, C, 4, 4) output
    from dlmie.images import load_image

    image = load_image(folder / "img3.jpg", size=32)[None]
    grid = pytensor.function([net.x], net.activations["conv2"])(net.preprocessing(image))[0]  # (6, 4, 4)
    row = feats.rows(["img3.jpg"])[0]
    assert np.allclose(row[1 * 4 + 2], grid[:, 1, 2], rtol=1e-2, atol=1e-2)  # float16 storage
    assert not (tmp_path / "f.h5.part").exists()


def test_vector_layer_and_float32(net, folder, tmp_path):
    extract(net, "scores", folder, tmp_path / "v.h5", dtype="float32", progress=False)
    feats = read_features(tmp_path / "v.h5")
    assert feats.features.shape == (8, 2) and feats.grid is None
    with pytest.raises(ValueError, match="no layer 'conv9'"):
        extract(net, "conv9", folder, tmp_path / "w.h5", progress=False)


def test_interrupted_run_resumes(net, folder, tmp_path, monkeypatch):
    full = extract(net, "conv2", folder, tmp_path / "full.h5", batch_size=2, progress=False)
    calls = {"n": 0}
    original = type(net).features

    def failing(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(net), "features", failing)
    with pytest.raises(KeyboardInterrupt):
        extract(net, "conv2", folder, tmp_path / "r.h5", batch_size=2, progress=False)
    assert (tmp_path / "r.h5.part").exists() and not (tmp_path / "r.h5").exists()
    with pytest.raises(ValueError, match="incomplete"):
        read_features(tmp_path / "r.h5.part")
    monkeypatch.setattr(type(net), "features", original)
    resumed = extract(net, "conv2", folder, tmp_path / "r.h5", batch_size=2, progress=False)
    assert resumed.resumed == 3 and resumed.encoded == 5 and resumed.skipped == ["broken.jpg"]
    a, b = read_features(tmp_path / "full.h5"), read_features(tmp_path / "r.h5")
    assert a.names == b.names and np.array_equal(a.features, b.features) and full.encoded == 8
    with pytest.raises(ValueError, match="other settings"):
        (tmp_path / "s.h5.part").write_bytes((tmp_path / "r.h5").read_bytes())
        extract(net, "scores", folder, tmp_path / "s.h5", progress=False)


def test_refuses_to_overwrite_and_command_errors(net, folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extract_features, "load_encoder", lambda name, path=None: net)
    out = tmp_path / "f.h5"
    assert extract_features.main(["--data", str(folder), "--out", str(out), "--layer", "conv2"]) == 0
    assert "8 images encoded now" in capsys.readouterr().out
    stamp = out.stat().st_mtime_ns
    assert extract_features.main(["--data", str(folder), "--out", str(out), "--layer", "conv2"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp
    assert extract_features.main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "neither a folder nor one of the data sets" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert extract_features.main(["--data", str(empty), "--out", str(tmp_path / "e.h5"), "--layer", "conv2"]) == 2
    assert "holds no image files" in capsys.readouterr().err


def test_read_features_rejects_other_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a dlmie feature file"):
        read_features(tmp_path / "x.h5")
    (tmp_path / "y.h5").write_text("text")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_features(tmp_path / "y.h5")

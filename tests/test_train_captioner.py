"""Captioner training: checkpoints, exact resume, early stopping, and loading the result."""

import json

import h5py
import numpy as np
import pytest

from dlmie import checkpoint
from dlmie.training import captioner as captioner_training
from dlmie.training.loop import patience_ran_out
from dlmie.models.captioners import load_captioner

from test_captions_data import write_fake_flickr8k


def write_features(path, names, grid=(2, 2), dim=6, seed=0):
    """A complete feature file in extract_features' layout with random grids."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["features"] = rng.standard_normal((len(names), grid[0] * grid[1], dim)).astype(np.float16)
        f.create_dataset("images", data=names, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("skipped", (0,), dtype=h5py.string_dtype("utf-8"))
        f.attrs.update({"encoder": "mobilenet_v2", "layer": "conv_last", "grid": grid, "complete": 1})
    return path


@pytest.fixture
def setup(tmp_path):
    root = write_fake_flickr8k(tmp_path / "flickr8k", present=("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"))
    features = write_features(tmp_path / "feats.h5", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    config = captioner_training.CaptionerConfig(embed_dim=8, hidden_dim=8, batch_size=2, epochs=3, min_count=1,
                                           max_length=8, lr=1e-2, dropout=0.3)
    return root, features, config


def weights_of(path):
    arrays, _ = checkpoint.load(path)
    return arrays


def test_resume_is_exact_and_best_loads(setup, tmp_path):
    root, features, config = setup
    captioner_training.train(tmp_path / "straight", config, False, root, features_path=features)
    captioner_training.train(tmp_path / "stopped", config, False, root, max_minutes=0, features_path=features)
    assert weights_of(tmp_path / "stopped" / "last.npz")["adam.t"] == 1  # stopped after one step
    captioner_training.train(tmp_path / "stopped", config, True, root, features_path=features)
    a, b = weights_of(tmp_path / "straight" / "last.npz"), weights_of(tmp_path / "stopped" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all(np.isfinite(r["val_loss"]) for r in log)
    captioner = load_captioner(tmp_path / "straight" / "best.npz")
    assert captioner.kind == "show_and_tell" and captioner.encoder == "mobilenet_v2"
    decoded = captioner.caption(np.zeros((2, 4, 6), np.float32), beam_size=2)
    assert len(decoded.captions(captioner.vocab)) == 2


def test_refuses_to_overwrite_a_run(setup, tmp_path):
    root, features, config = setup
    captioner_training.train(tmp_path / "run", config, False, root, max_minutes=0, features_path=features)
    with pytest.raises(FileExistsError, match="--resume"):
        captioner_training.train(tmp_path / "run", config, False, root, features_path=features)


def test_patience():
    history = [{"val_loss": v} for v in (3.0, 2.0, 2.5, 2.4)]  # two epochs without a new best
    assert not patience_ran_out(history, "val_loss", "min", 3)
    assert patience_ran_out(history + [{"val_loss": 2.2}], "val_loss", "min", 3)
    assert not patience_ran_out(history + [{"val_loss": 1.9}], "val_loss", "min", 3)


def test_init_starts_from_a_checkpoint(setup, tmp_path):
    """A warm restart from best.npz: its weights and vocabulary, kept exactly at lr 0."""
    root, features, config = setup
    captioner_training.train(tmp_path / "first", config, False, root, features_path=features)
    frozen = captioner_training.CaptionerConfig(batch_size=2, epochs=1, lr=0.0, dropout=0.3)
    captioner_training.train(tmp_path / "warm", frozen, False, root, features_path=features,
                             init=tmp_path / "first" / "best.npz")
    start, start_meta = checkpoint.load(tmp_path / "first" / "best.npz")
    after, after_meta = checkpoint.load(tmp_path / "warm" / "last.npz")
    assert after_meta["vocab"] == start_meta["vocab"] and after_meta["spec"] == start_meta["spec"]
    for name in start:
        assert np.array_equal(after[name], start[name].astype(np.float32)), name
    wrong = captioner_training.CaptionerConfig(model="show_attend_tell", epochs=1)
    with pytest.raises(ValueError, match="--model"):
        captioner_training.train(tmp_path / "wrong", wrong, False, root, features_path=features,
                                 init=tmp_path / "first" / "best.npz")


def test_command_sets_spec_fields_and_names_unknown_ones(setup, tmp_path, capsys):
    from dlmie import train_captioner

    root, features, _ = setup
    common = ["--data", str(root), "--features", str(features), "--epochs", "1", "--batch-size", "2"]
    assert train_captioner.main([*common, "--out", str(tmp_path / "a"), "--set", "nonsense=1"]) == 2
    assert "has no Spec field nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_captioner.main([*common, "--out", str(tmp_path / "b"), "--set", "entropy"])
    assert train_captioner.main([*common, "--model", "show_attend_tell_hard", "--out", str(tmp_path / "c"),
                                 "--set", "entropy=0.25", "--set", "reinforce=0.5"]) == 0
    _, meta = checkpoint.load(tmp_path / "c" / "best.npz")
    assert meta["spec"]["entropy"] == 0.25 and meta["spec"]["reinforce"] == 0.5

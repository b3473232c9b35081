"""Checkpoints: round trip, atomic writes, clear errors for files that are not checkpoints."""

import numpy as np
import pytest

from dlmie import checkpoint


def test_round_trip(tmp_path):
    arrays = {"conv1.W": np.arange(6, dtype=np.float32).reshape(2, 3), "names": np.array(["a", "bb"])}
    path = checkpoint.save(tmp_path / "sub" / "model", arrays, {"epoch": 3, "spec": {"conv": [[8, 3, 1, 1]]}})
    assert path.name == "model.npz"
    loaded, meta = checkpoint.load(path)
    assert meta == {"epoch": 3, "spec": {"conv": [[8, 3, 1, 1]]}}
    assert set(loaded) == set(arrays)
    for name in arrays:
        assert np.array_equal(loaded[name], arrays[name]) and loaded[name].dtype == arrays[name].dtype


def test_failed_save_keeps_the_old_file_and_leaves_no_part(tmp_path):
    path = checkpoint.save(tmp_path / "last.npz", {"w": np.ones(3)}, {"epoch": 1})
    with pytest.raises(TypeError):
        checkpoint.save(path, {"w": np.zeros(3)}, {"epoch": object()})  # meta not JSON-serializable
    arrays, meta = checkpoint.load(path)
    assert meta["epoch"] == 1 and np.array_equal(arrays["w"], np.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]


def test_reserved_name(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        checkpoint.save(tmp_path / "x.npz", {checkpoint.META_KEY: np.ones(1)}, {})


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a dlmie checkpoint .not an .npz archive") as info:
        checkpoint.load(garbage)
    assert "pickle" not in str(info.value) and "unsafe" not in str(info.value)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.ones(2))
    with pytest.raises(ValueError, match="not a dlmie checkpoint"):
        checkpoint.load(plain)

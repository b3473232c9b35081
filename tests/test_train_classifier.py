"""Training: a resumed run ends exactly where an uninterrupted one does; augmentation; schedule; export."""

import numpy as np
import pytest

from dlmie import checkpoint
from dlmie.models import classifier, convnet
from dlmie.training.classifier import ClassifierConfig, augment, export_model, learning_rate, train

from test_tiny_imagenet import make_fake_tiny_imagenet

TINY = convnet.ConvNetSpec(conv=[(4, 3, 4, 1)], num_classes=2, input_size=64)


def config():
    return ClassifierConfig(epochs=2, batch_size=2, lr=0.05, warmup_epochs=0.5, spec=TINY.to_dict())


def test_resume_is_exact(tmp_path):
    data = make_fake_tiny_imagenet(tmp_path / "tiny")  # 6 training images: 3 steps per epoch
    train(tmp_path / "straight", config(), resume=False, data=data)
    train(tmp_path / "stopped", config(), resume=False, data=data, max_steps=4)  # stops inside epoch 2
    _, meta = checkpoint.load(tmp_path / "stopped" / "last.npz")
    assert (meta["position"]["epoch"], meta["position"]["step"]) == (1, 1)
    train(tmp_path / "stopped", config(), resume=True, data=data)
    straight, meta_a = checkpoint.load(tmp_path / "straight" / "last.npz")
    resumed, meta_b = checkpoint.load(tmp_path / "stopped" / "last.npz")
    assert meta_a["position"]["epoch"] == meta_b["position"]["epoch"] == 2
    assert set(straight) == set(resumed) and any(name.endswith(".velocity") for name in straight)
    for name in straight:
        assert np.allclose(straight[name], resumed[name], rtol=1e-5, atol=1e-6), name
    assert len((tmp_path / "straight" / "log.jsonl").read_text().splitlines()) == 2
    # The epoch that was split across two runs logs all of its steps, not only the resumed ones.
    for key in ("train_loss", "train_acc"):
        assert np.isclose(meta_a["position"]["history"][1][key], meta_b["position"]["history"][1][key], atol=1e-3), key

    with pytest.raises(FileExistsError, match="--resume"):
        train(tmp_path / "straight", config(), resume=False, data=data)

    model_path = export_model(tmp_path / "straight" / "last.npz", tmp_path / "model.npz", data)
    model = classifier.load_classifier(str(model_path))
    assert model.class_names == ["goldfish", "bullfrog"]
    assert model.params["conv1.W"].get_value().shape == (4, 3, 3, 3)


def test_augment_translates_and_flips():
    images = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    out = augment(images, padding=2, rng=np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)
    # With no padding, only flips remain: every output is the image or its mirror.
    flipped = augment(images, padding=0, rng=np.random.default_rng(1))
    for a, b in zip(flipped, images):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])


def test_learning_rate_schedule():
    c = ClassifierConfig(epochs=10, lr=0.1, warmup_epochs=1)
    assert learning_rate(c, 0) < 0.001 and np.isclose(learning_rate(c, 1), 0.1)
    assert np.isclose(learning_rate(c, 5.5), 0.05) and learning_rate(c, 10) == 0
    values = [learning_rate(c, e) for e in np.linspace(1, 10, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_init_starts_from_a_model_file(tmp_path):
    """A warm restart: a new run whose weights are a model file's (at lr 0 they stay exactly those)."""
    data = make_fake_tiny_imagenet(tmp_path / "tiny")
    train(tmp_path / "first", config(), resume=False, data=data, max_steps=2)
    model = export_model(tmp_path / "first" / "last.npz", tmp_path / "model.npz", data)
    frozen = ClassifierConfig(epochs=1, batch_size=2, lr=0.0, warmup_epochs=0.0, spec=TINY.to_dict())
    train(tmp_path / "warm", frozen, resume=False, data=data, max_steps=1, init=model)
    start, _ = checkpoint.load(model)
    after, _ = checkpoint.load(tmp_path / "warm" / "last.npz")
    for name in ("conv1.W", "conv1.gamma", "scores.W"):
        assert np.array_equal(after[name], start[name].astype(np.float32)), name
    other = ClassifierConfig(epochs=1, batch_size=2, spec=convnet.ConvNetSpec(conv=[(8, 3, 4, 1)], num_classes=2).to_dict())
    with pytest.raises(ValueError, match="architecture"):
        train(tmp_path / "mismatch", other, resume=False, data=data, init=model)


def test_command_reports_bad_arguments(tmp_path, capsys):
    from dlmie import train_classifier

    data = make_fake_tiny_imagenet(tmp_path / "tiny")
    assert train_classifier.main(["--resume", "--out", str(tmp_path / "none"), "--data", str(data)]) == 2
    assert "no run to resume" in capsys.readouterr().err

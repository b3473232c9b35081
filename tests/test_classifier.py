"""Loading classifiers (our model files and cs231n's h5 layout) and the classify / eval commands."""

import h5py
import numpy as np
import pytest
from PIL import Image

from dlmie import checkpoint, classify, eval_classifier
from dlmie.benchmarks import numpy_reference as reference
from dlmie.images import Preprocessing
from dlmie.models import classifier, convnet

from test_convnet import random_params
from test_tiny_imagenet import make_fake_tiny_imagenet

SMALL = convnet.ConvNetSpec(conv=[(4, 3, 4, 1), (6, 3, 2, 1)], num_classes=2, input_size=64)
PRE = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))


@pytest.fixture
def model_file(tmp_path):
    params = random_params(SMALL, seed=5)
    meta = {"kind": "convnet", "spec": SMALL.to_dict(), "wnids": ["n01", "n02"],
            "class_names": ["goldfish", "bullfrog"], "preprocessing": PRE.to_dict()}
    checkpoint.save(tmp_path / "small.npz", {k: v.astype(np.float16) for k, v in params.items()}, meta)
    return tmp_path / "small.npz", {k: v.astype(np.float16).astype(np.float64) for k, v in params.items()}


def test_model_file_scores_match_numpy(model_file):
    path, params = model_file
    model = classifier.load_classifier(str(path))
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = reference.convnet_spec_forward(SMALL, params, PRE(images).astype(np.float64))
    assert np.allclose(model.class_scores(PRE(images)), expected, atol=1e-4)
    probs = model.probabilities(images)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(np.argmax(probs, axis=1), np.argmax(expected, axis=1))


def test_gradient_function_of_one_class_score(model_file):
    model = classifier.load_classifier(str(model_file[0]))
    import pytensor.tensor as pt

    k = pt.lscalar("k")
    f = model.gradient_function(lambda scores, acts, k: scores[0, k], k)
    x = PRE(np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8))
    value, grad = f(x, 1)
    assert grad.shape == x.shape and np.isclose(value, model.class_scores(x)[0, 1], atol=1e-5)
    h = 1e-2  # float32: a directional finite difference along the gradient itself
    direction = grad / np.linalg.norm(grad)
    slope = (model.class_scores(x + h * direction)[0, 1] - model.class_scores(x - h * direction)[0, 1]) / (2 * h)
    assert np.isclose(slope, np.linalg.norm(grad), rtol=5e-2)


def test_unknown_model_and_wrong_kind(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown classifier") as info:
        classifier.load_classifier("no_such_model")
    assert "mobilenet_v2" in str(info.value) and "show_and_tell" not in str(info.value)
    with pytest.raises(ValueError, match="unknown classifier"):
        classifier.load_classifier("show_and_tell")  # a committed captioner is no classifier
    assert classify.main(["--model", "no_such_model", "x.png"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown classifier")
    other = checkpoint.save(tmp_path / "other.npz", {"w": np.ones(1)}, {"kind": "captioner"})
    with pytest.raises(ValueError, match="not a classifier"):
        classifier.load_classifier(str(other))


def test_cs231n_h5_layout(tmp_path):
    spec = convnet.CS231N_SPEC
    params = random_params(spec, seed=3)
    for name in params:  # small weights keep ten layers of activations in a sane range
        if name.endswith(".W"):
            params[name] *= 0.5
    with h5py.File(tmp_path / "pretrained_model.h5", "w") as f:
        blocks = [f"conv{i}" for i in range(1, 10)] + ["fc1", "scores"]
        for k, block in enumerate(blocks, start=1):
            for field in ("W", "b", "gamma", "beta", "running_mean", "running_var"):
                if f"{block}.{field}" in params:
                    value = params[f"{block}.{field}"]
                    f[f"{field}{k}"] = value.T if (block == "fc1" and field == "W") else value  # stored transposed
    wnids, names = [f"n{i:02d}" for i in range(100)], [f"class {i}" for i in range(100)]
    model = classifier.load_cs231n_h5(tmp_path / "pretrained_model.h5", wnids, names)
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64))
    expected = reference.convnet_spec_forward(spec, params, x)
    assert np.allclose(model.class_scores(x), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    with h5py.File(tmp_path / "broken.h5", "w") as f:
        f["W1"] = np.zeros((64, 3, 5, 5))
    with pytest.raises(ValueError, match="b1"):
        classifier.load_cs231n_h5(tmp_path / "broken.h5", wnids, names)


def test_classify_command(model_file, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.full((30, 50), 128, np.uint8)).save(image)  # grayscale, another size
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    status = classify.main(["--model", str(model_file[0]), str(image), str(broken)])
    out, err = capsys.readouterr()
    assert status == 1
    assert "photo.png" in out and ("goldfish" in out and "bullfrog" in out)
    assert "broken.jpg" in err and "not a readable image" in err


def test_eval_classifier_command(model_file, tmp_path, capsys):
    path, params = model_file
    root = make_fake_tiny_imagenet(tmp_path / "tiny", val=8)
    assert eval_classifier.main(["--model", str(path), "--data", str(root)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # The expected accuracy from the NumPy reference network on the same images.
    from dlmie.data.tiny_imagenet import load_split

    val = load_split(root, "val", cache=False)
    expected = np.argmax(reference.convnet_spec_forward(SMALL, params, PRE(val.images).astype(np.float64)), axis=1)
    top1 = np.mean(expected == val.labels)
    assert last == f"top1={top1:.3f} top5=1.000 n=8"




def test_classify_takes_an_imagenet_encoder(tmp_path, capsys):
    """The README's `python -m dlmie.classify --model mobilenet_v2 IMAGE` on an ImageNet val image."""
    from dlmie.data import dataset_path

    path = tmp_path / "val0.png"
    Image.fromarray(np.load(dataset_path("imagenet-val-25"))["X"][0]).save(path)
    assert classify.main(["--model", "mobilenet_v2", "--top", "5", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("%") == 5

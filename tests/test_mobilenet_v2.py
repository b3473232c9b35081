"""MobileNetV2 on top of the TFLite reader: what its input and class indices mean, clear errors
for a file that is not MobileNetV2, and the real mirrored model on imagenet_val_25."""

import shutil
from collections import Counter

import numpy as np
import pytest

from dlmie.data import DatasetNotFoundError, dataset_path
from dlmie.models import mobilenet_v2 as M
from dlmie.models.tflite import Tensor, read_tflite
from tflite_files import tiny_model


def test_quantized_input_preprocessing():
    # scale 1/128, zero point 128: a pixel q stands for q / 128 - 1
    quantized = M.input_preprocessing(Tensor("input", (1, 224, 224, 3), 1 / 128, 128))
    np.testing.assert_allclose(quantized(np.uint8([[[[0, 128, 255]]]])).ravel(), [-1, 0, 127 / 128], atol=1e-6)
    # a float input: x / 127.5 - 1
    plain = M.input_preprocessing(Tensor("input", (1, 224, 224, 3)))
    np.testing.assert_allclose(plain(np.uint8([[[[0, 51, 255]]]])).ravel(), [-1, -0.6, 1], atol=1e-6)


def test_tiny_graph_is_not_mobilenet(tmp_path):
    path, labels = tmp_path / "tiny.tflite", tmp_path / "labels.txt"
    path.write_bytes(tiny_model()[0])
    labels.write_text("\n".join(map(str, range(20))))
    with pytest.raises(ValueError, match=r"tiny\.tflite is not a MobileNetV2 graph"):
        M.load(path, labels)


def test_missing_and_foreign_files_say_how_to_fetch(tmp_path):
    text = tmp_path / "model.tflite"
    text.write_text("404: Not Found\n")
    with pytest.raises(ValueError, match=r"model\.tflite is not a TensorFlow Lite model .*mobilenet-v2"):
        M.load(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.tflite does not exist; run ./get_datasets.sh mobilenet-v2"):
        M.load(tmp_path / "missing.tflite")


def test_imagenet_1000_drops_background_and_checks_names():
    names = ["background", "tench", "goldfish"] + [f"c{k}" for k in range(998)]
    scores = np.arange(2 * 1001).reshape(2, 1001)
    assert np.array_equal(M.imagenet_1000(scores, names, {0: "tench", 1: "goldfish"}), scores[:, 1:])
    with pytest.raises(ValueError, match="not at index"):
        M.imagenet_1000(scores, names, {0: "goldfish"})


# ---------------------------------------------------------------- the real model


def _dataset(name):
    try:
        return dataset_path(name)
    except DatasetNotFoundError as err:
        pytest.skip(f"data set {name!r} not fetched ({err})")


@pytest.fixture(scope="module")
def mobilenet():
    _dataset("mobilenet-v2")
    return M.load()  # building and compiling the real network once for the module


@pytest.fixture(scope="module")
def imagenet25():
    data = np.load(_dataset("imagenet-val-25"), allow_pickle=True)
    return data["X"], data["y"], data["label_map"].item()


def test_real_file_graph_and_names(mobilenet):
    graph = read_tflite(_dataset("mobilenet-v2") / M.MODEL_FILE)
    assert Counter(op.kind for op in graph.ops) == {"CONV_2D": 36, "DEPTHWISE_CONV_2D": 17, "ADD": 10,
                                                    "AVERAGE_POOL_2D": 1, "RESHAPE": 1, "SOFTMAX": 1}
    assert mobilenet.layer_names == ["conv1", *(f"block{b}" for b in range(17)), "conv_last", "pool", "scores"]
    shapes = {k: v.get_value().shape for k, v in mobilenet.params.items()}
    assert shapes["conv1.W"] == (32, 3, 3, 3) and shapes["block3.expand.W"] == (144, 24, 1, 1)
    assert shapes["block3.depthwise.W"] == (144, 1, 3, 3) and shapes["block3.project.b"] == (32,)
    assert shapes["conv_last.W"] == (1280, 320, 1, 1) and shapes["logits.W"] == (1001, 1280, 1, 1)
    assert "block0.expand.W" not in shapes
    assert len(mobilenet.class_names) == 1001 and mobilenet.class_names[0] == "background"
    # input scale 1/128, zero point 128: x = q / 128 - 1
    x = mobilenet.preprocessing(np.uint8([[[[0, 128, 255]]]])).ravel()
    np.testing.assert_allclose(x, [-1, 0, 127 / 128], atol=1e-6)


def test_real_model_top5_on_imagenet_val_25(mobilenet, imagenet25):
    images, labels, label_map = imagenet25
    scores = M.imagenet_1000(mobilenet.probabilities(images), mobilenet.class_names, label_map)
    best5 = np.argsort(-scores, axis=1)[:, :5]
    top1, top5 = np.mean(best5[:, 0] == labels), np.mean(np.any(best5 == labels[:, None], axis=1))
    print(f"MobileNetV2 on imagenet_val_25: top-1 {top1:.0%}, top-5 {top5:.0%}")
    assert top5 >= 0.8, f"top-1 {top1:.0%}, top-5 {top5:.0%}"


def test_real_model_features(mobilenet, imagenet25):
    images = imagenet25[0][:2]
    grid = mobilenet.features(images, "conv_last")
    pooled = mobilenet.features(images, "pool")
    assert grid.shape == (2, 49, 1280) and pooled.shape == (2, 1280)
    np.testing.assert_allclose(pooled, grid.mean(axis=1), rtol=1e-4, atol=1e-5)


def test_truncated_real_file_is_an_error(tmp_path):
    real = _dataset("mobilenet-v2") / M.MODEL_FILE
    cut = tmp_path / M.MODEL_FILE
    with open(real, "rb") as src, open(cut, "wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.truncate(real.stat().st_size // 2)
    with pytest.raises(ValueError, match=rf"{M.MODEL_FILE} is a truncated or corrupt .*get_datasets.sh mobilenet-v2"):
        M.load(cut)

"""VGG-16 from the Keras h5 layout: the reader, layer-by-layer agreement with NumPy, the fc head."""

import h5py
import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
from dlmie import layers as L
from dlmie.models import vgg16

rng = np.random.default_rng(16)


def numpy_conv3x3(x, w, b):
    """x (N, C, H, W), w (F, C, 3, 3): cross-correlation, pad 1, by windows and one tensordot."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
    return np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b[None, :, None, None]


def numpy_vgg(params, x):
    """Plain NumPy VGG-16: every activation by our layer name."""
    acts, h = {}, x
    for b, (_, count) in enumerate(vgg16.BLOCKS, start=1):
        for c in range(1, count + 1):
            name = f"conv{b}_{c}"
            h = np.maximum(numpy_conv3x3(h, params[f"{name}.W"], params[f"{name}.b"]), 0)
            acts[name] = h
        n, ch, hh, ww = h.shape
        h = h.reshape(n, ch, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
        acts[f"pool{b}"] = h
    if "fc6.W" in params:
        h = h.transpose(0, 2, 3, 1).reshape(len(h), -1)  # Keras flattens (H, W, C)
        for name in ("fc6", "fc7"):
            h = np.maximum(h @ params[f"{name}.W"] + params[f"{name}.b"], 0)
            acts[name] = h
        acts["scores"] = h @ params["scores.W"] + params["scores.b"]
    return acts


def write_keras_notop(path):
    """A notop file in the Keras layout with random weights; returns our name -> array."""
    ours = {}
    with h5py.File(path, "w") as f:
        names = ["input_1"]  # weightless layers (input, pooling) are listed too, as Keras does
        for b, (_, count) in enumerate(vgg16.BLOCKS, start=1):
            names += [f"block{b}_conv{c}" for c in range(1, count + 1)] + [f"block{b}_pool"]
        for name in names:
            if "conv" not in name:
                f.create_group(name).attrs["weight_names"] = np.array([], dtype="S1")
        for our, keras, c_in, c_out in vgg16.conv_layers():
            kernel = (rng.standard_normal((3, 3, c_in, c_out)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
            bias = (0.1 * rng.standard_normal(c_out)).astype(np.float32)
            g = f.create_group(keras)
            g.attrs["weight_names"] = np.array([f"{keras}_W_1:0".encode(), f"{keras}_b_1:0".encode()])
            g[f"{keras}_W_1:0"], g[f"{keras}_b_1:0"] = kernel, bias
            ours[f"{our}.W"], ours[f"{our}.b"] = kernel.transpose(3, 2, 0, 1).astype(np.float64), bias.astype(np.float64)
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
    return ours


def test_notop_file_layer_by_layer(tmp_path):
    expected_params = write_keras_notop(tmp_path / "notop.h5")
    net = vgg16.load(tmp_path / "notop.h5")
    assert net.scores is None and net.layer_names[0] == "conv1_1" and net.layer_names[-1] == "pool5"
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # conv layers take any size
    x = vgg16.PREPROCESSING(images)
    assert np.allclose(x[:, 0], images[..., 2] - 103.939, atol=1e-4)  # BGR, 0-255, mean-subtracted
    expected = numpy_vgg(expected_params, x.astype(np.float64))
    names = net.layer_names
    ours = pytensor.function([net.x], [net.activations[n] for n in names])(x)
    for name, value in zip(names, ours):
        scale = np.abs(expected[name]).max()
        assert np.abs(value - expected[name]).max() <= 1e-4 * scale, name
    with pytest.raises(ValueError, match="no classifier head"):
        net.class_scores(x)


def test_fc_head_flattens_like_keras():
    """fc6 reads pool5 in Keras' (H, W, C) order; a 64 x 64 input gives a 2 x 2 x 512 pool5."""
    params = {}
    for our, _, c_in, c_out in vgg16.conv_layers():
        params[f"{our}.W"] = rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))
        params[f"{our}.b"] = 0.1 * rng.standard_normal(c_out)
    for name, d_in, d_out in (("fc6", 2 * 2 * 512, 16), ("fc7", 16, 16), ("scores", 16, 10)):
        params[f"{name}.W"] = rng.standard_normal((d_in, d_out)) / np.sqrt(d_in)
        params[f"{name}.b"] = rng.standard_normal(d_out)
    x = rng.standard_normal((2, 3, 64, 64))
    shared = L.shared_params(params)
    xv = pytensor.tensor.tensor4("x", dtype="float64")
    scores, acts = vgg16.forward(shared, xv)
    ours = pytensor.function([xv], [scores, acts["fc7"]])(x)
    expected = numpy_vgg(params, x)
    assert np.allclose(ours[0], expected["scores"], rtol=1e-8, atol=1e-8)
    assert np.allclose(ours[1], expected["fc7"], rtol=1e-8, atol=1e-8)


def test_wrong_files_fail_clearly(tmp_path):
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        vgg16.load(text)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["W1"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras weight file"):
        vgg16.load(tmp_path / "other.h5")
    with h5py.File(tmp_path / "resnet.h5", "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        g = f.create_group("conv1")
        g.attrs["weight_names"] = np.array([b"conv1_W:0"])
        g["conv1_W:0"] = np.zeros((7, 7, 3, 64), np.float32)
    with pytest.raises(ValueError, match="block1_conv1.*missing"):
        vgg16.load(tmp_path / "resnet.h5")
    with pytest.raises(FileNotFoundError, match="get_datasets.sh"):
        vgg16.load(tmp_path / "absent.h5")


def test_wrong_kernel_shape(tmp_path):
    write_keras_notop(tmp_path / "notop.h5")
    with h5py.File(tmp_path / "notop.h5", "a") as f:
        del f["block2_conv1"]["block2_conv1_W_1:0"]
        f["block2_conv1"]["block2_conv1_W_1:0"] = np.zeros((3, 3, 128, 64), np.float32)
    with pytest.raises(ValueError, match=r"block2_conv1.*\(3, 3, 64, 128\)"):
        vgg16.load(tmp_path / "notop.h5")

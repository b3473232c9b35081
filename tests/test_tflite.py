"""The TFLite reader and interpreter on tiny models written here: the reader's dequantized
weights and layouts, the graph layer by layer against NumPy, clear errors for damaged files."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
import tflite

from dlmie.benchmarks import numpy_reference as reference
from dlmie import layers as L
from dlmie.models import tflite as T
from tflite_files import INPUT_SCALE, INPUT_ZERO, OP, activation, pool_options, tflite_bytes, tiny_model

rng = np.random.default_rng(1)


def test_same_pads_puts_the_extra_pixel_after():
    assert T.same_pads(224, 3, 2) == (0, 1)  # 112 outputs
    assert T.same_pads(7, 3, 1) == (1, 1)
    assert T.same_pads(7, 3, 2) == (1, 1)  # 4 outputs: (4 - 1) * 2 + 3 - 7 = 2
    assert T.same_pads(8, 1, 2) == (0, 0)


def tiny_reference(images, r):
    """The tiny model in float64 NumPy, TensorFlow layouts: tensor index -> (N, H, W, C) or (N, D)."""
    relu6 = lambda h: np.clip(h, 0, 6)  # noqa: E731
    t = {0: reference.dequantize(images, INPUT_SCALE, INPUT_ZERO)}
    t[3] = relu6(reference.tf_conv2d(t[0], r["W1"], r["B2"], 2, "SAME"))
    t[6] = relu6(reference.tf_conv2d(t[3], r["W4"], r["B5"], 1, "SAME", depthwise=True))
    t[9] = reference.tf_conv2d(t[6], r["W7"], r["B8"], 1, "VALID")
    t[10] = t[9] + t[3]
    t[12] = np.maximum(reference.tf_conv2d(t[10], r["W11"], np.zeros(8), 2, "SAME", depthwise=True), 0)
    t[13] = reference.pool(t[12].transpose(0, 3, 1, 2), 2, 1, 0, "avg").transpose(0, 2, 3, 1)
    t[16] = reference.tf_conv2d(t[13], r["W14"], r["B15"], 1, "VALID")
    t[18] = t[16].reshape(len(images), -1)  # TFLite reshapes in (N, H, W, C) order
    t[19] = reference.softmax(t[18], axis=1)
    return t


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    data, real = tiny_model()
    path = tmp_path_factory.mktemp("tflite") / "tiny.tflite"
    path.write_bytes(data)
    return path, real


def test_reader_dequantizes_and_converts_layouts(tiny):
    path, r = tiny
    graph = T.read_tflite(path)
    assert [op.kind for op in graph.ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "DEPTHWISE_CONV_2D",
                                             "AVERAGE_POOL_2D", "CONV_2D", "RESHAPE", "SOFTMAX"]
    conv, dw, project, add, dw2, pool = graph.ops[:6]
    np.testing.assert_allclose(conv.weights["W"], r["W1"].transpose(0, 3, 1, 2), rtol=1e-6)  # OHWI -> (F, C, k, k)
    # 1HWC -> (C, 1, k, k)
    np.testing.assert_allclose(dw.weights["W"], r["W4"][0].transpose(2, 0, 1)[:, None], rtol=1e-6)
    np.testing.assert_allclose(conv.weights["b"], r["B2"], rtol=1e-6)
    np.testing.assert_array_equal(dw2.weights["b"], np.zeros(8))  # no bias tensor
    # TensorFlow's "SAME": 12 -> 6 and 6 -> 3 at stride 2 pad one pixel, after; stride 1 pads both sides.
    assert (conv.pads, dw.pads, project.pads, dw2.pads) == ((0, 1, 0, 1), (1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 0, 1))
    assert (conv.activation, project.activation, dw2.activation) == ("RELU6", "NONE", "RELU")
    assert (add.inputs, pool.window, pool.stride) == ([9, 3], (2, 2), 1)
    assert graph.tensors[graph.input].scale == INPUT_SCALE and graph.tensors[graph.input].zero_point == INPUT_ZERO


def test_graph_matches_numpy_layer_by_layer(tiny):
    path, r = tiny
    graph = T.read_tflite(path)
    images = rng.integers(0, 256, (2, 12, 12, 3)).astype(np.uint8)
    expected = tiny_reference(images, r)
    x = pt.tensor4("x")
    values = T.run_graph(graph, x, L.shared_params(T.graph_params(graph)))
    fn = pytensor.function([x], [values[i] for i in expected])
    # run_graph reads real values, (N, C, H, W)
    got = fn(np.float32(expected[0]).transpose(0, 3, 1, 2))
    for (i, want), out in zip(expected.items(), got):
        out = out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
        assert out.shape == want.shape, graph.tensors[i].name
        err = np.max(np.abs(out - want)) / np.max(np.abs(want))
        assert err < 1e-5, f"{graph.tensors[i].name}: scaled error {err:.1e}"


def test_unsupported_op_is_named(tmp_path):
    tensors = [activation("input", (1, 4, 4, 2)), activation("pooled", (1, 2, 2, 2))]
    path = tmp_path / "maxpool.tflite"
    path.write_bytes(tflite_bytes(tensors, [(OP.MAX_POOL_2D, [0], [1], tflite.BuiltinOptions.Pool2DOptions,
                                             pool_options(2, 2))]))
    with pytest.raises(ValueError, match=r"maxpool\.tflite: operator 0 is MAX_POOL_2D, which dlmie cannot run"):
        T.read_tflite(path)


def test_truncated_tiny_files_are_errors(tiny, tmp_path):
    data = tiny[0].read_bytes()
    path = tmp_path / "cut.tflite"
    # The last bytes hold buffer 0, the empty buffer that no tensor reads (the builder writes
    # back to front); a file cut there is still whole.
    for size in list(range(0, len(data) - 16, 97)) + [len(data) - 16]:
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match="cut.tflite"):
            T.read_tflite(path)


def test_text_and_h5_files_are_not_tflite(tmp_path):
    h5py = pytest.importorskip("h5py")
    text = tmp_path / "model.tflite"
    text.write_text("404: Not Found\n")
    h5 = tmp_path / "model.h5"
    with h5py.File(h5, "w") as f:
        f["W1"] = np.zeros((2, 2), np.float32)
    for path in (text, h5):
        with pytest.raises(ValueError, match=rf"{path.name} is not a TensorFlow Lite model .*'TFL3'.*; fetch it"):
            T.read_tflite(path, "fetch it")
    with pytest.raises(FileNotFoundError, match="missing.tflite does not exist$"):
        T.read_tflite(tmp_path / "missing.tflite")

"""ConvGemm, the blocked convolution GEMM that rewrites put in place of conv2d's Im2Col + dot:
the compiled graphs must use it exactly where the column matrix has no other reader, and give a
direct convolution's values (computed here in float64 with sliding windows, not by im2col)."""

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from numpy.lib.stride_tricks import sliding_window_view
from pytensor.compile.mode import Mode, get_mode

from dlmie import layers as L
from dlmie.kernels import ConvGemm, Im2Col
from dlmie.kernels.conv_gemm import MIN_BLOCK_COLUMNS


def direct_conv(x, w, b, stride, pad, relu):
    """out[n, f, y, z] = b[f] + sum_{c,i,j} w[f, c, i, j] xp[n, c, y*stride + i, z*stride + j]."""
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = sliding_window_view(xp, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    out = np.einsum("ncyzij,fcij->nfyz", windows, np.asarray(w, np.float64)) + np.asarray(b, np.float64)[:, None, None]
    return np.maximum(out, 0) if relu else out


def scaled_error(x, y):
    return float(np.max(np.abs(np.asarray(x, np.float64) - y)) / max(np.max(np.abs(y)), 1e-30))


def conv_ops(f):
    return [node.op for node in f.maker.fgraph.toposort() if isinstance(node.op, (ConvGemm, Im2Col))]


def shared(value):
    return pytensor.shared(value, shape=value.shape)


CASES = [  # (N, C, H, W, F, k, stride, pad, relu, dtype)
    (2, 3, 9, 7, 8, 3, 1, 1, True, "float32"),
    (2, 3, 9, 7, 8, 3, 2, 1, False, "float32"),
    (1, 4, 5, 6, 3, 1, 1, 0, True, "float32"),      # 1 x 1 on a contiguous image: columns read in place
    (3, 2, 4, 4, 5, 5, 1, 2, True, "float64"),      # the window larger than the image
    (3, 64, 30, 30, 8, 3, 1, 1, True, "float32"),   # 2700 columns: two blocks, one crossing images mid-row
    (2, 5, 11, 13, 6, 3, 3, 0, True, "float64"),
]


@pytest.mark.parametrize("n, c, h, w, f, k, stride, pad, relu, dtype", CASES)
def test_matches_a_direct_convolution(n, c, h, w, f, k, stride, pad, relu, dtype):
    rng = np.random.default_rng(0)
    xv = rng.standard_normal((n, c, h, w)).astype(dtype)
    wv = rng.standard_normal((f, c, k, k)).astype(dtype)
    bv = rng.standard_normal(f).astype(dtype)
    x = pt.tensor4("x", dtype=dtype)
    out = L.conv2d(x, shared(wv), shared(bv), stride, pad)
    out = L.relu(out) if relu else out
    compiled = pytensor.function([x], out)
    assert conv_ops(compiled) == [ConvGemm(k, k, stride, pad, bias=True, activation="relu" if relu else "none")]
    unfused = pytensor.function([x], out, mode=get_mode("FAST_RUN").excluding("dlmie_conv_gemm"))
    assert not any(isinstance(op, ConvGemm) for op in conv_ops(unfused))
    expected = direct_conv(xv, wv, bv, stride, pad, relu)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert scaled_error(compiled(xv), expected) < tol
    assert scaled_error(unfused(xv), expected) < tol


def test_blocks_cross_images():
    """The case above with 2700 columns is only a block test if a block is narrower than that."""
    assert 30 * 30 < MIN_BLOCK_COLUMNS < 3 * 30 * 30


def test_relu6_fuses_after_relu():
    rng = np.random.default_rng(4)
    xv = rng.standard_normal((2, 3, 6, 6)).astype(np.float32) * 4
    wv, bv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x = pt.tensor4("x", dtype="float32")
    compiled = pytensor.function([x], L.relu6(L.conv2d(x, shared(wv), shared(bv), 1, 1)))
    assert conv_ops(compiled) == [ConvGemm(3, 3, 1, 1, bias=True, activation="relu6")]
    expected = np.minimum(direct_conv(xv, wv, bv, 1, 1, True), 6)
    assert expected.max() == 6 and expected.min() == 0
    assert scaled_error(compiled(xv), expected) < 1e-5


def test_an_activation_read_before_it_is_capped_stays_apart():
    """max(y, 0) that something else also reads cannot be fused into y's ConvGemm."""
    rng = np.random.default_rng(5)
    xv = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    wv, bv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x = pt.tensor4("x", dtype="float32")
    pre = L.conv2d(x, shared(wv), shared(bv), 1, 1)
    compiled = pytensor.function([x], [L.relu(pre), pre.sum()])
    assert conv_ops(compiled) == [ConvGemm(3, 3, 1, 1, bias=True, activation="none")]
    relu_out, total = compiled(xv)
    expected = direct_conv(xv, wv, bv, 1, 1, False)
    assert scaled_error(relu_out, np.maximum(expected, 0)) < 1e-5
    assert abs(total - expected.sum()) < 1e-3 * np.abs(expected).sum()


def test_layers_in_sequence_and_strided_inputs():
    """A 3x3 layer, a 1x1 layer reading its channel-first output in place, and a layer reading a
    strided view (every other column) of its input."""
    rng = np.random.default_rng(1)
    xv = rng.standard_normal((3, 4, 12, 12)).astype(np.float32)
    ws = [rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((6, 4, 3, 3), (5, 6, 1, 1), (4, 5, 3, 3))]
    bs = [rng.standard_normal(s[0]).astype(np.float32) for s in ((6,), (5,), (4,))]
    x = pt.tensor4("x", dtype="float32")
    h1 = L.relu(L.conv2d(x, shared(ws[0]), shared(bs[0]), 1, 1))
    h2 = L.relu(L.conv2d(h1, shared(ws[1]), shared(bs[1]), 1, 0))
    h3 = L.conv2d(h2[:, :, :, ::2], shared(ws[2]), shared(bs[2]), 1, 1)
    compiled = pytensor.function([x], h3)
    assert sum(isinstance(op, ConvGemm) for op in conv_ops(compiled)) == 3
    e1 = direct_conv(xv, ws[0], bs[0], 1, 1, True)
    e2 = direct_conv(e1, ws[1], bs[1], 1, 0, True)
    e3 = direct_conv(e2[:, :, :, ::2], ws[2], bs[2], 1, 1, False)
    assert scaled_error(compiled(xv), e3) < 1e-5


def test_training_graphs_keep_the_columns_for_the_filter_gradient():
    """The filters' gradient reads the columns too: there Im2Col and the plain GEMM stay, and the
    gradients are those of the unfused graph."""
    rng = np.random.default_rng(2)
    xv = rng.standard_normal((2, 3, 8, 8))
    w, b = shared(rng.standard_normal((4, 3, 3, 3))), shared(rng.standard_normal(4))
    x = pt.tensor4("x", dtype="float64")
    loss = (L.relu(L.conv2d(x, w, b, 1, 1)) ** 2).sum()
    grads = pytensor.grad(loss, [x, w, b])
    compiled = pytensor.function([x], grads)
    assert not any(isinstance(op, ConvGemm) for op in conv_ops(compiled))
    # The input gradient alone does not read the columns: ConvGemm computes the forward pass.
    input_grad = pytensor.function([x], grads[0])
    assert any(isinstance(op, ConvGemm) for op in conv_ops(input_grad))
    unfused = pytensor.function([x], grads, mode=get_mode("FAST_RUN").excluding("dlmie_conv_gemm"))
    for got, want in zip(compiled(xv), unfused(xv)):
        assert scaled_error(got, want) < 1e-12
    assert scaled_error(input_grad(xv), unfused(xv)[0]) < 1e-12


@pytest.mark.parametrize("bias, activation", [(False, "none"), (True, "none"), (True, "relu"), (False, "relu6")])
def test_python_implementation_matches_c(bias, activation):
    rng = np.random.default_rng(3)
    wv, xv, bv = rng.standard_normal((5, 3 * 9)), rng.standard_normal((2, 3, 6, 5)), rng.standard_normal(5)
    w, x, b = pt.matrix("w", dtype="float64"), pt.tensor4("x", dtype="float64"), pt.vector("b", dtype="float64")
    op = ConvGemm(3, 3, 2, 1, bias=bias, activation=activation)
    inputs = [w, x, b] if bias else [w, x]
    values = [wv, xv, bv] if bias else [wv, xv]
    c_version = pytensor.function(inputs, op(*inputs), mode=Mode(linker="cvm", optimizer=None))
    py_version = pytensor.function(inputs, op(*inputs), mode=Mode(linker="py", optimizer=None))
    wv *= 3  # values beyond 6, for relu6 to cap
    expected = direct_conv(xv, wv.reshape(5, 3, 3, 3), bv if bias else np.zeros(5), 2, 1, activation != "none")
    expected = expected.transpose(1, 0, 2, 3).reshape(5, -1)
    if activation == "relu6":
        assert expected.max() > 6
        expected = np.minimum(expected, 6)
    assert scaled_error(c_version(*values), expected) < 1e-12
    assert scaled_error(py_version(*values), expected) < 1e-12


def test_filters_that_do_not_fit_the_windows_are_refused():
    w, x = pt.matrix("w", dtype="float64"), pt.tensor4("x", dtype="float64")
    f = pytensor.function([w, x], ConvGemm(3, 3)(w, x), mode=Mode(linker="cvm", optimizer=None))
    with pytest.raises(ValueError, match="filters have 10 columns, the windows 18"):
        f(np.zeros((4, 10)), np.zeros((1, 2, 5, 5)))


def test_a_conv2d_written_another_way_still_gets_the_blocked_gemm():
    """A student's conv2d may add the bias by broadcasting instead of the rank-1 product: the GEMM
    is still blocked, the bias and ReLU stay separate loops, and the values are the same."""
    rng = np.random.default_rng(6)
    xv = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    wv, bv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    x = pt.tensor4("x", dtype="float32")
    w, b = shared(wv), shared(bv)
    product = pt.dot(w.reshape((4, -1)), Im2Col(3, 3, 1, 1)(x)) + b[:, None]
    out = L.relu(product.reshape((4, x.shape[0], 7, 7)).dimshuffle(1, 0, 2, 3))
    compiled = pytensor.function([x], out)
    assert conv_ops(compiled) == [ConvGemm(3, 3, 1, 1)]
    assert scaled_error(compiled(xv), direct_conv(xv, wv, bv, 1, 1, True)) < 1e-5

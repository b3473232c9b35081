"""Layers: forward passes against plain NumPy, gradients against finite differences (float64)."""

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L
from dlmie.benchmarks import numpy_reference as reference
from dlmie.gradcheck import check_gradients, rel_error
from dlmie.kernels import BatchNormTrain

GRAD_TOL = 1e-6
rng = np.random.default_rng(231)


def evaluate(build, **inputs):
    variables = {k: pt.tensor(name=k, dtype=np.asarray(v).dtype, shape=np.shape(v)) for k, v in inputs.items()}
    out = build(**variables)
    out = out[0] if isinstance(out, tuple) else out
    return pytensor.function(list(variables.values()), out)(*inputs.values())


def assert_gradients(build, tol=GRAD_TOL, **inputs):
    errors = check_gradients(build, inputs)
    assert errors, "nothing was checked"
    for name, err in errors.items():
        assert err < tol, f"d{name}: rel_error {err:.2e} >= {tol:.0e}"


CONV_CASES = [
    # (N, C, H, W), (F, HH, WW), stride, pad
    ((2, 3, 7, 7), (4, 3, 3), 1, 1),
    ((2, 3, 8, 9), (3, 3, 3), 2, 1),
    ((1, 2, 9, 7), (2, 5, 5), 2, 2),
    ((3, 1, 5, 6), (2, 1, 3), 1, 0),
    ((2, 4, 6, 6), (5, 1, 1), 2, 0),
]


@pytest.mark.parametrize("xshape,wshape,stride,pad", CONV_CASES)
def test_conv2d_matches_numpy(xshape, wshape, stride, pad):
    x = rng.standard_normal(xshape)
    w = rng.standard_normal((wshape[0], xshape[1], wshape[1], wshape[2]))
    b = rng.standard_normal(wshape[0])
    ours = evaluate(lambda x, w, b: L.conv2d(x, w, b, stride, pad), x=x, w=w, b=b)
    expected = reference.conv2d(x, w, b, stride, pad)
    assert ours.shape == expected.shape
    assert rel_error(ours, expected) < 1e-10


@pytest.mark.parametrize("xshape,wshape,stride,pad", CONV_CASES[:3])
def test_conv2d_gradients(xshape, wshape, stride, pad):
    assert_gradients(
        lambda x, w, b: L.conv2d(x, w, b, stride, pad),
        x=rng.standard_normal(xshape),
        w=rng.standard_normal((wshape[0], xshape[1], wshape[1], wshape[2])),
        b=rng.standard_normal(wshape[0]),
    )


def test_conv2d_float32_keeps_dtype():
    x = rng.standard_normal((1, 2, 5, 5)).astype("float32")
    w = rng.standard_normal((3, 2, 3, 3)).astype("float32")
    b = np.zeros(3, "float32")
    assert evaluate(lambda x, w, b: L.conv2d(x, w, b, 1, 1), x=x, w=w, b=b).dtype == np.float32


def test_conv2d_needs_static_kernel_size():
    with pytest.raises(ValueError, match="static shape"):
        L.conv2d(pt.tensor4("x"), pt.tensor4("w"), pt.vector("b"))


DEPTHWISE_CASES = [
    # (N, C, H, W), kernel, stride, (top, bottom, left, right)
    ((2, 3, 7, 7), 3, 1, (1, 1, 1, 1)),
    ((2, 4, 8, 8), 3, 2, (0, 1, 0, 1)),  # TensorFlow "SAME" at stride 2
    ((1, 2, 9, 6), 5, 2, (2, 2, 1, 2)),
]


@pytest.mark.parametrize("xshape,k,stride,pads", DEPTHWISE_CASES)
def test_depthwise_conv2d_matches_numpy_and_gradients(xshape, k, stride, pads):
    x = rng.standard_normal(xshape)
    w = rng.standard_normal((xshape[1], 1, k, k))
    b = rng.standard_normal(xshape[1])
    ours = evaluate(lambda x, w, b: L.depthwise_conv2d(x, w, b, stride, pads), x=x, w=w, b=b)
    expected = reference.depthwise_conv2d(x, w, b, stride, pads)
    assert ours.shape == expected.shape
    assert rel_error(ours, expected) < 1e-10
    assert_gradients(lambda x, w, b: L.depthwise_conv2d(x, w, b, stride, pads), x=x, w=w, b=b)


def test_pad2d_asymmetric():
    x = rng.standard_normal((1, 2, 3, 4))
    out = evaluate(lambda x: L.pad2d(x, (0, 1, 2, 3), value=-1.0), x=x)
    expected = np.pad(x, ((0, 0), (0, 0), (0, 1), (2, 3)), constant_values=-1.0)
    assert np.array_equal(out, expected)


def test_relu6():
    x = np.array([-2.0, 0.0, 3.0, 6.0, 9.0])
    assert np.array_equal(evaluate(L.relu6, x=x), [0, 0, 3, 6, 6])


@pytest.mark.parametrize("dtype, atol", [("float32", 3e-7), ("float64", 1e-15)])
def test_tanh_matches_numpy(dtype, atol):
    """2 sigmoid(2x) - 1 against np.tanh: absolute error of a few roundings of 1, and saturation to
    +-1 without overflow or NaN far out (exp(200) is inf in float32)."""
    x = np.concatenate([np.linspace(-10, 10, 2001), [-100.0, -30.0, -1e-20, 0.0, 1e-20, 30.0, 100.0]]).astype(dtype)
    out = evaluate(L.tanh, x=x)
    assert out.dtype == dtype and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.tanh(x.astype(np.float64)), rtol=0, atol=atol)
    assert np.array_equal(out[[-7, -1]], [-1, 1])


def test_tanh_gradients():
    assert_gradients(L.tanh, x=rng.standard_normal((3, 4)) * 2)


POOL_CASES = [
    # (N, C, H, W), size, stride, pad
    ((2, 3, 8, 8), 2, 2, 0),
    ((2, 3, 7, 9), 2, 2, 0),
    ((1, 2, 9, 8), 3, 2, 0),
    ((2, 2, 7, 7), 3, 2, 1),
    ((1, 3, 6, 5), 3, 1, 1),
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("xshape,size,stride,pad", POOL_CASES)
def test_pool_matches_numpy(mode, xshape, size, stride, pad):
    x = rng.standard_normal(xshape)
    pool = L.max_pool if mode == "max" else L.avg_pool
    ours = evaluate(lambda x: pool(x, size, stride, pad), x=x)
    expected = reference.pool(x, size, stride, pad, mode)
    assert ours.shape == expected.shape
    assert rel_error(ours, expected) < 1e-12


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("xshape,size,stride,pad", POOL_CASES[1:4])
def test_pool_gradients(mode, xshape, size, stride, pad):
    pool = L.max_pool if mode == "max" else L.avg_pool
    assert_gradients(lambda x: pool(x, size, stride, pad), x=rng.standard_normal(xshape))


def test_global_avg_pool():
    x = rng.standard_normal((2, 3, 4, 5))
    assert rel_error(evaluate(L.global_avg_pool, x=x), x.mean(axis=(2, 3))) < 1e-12


def test_affine_and_relu():
    x, w, b = rng.standard_normal((4, 2, 3)), rng.standard_normal((6, 5)), rng.standard_normal(5)
    assert rel_error(evaluate(L.affine, x=x, w=w, b=b), x.reshape(4, 6) @ w + b) < 1e-12
    assert_gradients(L.affine, x=x, w=w, b=b)
    x = rng.standard_normal((3, 7))
    x[np.abs(x) < 1e-2] = 0.5  # keep finite differences away from the kink at 0
    assert rel_error(evaluate(L.relu, x=x), np.maximum(x, 0)) == 0
    assert_gradients(L.relu, x=x)


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (4, 3, 2, 5)])
def test_batchnorm_train_and_inference(shape, kernel):
    x = 3 * rng.standard_normal(shape) + 2
    axes = (0,) if len(shape) == 2 else (0, 2, 3)
    d = shape[1]
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    running_mean = pytensor.shared(np.zeros(d), shape=(d,))
    running_var = pytensor.shared(np.ones(d), shape=(d,))
    xv = pt.tensor(dtype="float64", shape=shape)
    out, updates = L.batchnorm(xv, gamma, beta, running_mean, running_var, train=True, momentum=0.9, kernel=kernel)
    train = pytensor.function([xv], out, updates=updates)
    uses_kernel = any(isinstance(node.op, BatchNormTrain) for node in train.maker.fgraph.apply_nodes)
    assert uses_kernel == kernel
    bshape = [1] * len(shape)
    bshape[1] = d
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    expected = gamma.reshape(bshape) * (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) + beta.reshape(bshape)
    assert rel_error(train(x), expected) < 1e-10
    assert rel_error(running_mean.get_value(), 0.1 * mean) < 1e-12
    assert rel_error(running_var.get_value(), 0.9 + 0.1 * var) < 1e-12

    out, updates = L.batchnorm(xv, gamma, beta, running_mean, running_var, train=False)
    assert updates == []
    rm, rv = running_mean.get_value(), running_var.get_value()
    expected = gamma.reshape(bshape) * (x - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5) + beta.reshape(bshape)
    assert rel_error(pytensor.function([xv], out)(x), expected) < 1e-10


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 3, 3)])
@pytest.mark.parametrize("train, kernel", [(True, True), (True, False), (False, True)])
def test_batchnorm_gradients(shape, train, kernel):
    d = shape[1]
    running = (np.abs(rng.standard_normal(d)), 1 + np.abs(rng.standard_normal(d)))
    assert_gradients(
        lambda x, gamma, beta: L.batchnorm(x, gamma, beta, running[0], running[1], train=train, kernel=kernel),
        x=rng.standard_normal(shape),
        gamma=rng.standard_normal(d),
        beta=rng.standard_normal(d),
    )


def test_batchnorm_rejects_3d():
    with pytest.raises(ValueError, match="dimensions"):
        L.batchnorm(pt.tensor3(), 1, 0, 0, 1, train=True)


def test_dropout():
    x = np.ones((500, 400))
    rng_shared = pt.random.shared_rng(seed=1)
    xv = pt.matrix(dtype="float64")
    out, updates = L.dropout(xv, 0.3, rng_shared, train=True)
    f = pytensor.function([xv], out, updates=updates)
    first, second = f(x), f(x)
    kept = first != 0
    assert abs(kept.mean() - 0.7) < 0.01
    assert np.allclose(first[kept], 1 / 0.7)
    assert abs(first.mean() - 1) < 0.02  # inverted dropout keeps the expectation
    assert not np.array_equal(first, second), "each call must draw a new mask"
    assert L.dropout(xv, 0.3, rng_shared, train=False) == (xv, [])
    with pytest.raises(ValueError, match="p_drop"):
        L.dropout(xv, 1.0, rng_shared, train=True)


def test_softmax_cross_entropy():
    scores, y = rng.standard_normal((6, 5)), rng.integers(0, 5, 6)
    expected = -np.log(reference.softmax(scores)[np.arange(6), y]).mean()
    assert rel_error(evaluate(L.softmax_cross_entropy, scores=scores, y=y), expected) < 1e-12
    assert_gradients(L.softmax_cross_entropy, scores=scores, y=y)
    # Stable for huge scores, where a naive softmax overflows.
    big = np.array([[1000.0, 0.0]])
    assert np.isfinite(evaluate(L.softmax_cross_entropy, scores=big, y=np.array([1])))


def test_word_embedding():
    x, w = rng.integers(0, 7, (2, 4)), rng.standard_normal((7, 3))
    assert rel_error(evaluate(L.word_embedding, x=x, w=w), w[x]) == 0
    assert_gradients(L.word_embedding, x=x, w=w)


def test_temporal_affine():
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    assert rel_error(evaluate(L.temporal_affine, x=x, w=w, b=b), x @ w + b) < 1e-12
    assert_gradients(L.temporal_affine, x=x, w=w, b=b)


def check_temporal_loss(n, t, v, p):
    """cs231n's sanity check: with small random scores the loss is about N-independent log(V) * T * p."""
    local = np.random.default_rng(0)
    x = 0.001 * local.standard_normal((n, t, v))
    y = local.integers(0, v, (n, t))
    mask = local.random((n, t)) <= p
    return float(evaluate(L.temporal_softmax_loss, scores=x, y=y, mask=mask.astype(np.float64)))


def test_temporal_softmax_loss_sanity_values():
    assert abs(check_temporal_loss(100, 1, 10, 1.0) - 2.3) < 0.1  # log(10)
    assert abs(check_temporal_loss(100, 10, 10, 1.0) - 23) < 1.0  # 10 steps of log(10)
    assert abs(check_temporal_loss(5000, 10, 10, 0.1) - 2.3) < 0.1  # a tenth of the steps count


def test_temporal_softmax_loss_mask_and_gradient():
    n, t, v = 3, 4, 5
    x, y = rng.standard_normal((n, t, v)), rng.integers(0, v, (n, t))
    mask = (rng.random((n, t)) > 0.4).astype(np.float64)
    p = reference.softmax(x)
    expected = -(np.log(p[np.arange(n)[:, None], np.arange(t), y]) * mask).sum() / n
    assert rel_error(evaluate(L.temporal_softmax_loss, scores=x, y=y, mask=mask), expected) < 1e-12
    assert_gradients(L.temporal_softmax_loss, scores=x, y=y, mask=mask)


def test_dropout_gradient():
    # Without its updates the generator does not advance, so every evaluation draws the same
    # mask and finite differences see a fixed function.
    rng_shared = pt.random.shared_rng(seed=3)
    assert_gradients(lambda x: L.dropout(x, 0.4, rng_shared, train=True), x=rng.standard_normal((4, 6)))

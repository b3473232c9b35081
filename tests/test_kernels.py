"""The compiled ops of dlmie.kernels against NumPy loops, adjointness, and float64 gradient checks."""

import itertools

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from pytensor.compile.mode import Mode
from dlmie import layers as L
from dlmie.gradcheck import check_gradients, rel_error
from dlmie.kernels import (BatchNormGrad, BatchNormTrain, Col2Im, EmbeddingGrad, Im2Col, LSTMCell, LSTMCellGrad, MaxPool,
                           SoftmaxCrossEntropy,
                           SoftmaxCrossEntropyGrad, output_size)

GRAD_TOL = 1e-6
rng = np.random.default_rng(2024)

# The C implementations (the default CVM mode) and the NumPy `perform`s (Python linker).
MODES = {"c": None, "python": Mode(linker="py", optimizer="fast_run")}


def im2col_loops(x, kh, kw, stride, pad):
    n, c, h, w = x.shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    cols = np.zeros((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for ci, i, j, ni, y, z in itertools.product(*map(range, (c, kh, kw, n, oh, ow))):
        row, col = y * stride + i - pad, z * stride + j - pad
        if 0 <= row < h and 0 <= col < w:
            cols[(ci * kh + i) * kw + j, (ni * oh + y) * ow + z] = x[ni, ci, row, col]
    return cols


def col2im_loops(cols, shape, kh, kw, stride, pad):
    n, c, h, w = shape
    oh, ow = output_size(h, kh, stride, pad), output_size(w, kw, stride, pad)
    x = np.zeros(shape, dtype=cols.dtype)
    for ci, i, j, ni, y, z in itertools.product(*map(range, (c, kh, kw, n, oh, ow))):
        row, col = y * stride + i - pad, z * stride + j - pad
        if 0 <= row < h and 0 <= col < w:
            x[ni, ci, row, col] += cols[(ci * kh + i) * kw + j, (ni * oh + y) * ow + z]
    return x


# (N, C, H, W), kernel, stride, pad: odd sizes, every stride 1-3 and pad 0-2, kernels 1, 3, 5.
CASES = [
    ((2, 3, 7, 9), 3, 1, 1),
    ((2, 3, 8, 9), 3, 2, 1),
    ((1, 2, 9, 7), 5, 2, 2),
    ((3, 1, 5, 6), 3, 1, 0),
    ((2, 4, 6, 6), 1, 2, 0),
    ((2, 2, 11, 10), 3, 3, 2),
    ((1, 3, 5, 5), 5, 1, 2),
    ((2, 2, 4, 7), 1, 1, 1),
    ((1, 2, 10, 11), 5, 3, 0),
]


def layouts(x):
    """The same values as C-contiguous, a transposed (channel-first) view and a strided slice."""
    yield "contiguous", x, lambda v: v
    yield "transposed", np.ascontiguousarray(x.transpose(1, 0, 2, 3)), lambda v: v.dimshuffle(1, 0, 2, 3)
    wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), dtype=x.dtype)
    wide[..., ::2] = x
    yield "strided", wide, lambda v: v[..., ::2]
    yield "flipped", np.ascontiguousarray(x[..., ::-1]), lambda v: v[..., ::-1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,k,stride,pad", CASES)
def test_im2col_matches_loops(shape, k, stride, pad, dtype, mode):
    x = rng.standard_normal(shape).astype(dtype)
    expected = im2col_loops(x, k, k, stride, pad)
    for name, stored, view in layouts(x):
        v = pt.tensor4(dtype=dtype)
        out = pytensor.function([v], Im2Col(k, k, stride, pad)(view(v)), mode=MODES[mode])(stored)
        assert out.dtype == dtype and out.shape == expected.shape, name
        assert np.array_equal(out, expected), name


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape,k,stride,pad", CASES)
def test_col2im_matches_loops(shape, k, stride, pad, dtype, mode):
    oh, ow = output_size(shape[2], k, stride, pad), output_size(shape[3], k, stride, pad)
    cols = rng.standard_normal((shape[1] * k * k, shape[0] * oh * ow)).astype(dtype)
    expected = col2im_loops(cols, shape, k, k, stride, pad)
    c = pt.matrix(dtype=dtype)
    for name, value, expr in [("contiguous", cols, c), ("transposed", np.ascontiguousarray(cols.T), c.T)]:
        out = pytensor.function([c], Col2Im(k, k, stride, pad)(expr, shape), mode=MODES[mode])(value)
        assert out.dtype == dtype and out.shape == shape, name
        tol = 1e-12 if dtype == "float64" else 1e-5
        assert rel_error(out, expected) < tol, name


@pytest.mark.parametrize("shape,k,stride,pad", CASES)
def test_col2im_is_the_adjoint_of_im2col(shape, k, stride, pad):
    """<Im2Col(x), c> == <x, Col2Im(c)> for random x and c."""
    x = rng.standard_normal(shape)
    v, m = pt.tensor4(dtype="float64"), pt.matrix(dtype="float64")
    cols_x = pytensor.function([v], Im2Col(k, k, stride, pad)(v))(x)
    c = rng.standard_normal(cols_x.shape)
    back = pytensor.function([m], Col2Im(k, k, stride, pad)(m, shape))(c)
    assert np.vdot(cols_x, c) == pytest.approx(np.vdot(x, back), rel=1e-12)


@pytest.mark.parametrize("shape,k,stride,pad", CASES[:5])
def test_im2col_gradient(shape, k, stride, pad):
    errors = check_gradients(lambda x: Im2Col(k, k, stride, pad)(x), {"x": rng.standard_normal(shape)})
    assert errors["x"] < GRAD_TOL


@pytest.mark.parametrize("shape,k,stride,pad", CASES[:5])
def test_col2im_gradient(shape, k, stride, pad):
    oh, ow = output_size(shape[2], k, stride, pad), output_size(shape[3], k, stride, pad)
    cols = rng.standard_normal((shape[1] * k * k, shape[0] * oh * ow))
    errors = check_gradients(lambda c: Col2Im(k, k, stride, pad)(c, shape), {"c": cols})
    assert errors["c"] < GRAD_TOL


def test_second_derivative_through_im2col():
    """Each op is the other's pullback, so gradients of gradients work too."""
    x = pt.tensor4(dtype="float64")
    cols = Im2Col(3, 3, 2, 1)(x)
    g = pytensor.grad((cols**2).sum(), x)  # Col2Im(2 * cols): 2 * (number of windows) * x
    gg = pytensor.grad((g**2).sum(), x)  # through Im2Col(Col2Im(...))
    xv = rng.standard_normal((2, 2, 5, 6))
    count = pytensor.function([x], Col2Im(3, 3, 2, 1)(Im2Col(3, 3, 2, 1)(pt.ones_like(x)), x.shape))(xv)
    gv, ggv = pytensor.function([x], [g, gg])(xv)
    assert rel_error(gv, 2 * count * xv) < 1e-12
    assert rel_error(ggv, 8 * count**2 * xv) < 1e-12


def test_static_shapes_and_errors():
    x = pt.tensor(dtype="float32", shape=(4, 3, 9, 9))
    assert Im2Col(3, 3, 2, 1)(x).type.shape == (27, 4 * 5 * 5)
    assert Col2Im(3, 3, 2, 1)(Im2Col(3, 3, 2, 1)(x), x.shape).type.shape == (4, 3, 9, 9)
    with pytest.raises(TypeError):
        Im2Col(3, 3)(pt.matrix())
    with pytest.raises(TypeError):
        Im2Col(3, 3)(pt.tensor4(dtype="int32"))
    with pytest.raises(ValueError):
        Im2Col(0, 3)
    v = pt.tensor4(dtype="float64")
    with pytest.raises(ValueError, match="does not fit"):
        pytensor.function([v], Im2Col(5, 5)(v))(np.zeros((1, 1, 3, 3)))
    m = pt.matrix(dtype="float64")
    with pytest.raises(ValueError, match="do not fit"):
        pytensor.function([m], Col2Im(3, 3, 1, 1)(m, (1, 1, 4, 4)))(np.zeros((9, 15)))


# ---------------------------------------------------------------- batch normalization


def batchnorm_reference(x, gamma, beta, eps):
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes)
    var = ((x - mean.reshape(shape)) ** 2).mean(axis=axes)
    x_hat = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    out = gamma.reshape(shape) * x_hat + beta.reshape(shape)
    return out, mean, var


BN_SHAPES = [(6, 5), (4, 3, 5, 7), (5, 4, 1, 1), (3, 2, 4, 4)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_train_matches_numpy(shape, mode):
    x = rng.standard_normal(shape) * 3 + 2
    gamma, beta = rng.standard_normal(shape[1]), rng.standard_normal(shape[1])
    expected = batchnorm_reference(x, gamma, beta, 1e-5)
    v = pt.tensor(dtype="float64", shape=(None,) * len(shape))
    g, b = pt.vector(dtype="float64"), pt.vector(dtype="float64")
    stored, view = x, v
    if len(shape) == 4:  # a channel-first view, as conv2d produces
        stored, view = np.ascontiguousarray(x.transpose(1, 0, 2, 3)), v.dimshuffle(1, 0, 2, 3)
    f = pytensor.function([v, g, b], BatchNormTrain(1e-5)(view, g, b), mode=MODES[mode])
    for got, want in zip(f(stored, gamma, beta), expected):
        assert rel_error(got, want) < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm_ops_on_strided_views(mode):
    """Views whose image planes are not contiguous take the general loops; same results."""
    x = rng.standard_normal((3, 4, 5, 12))
    dy = rng.standard_normal((3, 4, 5, 6))
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    v, d = pt.tensor4(dtype="float64"), pt.tensor4(dtype="float64")
    g, b = pt.vector(dtype="float64"), pt.vector(dtype="float64")
    view = v[..., ::-2]  # stride -2 along the width
    out, mean, var = BatchNormTrain(1e-5)(view, g, b)
    grads = BatchNormGrad(1e-5)(view, g, mean, var, d[:, :, ::-1])
    f = pytensor.function([v, d, g, b], [out, mean, var, *grads], mode=MODES[mode])
    got = f(x, dy, gamma, beta)
    xs = x[..., ::-2]
    for a, e in zip(got[:3], batchnorm_reference(xs, gamma, beta, 1e-5)):
        assert rel_error(a, e) < 1e-10
    formula = pytensor.function([v, d, g], _grad_formula(v, d, g))
    for a, e in zip(got[3:], formula(x, dy, gamma)):
        assert rel_error(a, e) < 1e-10


def _grad_formula(v, d, g):
    from dlmie.kernels.batchnorm_c import grad_graph as _batchnorm_grad_graph

    xs = v[..., ::-2]
    mean, var = xs.mean(axis=(0, 2, 3)), xs.var(axis=(0, 2, 3))
    return list(_batchnorm_grad_graph(xs, g, mean, var, d[:, :, ::-1], 1e-5))


def test_batchnorm_output_keeps_the_memory_order():
    """A channel-first input gives a channel-first output, and so does the gradient."""
    x = np.ascontiguousarray(rng.standard_normal((3, 4, 5, 6)).astype("float32").transpose(1, 0, 2, 3))
    v = pt.tensor4(dtype="float32")
    g = pt.vector(dtype="float32")
    out, _, _ = BatchNormTrain(1e-5)(v.dimshuffle(1, 0, 2, 3), g, g)
    dx = pytensor.grad((out**2).sum(), v)
    f = pytensor.function([v, g], [out, dx])
    o, d = f(x, np.ones(4, "float32"))
    assert o.dtype == np.float32 and o.transpose(1, 0, 2, 3).flags.c_contiguous
    assert d.flags.c_contiguous  # the gradient of the channel-first input: stored channel-first


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_train_gradients(shape):
    rng = np.random.default_rng(4)  # finite differences of batch norm are touchy: a seed with margin
    def build(x, gamma, beta):
        out, mean, var = BatchNormTrain(1e-5)(x, gamma, beta)
        # Every output gets a gradient: out, and mean and var as the running statistics would.
        per_channel = ("x", 0) + ("x",) * (x.ndim - 2)
        return out + 0.3 * mean.dimshuffle(per_channel) - 0.7 * var.dimshuffle(per_channel)

    errors = check_gradients(build, {"x": rng.standard_normal(shape), "gamma": rng.standard_normal(shape[1]),
                                     "beta": rng.standard_normal(shape[1])})
    for name, err in errors.items():
        assert err < GRAD_TOL, (name, err)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 4)])
def test_batchnorm_grad_op_gradients(shape):
    """BatchNormGrad's own pullback (second derivatives of batch norm)."""
    rng = np.random.default_rng(4)  # finite differences of batch norm are touchy: a seed with margin

    def build(x, gamma, dy):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        dx, dgamma, dbeta = BatchNormGrad(1e-5)(x, gamma, mean, var, dy)
        return dx * 1.5 + (dgamma - 2 * dbeta).sum()

    errors = check_gradients(build, {"x": rng.standard_normal(shape), "gamma": rng.standard_normal(shape[1]),
                                     "dy": rng.standard_normal(shape)})
    for name, err in errors.items():
        assert err < GRAD_TOL, (name, err)


def _hide_bn_c_code(monkeypatch):
    """Batch norm as the student handout has it: no dlmie.kernels.batchnorm_c, so the Ops run their
    `perform`, which calls dlmie.numpy_layers (calls counted: the values must come from there)."""
    from dlmie import numpy_layers
    from dlmie.kernels import batchnorm

    calls = {"batchnorm_forward": 0, "batchnorm_backward": 0}
    for name in calls:
        def counted(*args, _name=name, _original=getattr(numpy_layers, name)):
            calls[_name] += 1
            return _original(*args)
        monkeypatch.setattr(numpy_layers, name, counted)
    monkeypatch.setattr(batchnorm, "batchnorm_c", None)
    return calls


def _bn_function(shape, dtype):
    """(x, gamma, beta, dy) -> out, mean, var, dx, dgamma, dbeta of BatchNormTrain and BatchNormGrad,
    x read through a channel-first view for 4-D shapes (as conv2d produces)."""
    v = pt.tensor(dtype=dtype, shape=(None,) * len(shape))
    g, b = pt.vector(dtype=dtype), pt.vector(dtype=dtype)
    dy = pt.tensor(dtype=dtype, shape=(None,) * len(shape))
    view = v.dimshuffle(1, 0, 2, 3) if len(shape) == 4 else v
    out, mean, var = BatchNormTrain(1e-5)(view, g, b)
    return pytensor.function([v, g, b, dy], [out, mean, var, *BatchNormGrad(1e-5)(view, g, mean, var, dy)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batchnorm_without_c_code_runs_numpy_layers(shape, dtype, monkeypatch):
    """Without the C module, the Ops compute with the student's NumPy parts (dlmie.numpy_layers)
    and give the C code's values, a constant channel included."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape) * 3 + 2
    x[:, 0] = 0.75
    gamma, beta, dy = rng.standard_normal(shape[1]), rng.standard_normal(shape[1]), rng.standard_normal(shape)
    stored = np.ascontiguousarray(x.transpose(1, 0, 2, 3)) if x.ndim == 4 else x
    args = [a.astype(dtype) for a in (stored, gamma, beta, dy)]
    with_c = _bn_function(shape, dtype)(*args)
    calls = _hide_bn_c_code(monkeypatch)
    without_c = _bn_function(shape, dtype)(*args)
    assert calls == {"batchnorm_forward": 1, "batchnorm_backward": 1}
    tol = 1e-5 if dtype == "float32" else 1e-10
    for name, got, want in zip(("out", "mean", "var", "dx", "dgamma", "dbeta"), without_c, with_c):
        assert got.dtype == dtype and got.shape == want.shape, name
        assert np.max(np.abs(got - want)) <= tol * max(1.0, np.max(np.abs(want))), name
    assert without_c[2][0] < 1e-12  # the variance of the constant channel


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 4)])
def test_batchnorm_without_c_code_gradients(shape, monkeypatch):
    """Without the C module: first derivatives through BatchNormTrain's perform and BatchNormGrad's
    (numpy_layers), and second derivatives through BatchNormGrad's pullback, against centered
    differences."""
    calls = _hide_bn_c_code(monkeypatch)
    rng = np.random.default_rng(4)  # finite differences of batch norm are touchy: the seed of the tests above
    x, gamma, beta, dy = (rng.standard_normal(s) for s in (shape, shape[1], shape[1], shape))
    per_channel = ("x", 0) + ("x",) * (len(shape) - 2)

    def train(x, gamma, beta):
        out, mean, var = BatchNormTrain(1e-5)(x, gamma, beta)
        return out + 0.3 * mean.dimshuffle(per_channel) - 0.7 * var.dimshuffle(per_channel)

    def grad(x, gamma, dy):
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        dx, dgamma, dbeta = BatchNormGrad(1e-5)(x, gamma, x.mean(axis=axes), x.var(axis=axes), dy)
        return dx * 1.5 + (dgamma - 2 * dbeta).sum()

    for build, values in ((train, {"x": x, "gamma": gamma, "beta": beta}), (grad, {"x": x, "gamma": gamma, "dy": dy})):
        for name, err in check_gradients(build, values).items():
            assert err < GRAD_TOL, (build.__name__, name, err)
    assert calls["batchnorm_forward"] > 0 and calls["batchnorm_backward"] > 0


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 4)])
def test_batchnorm_grad_graph_without_c_code_is_the_formula(shape, monkeypatch):
    """BatchNormGrad's pullback differentiates, without the C module, a graph built by autodiff:
    the same values and derivatives as the C module's formula, for mean and var that are NOT the
    batch's statistics (they are independent inputs of BatchNormGrad)."""
    from dlmie.kernels import batchnorm, batchnorm_c

    rng = np.random.default_rng(5)
    nd = len(shape)
    values = [rng.standard_normal(shape), rng.standard_normal(shape[1]), rng.standard_normal(shape[1]),
              rng.random(shape[1]) + 0.5, rng.standard_normal(shape)]
    inputs = [pt.tensor(dtype="float64", shape=(None,) * nd), *(pt.dvector() for _ in range(3)),
              pt.tensor(dtype="float64", shape=(None,) * nd)]
    cot = [rng.standard_normal(shape), rng.standard_normal(shape[1]), rng.standard_normal(shape[1])]

    def values_and_derivatives(formula):
        outputs = list(formula(*inputs, 1e-3))
        cost = sum((o * c).sum() for o, c in zip(outputs, cot))
        return pytensor.function(inputs, outputs + pytensor.grad(cost, inputs))(*values)

    want = values_and_derivatives(batchnorm_c.grad_graph)
    monkeypatch.setattr(batchnorm, "batchnorm_c", None)
    got = values_and_derivatives(batchnorm._batchnorm_grad_graph)
    for k, (a, e) in enumerate(zip(got, want)):
        assert rel_error(a, e) < 1e-10, k


# ---------------------------------------------------------------- softmax cross-entropy


def cross_entropy_reference(scores, y):
    """Per-row -log softmax(scores)[y] and logsumexp, straight from the definition in float64."""
    s = scores.astype(np.float64)
    lse = np.log(np.exp(s - s.max(axis=1, keepdims=True)).sum(axis=1)) + s.max(axis=1)
    return lse - s[np.arange(len(y)), y], lse


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_matches_the_definition(mode, dtype):
    scores = (rng.standard_normal((7, 11)) * 5).astype(dtype)
    scores[3] += 1000  # large scores: the max is subtracted before exp
    y = rng.integers(0, 11, 7)
    s, t = pt.matrix(dtype=dtype), pt.lvector()
    loss, lse = SoftmaxCrossEntropy()(s, t)
    got_loss, got_lse = pytensor.function([s, t], [loss, lse], mode=MODES[mode])(scores, y)
    want_loss, want_lse = cross_entropy_reference(scores, y)
    tol = 1e-5 if dtype == "float32" else 1e-12
    assert got_loss.dtype == dtype and rel_error(got_loss, want_loss) < tol
    assert rel_error(got_lse, want_lse) < tol


@pytest.mark.parametrize("mode", MODES)
def test_softmax_cross_entropy_gradient_on_a_strided_view(mode):
    """The scores read through a transposed view; rows with a zero gradient give zero rows."""
    stored = rng.standard_normal((9, 6))
    y = rng.integers(0, 9, 6)
    g = rng.standard_normal(6)
    g[[1, 4]] = 0
    s, t, gv = pt.matrix(dtype="float64"), pt.lvector(), pt.vector(dtype="float64")
    loss, _ = SoftmaxCrossEntropy()(s.T, t)
    d = pytensor.grad((loss * gv).sum(), s)
    got = pytensor.function([s, t, gv], d, mode=MODES[mode])(stored, y, g)
    scores = stored.T
    softmax = np.exp(scores - scores.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    want = (softmax - np.eye(9)[y]) * g[:, None]
    assert rel_error(got, want.T) < 1e-12
    assert np.all(got[:, [1, 4]] == 0)


def test_softmax_cross_entropy_gradients():
    """Both outputs get a gradient (the loss and the logsumexp); float64 finite differences."""
    y = rng.integers(0, 8, 5)

    def build(scores):
        loss, lse = SoftmaxCrossEntropy()(scores, pt.as_tensor(y))
        return pt.stack([loss, 0.5 * lse])

    errors = check_gradients(build, {"scores": rng.standard_normal((5, 8))})
    assert errors["scores"] < GRAD_TOL, errors


@pytest.mark.parametrize("mode", MODES)
def test_softmax_cross_entropy_rejects_bad_targets(mode):
    s, t = pt.matrix(dtype="float64"), pt.lvector()
    loss, lse = SoftmaxCrossEntropy()(s, t)
    d = SoftmaxCrossEntropyGrad()(s, t, lse, loss)
    forward = pytensor.function([s, t], loss, mode=MODES[mode])
    backward = pytensor.function([s, t], d, mode=MODES[mode])
    scores = rng.standard_normal((3, 4))
    for f in (forward, backward):
        with pytest.raises(IndexError, match=r"target 4 of row 1 is not a class index in \[0, 4\)"):
            f(scores, np.array([0, 4, 1]))
        with pytest.raises(IndexError, match="target -1 of row 2"):
            f(scores, np.array([0, 1, -1]))
    with pytest.raises(ValueError, match="per-row input"):
        forward(scores, np.array([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        SoftmaxCrossEntropy()(s, pt.vector(dtype="float64"))


# ---------------------------------------------------------------- LSTM cell


def lstm_cell_reference(a, c_prev):
    """h, c and the activated gates of one step, cs231n's equations in float64."""
    hidden = c_prev.shape[1]
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    i, f, o = (sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
    g = np.tanh(a[:, 3 * hidden :])
    c = f * c_prev + i * g
    return o * np.tanh(c), c, np.concatenate([i, f, o, g], axis=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lstm_cell_matches_the_equations(mode, dtype):
    """Large pre-activations included (the gates saturate, nothing overflows); `a` is read
    through a transposed view, which the C code copies to contiguous memory first."""
    a = (rng.standard_normal((5, 12)) * 4).astype(dtype)
    a[0, :4] = [-200, 200, -60, 60]
    c_prev = rng.standard_normal((5, 3)).astype(dtype)
    stored, cell = pt.matrix(dtype=dtype), pt.matrix(dtype=dtype)
    outputs = LSTMCell()(stored.T, cell)
    got = pytensor.function([stored, cell], outputs, mode=MODES[mode])(np.ascontiguousarray(a.T), c_prev)
    tol = 1e-6 if dtype == "float32" else 1e-12
    for name, value, want in zip(("h", "c", "act"), got, lstm_cell_reference(a.astype(np.float64), c_prev)):
        assert value.dtype == dtype and np.all(np.isfinite(value))
        assert np.max(np.abs(value - want)) < tol, name


def test_lstm_cell_gradients():
    """Every output gets a gradient, the gates too (the pullback adds their derivative)."""
    def build(a, c_prev):
        h, c, act = LSTMCell()(a, c_prev)
        return pt.concatenate([h, 0.7 * c, 0.3 * act], axis=1)

    errors = check_gradients(build, {"a": rng.standard_normal((3, 16)) * 2, "c_prev": rng.standard_normal((3, 4))})
    for name, err in errors.items():
        assert err < GRAD_TOL, (name, err)


@pytest.mark.parametrize("mode", MODES)
def test_lstm_cell_grad_matches_the_pullback_formula(mode):
    a, c_prev = rng.standard_normal((4, 20)), rng.standard_normal((4, 5))
    dh, dc = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    h, c, act = lstm_cell_reference(a, c_prev)
    i, f, o, g = np.split(act, 4, axis=1)
    d_cell = dc + dh * o * (1 - np.tanh(c) ** 2)
    want_da = np.concatenate([d_cell * g * i * (1 - i), d_cell * c_prev * f * (1 - f),
                              dh * np.tanh(c) * o * (1 - o), d_cell * i * (1 - g**2)], axis=1)
    inputs = [pt.matrix(dtype="float64") for _ in range(5)]
    f_grad = pytensor.function(inputs, LSTMCellGrad()(*inputs), mode=MODES[mode])
    d_a, d_c_prev = f_grad(act, c_prev, c, dh, dc)
    assert rel_error(d_a, want_da) < 1e-10
    assert rel_error(d_c_prev, d_cell * f) < 1e-10


@pytest.mark.parametrize("mode", MODES)
def test_lstm_cell_rejects_mismatched_shapes(mode):
    a, cell = pt.matrix(dtype="float64"), pt.matrix(dtype="float64")
    f = pytensor.function([a, cell], LSTMCell()(a, cell), mode=MODES[mode])
    with pytest.raises(ValueError, match=r"gates must be \(N, 4H\) and cell states \(N, H\)"):
        f(np.zeros((2, 12)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="got gates 2x10"):
        f(np.zeros((2, 10)), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="one dtype"):
        LSTMCell()(a, pt.matrix(dtype="float32"))


# ---------------------------------------------------------------- embedding gradient


@pytest.mark.parametrize("mode", MODES)
def test_embedding_grad_adds_the_rows_of_repeated_words(mode):
    """Rows read through a strided view (every other column); word 3 appears three times."""
    words = np.array([3, 0, 3, 5, 3])
    stored = rng.standard_normal((5, 8)).astype("float32")
    w, r = pt.lvector(), pt.matrix(dtype="float32")
    f = pytensor.function([w, r], EmbeddingGrad()(w, r[:, ::2], 6), mode=MODES[mode])
    want = np.zeros((6, 4), np.float32)
    for word, row in zip(words, stored[:, ::2]):
        want[word] += row
    got = f(words, stored)
    assert got.shape == (6, 4) and got.dtype == np.float32
    assert np.allclose(got, want, atol=1e-6)
    with pytest.raises(IndexError, match=r"word 6 at position 1 is not a row index in \[0, 6\)"):
        f(np.array([0, 6, 1, 2, 2]), stored)
    with pytest.raises(ValueError, match="4 words but 5 gradient rows"):
        f(np.array([0, 1, 1, 2]), stored)


def test_word_embedding_gradient():
    """Through the lookup (repeated words included), float64 finite differences."""
    words = np.array([[1, 4, 1], [0, 4, 4]])
    errors = check_gradients(lambda w: L.word_embedding(pt.as_tensor(words), w), {"w": rng.standard_normal((5, 3))})
    assert errors["w"] < GRAD_TOL, errors



def max_pool_loops(x, k):
    n, c, h, w = x.shape
    out = np.empty((n, c, h // k, w // k), dtype=x.dtype)
    for ni, ci, y, z in itertools.product(range(n), range(c), range(h // k), range(w // k)):
        out[ni, ci, y, z] = max(x[ni, ci, y * k + i, z * k + j] for i in range(k) for j in range(k))
    return out


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape,k", [((2, 3, 8, 8), 2), ((2, 3, 7, 9), 2), ((1, 2, 9, 10), 3), ((2, 1, 5, 5), 1)])
def test_max_pool_matches_loops(mode, shape, k):
    x = rng.standard_normal(shape)
    for layout, value, view in layouts(x):
        v = pt.tensor4(dtype="float64")
        f = pytensor.function([v], MaxPool(k)(view(v)), mode=MODES[mode])
        assert np.array_equal(f(value), max_pool_loops(x, k)), layout


def test_max_pool_gradient_goes_to_every_tied_maximum():
    x = np.array([[[[1.0, 3.0, 0.0, 0.0, 9.0],
                    [3.0, 2.0, 0.0, -1.0, 9.0],
                    [5.0, 5.0, 1.0, 2.0, 9.0]]]])  # one window with a tie, one of zeros, a cropped row and column
    v = pt.tensor4(dtype="float64")
    g = pytensor.function([v], pytensor.grad(MaxPool(2)(v).sum() * 2, v))(x)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = expected[0, 0, 1, 0] = 2.0          # the tie: both
    expected[0, 0, 0, 2] = expected[0, 0, 0, 3] = expected[0, 0, 1, 2] = 2.0  # three zeros tie at 0
    assert np.array_equal(g, expected)


@pytest.mark.parametrize("shape,k", [((2, 2, 6, 7), 2), ((1, 2, 7, 6), 3)])
def test_max_pool_gradients(shape, k):
    x = rng.permutation(np.arange(np.prod(shape), dtype=np.float64)).reshape(shape) * 0.1  # no ties
    errors = check_gradients(lambda x: MaxPool(k)(x), {"x": x})
    assert errors["x"] < GRAD_TOL

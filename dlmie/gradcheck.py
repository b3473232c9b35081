"""Numerical gradient checks, cs231n style: compare PyTensor's symbolic gradient with centered
finite differences in float64 and report the relative error next to its tolerance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import compile_cache


def rel_error(x, y):
    """Largest elementwise relative error max |x - y| / max(1e-8, |x| + |y|), as in cs231n."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Centered finite differences of a scalar function with respect to an array it reads.

    Inputs:
    - f: takes no arguments and returns a float computed from the current contents of `x`
    - x: float64 array, changed in place one element at a time and restored
    - h: step size
    Returns:
    - grad: array of x's shape, grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = f()
        x[index] = old - h
        f_minus = f()
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def check_gradients(build, inputs: dict, wrt=None, seed: int = 0, h: float = 1e-5) -> dict:
    """Relative error between symbolic and numerical gradients of a PyTensor expression.

    The expression's output is reduced to the scalar sum(out * dout) with a fixed random dout,
    so every output element's gradient is checked (the upstream-gradient trick of cs231n).

    Inputs:
    - build: function taking PyTensor variables as keyword arguments (one per entry of
      `inputs`) and returning an expression, or a tuple whose first element is the expression
      (layers such as batchnorm return `(out, updates)`)
    - inputs: name -> NumPy array; float arrays are cast to float64, integer arrays stay
    - wrt: names to differentiate (default: every float input)
    - seed: seed of dout
    - h: finite-difference step
    Returns:
    - errors: name -> relative error between symbolic and numerical gradient
    """
    values = {
        name: (np.array(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
        for name, v in inputs.items()
    }
    wrt = [n for n, v in values.items() if v.dtype.kind == "f"] if wrt is None else list(wrt)
    variables = {name: pt.tensor(name=name, dtype=v.dtype, shape=v.shape) for name, v in values.items()}
    out = build(**variables)
    out = out[0] if isinstance(out, tuple) else out
    dout_shape = compile_cache.function(list(variables.values()), out.shape)(*values.values())
    dout = np.random.default_rng(seed).standard_normal(tuple(dout_shape))
    loss = pt.sum(out * pt.constant(dout))
    grads = pytensor.grad(loss, [variables[n] for n in wrt])
    order = list(values)
    f_loss = compile_cache.function([variables[n] for n in order], loss)
    f_grads = compile_cache.function([variables[n] for n in order], grads)
    symbolic = f_grads(*values.values())

    def current_loss():
        return float(f_loss(*(values[n] for n in order)))

    return {
        name: rel_error(g, numerical_gradient(current_loss, values[name], h))
        for name, g in zip(wrt, symbolic)
    }


def report(title: str, errors: dict, tolerance: float = 1e-6) -> bool:
    """Print one line per checked input: the relative error, the tolerance and OK or FAIL.

    Returns True when every error is below the tolerance.
    """
    ok = True
    for name, err in errors.items():
        passed = err < tolerance
        ok &= passed
        print(f"{title:<28} d{name:<10} rel_error={err:.2e}  (tolerance {tolerance:.0e})  {'OK' if passed else 'FAIL'}")
    return ok


def layer_checks(seed: int = 0) -> list:
    """One small float64 gradient check per layer of `dlmie.layers`, for notebooks and reports.

    Returns a list of `(title, build, inputs, h)` to pass to `check_gradients(build, inputs, h=h)`.
    Shapes are odd on purpose (7x9 images, stride 2, padding) so that index mistakes show.
    """
    from dlmie import layers as L

    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    relu_input = normal((4, 5))
    relu_input[np.abs(relu_input) < 1e-2] = 0.5  # finite differences must not straddle the kink
    running = (np.abs(normal(3)), 1 + np.abs(normal(3)))
    checks = [
        ("affine", L.affine, {"x": normal((3, 2, 4)), "w": normal((8, 5)), "b": normal(5)}),
        ("relu", L.relu, {"x": relu_input}),
        ("relu6", L.relu6, {"x": relu_input * 4 + np.where(np.abs(relu_input * 4 - 6) < 1e-2, 0.5, 0)}),
        ("conv2d stride 1 pad 1", lambda x, w, b: L.conv2d(x, w, b, 1, 1),
         {"x": normal((2, 3, 7, 9)), "w": normal((4, 3, 3, 3)), "b": normal(4)}),
        ("conv2d stride 2 pad 2", lambda x, w, b: L.conv2d(x, w, b, 2, 2),
         {"x": normal((1, 2, 9, 7)), "w": normal((3, 2, 5, 5)), "b": normal(3)}),
        ("depthwise_conv2d stride 2 pad (0,1,0,1)", lambda x, w, b: L.depthwise_conv2d(x, w, b, 2, (0, 1, 0, 1)),
         {"x": normal((2, 3, 8, 7)), "w": normal((3, 1, 3, 3)), "b": normal(3)}),
        ("max_pool 2x2", L.max_pool, {"x": normal((2, 3, 7, 9))}),
        ("max_pool 3x3 stride 2 pad 1", lambda x: L.max_pool(x, 3, 2, 1), {"x": normal((2, 2, 7, 7))}),
        ("avg_pool 3x3 stride 2", lambda x: L.avg_pool(x, 3, 2), {"x": normal((1, 2, 9, 8))}),
        ("batchnorm (N, D) train", lambda x, g, b: L.batchnorm(x, g, b, running[0], running[1], True),
         {"x": normal((6, 3)), "g": normal(3), "b": normal(3)}),
        ("spatial batchnorm train", lambda x, g, b: L.batchnorm(x, g, b, running[0], running[1], True),
         {"x": normal((3, 3, 4, 5)), "g": normal(3), "b": normal(3)}),
        ("spatial batchnorm inference", lambda x, g, b: L.batchnorm(x, g, b, running[0], running[1], False),
         {"x": normal((3, 3, 4, 5)), "g": normal(3), "b": normal(3)}),
        # Without its updates the generator stays put, so every evaluation draws the same mask.
        ("dropout p=0.4 train", lambda x: L.dropout(x, 0.4, pt.random.shared_rng(seed=seed), True),
         {"x": normal((4, 6))}),
        ("softmax_cross_entropy", L.softmax_cross_entropy, {"scores": normal((5, 7)), "y": rng.integers(0, 7, 5)}),
        ("word_embedding", L.word_embedding, {"x": rng.integers(0, 6, (2, 3)), "w": normal((6, 4))}),
        ("temporal_affine", L.temporal_affine, {"x": normal((2, 3, 4)), "w": normal((4, 5)), "b": normal(5)}),
    ]
    return [(title, build, inputs, 1e-5) for title, build, inputs in checks]


def recurrent_checks(seed: int = 0) -> list:
    """Float64 gradient checks of the recurrent pieces: the LSTM step, the LSTM over time (scan and
    its written-out backward pass) and the masked temporal softmax loss. Same format as
    `layer_checks`: (title, build, inputs, h)."""
    from dlmie import layers as L
    from dlmie import rnn

    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    n, t, d, h = 3, 5, 4, 6
    weights = {"wx": normal((d, 4 * h)) * 0.4, "wh": normal((h, 4 * h)) * 0.4, "b": normal(4 * h)}

    def lstm_step(x, h_prev, c_prev, wx, wh, b):
        return pt.concatenate(rnn.lstm_step(x, h_prev, c_prev, wx, wh, b), axis=1)

    return [
        ("lstm_step (h and c)", lstm_step,
         {"x": normal((n, d)), "h_prev": normal((n, h)), "c_prev": normal((n, h)), **weights}, 1e-5),
        ("lstm over 5 steps (h and c)",
         lambda x, h0, c0, wx, wh, b: pt.concatenate(rnn.lstm(x, h0, wx, wh, b, c0=c0), axis=2),
         {"x": normal((n, t, d)), "h0": normal((n, h)), "c0": normal((n, h)), **weights}, 1e-5),
        ("temporal_softmax_loss", L.temporal_softmax_loss,
         {"scores": normal((3, 4, 6)), "y": rng.integers(0, 6, (3, 4)), "mask": (rng.random((3, 4)) > 0.3) * 1.0}, 1e-5),
    ]


def captioner_checks(seed: int = 0) -> list:
    """The float64 gradient check of the complete Show and Tell loss on padded captions (notebook 06,
    after its loss is written). Same format as `layer_checks`: (title, build, inputs, h)."""
    from dlmie.models import show_and_tell

    rng = np.random.default_rng(seed)
    spec = show_and_tell.Spec(vocab_size=9, feature_dim=7, embed_dim=5, hidden_dim=6, dropout=0.0)
    captions = np.array([[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0], [1, 8, 8, 4, 5, 2]])  # <START> .. <END> <NULL>

    def caption_loss(features, **params):
        return show_and_tell.loss(spec, params, features, pt.as_tensor(captions), train=False)[0]

    # O(1) random weights rather than the small initial ones, and h = 1e-4: the loss sums ~30
    # nats, so with h = 1e-5 the round-off of its finite differences (~1e-16 * 30 / h) is as
    # large as the smallest gradient entries and rel_error would measure it, not the gradient.
    return [
        ("Show and Tell loss, padded captions", caption_loss,
         {"features": rng.standard_normal((3, 7)),
          **{k: rng.standard_normal(v.shape) * 0.5 for k, v in show_and_tell.init_params(spec, seed=seed).items()}},
         1e-4),
    ]

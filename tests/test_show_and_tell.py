"""The LSTM and Show and Tell: gradient checks, overfitting two captions, decoding edge cases."""

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L, optim, rnn
from dlmie.captioning.decode import Decoder
from dlmie.data.vocab import END, START, Vocabulary
from dlmie.gradcheck import check_gradients, rel_error
from dlmie.models import show_and_tell

GRAD_TOL = 1e-6
rng = np.random.default_rng(5)


def numpy_lstm(x, h0, wx, wh, b):
    """Plain NumPy LSTM, cs231n's equations, returning h (N, T, H)."""
    n, t, _ = x.shape
    hidden = h0.shape[1]
    h, c, out = h0, np.zeros_like(h0), []
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    for step in range(t):
        a = x[:, step] @ wx + h @ wh + b
        i, f, o = (sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        g = np.tanh(a[:, 3 * hidden :])
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out, axis=1)


def lstm_inputs(n=3, t=4, d=5, h=6):
    return {"x": rng.standard_normal((n, t, d)), "h0": rng.standard_normal((n, h)),
            "wx": rng.standard_normal((d, 4 * h)) * 0.4, "wh": rng.standard_normal((h, 4 * h)) * 0.4,
            "b": rng.standard_normal(4 * h)}


def test_lstm_matches_numpy_and_step():
    inputs = lstm_inputs()
    sym = {k: pt.tensor(dtype="float64", shape=(None,) * v.ndim, name=k) for k, v in inputs.items()}
    h, _ = rnn.lstm(**sym)
    ours = pytensor.function(list(sym.values()), h)(*inputs.values())
    assert rel_error(ours, numpy_lstm(**inputs)) < 1e-10


def test_lstm_gradients():
    """Both outputs (h and c) and every input (c0 included) through the written-out backward pass."""
    inputs = {**lstm_inputs(), "c0": rng.standard_normal((3, 6))}

    def both_states(x, h0, wx, wh, b, c0):
        return pt.concatenate(rnn.lstm(x, h0, wx, wh, b, c0=c0), axis=2)

    for name, err in check_gradients(both_states, inputs).items():
        assert err < GRAD_TOL, f"d{name}: {err:.2e}"
    step_inputs = {"x": rng.standard_normal((3, 5)), "h": rng.standard_normal((3, 6)), "c": rng.standard_normal((3, 6)),
                   "wx": rng.standard_normal((5, 24)) * 0.4, "wh": rng.standard_normal((6, 24)) * 0.4,
                   "b": rng.standard_normal(24)}
    for name, err in check_gradients(lambda x, h, c, wx, wh, b: pt.concatenate(rnn.lstm_step(x, h, c, wx, wh, b), axis=1),
                                     step_inputs).items():
        assert err < GRAD_TOL, f"lstm_step d{name}: {err:.2e}"


def test_lstm_backward_does_not_recompute_the_forward_pass():
    """The backward scan holds one GEMM per step (da Wh^T) and reads the stored gates: no LSTMCell
    and no h_prev Wh in it, which is what `pytensor.grad` of a plain scan would recompute."""
    from pytensor.scan.op import Scan
    from pytensor.tensor.blas import Dot22, Gemm, Gemv
    from dlmie.kernels import LSTMCell, LSTMCellGrad

    x, h0 = pt.tensor3("x"), pt.matrix("h0")
    wx, wh, b = pt.matrix("wx"), pt.matrix("wh"), pt.vector("b")
    h, _ = rnn.lstm(x, h0, wx, wh, b)
    f = pytensor.function([x, h0, wx, wh, b], pytensor.grad((h**2).sum(), [x, wh]))
    inner_ops = [[type(node.op) for node in node.op.fgraph.apply_nodes]
                 for node in f.maker.fgraph.apply_nodes if isinstance(node.op, Scan)]
    backward = [ops for ops in inner_ops if LSTMCellGrad in ops]
    assert len(inner_ops) == 2 and len(backward) == 1, inner_ops
    assert LSTMCell not in backward[0]
    assert sum(op in (Dot22, Gemm, Gemv) for op in backward[0]) == 1, backward[0]


SPEC = show_and_tell.Spec(vocab_size=9, feature_dim=7, embed_dim=5, hidden_dim=6, dropout=0.0)


def test_show_and_tell_loss_gradients():
    params = show_and_tell.init_params(SPEC, seed=1, dtype="float64")
    captions = np.array([[START, 4, 5, 6, END, 0], [START, 7, END, 0, 0, 0]])
    features = rng.standard_normal((2, 7))

    def build(features, **p):
        return show_and_tell.loss(SPEC, p, features, pt.as_tensor(captions), train=False)[0]

    # h = 1e-4: the loss sums ~10 nats, so h = 1e-5 leaves ~1e-10 of round-off on gradient entries
    # as small as 1e-5, a relative error above 1e-6 that is the check's, not the gradient's.
    errors = check_gradients(build, {"features": features, **params}, h=1e-4)
    assert set(errors) >= {"features", "embed.W", "lstm.Wh", "out.W"}
    for name, err in errors.items():
        assert err < GRAD_TOL, f"d{name}: {err:.2e}"


def test_loss_ignores_null_targets():
    """Changing what follows <END> (the padding) must not change the loss."""
    params = L.shared_params(show_and_tell.init_params(SPEC, seed=2))
    f, c = pt.matrix("f"), pt.lmatrix("c")
    loss = pytensor.function([f, c], show_and_tell.loss(SPEC, params, f, c, train=False)[0])
    features = rng.standard_normal((1, 7)).astype(np.float32)
    a = loss(features, np.array([[START, 4, END, 0, 0]]))
    b = loss(features, np.array([[START, 4, END, 0]]))
    assert np.isclose(a, b, rtol=1e-6)


def overfit(spec, features, captions, steps=300, lr=1e-2):
    params = L.shared_params(show_and_tell.init_params(spec, seed=0))
    f, c = pt.matrix("f"), pt.lmatrix("c")
    loss, _ = show_and_tell.loss(spec, params, f, c, train=False)
    names = sorted(params)
    updates = optim.adam([params[n] for n in names], pytensor.grad(loss, [params[n] for n in names]), lr)
    train = pytensor.function([f, c], loss, updates=updates)
    for _ in range(steps):
        value = train(features, captions)
    return params, value


def test_overfit_two_captions_then_decode():
    vocab = Vocabulary(["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "runs", "cat", "sleeps"])
    spec = show_and_tell.Spec(vocab_size=len(vocab), feature_dim=7, embed_dim=16, hidden_dim=32, dropout=0.0)
    features = rng.standard_normal((2, 7)).astype(np.float32)
    captions = np.array([[START, 4, 5, 6, END], [START, 4, 7, 8, END]])
    params, final_loss = overfit(spec, features, captions)
    assert final_loss < 0.05
    decoder = Decoder.compile(show_and_tell, spec, params)
    greedy = decoder.greedy(features, max_length=10)
    assert greedy.captions(vocab) == ["a dog runs", "a cat sleeps"]
    assert greedy.attention is None
    for k in (1, 3):
        beam = decoder.beam_search(features, beam_size=k, max_length=10)
        assert beam.captions(vocab) == ["a dog runs", "a cat sleeps"]


def test_beam_of_one_is_greedy_and_no_end_means_max_length():
    spec = show_and_tell.Spec(vocab_size=12, feature_dim=4, embed_dim=5, hidden_dim=8, dropout=0.0)
    raw = show_and_tell.init_params(spec, seed=3)
    raw["out.W"] = raw["out.W"] * 20  # confident, varied predictions
    features = rng.standard_normal((5, 4)).astype(np.float32)
    decoder = Decoder.compile(show_and_tell, spec, L.shared_params(raw))
    greedy = decoder.greedy(features, max_length=7)
    beam = decoder.beam_search(features, beam_size=1, max_length=7)
    assert greedy.words == beam.words and np.allclose(greedy.log_prob, beam.log_prob, rtol=1e-5)

    raw["out.b"] = raw["out.b"].copy()
    raw["out.b"][END] = -1e4  # this model never says <END>
    decoder = Decoder.compile(show_and_tell, spec, L.shared_params(raw))
    for decoded in (decoder.greedy(features, max_length=6), decoder.beam_search(features, beam_size=3, max_length=6)):
        assert all(len(w) == 6 and END not in w for w in decoded.words)


def test_beam_search_rejects_bad_beam_size():
    decoder = Decoder.compile(show_and_tell, SPEC, L.shared_params(show_and_tell.init_params(SPEC)))
    with pytest.raises(ValueError, match="beam_size"):
        decoder.beam_search(np.zeros((1, 7), np.float32), beam_size=0)

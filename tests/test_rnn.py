"""The LSTM's recurrence and its backward pass through time (dlmie.rnn's parts), against independent
references: a NumPy loop with cs231n's equations, and the engine's autodiff of a plain `scan`."""

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import rnn
from dlmie.gradcheck import rel_error

rng = np.random.default_rng(23)


def numpy_recurrence(projected, h0, c0, wh):
    """h, c (T, N, H) and the gates [i, f, o, g] (T, N, 4H): a plain NumPy loop, cs231n's equations."""
    hidden = h0.shape[1]
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    h, c, hs, cs, acts = h0, c0, [], [], []
    for p in projected:
        a = p + h @ wh
        i, f, o = (sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        g = np.tanh(a[:, 3 * hidden :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h), cs.append(c), acts.append(np.concatenate([i, f, o, g], axis=1))
    return np.stack(hs), np.stack(cs), np.stack(acts)


def autodiff_recurrence(projected, h0, c0, wh):
    """The same recurrence as a plain scan of PyTensor ops, for `pytensor.grad` to differentiate."""
    hidden = h0.shape[1]

    def step(p, h_prev, c_prev, wh):
        a = p + pt.dot(h_prev, wh)
        i, f, o = (pt.sigmoid(a[:, k * hidden : (k + 1) * hidden]) for k in range(3))
        c = f * c_prev + i * pt.tanh(a[:, 3 * hidden :])
        return o * pt.tanh(c), c

    return pytensor.scan(step, sequences=[projected], outputs_info=[h0, c0], non_sequences=[wh], return_updates=False)


def inputs(t, n, hidden):
    return [rng.standard_normal((t, n, 4 * hidden)), rng.standard_normal((n, hidden)), rng.standard_normal((n, hidden)),
            rng.standard_normal((hidden, 4 * hidden)) * 0.5]


@pytest.mark.parametrize("t, n, hidden", [(5, 3, 4), (1, 2, 3), (4, 1, 2)])
def test_lstm_recurrence_matches_a_numpy_loop(t, n, hidden):
    values = inputs(t, n, hidden)
    variables = [pt.tensor3("p", dtype="float64"), pt.matrix("h0", dtype="float64"), pt.matrix("c0", dtype="float64"),
                 pt.matrix("wh", dtype="float64")]
    got = pytensor.function(variables, rnn.lstm_recurrence(*variables))(*values)
    for name, value, want in zip(("h", "c", "act"), got, numpy_recurrence(*values)):
        assert value.shape == want.shape and rel_error(value, want) < 1e-10, name


def test_lstm_recurrence_rejects_wh_of_the_wrong_shape():
    p, h0, c0 = pt.tensor("p", shape=(3, 2, 12)), pt.tensor("h0", shape=(2, 3)), pt.tensor("c0", shape=(2, 3))
    with pytest.raises(ValueError, match=r"wh must be \(H, 4H\)"):
        rnn.lstm_recurrence(p, h0, c0, pt.tensor("wh", shape=(4, 12)))
    with pytest.raises(ValueError, match=r"wh must be \(H, 4H\)"):
        rnn.lstm_recurrence(p, h0, c0, pt.tensor("wh", shape=(3, 8)))
    rnn.lstm_recurrence(p, h0, c0, pt.matrix("wh"))  # shapes unknown: nothing to check


@pytest.mark.parametrize("t, n, hidden, with_dh, with_dc", [(4, 2, 3, True, True), (3, 3, 2, True, False),
                                                            (1, 2, 3, False, True)])
def test_lstm_backward_through_time_equals_autodiff(t, n, hidden, with_dh, with_dc):
    """Given cotangents dh, dc of every step, the written-out pass gives what `pytensor.grad` derives."""
    values = inputs(t, n, hidden)
    h, c, act = numpy_recurrence(*values)
    dh = rng.standard_normal(h.shape) * with_dh
    dc = rng.standard_normal(c.shape) * with_dc
    variables = [pt.tensor3("p", dtype="float64"), pt.matrix("h0", dtype="float64"), pt.matrix("c0", dtype="float64"),
                 pt.matrix("wh", dtype="float64")]
    hs, cs = autodiff_recurrence(*variables)
    derived = pytensor.function(variables, pytensor.grad((hs * dh).sum() + (cs * dc).sum(), variables))(*values)

    stored = [pt.tensor3(dtype="float64") for _ in range(3)] + [pt.matrix(dtype="float64") for _ in range(3)]
    cotangents = [pt.tensor3(dtype="float64"), pt.tensor3(dtype="float64")]
    f = pytensor.function(stored + cotangents, rnn.lstm_backward_through_time(*stored, *cotangents))
    written = f(h, c, act, *values[1:], dh, dc)
    for name, got, want in zip(("projected", "h0", "c0", "wh"), written, derived):
        assert got.shape == want.shape and rel_error(got, want) < 1e-9, name


def test_lstm_uses_the_written_out_pass():
    """rnn.lstm's gradient is the written-out pass: the same as the plain scan's autodiff."""
    x, h0, c0 = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    wx, wh, b = rng.standard_normal((3, 20)), rng.standard_normal((5, 20)) * 0.5, rng.standard_normal(20)
    variables = [pt.tensor3(dtype="float64"), pt.matrix(dtype="float64"), pt.matrix(dtype="float64"),
                 pt.matrix(dtype="float64"), pt.matrix(dtype="float64"), pt.vector(dtype="float64")]
    vx, vh0, vc0, vwx, vwh, vb = variables
    dout = rng.standard_normal((2, 4, 5))
    h, _ = rnn.lstm(vx, vh0, vwx, vwh, vb, c0=vc0)
    written = pytensor.function(variables, pytensor.grad((h * dout).sum(), variables))(x, h0, c0, wx, wh, b)
    hs, _ = autodiff_recurrence((pt.tensordot(vx, vwx, axes=[[2], [0]]) + vb).dimshuffle(1, 0, 2), vh0, vc0, vwh)
    derived = pytensor.function(variables, pytensor.grad((hs.dimshuffle(1, 0, 2) * dout).sum(), variables))(
        x, h0, c0, wx, wh, b)
    for name, got, want in zip(("x", "h0", "c0", "wx", "wh", "b"), written, derived):
        assert rel_error(got, want) < 1e-9, name


def test_two_lstms_in_one_graph():
    """PyTensor compares the two recurrences by their pullbacks with every output's cotangent connected,
    the gates' included: the graph compiles, and its gradients are the sum of each LSTM's alone."""
    x, h0, wx, wh, b = pt.dtensor3("x"), pt.dmatrix("h0"), pt.dmatrix("wx"), pt.dmatrix("wh"), pt.dvector("b")
    n, t, d, h = 2, 3, 4, 5
    values = [rng.standard_normal((n, t, d)), rng.standard_normal((n, h)), rng.standard_normal((d, 4 * h)),
              rng.standard_normal((h, 4 * h)), rng.standard_normal(4 * h)]
    first = (rnn.lstm(x, h0, wx, wh, b)[0] ** 2).sum()
    second = rnn.lstm(2 * x, h0, wx, wh, b)[0].sum()

    def gradients(loss):
        return pytensor.function([x, h0, wx, wh, b], pytensor.grad(loss, [x, h0, wx, wh, b]))(*values)

    both = gradients(first + second)
    for g, g1, g2 in zip(both, gradients(first), gradients(second)):
        assert rel_error(g, g1 + g2) < 1e-10

"""Recurrent layers on PyTensor: the LSTM step, the LSTM over time with `scan`.

Gates are laid out cs231n style: one pre-activation a = x Wx + h Wh + b of width 4H holds the
input, forget and output gates and the candidate cell, in that order:

    i = sigmoid(a[:, 0H:1H])   f = sigmoid(a[:, 1H:2H])   o = sigmoid(a[:, 2H:3H])   g = tanh(a[:, 3H:4H])
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

Three things make the LSTM fast on a CPU. The input projection x Wx + b of every time step does
not depend on h, so it is one (N * T, D) x (D, 4H) GEMM before the loop instead of T small ones
inside it; inside the loop the four gates come from one (N, H) x (H, 4H) GEMM, and the gates and
cell update from one compiled Op (`dlmie.kernels.LSTMCell`, vectorized exp) instead of a dozen
elementwise loops. And the backward pass through time is written out (`_recurrence_pullback`,
cs231n's lstm_backward) so that it reuses the gates the forward pass stored; `pytensor.grad` of
the plain scan would recompute them, one extra GEMM per step. docs/engine.md describes each kernel.
"""

from __future__ import annotations

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.gradient import DisconnectedType
from dlmie import layers as L
from dlmie.kernels import LSTMCell, LSTMCellGrad


def lstm_gates(a, c_prev):
    """The LSTM's cell update from its pre-activations.

    Inputs:
    - a: (N, 4H) pre-activations x Wx + h_prev Wh + b, gates in the order i, f, o, g
    - c_prev: (N, H) previous cell state
    Returns:
    - h: (N, H) next hidden state; c: (N, H) next cell state
    """
    h, c, _ = LSTMCell()(a, c_prev)
    return h, c


def lstm_step(x, h_prev, c_prev, wx, wh, b):
    """One LSTM time step (for decoding and for gradient checks).

    Inputs:
    - x: (N, D) input; h_prev, c_prev: (N, H)
    - wx: (D, 4H); wh: (H, 4H); b: (4H,)
    Returns:
    - h, c: (N, H)
    """
    return lstm_gates(pt.dot(x, wx) + pt.dot(h_prev, wh) + b, c_prev)


def lstm(x, h0, wx, wh, b, c0=None):
    """An LSTM over a whole sequence.

    Inputs:
    - x: (N, T, D) inputs
    - h0: (N, H) initial hidden state; c0: (N, H) initial cell state (zeros if None)
    - wx: (D, 4H); wh: (H, 4H); b: (4H,)
    Returns:
    - h: (N, T, H) hidden states of every step
    - c: (N, T, H) cell states of every step
    """
    projected = L.temporal_affine(x, wx, b).dimshuffle(1, 0, 2)  # (T, N, 4H): scan walks the first axis
    c0 = pt.zeros_like(h0) if c0 is None else c0
    stand_ins = [v.type() for v in (projected, h0, c0, wh)]
    recurrence = OpFromGraph(stand_ins, list(_recurrence(*stand_ins)), pullback=_recurrence_pullback, inline=True,
                             name="lstm_recurrence")
    h, c, _ = recurrence(projected, h0, c0, wh)
    return h.dimshuffle(1, 0, 2), c.dimshuffle(1, 0, 2)


def _recurrence(projected, h0, c0, wh):
    """The sequential part of the LSTM, time first: projected (T, N, 4H) holds x_t Wx + b.
    Returns h, c (T, N, H) and the activated gates act (T, N, 4H), which the pullback reads."""

    def step(xw_t, h_prev, c_prev, wh):
        return LSTMCell()(xw_t + pt.dot(h_prev, wh), c_prev)

    return pytensor.scan(step, sequences=[projected], outputs_info=[h0, c0, None], non_sequences=[wh],
                         strict=True, return_updates=False)


def _recurrence_pullback(inputs, outputs, cotangents):
    """Back-propagation through time written out, cs231n's lstm_backward.

    `pytensor.grad` of the scan above would build a backward scan that recomputes every forward
    step (h_prev Wh, then the gates) to get the gates back; here they come stored from the
    forward pass. Each backward step is one LSTMCellGrad and one (N, 4H) x (4H, H) GEMM, and the
    gradient of Wh is a single GEMM over all steps after the loop: sum_t h_{t-1}^T da_t.
    """
    projected, h0, c0, wh = inputs
    h, c, act = outputs
    g_h, g_c, g_act = cotangents
    if not isinstance(g_act.type, DisconnectedType):
        raise NotImplementedError("the LSTM's gate activations are an output for its own pullback only")
    g_h = pt.zeros_like(h) if isinstance(g_h.type, DisconnectedType) else g_h
    g_c = pt.zeros_like(c) if isinstance(g_c.type, DisconnectedType) else g_c
    h_prev = pt.concatenate([h0[None], h[:-1]])
    c_prev = pt.concatenate([c0[None], c[:-1]])

    def step(g_h_t, g_c_t, act_t, c_prev_t, c_t, dh_next, dc_next, wh_t):
        d_a, dc_prev = LSTMCellGrad()(act_t, c_prev_t, c_t, g_h_t + dh_next, g_c_t + dc_next)
        return d_a, pt.dot(d_a, wh_t), dc_prev

    d_a, dh, dc = pytensor.scan(step, sequences=[g_h, g_c, act, c_prev, c],
                                outputs_info=[None, pt.zeros_like(h0), pt.zeros_like(c0)], non_sequences=[wh.T],
                                go_backwards=True, strict=True, return_updates=False)
    d_a = d_a[::-1]  # the loop ran from the last step to the first
    steps, n, four_h = d_a.shape
    d_wh = pt.dot(h_prev.reshape((steps * n, h0.shape[1])).T, d_a.reshape((steps * n, four_h)))
    return [d_a, dh[-1], dc[-1], d_wh]

"""Recurrent layers on PyTensor: the LSTM step, the LSTM over time with `scan`.

Gates are laid out cs231n style: one pre-activation a = x Wx + h Wh + b of width 4H holds the
input, forget and output gates and the candidate cell, in that order:

    i = sigmoid(a[:, 0H:1H])   f = sigmoid(a[:, 1H:2H])   o = sigmoid(a[:, 2H:3H])   g = tanh(a[:, 3H:4H])
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

Two things make the LSTM fast on a CPU. The input projection x Wx + b of every time step does
not depend on h, so it is one (N * T, D) x (D, 4H) GEMM before the loop instead of T small ones
inside it; and inside the loop the four gates come from one (N, H) x (H, 4H) GEMM. `scan` then
runs only what truly is sequential. Its tanh are `layers.tanh`, which the C backend computes about
3x faster than `pt.tanh` in float32.
"""

from __future__ import annotations

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L


def lstm_gates(a, c_prev):
    """The LSTM's cell update from its pre-activations.

    Inputs:
    - a: (N, 4H) pre-activations x Wx + h_prev Wh + b, gates in the order i, f, o, g
    - c_prev: (N, H) previous cell state
    Returns:
    - h: (N, H) next hidden state; c: (N, H) next cell state
    """
    hidden = c_prev.shape[-1]
    i = pt.sigmoid(a[:, :hidden])
    f = pt.sigmoid(a[:, hidden : 2 * hidden])
    o = pt.sigmoid(a[:, 2 * hidden : 3 * hidden])
    g = L.tanh(a[:, 3 * hidden :])
    c = f * c_prev + i * g
    return o * L.tanh(c), c


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

    def step(xw_t, h_prev, c_prev, wh):
        return lstm_gates(xw_t + pt.dot(h_prev, wh), c_prev)

    h, c = pytensor.scan(step, sequences=[projected], outputs_info=[h0, c0], non_sequences=[wh], strict=True,
                         return_updates=False)
    return h.dimshuffle(1, 0, 2), c.dimshuffle(1, 0, 2)

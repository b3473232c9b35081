"""Recurrent layers on PyTensor: the LSTM step, the LSTM over time with `scan`.

Gates are laid out cs231n style: one pre-activation a = x Wx + h Wh + b of width 4H holds the
input, forget and output gates and the candidate cell, in that order:

    i = sigmoid(a[:, 0H:1H])   f = sigmoid(a[:, 1H:2H])   o = sigmoid(a[:, 2H:3H])   g = tanh(a[:, 3H:4H])
    c_t = f * c_{t-1} + i * g          h_t = o * tanh(c_t)

Three things make the LSTM fast on a CPU. The input projection x Wx + b of every time step does
not depend on h, so it is one (N * T, D) x (D, 4H) GEMM before the loop instead of T small ones
inside it; inside the loop the four gates come from one (N, H) x (H, 4H) GEMM, and the gates and
cell update from one compiled Op (`dlmie.kernels.LSTMCell`, vectorized exp) instead of a dozen
elementwise loops. And the backward pass through time is written out (`lstm_backward_through_time`,
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
    recurrence = OpFromGraph(stand_ins, list(lstm_recurrence(*stand_ins)), pullback=_recurrence_pullback, inline=True,
                             name="lstm_recurrence")
    h, c, _ = recurrence(projected, h0, c0, wh)
    return h.dimshuffle(1, 0, 2), c.dimshuffle(1, 0, 2)


def lstm_recurrence(projected, h0, c0, wh):
    """The sequential part of an LSTM over T steps, time first (cs231n's lstm_forward after the
    input projection; Hochreiter & Schmidhuber 1997, in the form with a forget gate of Gers et al. 2000).

    The input projections p_t = x_t Wx + b of all steps do not depend on h and come computed. For
    t = 1, ..., T, starting from h_0 = h0 and c_0 = c0:

        a_t = p_t + h_{t-1} Wh                                            (N, 4H)
        i, f, o = σ(a_t[:, 0:H]), σ(a_t[:, H:2H]), σ(a_t[:, 2H:3H]);  g = tanh a_t[:, 3H:4H]
        c_t = f ⊙ c_{t-1} + i ⊙ g                                         (N, H)
        h_t = o ⊙ tanh c_t                                                (N, H)
        act_t = [i, f, o, g]                                              (N, 4H)

    The loop is one symbolic loop over the first axis (the Theano idiom), not a Python loop over
    T; the gates and cell update of a step are the compiled LSTM cell Op of dlmie.kernels (your
    lstm_step_forward in the handout), which also returns act_t.

    Inputs (symbolic):
    - projected: (T, N, 4H) the projections p_t, gates in the order i, f, o, g
    - h0, c0: (N, H) initial hidden and cell states
    - wh: (H, 4H) hidden-to-gates weights
    Returns a tuple of:
    - h: (T, N, H) the hidden states h_1 .. h_T
    - c: (T, N, H) the cell states c_1 .. c_T
    - act: (T, N, 4H) the activated gates act_1 .. act_T, which the backward pass reads
    Raises:
    - ValueError "wh must be (H, 4H)" when the static shapes of wh, h0 and projected disagree
      (H the width of h0, 4H that of projected): checked where the shapes are known
    """
    ### BEGIN SOLUTION
    hidden, (wh_rows, wh_cols), width = h0.type.shape[1], wh.type.shape, projected.type.shape[2]
    for got, want in ((wh_rows, hidden), (wh_cols, width), (wh_cols, None if hidden is None else 4 * hidden)):
        if None not in (got, want) and got != want:
            raise ValueError(f"wh must be (H, 4H) = ({hidden}, {width}) for h0 of width H and projected of "
                             f"width 4H; got wh {wh_rows}x{wh_cols}")

    def step(p_t, h_prev, c_prev, wh):
        a_t = p_t + pt.dot(h_prev, wh)
        return LSTMCell()(a_t, c_prev)

    h, c, act = pytensor.scan(step, sequences=[projected], outputs_info=[h0, c0, None], non_sequences=[wh],
                              strict=True, return_updates=False)
    return h, c, act
    ### END SOLUTION


def lstm_backward_through_time(h, c, act, h0, c0, wh, dh, dc):
    """Back-propagation through time of `lstm_recurrence`, written out (cs231n's lstm_backward
    before the input projection; Werbos 1990 for BPTT).

    With a_t = p_t + h_{t-1} Wh and the step (h_t, c_t) = step(a_t, c_{t-1}) of lstm_recurrence,
    a loss L reaches h_t directly (dh_t, given) and through step t+1's pre-activation; it reaches
    c_t directly (dc_t, given) and through step t+1's cell. Going back from t = T to 1, with
    δh_{T+1→T} = δc_{T+1→T} = 0:

        δh_t = dh_t + δh_{t+1→t}                  δc_t = dc_t + δc_{t+1→t}         (N, H)
        (δa_t, δc_{t→t-1}) = the step's backward pass from (act_t, c_{t-1}, c_t, δh_t, δc_t)
                                                                      (N, 4H), (N, H)
        δh_{t→t-1} = δa_t Whᵀ                                                          (N, H)

    and then
        ∂L/∂p_t = δa_t,   ∂L/∂h0 = δh_{1→0},   ∂L/∂c0 = δc_{1→0},
        ∂L/∂Wh = Σ_t h_{t-1}ᵀ δa_t   (one (H, T N) x (T N, 4H) product over all steps).

    The step's backward pass is the compiled LSTM cell gradient Op of dlmie.kernels (your
    lstm_step_backward in the handout): it reads the stored gates act_t instead of recomputing
    them, which is why this pass is written out rather than derived by the engine.

    Inputs (symbolic):
    - h, c: (T, N, H) the hidden and cell states lstm_recurrence returned
    - act: (T, N, 4H) the activated gates it returned
    - h0, c0: (N, H) the initial states it started from
    - wh: (H, 4H) hidden-to-gates weights
    - dh, dc: (T, N, H) the gradients of the loss with respect to h and c (dh_t, dc_t above)
    Returns a tuple of:
    - d_projected: (T, N, 4H); d_h0: (N, H); d_c0: (N, H); d_wh: (H, 4H)
    """
    ### BEGIN SOLUTION
    h_prev = pt.concatenate([h0[None], h[:-1]])  # h_{t-1} for t = 1 .. T
    c_prev = pt.concatenate([c0[None], c[:-1]])

    def step(dh_t, dc_t, act_t, c_prev_t, c_t, dh_next, dc_next, wh_t):
        dh_total = dh_t + dh_next  # from the loss at step t, and back from step t + 1
        dc_total = dc_t + dc_next
        d_a, dc_back = LSTMCellGrad()(act_t, c_prev_t, c_t, dh_total, dc_total)
        dh_back = pt.dot(d_a, wh_t)  # wh_t is Wh transposed
        return d_a, dh_back, dc_back

    d_a, dh_back, dc_back = pytensor.scan(step, sequences=[dh, dc, act, c_prev, c],
                                          outputs_info=[None, pt.zeros_like(h0), pt.zeros_like(c0)],
                                          non_sequences=[wh.T], go_backwards=True, strict=True, return_updates=False)
    d_projected = d_a[::-1]  # the loop ran from the last step to the first
    d_h0, d_c0 = dh_back[-1], dc_back[-1]
    steps, n, four_h = d_projected.shape
    rows = steps * n
    h_prev_rows = h_prev.reshape((rows, h0.shape[1]))  # every step's h_{t-1}, one row per (t, n)
    d_a_rows = d_projected.reshape((rows, four_h))
    d_wh = pt.dot(h_prev_rows.T, d_a_rows)  # the sum over t as one product
    return d_projected, d_h0, d_c0, d_wh
    ### END SOLUTION


def _recurrence_pullback(inputs, outputs, cotangents):
    """The pullback of lstm's OpFromGraph: PyTensor's (inputs, outputs, cotangents) handed to
    `lstm_backward_through_time`, a disconnected cotangent of h or c as zeros.

    `pytensor.grad` of the scan of `lstm_recurrence` would build a backward scan that recomputes
    every forward step (h_prev Wh, then the gates) to get the gates back; here they come stored
    from the forward pass. Each backward step is one LSTMCellGrad and one (N, 4H) x (4H, H) GEMM,
    and the gradient of Wh is a single GEMM over all steps after the loop.
    """
    projected, h0, c0, wh = inputs
    h, c, act = outputs
    g_h, g_c, g_act = cotangents
    if not isinstance(g_act.type, DisconnectedType):
        # Nothing outside uses the gates, but PyTensor asks for this pullback with every cotangent
        # connected when it compares two LSTM recurrences of one graph: the scan's own derivative.
        known = {out: g for out, g in zip(lstm_recurrence(*inputs), cotangents) if not isinstance(g.type, DisconnectedType)}
        return pytensor.grad(None, list(inputs), known_grads=known)
    g_h = pt.zeros_like(h) if isinstance(g_h.type, DisconnectedType) else g_h
    g_c = pt.zeros_like(c) if isinstance(g_c.type, DisconnectedType) else g_c
    return list(lstm_backward_through_time(h, c, act, h0, c0, wh, g_h, g_c))

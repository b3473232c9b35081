"""Back-propagation through time of Show-Attend-Tell's decoder loop, written out: the pullback
that dlmie.models.show_attend_tell.recurrence gives its OpFromGraph.

It is a module of its own, as the LSTM cell's C code is (dlmie.kernels.lstm_c), because it spells
out what notebook 05's parts ask the student to write: a backward scan over the steps with
LSTMCellGrad reading the stored gates, h and c shifted by one step, the gradient of W_h as one
GEMM over all steps (dlmie.rnn.lstm_backward_through_time). The student handout leaves it out;
there show_attend_tell's recurrence has no custom pullback and `pytensor.grad` derives the
backward pass of its scan: the same gradients, but every backward step recomputes its forward
step, the LSTM's pre-activation GEMMs included.
"""

from __future__ import annotations

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import DisconnectedType
from dlmie.kernels import LSTMCellGrad


def recurrence_pullback(attend_step, inputs, outputs, cotangents):
    """Back-propagation through time of show_attend_tell's `_recurrence`, written out.

    `pytensor.grad` of the scan would build a backward scan that recomputes every forward step,
    the (N, D) x (D, 4H) and (N, H) x (H, 4H) GEMMs of the LSTM's pre-activations included, to get
    the gates back. Here the gates come stored from the forward pass (LSTMCellGrad reads them), and
    each backward step recomputes only the attention, whose gradient is `pytensor.grad` of
    `attend_step` (so it follows whatever show_attend_tell's `attend` computes). The gradients of
    W_z and W_h are one GEMM each over all steps after the loop: sum_t z_t^T da_t and
    sum_t h_{t-1}^T da_t.

    Inputs:
    - attend_step: (annotations, projected, h_prev, *attention_weights) -> (z, alpha), one step of
      the attention; attention_weights are the inputs of the recurrence after W_z and W_h
    - inputs, outputs, cotangents: OpFromGraph's, for the recurrence's inputs
      (xw, h0, c0, annotations, projected, W_z, W_h, *attention_weights) and outputs (h, c, z, alpha, act)
    Returns the gradients of the inputs, in their order.
    """
    xw, h0, c0, annotations, projected, wz, wh, *attention_weights = inputs
    h, c, z, alpha, act = outputs
    g_h, g_c, g_z, g_alpha, g_act = cotangents
    # act is an output for this pullback only (recurrence drops it); PyTensor still hands it a
    # cotangent when it compares two such Ops (it freezes their pullbacks with every cotangent
    # connected), so a connected one is honoured: it reaches a through the activations' derivatives.
    act_read = not isinstance(g_act.type, DisconnectedType)
    g_h, g_c, g_z, g_alpha = (pt.zeros_like(out) if isinstance(g.type, DisconnectedType) else g
                              for g, out in zip((g_h, g_c, g_z, g_alpha), (h, c, z, alpha)))
    h_prev = pt.concatenate([h0[None], h[:-1]])
    c_prev = pt.concatenate([c0[None], c[:-1]])
    attention_inputs = [annotations, projected, *attention_weights]  # what the attention reads besides h_prev

    def step(g_h_t, g_c_t, g_z_t, g_alpha_t, act_t, h_prev_t, c_prev_t, c_t, *rest):
        if act_read:
            g_act_t, *rest = rest
        dh_next, dc_next, *rest = rest
        totals, inner = rest[: len(attention_inputs)], rest[len(attention_inputs) :]
        wz_t, wh_t, annotations_t, projected_t, *attention_weights_t = inner
        d_a, dc_prev = LSTMCellGrad()(act_t, c_prev_t, c_t, g_h_t + dh_next, g_c_t + dc_next)
        if act_read:
            hidden = c_t.shape[1]
            sigmoids, g = act_t[:, : 3 * hidden], act_t[:, 3 * hidden :]
            d_a = d_a + g_act_t * pt.concatenate([sigmoids * (1 - sigmoids), 1 - g * g], axis=1)
        z_t, alpha_t = attend_step(annotations_t, projected_t, h_prev_t, *attention_weights_t)
        # A cost whose gradient at z_t and alpha_t is their cotangent (known_grads would take alpha's
        # as final and drop what reaches alpha through z).
        cost = pt.sum(z_t * (g_z_t + pt.dot(d_a, wz_t.T))) + pt.sum(alpha_t * g_alpha_t)
        d_h_prev, *d_attention = pytensor.grad(cost, [h_prev_t, annotations_t, projected_t, *attention_weights_t])
        return (d_a, d_h_prev + pt.dot(d_a, wh_t.T), dc_prev, *(total + d for total, d in zip(totals, d_attention)))

    d_a, dh, dc, *d_attention = pytensor.scan(
        step, sequences=[g_h, g_c, g_z, g_alpha, act, h_prev, c_prev, c, *([g_act] if act_read else [])],
        outputs_info=[None, pt.zeros_like(h0), pt.zeros_like(c0), *(pt.zeros_like(v) for v in attention_inputs)],
        non_sequences=[wz, wh, *attention_inputs], go_backwards=True, strict=True, return_updates=False)
    d_a = d_a[::-1]  # the loop ran from the last step to the first
    steps, n, four_h = d_a.shape
    d_a_flat = d_a.reshape((steps * n, four_h))
    d_wz = pt.dot(z.reshape((steps * n, z.shape[2])).T, d_a_flat)
    d_wh = pt.dot(h_prev.reshape((steps * n, h0.shape[1])).T, d_a_flat)
    d_annotations, d_projected, *d_attention_weights = (d[-1] for d in d_attention)
    return [d_a, dh[-1], dc[-1], d_annotations, d_projected, d_wz, d_wh, *d_attention_weights]

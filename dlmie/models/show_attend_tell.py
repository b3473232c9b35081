"""Show, Attend and Tell (Xu et al. 2015), deterministic soft attention.

The encoder's last convolutional grid gives L annotation vectors a_i (D each): 196 of 512 for
VGG-16's conv5_3, 49 of 1280 for MobileNetV2. At every step the decoder looks at all of them:

    h_0 = tanh(W_ih mean_i(a_i) + b_ih)        c_0 = tanh(W_ic mean_i(a_i) + b_ic)
    e_ti = w_att . tanh(W_h h_{t-1} + W_a a_i + b_att)       alpha_t = softmax_i(e_t)
    z_t = beta_t * sum_i alpha_ti a_i,         beta_t = sigmoid(w_beta . h_{t-1} + b_beta)   (the gate)
    [i f o g] = E y_{t-1} W_x + z_t W_z + h_{t-1} W_h + b      -> LSTM -> h_t, c_t
    p(y_t) = softmax(L_o dropout(E y_{t-1} + L_h h_t + L_z z_t) + b_o)                  (deep output)

and training adds the doubly stochastic penalty lambda * sum_i (1 - sum_t alpha_ti)^2, which asks
the model to look at every region about once over a caption. Everything that does not depend on
h_{t-1} is computed for all steps before `scan` (the word inputs' projection, W_a a_i) or after it
(the deep output, as one GEMM over all steps), so the loop holds only the attention and the LSTM.
The loop's backward pass is written out in dlmie.models.show_attend_tell_bptt where that module is
present: it reads the LSTM gates the forward loop stored and recomputes only the attention. The student
handout leaves that module out, as it leaves out the LSTM cell's C code, because it spells out notebook
05's back-propagation through time; there `pytensor.grad` derives the loop's backward pass, which gives
the same gradients but recomputes every forward step (slower).

Parameters (arctic-captions' dictionary, our names): init_h.{W,b}, init_c.{W,b}, embed.W (V, E),
att.{Wa (D, A), b (A,), Wh (H, A), w (A,)}, gate.{w (H,), b ()}, lstm.{Wx (E, 4H), Wz (D, 4H),
Wh (H, 4H), b (4H,)}, out.{Lh (H, E), Lz (D, E), W (E, V), b (V,)}.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from dlmie import layers as L
from dlmie.kernels import LSTMCell

try:
    import dlmie.models.show_attend_tell_bptt as bptt
except ModuleNotFoundError as err:  # the student handout leaves it out: pytensor.grad derives the loop's backward pass
    if err.name != "dlmie.models.show_attend_tell_bptt":
        raise
    bptt = None

KIND = "show_attend_tell"
INPUT = "grid"  # attends over the (N, L, D) regions of the encoder grid


@dataclass
class Spec:
    """V words, D-dimensional annotations, embedding E, hidden H, attention MLP width A,
    dropout on the deep output, lambda of the doubly stochastic penalty, the gate beta on or off."""

    vocab_size: int
    feature_dim: int
    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.5
    attention_dim: int = 128  # Xu et al. used D; the (N, L, A) tanh is most of a CPU step, so smaller
    doubly_stochastic: float = 1.0
    gate: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def init_params(spec: Spec, seed: int = 0, dtype="float32") -> dict:
    """Glorot-scaled weights, zero biases except a forget-gate bias of 1. Returns name -> array."""
    rng = np.random.default_rng(seed)
    v, d, e, h, a = spec.vocab_size, spec.feature_dim, spec.embed_dim, spec.hidden_dim, spec.attention_dim

    def glorot(*shape):
        return rng.standard_normal(shape) * np.sqrt(2 / (shape[0] + shape[-1]))

    lstm_b = np.zeros(4 * h)
    lstm_b[h : 2 * h] = 1.0
    params = {
        "init_h.W": glorot(d, h), "init_h.b": np.zeros(h), "init_c.W": glorot(d, h), "init_c.b": np.zeros(h),
        "embed.W": rng.standard_normal((v, e)) * 0.1,
        "att.Wa": glorot(d, a), "att.b": np.zeros(a), "att.Wh": glorot(h, a), "att.w": glorot(a, 1)[:, 0],
        "gate.w": glorot(h, 1)[:, 0], "gate.b": np.zeros(()),
        "lstm.Wx": glorot(e, 4 * h), "lstm.Wz": glorot(d, 4 * h), "lstm.Wh": glorot(h, 4 * h), "lstm.b": lstm_b,
        "out.Lh": glorot(h, e), "out.Lz": glorot(d, e), "out.W": glorot(e, v), "out.b": np.zeros(v),
    }
    return {name: np.asarray(value, dtype) for name, value in params.items()}


def initial_state(params: dict, annotations):
    """h_0, c_0 (N, H) from the mean annotation vector; annotations (N, L, D)."""
    mean = annotations.mean(axis=1)
    return (L.tanh(L.affine(mean, params["init_h.W"], params["init_h.b"])),
            L.tanh(L.affine(mean, params["init_c.W"], params["init_c.b"])))


def project_annotations(params: dict, annotations):
    """W_a a_i + b_att for every region: (N, L, D) -> (N, L, A), the part of attention that does not
    depend on the decoder's state, computed once per image."""
    return pt.tensordot(annotations, params["att.Wa"], axes=[[2], [0]]) + params["att.b"]


def attend(spec: Spec, params: dict, annotations, projected, h_prev):
    """Soft attention for one step, symbolic (Xu et al. 2015, sections 3.1.2 and 4.2, with the
    gating scalar beta of section 4.2.1):

        u_i = projected_i + h_prev W_h        e_i = w_att · tanh u_i        alpha = softmax over i of e
        beta = σ(w_beta · h_prev + b_beta)     (beta = 1 when spec.gate is off)
        z = beta sum_i alpha_i a_i

    for every image of the minibatch (u: (N, L, A); e, alpha: (N, L); beta: (N,); z: (N, D)).

    Inputs:
    - spec: the model's Spec (its gate); params: name -> weights, of which att.Wh (H, A) = W_h,
      att.w (A,) = w_att, gate.w (H,) = w_beta, gate.b () = b_beta are read
    - annotations: (N, L, D) the regions a_i; projected: (N, L, A) = a_i W_a + b_att (computed once)
    - h_prev: (N, H)
    Returns a tuple of:
    - z: (N, D) the gated context
    - alpha: (N, L) attention weights, non-negative, summing to 1 over the regions (before the gate)
    """
    ### BEGIN SOLUTION
    scores = pt.dot(L.tanh(projected + pt.dot(h_prev, params["att.Wh"]).dimshuffle(0, "x", 1)), params["att.w"])
    alpha = pt.special.softmax(scores, axis=1)
    weights = alpha
    if spec.gate:
        weights = alpha * pt.sigmoid(pt.dot(h_prev, params["gate.w"]) + params["gate.b"]).dimshuffle(0, "x")
    z = pt.matmul(weights.dimshuffle(0, "x", 1), annotations)[:, 0]
    return z, alpha
    ### END SOLUTION


def soft_attention_forward(annotations: np.ndarray, projected: np.ndarray, h_prev: np.ndarray, Wh: np.ndarray,
                           w: np.ndarray) -> tuple:
    """Soft attention for one step in NumPy, without the gate (Xu et al. 2015, section 4.2,
    deterministic "soft" attention; `attend` computes the same with spec.gate off):

        u_i = projected_i + h_prev W_h        s_i = tanh u_i        e_i = w · s_i
        alpha_i = exp e_i / sum_j exp e_j     z = sum_i alpha_i a_i

    for every image n of the minibatch (u, s: (N, L, A); e, alpha: (N, L); z: (N, D)). The
    softmax must not overflow for large scores e.

    Inputs:
    - annotations: (N, L, D) the regions a_i
    - projected: (N, L, A) = a_i W_a + b_att, the part of u that does not depend on h_prev
    - h_prev: (N, H) the decoder's previous hidden state
    - Wh: (H, A); w: (A,)
    Returns a tuple of:
    - z: (N, D) the context
    - alpha: (N, L) the attention weights
    - hidden: (N, L, A) the activations s = tanh u, which the backward pass reads
    """
    ### BEGIN SOLUTION
    hidden = np.tanh(projected + (h_prev @ Wh)[:, None, :])
    scores = hidden @ w
    scores = scores - scores.max(axis=1, keepdims=True)
    alpha = np.exp(scores)
    alpha /= alpha.sum(axis=1, keepdims=True)
    z = np.einsum("nl,nld->nd", alpha, annotations)
    return z, alpha, hidden
    ### END SOLUTION


def soft_attention_backward(dz: np.ndarray, dalpha: np.ndarray, annotations: np.ndarray, alpha: np.ndarray,
                            hidden: np.ndarray, h_prev: np.ndarray, Wh: np.ndarray, w: np.ndarray) -> tuple:
    """The backward pass of `soft_attention_forward`, derived by hand.

    Given a loss ℓ and its upstream gradients dz = ∂ℓ/∂z (N, D) and dalpha = ∂ℓ/∂alpha (N, L)
    (alpha is an output too: the doubly stochastic penalty reads it), compute the gradients of ℓ
    with respect to every input of the forward pass. alpha reaches ℓ directly and through z, and
    the softmax couples the L regions of an image; W_h and w are shared by all images and regions.

    Inputs:
    - dz: (N, D); dalpha: (N, L)
    - annotations: (N, L, D); alpha: (N, L) and hidden: (N, L, A), as the forward pass returned them
    - h_prev: (N, H); Wh: (H, A); w: (A,)
    Returns a tuple of:
    - d_annotations: (N, L, D)
    - d_projected: (N, L, A)
    - d_h_prev: (N, H)
    - dWh: (H, A)
    - dw: (A,)
    """
    ### BEGIN SOLUTION
    d_annotations = alpha[:, :, None] * dz[:, None, :]
    d_alpha = dalpha + np.einsum("nld,nd->nl", annotations, dz)
    d_scores = alpha * (d_alpha - (alpha * d_alpha).sum(axis=1, keepdims=True))
    dw = np.einsum("nl,nla->a", d_scores, hidden)
    d_projected = d_scores[:, :, None] * w * (1 - hidden ** 2)
    d_hidden_h = d_projected.sum(axis=1)
    return d_annotations, d_projected, d_hidden_h @ Wh.T, h_prev.T @ d_hidden_h, dw
    ### END SOLUTION


def attend_gradients(annotations, projected, h_prev, Wh, w, dz, dalpha) -> dict:
    """The engine's gradients of sum(z dz) + sum(alpha dalpha) through the symbolic `attend`
    (gate off), in float64: what `soft_attention_backward` computes by hand, for comparison.
    Returns name -> gradient for annotations, projected, h_prev, Wh, w."""
    from dlmie import compile_cache

    names = ("annotations", "projected", "h_prev", "Wh", "w")
    values = [np.asarray(v, np.float64) for v in (annotations, projected, h_prev, Wh, w)]
    variables = [pt.tensor(name=n, dtype="float64", shape=v.shape) for n, v in zip(names, values)]
    spec = Spec(vocab_size=1, feature_dim=values[0].shape[2], gate=False)
    params = {"att.Wh": variables[3], "att.w": variables[4]}
    z, alpha = attend(spec, params, *variables[:3])
    cost = pt.sum(z * pt.constant(np.asarray(dz, np.float64))) + pt.sum(alpha * pt.constant(np.asarray(dalpha, np.float64)))
    grads = compile_cache.function(variables, pytensor.grad(cost, variables))(*values)
    return dict(zip(names, grads))


def _decoder_step(spec, params, annotations, projected, xw, h_prev, c_prev):
    """One step given the word input's projection xw = E y_{t-1} W_x + b: (h, c, z, alpha) and the
    LSTM's activated gates act (N, 4H), which the written-out pullback of `_recurrence` reads."""
    z, alpha = attend(spec, params, annotations, projected, h_prev)
    h, c, act = LSTMCell()(xw + pt.dot(z, params["lstm.Wz"]) + pt.dot(h_prev, params["lstm.Wh"]), c_prev)
    return h, c, z, alpha, act


def recurrence(spec: Spec, params: dict, xw, h0, c0, annotations, projected):
    """The decoder's loop over time: attention and LSTM, one OpFromGraph whose pullback is the
    written-out backward pass of show_attend_tell_bptt where that module is present (else the one
    `pytensor.grad` derives from the loop: the same gradients, slower).

    Inputs:
    - spec, params: as for `loss` (the weights of _step_weights are read)
    - xw: (T, N, 4H) the word inputs' projections E y_{t-1} W_x + b, time first
    - h0, c0: (N, H) the initial state
    - annotations: (N, L, D); projected: (N, L, A) = annotations W_a + b_att
    Returns:
    - h, c: (T, N, H) the states of every step; z: (T, N, D) the contexts; alpha: (T, N, L)
    """
    weights = [params[n] for n in _step_weights(spec)]
    stand_ins = [v.type() for v in (xw, h0, c0, annotations, projected, *weights)]
    pullback = None if bptt is None else functools.partial(bptt.recurrence_pullback, functools.partial(_attend_step, spec))
    op = OpFromGraph(stand_ins, list(_recurrence(spec, *stand_ins)), pullback=pullback, inline=True,
                     name="show_attend_tell_recurrence")
    h, c, z, alpha, _ = op(xw, h0, c0, annotations, projected, *weights)
    return h, c, z, alpha


def _step_weights(spec) -> tuple:
    """The names of the weights the decoder's loop reads: the LSTM's two, then those `attend` reads."""
    return ("lstm.Wz", "lstm.Wh", "att.Wh", "att.w") + (("gate.w", "gate.b") if spec.gate else ())


def _recurrence(spec, xw, h0, c0, annotations, projected, *weights):
    """The sequential part of the decoder, time first: xw (T, N, 4H), weights named by _step_weights.
    Returns h, c (T, N, H), z (T, N, D), alpha (T, N, L) and act (T, N, 4H)."""

    def step(xw_t, h_prev, c_prev, annotations, projected, *weights):
        params = dict(zip(_step_weights(spec), weights))
        return _decoder_step(spec, params, annotations, projected, xw_t, h_prev, c_prev)

    return pytensor.scan(step, sequences=[xw], outputs_info=[h0, c0, None, None, None],
                         non_sequences=[annotations, projected, *weights], strict=True, return_updates=False)


def _attend_step(spec, annotations, projected, h_prev, *attention_weights):
    """`attend` with the weights as arguments, in _step_weights' order after the LSTM's two: the
    attention of one step, as the written-out pullback recomputes it."""
    return attend(spec, dict(zip(_step_weights(spec)[2:], attention_weights)), annotations, projected, h_prev)


def _deep_output(params, embedded, h, z):
    """L_o (E y_{t-1} + L_h h_t + L_z z_t) before its bias and dropout: any leading shape, last axis E."""
    return embedded + pt.dot(h, params["out.Lh"]) + pt.dot(z, params["out.Lz"])


def loss(spec: Spec, params: dict, features, captions, train: bool, rng=None, return_attention: bool = False,
         weights=None):
    """The teacher-forced loss with the doubly stochastic penalty.

    Inputs:
    - features: (N, L, D) annotation vectors
    - captions: (N, T + 1) int, <START> w_1 ... <END> <NULL> ...
    - train: dropout on or off; rng: the dropout generator (pt.random.shared_rng)
    - return_attention: also return the attention weights (N, T, L)
    - weights: (N,) how much each caption's cross-entropy counts (self-critical training), or None
      for 1 each; the penalty is not weighted
    Returns:
    - loss: scalar, cross-entropy summed over time and averaged over captions (cs231n's convention)
      + lambda * mean_n sum_i (1 - sum_t alpha_nti)^2 over the unpadded steps
    - updates: the dropout generator's update
    - (alpha (N, T, L), when return_attention)
    """
    words_in, words_out = captions[:, :-1], captions[:, 1:]
    mask = pt.cast(pt.neq(words_out, 0), features.dtype)  # <NULL> is index 0
    embedded = L.word_embedding(words_in, params["embed.W"])  # (N, T, E)
    xw = L.temporal_affine(embedded, params["lstm.Wx"], params["lstm.b"]).dimshuffle(1, 0, 2)  # (T, N, 4H)
    projected = project_annotations(params, features)  # (N, L, A)
    h0, c0 = initial_state(params, features)

    h, _, z, alpha = recurrence(spec, params, xw, h0, c0, features, projected)
    h, z, alpha = h.dimshuffle(1, 0, 2), z.dimshuffle(1, 0, 2), alpha.dimshuffle(1, 0, 2)  # batch first
    pre, updates = L.dropout(_deep_output(params, embedded, h, z), spec.dropout, rng, train)
    scores = L.temporal_affine(pre, params["out.W"], params["out.b"])
    total = (L.temporal_softmax_loss(scores, words_out, mask, weights)
             + doubly_stochastic_penalty(alpha, mask, spec.doubly_stochastic))
    return (total, updates, alpha) if return_attention else (total, updates)


def doubly_stochastic_penalty(alpha, mask, weight: float):
    """Xu et al.'s doubly stochastic regularization (section 4.2.1), symbolic:

        penalty = lambda · 1/N sum_n sum_i (1 - sum_t mask_nt alpha_nti)²

    Inputs:
    - alpha: (N, T, L) attention weights; mask: (N, T) 1 at real words, 0 at padding (alpha's dtype)
    - weight: lambda, a Python float
    Returns a symbolic scalar of alpha's dtype (lambda too must be of alpha's dtype: a Python float
    would round through float32 in a float64 graph).
    """
    ### BEGIN SOLUTION
    coverage = (alpha * mask.dimshuffle(0, 1, "x")).sum(axis=1)  # (N, L): sum_t alpha_ti
    return L.scalar(weight, alpha.dtype) * pt.sqr(1 - coverage).sum(axis=1).mean()
    ### END SOLUTION


def decoder_graph(spec: Spec, params: dict):
    """The symbolic pieces of step-by-step decoding (see dlmie.captioning.decode).

    - start: features (N, L, D) -> [h_0, c_0, projected (N, L, A)]
    - step: (words (N,) int, h, c, projected, features) -> [log_probs (N, V), h, c, projected, alpha (N, L)]
    The projected annotations W_a a_i + b are part of the state, computed once per image rather than
    at every word; the step hands them on unchanged (beam search reorders them with the beams).
    """
    features = pt.tensor3("features")
    h0, c0 = initial_state(params, features)
    start_projected = project_annotations(params, features)
    words, h, c, projected = pt.lvector("words"), pt.matrix("h"), pt.matrix("c"), pt.tensor3("projected")
    embedded = L.word_embedding(words, params["embed.W"])
    xw = L.affine(embedded, params["lstm.Wx"], params["lstm.b"])
    h2, c2, z, alpha, _ = _decoder_step(spec, params, features, projected, xw, h, c)
    scores = L.affine(_deep_output(params, embedded, h2, z), params["out.W"], params["out.b"])
    return (([features], [h0, c0, start_projected]),
            ([words, h, c, projected, features], [L.log_softmax(scores, axis=1), h2, c2, projected, alpha]))

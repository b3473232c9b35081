"""Show, Attend and Tell (Xu et al. 2015, section 4.1) with stochastic "hard" attention.

The parameters, the attention MLP, the LSTM and the deep output are soft Show-Attend-Tell's
(dlmie.models.show_attend_tell); only training differs. At every step the decoder looks at one
region, sampled from the attention distribution, instead of at the alpha-weighted mean:

    s_t ~ Multinoulli(alpha_t)        z_t = beta_t a_{s_t}

A sample has no gradient, so training maximizes the lower bound L_s = sum_s p(s|a) log p(y|s,a)
<= log p(y|a) with the paper's Monte Carlo estimator (eq. 12), per caption:

    d log p(y|s,a)/dW + lambda_r (log p(y|s,a) - b) d log p(s|a)/dW + lambda_e dH[s]/dW

The first term backpropagates through the sampled context; the second is REINFORCE, the reward
log p(y|s,a) less a baseline b_k = 0.9 b_{k-1} + 0.1 log p(y|s_k,a) (its moving average over
minibatches, which lowers the variance and leaves the estimator unbiased); the third rewards the
entropy H[s] = sum_t H[alpha_t] of the attention along the sampled path. As in the paper, with
probability 0.5 a caption is trained on the expected context sum_i alpha_ti a_i instead (soft
attention, plain backpropagation, no REINFORCE).

The estimator is a surrogate loss, so `pytensor.grad` of it is the estimator and train_captioner
trains it unchanged: the REINFORCE and entropy terms S enter as S - zero_grad(S), worth zero
with gradient dS, and the reward inside S is behind zero_grad. The loss's value therefore stays
the negative log-likelihood of the sampled path. Sampling draws one uniform per caption and step
before the loop and inverts alpha_t's cumulative distribution inside it, so scan holds no
random state.

Evaluation (train=False) and decoding use the expected context, i.e. soft attention with the same
weights: the validation loss and `decoder_graph` are soft Show-Attend-Tell's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from pytensor.gradient import zero_grad
from dlmie import layers as L
from dlmie import rnn
from dlmie.kernels import SoftmaxCrossEntropy
from dlmie.models import show_attend_tell as soft

KIND = "show_attend_tell_hard"
INPUT = "grid"

BASELINE_DECAY = 0.9  # the paper's b_k = 0.9 b_{k-1} + 0.1 log p(y|s_k,a)
_STEP_NAMES = ["att.Wh", "att.w", "gate.w", "gate.b", "lstm.Wz", "lstm.Wh"]  # what the loop reads


@dataclass
class Spec(soft.Spec):
    """Soft Show-Attend-Tell's fields, and hard attention's: the REINFORCE weight lambda_r, the
    entropy weight lambda_e, and the probability that a caption trains on the expected context."""

    doubly_stochastic: float = 0.0  # the paper regularizes soft attention this way, not hard
    reinforce: float = 1.0  # 1: the unbiased estimator of dL_s/dW; less trades bias for variance
    entropy: float = 0.002  # the paper gives no values for lambda_r and lambda_e
    soft_probability: float = 0.5


init_params = soft.init_params
decoder_graph = soft.decoder_graph  # decoding with the expected context, see the module docstring


class SampledPath(NamedTuple):
    """The teacher-forced decoder along one sampled attention path (see `sampled_path`).

    - log_likelihood: (N,) log p(y|s,a), summed over the unpadded words
    - log_p_locations: (N,) log p(s|a) = sum_t log alpha_{t, s_t} over the unpadded steps
    - entropy: (N,) sum_t H[alpha_t] over the unpadded steps
    - alpha: (N, T, L) attention weights; locations: (N, T) int64 sampled regions s_t
    - mask: (N, T) 1 at real words, 0 at padding
    """

    log_likelihood: object
    log_p_locations: object
    entropy: object
    alpha: object
    locations: object
    mask: object


def sample_locations(alpha, uniforms):
    """Inverse-CDF sampling of one region per row.

    Inputs:
    - alpha: (N, L) probabilities; uniforms: (N,) in [0, 1)
    Returns:
    - s: (N,) int64, the first i with u < alpha_1 + ... + alpha_i, so that P(s = i) = alpha_i
    """
    below = pt.lt(pt.cumsum(alpha, axis=1), uniforms.dimshuffle(0, "x")).sum(axis=1)
    return pt.minimum(below, alpha.shape[1] - 1)  # a total that rounds below u must not index past L


def sampled_path(spec: Spec, params: dict, features, captions, uniforms, hard, rng=None, train: bool = False):
    """Run the decoder along sampled attention locations (teacher forcing).

    Inputs:
    - features: (N, L, D) annotation vectors; captions: (N, T + 1) int, <START> ... <END> <NULL> ...
    - uniforms: (N, T) in [0, 1), turned into the locations s_t by `sample_locations`
    - hard: (N,) 1 where a caption reads the sampled region, 0 where it reads the expected context
    - rng, train: dropout on the deep output, as in soft Show-Attend-Tell
    Returns:
    - path: SampledPath
    - updates: the dropout generator's update
    """
    words_in, words_out = captions[:, :-1], captions[:, 1:]
    mask = pt.cast(pt.neq(words_out, 0), features.dtype)  # <NULL> is index 0
    embedded = L.word_embedding(words_in, params["embed.W"])  # (N, T, E)
    xw = L.temporal_affine(embedded, params["lstm.Wx"], params["lstm.b"]).dimshuffle(1, 0, 2)  # (T, N, 4H)
    projected = soft.project_annotations(params, features)  # (N, L, A)
    # A column of ones rides along: attend returns beta * sum_i alpha_i * 1 = beta beside the soft
    # context, so the gate of z_t = beta_t a_{s_t} stays attend's.
    with_ones = pt.concatenate([features, pt.ones_like(features[:, :, :1])], axis=2)  # (N, L, D + 1)
    h0, c0 = soft.initial_state(params, features)

    def step(xw_t, u_t, h_prev, c_prev, annotations, projected, hard, *weights):
        p = dict(zip(_STEP_NAMES, weights))
        gated, alpha = soft.attend(spec, p, annotations, projected, h_prev)
        expected, beta = gated[:, :-1], gated[:, -1].dimshuffle(0, "x")
        s = sample_locations(alpha, u_t)
        sampled = beta * annotations[pt.arange(annotations.shape[0]), s][:, :-1]
        z = pt.switch(hard.dimshuffle(0, "x"), sampled, expected)
        h, c = rnn.lstm_gates(xw_t + pt.dot(z, p["lstm.Wz"]) + pt.dot(h_prev, p["lstm.Wh"]), c_prev)
        return h, c, z, alpha, s

    h, _, z, alpha, s = pytensor.scan(step, sequences=[xw, uniforms.T], outputs_info=[h0, c0, None, None, None],
                                      non_sequences=[with_ones, projected, hard, *[params[n] for n in _STEP_NAMES]],
                                      strict=True, return_updates=False)
    h, z, alpha, s = h.dimshuffle(1, 0, 2), z.dimshuffle(1, 0, 2), alpha.dimshuffle(1, 0, 2), s.T  # batch first
    pre, updates = L.dropout(soft._deep_output(params, embedded, h, z), spec.dropout, rng, train)
    scores = L.temporal_affine(pre, params["out.W"], params["out.b"])
    n, t, v = scores.shape
    word_losses, _ = SoftmaxCrossEntropy()(scores.reshape((n * t, v)), words_out.flatten())
    log_p_words = -word_losses
    picked_alpha = alpha.reshape((n * t, -1))[pt.arange(n * t), s.flatten()]
    path = SampledPath(
        log_likelihood=(log_p_words.reshape((n, t)) * mask).sum(axis=1),
        log_p_locations=(_log(picked_alpha).reshape((n, t)) * mask).sum(axis=1),
        entropy=(-(alpha * _log(alpha)).sum(axis=2) * mask).sum(axis=1),
        alpha=alpha, locations=s, mask=mask)
    return path, updates


def _log(x):
    """log x, floored where x underflowed to 0 (0 log 0 = 0 in the entropy; a region of
    probability 0 is never sampled)."""
    return pt.log(pt.maximum(x, L.scalar(1e-30, x.dtype)))


def estimator_loss(spec: Spec, path: SampledPath, hard, baseline):
    """The surrogate loss whose gradient is eq. 12's estimator (see the module docstring).

    Inputs:
    - path: SampledPath; hard: (N,) 1 for captions on sampled locations, 0 for those on the expected context
    - baseline: scalar b, the moving average of log p(y|s,a)
    Returns:
    - loss: scalar, worth -mean_n log p(y|s,a) + the doubly stochastic penalty
    """
    dtype = path.log_likelihood.dtype
    advantage = zero_grad(path.log_likelihood - baseline)
    bonus = (hard * (L.scalar(spec.reinforce, dtype) * advantage * path.log_p_locations
                     + L.scalar(spec.entropy, dtype) * path.entropy)).mean()
    penalty = soft.doubly_stochastic_penalty(path.alpha, path.mask, spec.doubly_stochastic)
    return -path.log_likelihood.mean() + penalty - (bonus - zero_grad(bonus))


def loss(spec: Spec, params: dict, features, captions, train: bool, rng=None, return_attention: bool = False):
    """The training loss on sampled attention, or soft Show-Attend-Tell's loss in evaluation.

    Inputs:
    - features: (N, L, D) annotation vectors
    - captions: (N, T + 1) int, <START> w_1 ... <END> <NULL> ...
    - train: sample locations and apply dropout (True), or use the expected context (False)
    - rng: the generator (pt.random.shared_rng) of the samples and the dropout; needed in training
    - return_attention: also return the attention weights (N, T, L)
    Returns:
    - loss: scalar; in training `estimator_loss` (value -mean_n log p(y|s,a) + penalty), else
      soft Show-Attend-Tell's cross-entropy + penalty
    - updates: in training the generator's and the baseline's (a shared variable named
      "reinforce.baseline", starting at 0); else empty
    - (alpha (N, T, L), when return_attention)
    """
    if not train:
        return soft.loss(spec, params, features, captions, False, rng, return_attention)
    n, t = captions.shape[0], captions.shape[1] - 1
    next_rng, draws = rng.uniform(size=(n, t + 1))  # per caption: the soft-or-hard coin, then T locations
    hard = pt.ge(draws[:, 0], spec.soft_probability)
    path, dropout_updates = sampled_path(spec, params, features, captions, draws[:, 1:], hard, next_rng, train)
    baseline = pytensor.shared(np.zeros((), features.dtype), name="reinforce.baseline")
    total = estimator_loss(spec, path, pt.cast(hard, features.dtype), baseline)
    decay = L.scalar(BASELINE_DECAY, baseline.dtype)
    new_baseline = pt.cast(decay * baseline + (1 - decay) * path.log_likelihood.mean(), baseline.dtype)
    # The dropout mask was drawn from next_rng, so the shared generator moves past both draws.
    last_rng = dict(dropout_updates).get(next_rng, next_rng)
    updates = [(rng, last_rng), (baseline, new_baseline)]
    return (total, updates, path.alpha) if return_attention else (total, updates)

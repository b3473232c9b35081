"""Show and Tell (Vinyals et al. 2015): an image feature, projected to the word-embedding space,
is the LSTM's first input; the words of the caption follow.

    x_{-1} = W_I f + b_I           (the image, seen once, before any word)
    x_t    = W_e S_t               (t = 0 .. T-1, S_0 = <START>)
    p_{t+1} = softmax(W_o dropout(h_t) + b_o)

Training minimizes the cross-entropy of every next word (teacher forcing). Parameters live in a
dict, arctic-captions style: img.W (D, E), img.b (E,), embed.W (V, E), lstm.Wx (E, 4H),
lstm.Wh (H, 4H), lstm.b (4H,), out.W (H, V), out.b (V,).

Every captioner module has the same four parts, so that training, decoding and evaluation
serve Show and Tell and Show-Attend-Tell alike: `Spec`, `init_params`, `loss`, `decoder_graph`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from dlmie import layers as L
from dlmie import rnn

KIND = "show_and_tell"
INPUT = "vector"  # one feature vector per image (the mean of the encoder grid)


@dataclass
class Spec:
    """The architecture: vocabulary size V, image feature width D, embedding E, hidden H, dropout."""

    vocab_size: int
    feature_dim: int
    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.5

    def to_dict(self) -> dict:
        return asdict(self)


def init_params(spec: Spec, seed: int = 0, dtype="float32") -> dict:
    """Small random weights (Glorot-scaled), zero biases but a forget-gate bias of 1 (Jozefowicz
    et al. 2015: the cell remembers by default early in training). Returns name -> array."""
    rng = np.random.default_rng(seed)
    v, d, e, h = spec.vocab_size, spec.feature_dim, spec.embed_dim, spec.hidden_dim

    def glorot(fan_in, fan_out):
        return rng.standard_normal((fan_in, fan_out)) * np.sqrt(2 / (fan_in + fan_out))

    lstm_b = np.zeros(4 * h)
    lstm_b[h : 2 * h] = 1.0
    params = {
        "img.W": glorot(d, e), "img.b": np.zeros(e),
        "embed.W": rng.standard_normal((v, e)) * 0.1,
        "lstm.Wx": glorot(e, 4 * h), "lstm.Wh": glorot(h, 4 * h), "lstm.b": lstm_b,
        "out.W": glorot(h, v), "out.b": np.zeros(v),
    }
    return {name: value.astype(dtype) for name, value in params.items()}


def show_and_tell_loss(spec: Spec, params: dict, features, captions, train: bool, rng=None, weights=None):
    """The teacher-forced training loss (the module's `loss`), Vinyals et al. 2015, section 3.1.

    With S = captions[:, :-1] the words read and y = captions[:, 1:] the words to predict:

        x_{-1} = f W_I + b_I                 the image (img.W, img.b), the LSTM's first input
        x_t    = W_e[S_t]                    t = 0 .. T-1, the rows of embed.W
        h_{-1}, h_0, ..., h_{T-1}           the LSTM of notebook 05 over those T + 1 inputs
                                             (lstm.Wx, lstm.Wh, lstm.b), from h = c = 0
        s_t    = drop h_t W_o + b_o          t = 0 .. T-1 (out.W, out.b): the image step predicts nothing;
                                             drop is dropout at the Spec's rate, on only when train
        loss   = 1/N sum_n w_n sum_t m_nt (-log softmax_v s_nt)[y_nt],   m_nt = 1 if y_nt != <NULL> (id 0) else 0

    Inputs:
    - spec: the `Spec`; params: name -> symbolic (or shared) weights, named as in the module docstring
    - features: (N, D) image vectors f
    - captions: (N, T + 1) int: <START> w_1 ... w_k <END> <NULL> ...
    - train: dropout on (True) or off
    - rng: a shared generator of the dropout masks, a pt.random.shared_rng, needed when train and dropout > 0
    - weights: (N,) w_n, how much each caption's cross-entropy counts (self-critical training),
      or None for 1 each
    Returns a tuple of:
    - loss: scalar, summed over time and averaged over the minibatch (cs231n's convention)
    - updates: the dropout generator's update (an empty list when dropout is off)
    """
    words_in, words_out = captions[:, :-1], captions[:, 1:]
    ### BEGIN SOLUTION
    image = L.affine(features, params["img.W"], params["img.b"])  # (N, E)
    inputs = pt.concatenate([image.dimshuffle(0, "x", 1), L.word_embedding(words_in, params["embed.W"])], axis=1)
    h0 = pt.zeros((features.shape[0], spec.hidden_dim), dtype=features.dtype)
    h, _ = rnn.lstm(inputs, h0, params["lstm.Wx"], params["lstm.Wh"], params["lstm.b"])
    h, updates = L.dropout(h[:, 1:], spec.dropout, rng, train)
    scores = L.temporal_affine(h, params["out.W"], params["out.b"])
    mask = pt.neq(words_out, 0)
    return L.temporal_softmax_loss(scores, words_out, mask, weights), updates
    ### END SOLUTION


loss = show_and_tell_loss  # the name every captioner module gives its loss


def decoder_graph(spec: Spec, params: dict):
    """The symbolic pieces of step-by-step decoding.

    Returns (start, step), each an (inputs, outputs) pair to compile (dlmie.captioning.decode does):
    - start: features (N, D) -> state [h (N, H), c (N, H)] after the image step
    - step: (words (N,) int, h, c, features) -> [log_probs (N, V), h, c, attention]; Show and Tell
      reads the image only at the start and has no attention, so features go unused and the
      attention output is an empty (N, 0) array
    """
    features = pt.matrix("features")
    zeros = pt.zeros((features.shape[0], spec.hidden_dim), dtype=features.dtype)
    image = L.affine(features, params["img.W"], params["img.b"])
    h1, c1 = rnn.lstm_step(image, zeros, zeros, params["lstm.Wx"], params["lstm.Wh"], params["lstm.b"])

    words, h, c = pt.lvector("words"), pt.matrix("h"), pt.matrix("c")
    x = L.word_embedding(words, params["embed.W"])
    h2, c2 = rnn.lstm_step(x, h, c, params["lstm.Wx"], params["lstm.Wh"], params["lstm.b"])
    log_probs = L.log_softmax(L.affine(h2, params["out.W"], params["out.b"]), axis=1)
    no_attention = pt.zeros((words.shape[0], 0), dtype=h.dtype)
    return ([features], [h1, c1]), ([words, h, c, features], [log_probs, h2, c2, no_attention])

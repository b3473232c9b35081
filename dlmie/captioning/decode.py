"""Turning a trained captioner into captions: greedy decoding and beam search.

Both run the model one word at a time through two compiled functions built from the model's
`decoder_graph` (see dlmie.models.show_and_tell):

    state = start(features)                                     # after reading the image
    log_probs, *state, attention = step(words, *state, features)   # one word further

so the same code decodes Show and Tell and Show-Attend-Tell; for the latter it also collects
each word's attention map.

Beam search keeps the K best partial captions per image, ranked by their summed
log-probabilities. A caption that has produced <END> stays in the beam unchanged (it can
only "continue" with <END> at no cost) until it falls out of the K best or decoding ends. A
caption that never produces <END> is cut at `max_length` words and returned as it is.

`Decoder.sample` draws captions from the model's distribution instead, and `Decoder.score` reads
given captions' log-probabilities: what self-critical training (dlmie.training.scst) needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
from dlmie import compile_cache
from dlmie.data.vocab import END, START, Vocabulary


@dataclass
class Decoded:
    """Decoding results for N images.

    - words: list of N lists of word ids (no <START>, no <END>)
    - attention: list of N arrays (len(words[i]) + 1, L) -- the attention map of every generated
      word and of <END> -- or None for a model without attention
    - log_prob: (N,) the summed log-probability of each returned caption (with its <END>, if any)
    """

    words: list
    attention: list | None
    log_prob: np.ndarray

    def captions(self, vocab: Vocabulary) -> list[str]:
        return [vocab.decode(np.asarray(w, dtype=np.int64)) for w in self.words]


class Decoder:
    """Greedy and beam-search decoding around a captioner's start and step functions.

    - start: features -> list of state arrays
    - step: (words (N,) int64, *state, features) -> [log_probs (N, V), *state, attention (N, L or 0)]
    """

    def __init__(self, start, step):
        self.start, self.step = start, step

    @classmethod
    def compile(cls, module, spec, params: dict) -> "Decoder":
        """Compile a captioner module's decoder_graph with the given parameters."""
        (start_in, start_out), (step_in, step_out) = module.decoder_graph(spec, params)
        # Show and Tell's step does not read the features; the signature is shared anyway.
        return cls(compile_cache.function(start_in, start_out),
                   compile_cache.function(step_in, step_out, on_unused_input="ignore"))

    def greedy(self, features: np.ndarray, max_length: int = 20) -> Decoded:
        """The most probable word at every step.

        Inputs:
        - features: (N, D) vectors or (N, L, D) grids, float32, as the model was trained on
        - max_length: at most this many words before <END>
        """
        return decode_loop(self.start, self.step, np.asarray(features, np.float32), max_length,
                           lambda log_probs: np.argmax(log_probs, axis=1))

    def sample(self, features: np.ndarray, rng: np.random.Generator, max_length: int = 20) -> Decoded:
        """One caption per image drawn word by word from the model's distribution (multinomial
        sampling, as self-critical training needs). <NULL> and <START>, never targets in training,
        are never drawn; the log-probabilities returned are the model's own.

        Inputs:
        - features: (N, D) or (N, L, D) float32; repeat rows to draw several captions per image
        - rng: the generator of the draws
        - max_length: at most this many words before <END>
        Returns a Decoded whose log_prob is each caption's summed log-probability, with its <END>
        if it has one: what the teacher-forced loss of the same caption sums.
        """
        def draw(log_probs):
            probs = np.exp(log_probs.astype(np.float64))
            probs[:, :START + 1] = 0.0
            cdf = np.cumsum(probs, axis=1)
            return np.argmax(cdf > rng.random(len(cdf))[:, None] * cdf[:, -1:], axis=1)

        return decode_loop(self.start, self.step, np.asarray(features, np.float32), max_length, draw)

    def score(self, features: np.ndarray, words: list) -> np.ndarray:
        """The summed log-probability of given captions, read word by word through the step function.

        Inputs:
        - features: (N, D) or (N, L, D) float32
        - words: N lists of word ids (no <START>); a caption ending with <END> counts it
        Returns (N,) float64.
        """
        features = np.asarray(features, np.float32)
        n, steps = len(features), max((len(w) for w in words), default=0)
        padded = np.full((n, steps), -1, dtype=np.int64)  # -1: past the caption's end
        for i, w in enumerate(words):
            padded[i, : len(w)] = w
        state = self.start(features)
        previous = np.full(n, START, dtype=np.int64)
        total = np.zeros(n)
        for t in range(steps):
            log_probs, *state, _ = self.step(previous, *state, features)
            present = padded[:, t] >= 0
            total[present] += log_probs[present, padded[present, t]]
            previous = np.where(present, padded[:, t], END)
        return total

    def beam_search(self, features: np.ndarray, beam_size: int = 3, max_length: int = 20,
                    length_penalty: float = 0.0) -> Decoded:
        """The K best captions per image by summed log-probability; the best is returned.

        Inputs:
        - features: (N, D) or (N, L, D) float32
        - beam_size: K; K = 1 is greedy decoding
        - max_length: at most this many words before <END>
        - length_penalty: alpha of the final ranking score / length ** alpha (0: plain sum; Wu et
          al. 2016 used about 0.6-0.7 to stop beam search from preferring short captions)
        """
        features = np.asarray(features, np.float32)
        n, k = len(features), beam_size
        if k < 1:
            raise ValueError(f"beam_size must be at least 1, got {k}")
        tiled = np.repeat(features, k, axis=0)  # row n * K + j is beam j of image n
        state = [np.repeat(s, k, axis=0) for s in self.start(features)]
        score = np.full((n, k), -np.inf)
        score[:, 0] = 0.0  # all beams start identical: expand only one of them
        words = np.full(n * k, START, dtype=np.int64)
        history = np.zeros((n, k, 0), dtype=np.int64)
        maps = None
        finished = np.zeros((n, k), dtype=bool)
        for _ in range(max_length):
            log_probs, *state, attention = self.step(words, *state, tiled)
            score, beam, words_nk = beam_step(score, log_probs.reshape(n, k, -1), finished)
            rows = (np.arange(n)[:, None] * k + beam).reshape(-1)
            state = [s[rows] for s in state]
            history = np.concatenate([np.take_along_axis(history, beam[..., None], axis=1), words_nk[..., None]], axis=2)
            if attention.shape[1]:
                step_maps = attention.reshape(n, k, -1)[np.arange(n)[:, None], beam][:, :, None]
                maps = step_maps if maps is None else np.concatenate([maps[np.arange(n)[:, None], beam], step_maps], axis=2)
            finished = np.take_along_axis(finished, beam, axis=1) | (words_nk == END)
            words = words_nk.reshape(-1)
            if finished.all():
                break
        # caption length in words: up to the first <END>, or everything generated
        is_end = history == END
        lengths = np.where(is_end.any(axis=2), is_end.argmax(axis=2), history.shape[2])
        ranking = score / np.maximum(lengths + finished, 1) ** length_penalty if length_penalty else score
        best = np.argmax(ranking, axis=1)
        chosen = [history[i, best[i], : lengths[i, best[i]]].tolist() for i in range(n)]
        attention = None
        if maps is not None:
            attention = [maps[i, best[i], : lengths[i, best[i]] + 1] for i in range(n)]
        return Decoded(chosen, attention, score[np.arange(n), best])


def decode_loop(start, step, features: np.ndarray, max_length: int, choose) -> Decoded:
    """Decode one caption per image word by word: the loop behind greedy decoding and sampling.

    The captioner reads the image, start: features -> state_0, then at every step t = 0, 1, ...
    reads the previous word y_{t-1} (y_{-1} = <START>, the id START) and gives the distribution
    of the next one, and a word is chosen from it:

        step: (y_{t-1}, state_t, features) -> (log p_t, state_{t+1}, attention_t)
        choose: log p_t -> y_t

    Caption i ends at the first step t_i where y_t = <END> (the id END): its words are
    y_0 ... y_{t_i - 1} and its log-probability is sum over t <= t_i of log p_t(y_t), <END>
    included. A caption that has not ended after max_length steps is cut there: its words are
    all max_length chosen words and its log-probability their sum. Nothing chosen after a
    caption's <END> counts for it. The loop stops as soon as every caption has ended, or after
    max_length steps.

    Inputs:
    - start: callable, features -> list of state arrays (each with N rows)
    - step: callable, (words (N,) int64, *state, features) -> list
      [log_probs (N, V), *new state, attention (N, L)], L = 0 for a model without attention
    - features: (N, D) or (N, L, D), handed to start and step as they are
    - max_length: the most words a caption gets before <END>, an int >= 1
    - choose: callable, (N, V) log-probabilities -> (N,) int word ids; called exactly once per
      step, on all N rows, finished or not (a sampler draws its random numbers in that order)
    Returns a Decoded with:
    - words: N lists of int word ids, without <START> and <END>
    - attention: None when L = 0; otherwise N arrays, caption i's of shape (t_i + 1, L): the
      maps of its steps through its <END> (max_length rows for a caption that was cut)
    - log_prob: (N,) float64, each caption's summed log-probability as above
    Raises:
    - ValueError, "max_length must be at least 1, got ...", when max_length < 1
    """
    ### BEGIN SOLUTION
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    n = len(features)
    state = list(start(features))
    words = np.full(n, START, dtype=np.int64)
    chosen, maps = [], []
    total = np.zeros(n)
    finished = np.zeros(n, dtype=bool)
    length = np.full(n, max_length)
    for t in range(max_length):
        log_probs, *state, attention = step(words, *state, features)
        words = np.asarray(choose(log_probs), dtype=np.int64)
        total += np.where(finished, 0.0, log_probs[np.arange(n), words])
        ended = ~finished & (words == END)
        length[ended] = t
        finished |= ended
        chosen.append(words)
        maps.append(attention)
        if finished.all():
            break
    chosen = np.stack(chosen, axis=1)
    attention = None
    if maps[0].shape[1]:
        maps = np.stack(maps, axis=1)
        attention = [maps[i, : length[i] + 1] for i in range(n)]
    return Decoded([chosen[i, : length[i]].tolist() for i in range(n)], attention, total)
    ### END SOLUTION


def beam_step(score: np.ndarray, log_probs: np.ndarray, finished: np.ndarray) -> tuple:
    """One step of beam search: the K best one-word continuations of each image's K beams.

    A beam continues with word w at the score score + log_probs[w]; a finished beam (one that has
    produced <END>) continues only with <END>, at no cost, so that it keeps its score. Of the
    K * V candidates of each image, the K with the highest scores become the new beams.
    Inputs:
    - score: (N, K) summed log-probabilities of the current beams (-inf for a beam that does not exist yet)
    - log_probs: (N, K, V) log-probabilities of each beam's next word
    - finished: (N, K) bool, whether each beam has produced <END>
    Returns a tuple of:
    - score: (N, K) float, the new beams' scores, highest first
    - beam: (N, K) int, the current beam each new beam extends
    - words: (N, K) int, the word it appends
    Candidate c = beam * V + word of an image scores

        score[beam] + log_probs[beam, word]     for an unfinished beam
        score[beam] + (0 if word is <END> else -inf)   for a finished one (<END> is the id END)

    and ties are broken in favour of the lower c. The caller's arrays are left unchanged.
    """
    n, k, vocab_size = log_probs.shape
    ### BEGIN SOLUTION
    log_probs = np.where(finished[..., None], -np.inf, log_probs)
    log_probs[..., END] = np.where(finished, 0.0, log_probs[..., END])
    candidates = (score[..., None] + log_probs).reshape(n, k * vocab_size)
    best = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(candidates, best, axis=1), best // vocab_size, best % vocab_size
    ### END SOLUTION


"""How far a corpus metric moves when the evaluated images are drawn again: bootstrap intervals of
BLEU-4 and CIDEr, and a paired bootstrap of the difference between two captioners.

Corpus BLEU is not a mean of per-image scores: it divides clipped n-gram matches summed over the
images by n-gram counts summed over them. Each image therefore keeps its counts (`bleu_counts`,
pycocoevalcap's BleuScorer, term for term), and a resample's BLEU is computed from their weighted
sums (`corpus_bleu`), for all resamples in one matrix product. CIDEr is the mean of per-image
scores, with the document frequencies of the full split held fixed.

    scores = ImageScores.of(candidates, references)        # token lists, one candidate per image
    intervals = bootstrap(scores)                          # {"BLEU-4": Interval, "CIDEr": Interval}
    difference = paired_bootstrap(scores, other_scores)    # the same resampled images for both
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from dlmie.captioning.cider import CiderD

ORDER = 4
# pycocoevalcap's guards against division by zero, kept so that the values match it exactly
_TINY, _SMALL = 1e-15, 1e-9
BOOTSTRAP_METRICS = ("BLEU-4", "CIDEr")


def _ngram_counts(tokens, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def bleu_counts(candidates, references, n: int = ORDER) -> np.ndarray:
    """What corpus BLEU needs from each image.

    Inputs:
    - candidates: M token lists; references: M lists of token lists
    - n: the longest n-gram
    Returns:
    - (M, 2n + 2) float64: clipped matches of orders 1..n, candidate n-grams of orders 1..n, the
      candidate's length, and the length of the reference closest to it (the shorter on a tie)
    """
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    rows = np.zeros((len(candidates), 2 * n + 2))
    for m, (cand, refs) in enumerate(zip(candidates, references)):
        if not refs:
            raise ValueError(f"image {m} has no reference captions")
        most = Counter()
        for ref in refs:
            most |= _ngram_counts(ref, n)  # the union keeps each n-gram's largest count
        for gram, count in _ngram_counts(cand, n).items():
            rows[m, len(gram) - 1] += min(most[gram], count)
        rows[m, n : 2 * n] = [max(0, len(cand) - k + 1) for k in range(1, n + 1)]
        rows[m, 2 * n] = len(cand)
        rows[m, 2 * n + 1] = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    return rows


def corpus_bleu(sums: np.ndarray) -> np.ndarray:
    """BLEU-1..n from summed counts.

    Inputs:
    - sums: (..., 2n + 2) bleu_counts rows summed over the images of a corpus (or weighted sums)
    Returns:
    - (..., n) BLEU-1..n with the brevity penalty, as pycocoevalcap's Bleu computes them
    """
    n = (sums.shape[-1] - 2) // 2
    precisions = (sums[..., :n] + _TINY) / (sums[..., n : 2 * n] + _SMALL)
    bleu = np.cumprod(precisions, axis=-1) ** (1.0 / np.arange(1, n + 1))
    ratio = (sums[..., 2 * n] + _TINY) / (sums[..., 2 * n + 1] + _SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.minimum(ratio, 1)), 1.0)
    return bleu * brevity[..., None]


@dataclass
class ImageScores:
    """Per-image statistics of one captioner on M images.

    - bleu: (M, 10) bleu_counts rows
    - cider: (M,) CIDEr-D per image, document frequencies from the M images' references
    """

    bleu: np.ndarray
    cider: np.ndarray

    @classmethod
    def of(cls, candidates, references) -> "ImageScores":
        """From M candidate token lists and M lists of reference token lists (in the same order)."""
        return cls(bleu_counts(candidates, references), CiderD(references).score(candidates, references))

    def __len__(self) -> int:
        return len(self.cider)

    def corpus(self, weights: np.ndarray) -> dict:
        """BLEU-4 and CIDEr of weighted image sets.

        Inputs:
        - weights: (B, M) how many times each image is in each of B sets (a row of ones: the full set)
        Returns:
        - dict "BLEU-4" -> (B,), "CIDEr" -> (B,)
        """
        return {"BLEU-4": corpus_bleu(weights @ self.bleu)[:, ORDER - 1],
                "CIDEr": weights @ self.cider / weights.sum(axis=1)}


@dataclass
class Interval:
    """A value and its bootstrap percentile interval [low, high]."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        """How to read a difference's interval: beyond the noise of drawing the images, or within it."""
        return "beyond noise" if self.excludes_zero else "within noise"

    def signed(self) -> str:
        """A difference: "+0.048 [+0.002, +0.089]"."""
        return f"{self.value:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def resample_weights(m: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples, m) multiplicities of m images drawn m times with replacement, per resample."""
    if m < 1:
        raise ValueError("bootstrapping needs at least one image")
    draws = np.random.default_rng(seed).integers(0, m, (resamples, m))
    offsets = (np.arange(resamples) * m)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=resamples * m).reshape(resamples, m).astype(np.float64)


def _interval(value: float, samples: np.ndarray, level: float) -> Interval:
    low, high = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(value), float(low), float(high))


def bootstrap(scores: ImageScores, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Percentile intervals of BLEU-4 and CIDEr over image resamples: name -> Interval."""
    full = scores.corpus(np.ones((1, len(scores))))
    drawn = scores.corpus(resample_weights(len(scores), resamples, seed))
    return {name: _interval(full[name][0], drawn[name], level) for name in BOOTSTRAP_METRICS}


def paired_bootstrap(a: ImageScores, b: ImageScores, resamples: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Intervals of a - b when both captioners are judged on the same resampled images.

    Inputs:
    - a, b: ImageScores of two captioners on the same M images, in the same order
    Returns name -> Interval of the difference; an interval that excludes 0 is a difference beyond
    the noise of drawing the images.
    """
    if len(a) != len(b):
        raise ValueError(f"a paired bootstrap needs the same images for both: {len(a)} and {len(b)}")
    weights = resample_weights(len(a), resamples, seed)
    ones = np.ones((1, len(a)))
    full_a, full_b, drawn_a, drawn_b = a.corpus(ones), b.corpus(ones), a.corpus(weights), b.corpus(weights)
    return {name: _interval(full_a[name][0] - full_b[name][0], drawn_a[name] - drawn_b[name], level)
            for name in BOOTSTRAP_METRICS}

"""CIDEr-D (Vedantam et al. 2015), vectorized, with document frequencies from a chosen corpus.

The variant is the one of the COCO caption evaluation code (pycocoevalcap's `Cider`, which is
CIDEr-D despite its name), term for term:

- every caption is a vector of n-gram weights, n = 1..4: term frequency (the raw count) times
  idf = log(number of corpus images) - log(max(1, number of corpus images whose references hold
  the n-gram));
- a candidate and one reference are compared per n by the clipped cosine
  sum_g min(c_g, r_g) r_g / (|c_n| |r_n|), times a Gaussian length penalty
  exp(-(l_c - l_r)^2 / (2 sigma^2)), sigma = 6, where l is the caption's number of *bigrams*
  (words - 1; pycocoevalcap counts lengths that way, and matching it to 1e-6 means doing the same);
- the image's score is 10 x the mean over n of the mean over its references.

pycocoevalcap takes the document frequencies from the references it is given (the evaluated
images). Here they come from the `corpus` passed to `CiderD`: the evaluated references reproduce
pycocoevalcap's numbers, the training captions give self-critical training a reward that does not
depend on the minibatch (Rennie et al. 2017).

    cider = CiderD(train_references)                  # M lists of tokenized references
    refs = cider.cook(train_references)               # their tf-idf vectors, once
    rewards = cider.score(samples, refs, image_idxs)  # (C,) one score per sampled caption

The n-gram vectors are SciPy sparse rows, so a minibatch of captions is scored in a few sparse
products instead of Python loops over n-grams.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class CookedReferences:
    """The tf-idf vectors of the references of M images.

    - counts: (R, G0) CSR of n-gram counts, one row per reference caption (G0: n-grams known when cooked)
    - norms: (R, n) the norm of each reference's vector per n-gram order
    - bigrams: (R,) number of bigrams of each reference (its length for the penalty)
    - rows: (M + 1,) references of image m are rows rows[m]:rows[m + 1]
    """

    counts: sp.csr_matrix
    norms: np.ndarray
    bigrams: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows) - 1


class CiderD:
    """CIDEr-D with document frequencies from `corpus` (see the module docstring).

    - corpus: M lists of references, each a list of tokens (words); its images are the documents
    - n: the longest n-gram; sigma: the width of the length penalty
    """

    def __init__(self, corpus, n: int = 4, sigma: float = 6.0):
        if not corpus:
            raise ValueError("CIDEr-D needs a non-empty corpus of references for its document frequencies")
        self.n, self.sigma = n, sigma
        self._ids = {}  # n-gram tuple -> column
        self._order = []  # column -> n-gram order - 1
        df = Counter()
        for refs in corpus:
            df.update(set(g for ref in refs for g in self._ngrams(ref)))
        self._add_columns(df)
        self._df = np.array([df[g] for g in self._ids], np.float64)  # columns in insertion order
        self.log_documents = np.log(float(len(corpus)))

    def _ngrams(self, tokens):
        tokens = tuple(tokens)
        return [tokens[i : i + k] for k in range(1, self.n + 1) for i in range(len(tokens) - k + 1)]

    def _add_columns(self, ngrams):
        """Give n-grams not seen before a column each (candidates' n-grams outside the corpus: df 0)."""
        for g in ngrams:
            if g not in self._ids:
                self._ids[g] = len(self._ids)
                self._order.append(len(g) - 1)

    def _counts(self, captions) -> tuple[sp.csr_matrix, np.ndarray]:
        """(C, G) CSR n-gram counts of C token lists and their bigram counts (C,)."""
        indptr, indices, data = [0], [], []
        for tokens in captions:
            counts = Counter(self._ngrams(tokens))
            self._add_columns(counts)
            indices += [self._ids[g] for g in counts]
            data += list(counts.values())
            indptr.append(len(indices))
        matrix = sp.csr_matrix((np.array(data, np.float64), np.array(indices, np.int64), np.array(indptr, np.int64)),
                               shape=(len(captions), len(self._ids)))
        bigrams = np.array([max(len(t) - 1, 0) for t in captions], np.float64) if self.n >= 2 else np.zeros(len(captions))
        return matrix, bigrams

    def _idf(self, width: int) -> np.ndarray:
        """(width,) log(corpus images) - log(max(1, df)) of the first `width` columns."""
        df = np.zeros(width)
        df[: len(self._df)] = self._df[:width]
        return self.log_documents - np.log(np.maximum(1.0, df))

    def _by_order(self, width: int) -> sp.csr_matrix:
        """(width, n) indicator of each column's n-gram order."""
        order = np.array(self._order[:width], np.int64)
        return sp.csr_matrix((np.ones(width), (np.arange(width), order)), shape=(width, self.n))

    def _weighted(self, counts: sp.csr_matrix, width: int) -> sp.csr_matrix:
        """Counts times idf: the tf-idf vectors, widened to `width` columns."""
        counts = sp.csr_matrix((counts.data, counts.indices, counts.indptr), shape=(counts.shape[0], width))
        return sp.csr_matrix(counts.multiply(self._idf(width)[None, :]))

    def _norms(self, weighted: sp.csr_matrix) -> np.ndarray:
        return np.sqrt(np.asarray((weighted.multiply(weighted) @ self._by_order(weighted.shape[1])).todense()))

    def cook(self, references) -> CookedReferences:
        """The tf-idf vectors of M images' references (M lists of token lists), for `score`."""
        if any(len(refs) == 0 for refs in references):
            raise ValueError("every image needs at least one reference caption")
        counts, bigrams = self._counts([ref for refs in references for ref in refs])
        rows = np.concatenate([[0], np.cumsum([len(refs) for refs in references])]).astype(np.int64)
        return CookedReferences(counts, self._norms(self._weighted(counts, counts.shape[1])), bigrams, rows)

    def score(self, candidates, references, image_idxs=None) -> np.ndarray:
        """CIDEr-D of each candidate against its image's references.

        Inputs:
        - candidates: C token lists
        - references: CookedReferences of M images (from `cook`), or M lists of token lists
        - image_idxs: (C,) int, candidate c describes image image_idxs[c] (default: c)
        Returns:
        - (C,) float64 scores, 10 x the mean over n-gram orders and references (0 to about 10)
        """
        if not isinstance(references, CookedReferences):
            references = self.cook(references)
        image_idxs = np.arange(len(candidates)) if image_idxs is None else np.asarray(image_idxs, np.int64)
        if len(image_idxs) != len(candidates):
            raise ValueError(f"{len(candidates)} candidates but {len(image_idxs)} image indices")
        if len(candidates) == 0:
            return np.zeros(0)
        if image_idxs.min() < 0 or image_idxs.max() >= len(references):
            raise ValueError(f"image indices must lie in [0, {len(references)})")
        counts, bigrams = self._counts(candidates)
        width = len(self._ids)
        cand = self._weighted(counts, width)
        cand_norms = self._norms(cand)
        # every (candidate, reference of its image) pair
        per_image = np.diff(references.rows)[image_idxs]
        pair_cand = np.repeat(np.arange(len(candidates)), per_image)
        pair_ref = (np.arange(per_image.sum()) - np.repeat(np.cumsum(per_image) - per_image, per_image)
                    + np.repeat(references.rows[image_idxs], per_image))
        c, r = cand[pair_cand], self._weighted(references.counts[pair_ref], width)
        overlap = np.asarray((c.minimum(r).multiply(r) @ self._by_order(width)).todense())  # (P, n)
        norm = cand_norms[pair_cand] * references.norms[pair_ref]
        cosine = np.where(norm > 0, overlap / np.where(norm > 0, norm, 1.0), overlap)
        delta = bigrams[pair_cand] - references.bigrams[pair_ref]
        pair_scores = (cosine * np.exp(-(delta**2) / (2 * self.sigma**2))[:, None]).mean(axis=1)
        return 10.0 * np.bincount(pair_cand, pair_scores, minlength=len(candidates)) / per_image

"""Words to integers and back: caption tokenization and the vocabulary of a captioner.

The layout is cs231n's (``coco2014_vocab.json``): four special tokens first, in this order,

    0 <NULL>   padding after the end of a caption (the loss ignores it)
    1 <START>  the first input of every caption
    2 <END>    the last target of every caption
    3 <UNK>    any word not in the vocabulary

then the words. A caption of T words becomes ``<START> w1 ... wT <END> <NULL> ...``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

SPECIALS = ("<NULL>", "<START>", "<END>", "<UNK>")
NULL, START, END, UNK = range(4)

# A word is a run of letters and digits (any script: str.isalnum), with apostrophes kept only
# between two such characters. Everything else separates words.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(caption: str) -> list[str]:
    """Split a caption into lower-case words, without punctuation.

    Kept: letters and digits of any script, and an apostrophe between two of them ("don't",
    "o'clock", "man's"). Everything else separates words: spaces, punctuation, hyphens
    ("t-shirt" -> "t", "shirt"), underscores, and apostrophes at the start or end of a word
    (Flickr8k's pre-split "horse 's" -> "horse", "s"). A typographic apostrophe (U+2019) counts
    as "'".

    Inputs:
    - caption: str, e.g. "A dog 's T-shirt ."
    Returns:
    - list of str, e.g. ["a", "dog", "s", "t", "shirt"]; empty for a caption with no letters or digits
    """
    return _WORD.findall(caption.lower().replace("\u2019", "'"))


class Vocabulary:
    """The words a captioner knows; index i is the word idx_to_word[i].

    - idx_to_word: list of V str, the special tokens first (see the module docstring)
    - word_to_idx: dict str -> int, its inverse
    """

    def __init__(self, idx_to_word):
        idx_to_word = [str(w) for w in idx_to_word]
        if tuple(idx_to_word[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {list(SPECIALS)} in that order "
                             f"(cs231n's layout), got {idx_to_word[:4]}")
        duplicates = sorted(w for w, n in Counter(idx_to_word).items() if n > 1)
        if duplicates:
            raise ValueError(f"a vocabulary lists each word once; repeated: {duplicates[:10]}")
        self.idx_to_word = idx_to_word
        self.word_to_idx = {w: i for i, w in enumerate(idx_to_word)}

    def __len__(self) -> int:
        return len(self.idx_to_word)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.idx_to_word == other.idx_to_word

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words: {' '.join(self.idx_to_word[4:12])} ...)"

    @classmethod
    def build(cls, token_lists, min_count: int = 1) -> "Vocabulary":
        """The vocabulary of a set of (training) captions.

        Inputs:
        - token_lists: iterable of lists of str, the tokenized captions (see tokenize)
        - min_count: int >= 1, a word is kept if it occurs at least this often; rarer words
          will be encoded as <UNK>
        Returns:
        - a Vocabulary: the special tokens, then the kept words by descending count, ties in
          alphabetical order (so the same captions always give the same indices)
        """
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts = Counter(w for tokens in token_lists for w in tokens)
        clash = sorted(set(SPECIALS) & set(counts))
        if clash:
            raise ValueError(f"the captions contain the special tokens {clash}; tokenize them first")
        words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + words)

    def encode(self, token_lists, max_length: int) -> np.ndarray:
        """Captions as rows of word indices, cs231n's caption layout.

        Inputs:
        - token_lists: sequence of N lists of str (tokenized captions)
        - max_length: int >= 1, the most words kept of a caption; a longer caption is cut after
          its first max_length words (its <END> still follows)
        Returns:
        - captions: (N, max_length + 2) int32, each row <START> w1 ... wT <END> then <NULL> up to
          the end; a word not in the vocabulary is <UNK>
        """
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        captions = np.full((len(token_lists), max_length + 2), NULL, np.int32)
        for i, tokens in enumerate(token_lists):
            ids = [self.word_to_idx.get(w, UNK) for w in tokens[:max_length]]
            captions[i, :len(ids) + 2] = [START, *ids, END]
        return captions

    def decode(self, ids):
        """Word indices back to text.

        Inputs:
        - ids: (T,) or (N, T) integers, e.g. encode's output or a sampler's
        Returns:
        - for (T,): str, the words up to the first <END> joined by spaces, without <NULL> and
          <START>; for (N, T): a list of N such str
        """
        ids = np.asarray(ids)
        if ids.ndim == 2:
            return [self.decode(row) for row in ids]
        if ids.ndim != 1:
            raise ValueError(f"decode takes (T,) or (N, T) indices, got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ValueError(f"indices must lie in [0, {len(self)}), got {ids.min()}..{ids.max()}")
        words = []
        for i in ids.tolist():
            if i == END:
                break
            if i not in (NULL, START):
                words.append(self.idx_to_word[i])
        return " ".join(words)

    def to_dict(self) -> dict:
        """JSON-safe: {"idx_to_word": [...], "word_to_idx": {...}}, the layout of cs231n's coco2014_vocab.json."""
        return {"idx_to_word": list(self.idx_to_word), "word_to_idx": dict(self.word_to_idx)}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        """The inverse of to_dict; word_to_idx may be left out, and must agree with idx_to_word if given."""
        if "idx_to_word" not in d:
            raise ValueError(f"a vocabulary record needs 'idx_to_word', got keys {sorted(d)}")
        vocab = cls(d["idx_to_word"])
        if "word_to_idx" in d and {w: int(i) for w, i in d["word_to_idx"].items()} != vocab.word_to_idx:
            raise ValueError("the record's word_to_idx does not match its idx_to_word")
        return vocab

    @classmethod
    def from_cs231n_json(cls, path) -> "Vocabulary":
        """Read cs231n's coco2014_vocab.json (or a file written from to_dict)."""
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as err:  # json.JSONDecodeError is a ValueError too
            raise ValueError(f"{path}: not a vocabulary file: {err}") from err

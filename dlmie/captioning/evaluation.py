"""One captioner's captions of a split judged three ways: the COCO metrics, per-image statistics
for bootstrap intervals, and the diversity of what it writes.

    result = judge(references, candidates, training_tokens)
    result.scores                       # {"BLEU-1": ..., "CIDEr": ...} (pycocoevalcap)
    bootstrap(result.per_image)         # 95% intervals of BLEU-4 and CIDEr over resampled images
    paired_bootstrap(result.per_image, other.per_image)   # the difference, on the same resamples
    result.diversity                    # distinct captions, words used, copies of training captions
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmie.captioning.bootstrap import ImageScores
from dlmie.captioning.metrics import diversity, evaluate_tokenized, tokenize


@dataclass
class Judged:
    """- scores: metric name -> corpus score (captioning.metrics.evaluate's)
    - per_image: ImageScores of the same tokenized captions, images in `names` order
    - diversity: captioning.metrics.diversity of the candidates
    - names: the M image ids
    """

    scores: dict
    per_image: ImageScores
    diversity: dict
    names: list


def judge(references: dict, candidates: dict, training_tokens, spice: bool = False) -> Judged:
    """Score one captioner's candidates.

    Inputs:
    - references: image id -> list of raw reference captions
    - candidates: image id -> generated caption (str), for the same ids
    - training_tokens: the training captions as token lists (for diversity's copies)
    - spice: also compute SPICE (see captioning.metrics.evaluate)
    Returns a Judged.
    """
    refs, cands = tokenize(references, candidates)
    names = list(references)
    per_image = ImageScores.of([cands[n][0].split() for n in names], [[r.split() for r in refs[n]] for n in names])
    return Judged(evaluate_tokenized(refs, cands, spice=spice), per_image,
                  diversity([candidates[n] for n in names], training_tokens), names)

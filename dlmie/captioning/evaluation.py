"""One captioner's captions of a split judged three ways: the COCO metrics, per-image statistics
for bootstrap intervals, and the diversity of what it writes.

    result = judge(references, candidates, training_tokens)
    result.scores                       # {"BLEU-1": ..., "CIDEr": ...} (pycocoevalcap)
    bootstrap(result.per_image)         # 95% intervals of BLEU-4 and CIDEr over resampled images
    paired_bootstrap(result.per_image, other.per_image)   # the difference, on the same resamples
    result.diversity                    # distinct captions, words used, copies of training captions
    print(score_table({"A": result, "B": other}))                 # the metrics, one row per captioner
    print(noise_table({"A": result, "B": other}, baseline="B"))   # all of it, side by side
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmie.captioning.bootstrap import ImageScores, bootstrap, paired_bootstrap
from dlmie.captioning.metrics import METRICS, diversity, evaluate_tokenized, tokenize


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


def score_table(judged: dict) -> str:
    """The corpus scores of captioners judged on the same images, one row each.

    Inputs:
    - judged: label -> Judged
    Returns text: a header of metric names (METRICS, then SPICE where every captioner has it) and
    one row per captioner, scores to three decimals.
    """
    metrics = [*METRICS] + (["SPICE"] if all("SPICE" in j.scores for j in judged.values()) else [])
    width = max(len(label) for label in judged) + 2
    lines = [f"{'':{width}}" + "".join(f"{m:>9}" for m in metrics)]
    lines += [f"{label:{width}}" + "".join(f"{j.scores[m]:9.3f}" for m in metrics) for label, j in judged.items()]
    return "\n".join(lines)


def noise_table(judged: dict, baseline: str, resamples: int = 1000, seed: int = 0) -> str:
    """Captioners judged on the same images, side by side, with what is beyond noise.

    Inputs:
    - judged: label -> Judged, every one on the same images in the same order
    - baseline: the label whose paired differences from the others are bootstrapped
    - resamples, seed: of the image resampling (the same resamples for every captioner)
    Returns text: per captioner, BLEU-4 and CIDEr with their 95% bootstrap intervals and its
    diversity (distinct captions, words used, copies of a training caption); then per other
    captioner its paired difference from the baseline, "beyond noise" when the interval excludes 0.
    """
    width = max(len(label) for label in judged) + 2
    lines = [f"{'':{width}}{'BLEU-4 [95%]':>22}{'CIDEr [95%]':>22}   distinct  words  copies"]
    for label, j in judged.items():
        intervals, d = bootstrap(j.per_image, resamples, seed), j.diversity
        lines.append(f"{label:{width}}{str(intervals['BLEU-4']):>22}{str(intervals['CIDEr']):>22}"
                     f"   {d['distinct']:>8}  {d['vocabulary']:>5}  {d['copied']:6.1%}")
    for label, j in judged.items():
        if label != baseline:
            diff = paired_bootstrap(j.per_image, judged[baseline].per_image, resamples, seed)
            lines.append(f"{label} - {baseline} (paired): "
                         + ";  ".join(f"{m} {i.signed()} {i.verdict}" for m, i in diff.items()))
    return "\n".join(lines)

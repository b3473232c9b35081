"""Our CIDEr-D and count-based corpus BLEU against pycocoevalcap on real Flickr8k captions, the
bootstrap's resamples against pycocoevalcap on explicitly resampled sets, and caption diversity."""

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from dlmie.captioning.bootstrap import (ImageScores, bleu_counts, bootstrap, corpus_bleu, paired_bootstrap,
                                        resample_weights)
from dlmie.captioning.cider import CiderD
from dlmie.captioning.metrics import diversity
from dlmie.data import dataset_path, flickr8k, is_present


@pytest.fixture(scope="module")
def dev():
    """(references, candidates): the dev images' tokenized references, and for each image a varied
    candidate: another image's reference, a prefix of its own, an empty one, unseen words."""
    if not is_present("flickr8k"):
        pytest.skip("Flickr8k not fetched (./get_datasets.sh flickr8k)")
    split = flickr8k.load_split(dataset_path("flickr8k"), "dev")
    refs = [[] for _ in split.images]
    for i, tokens in zip(split.image_idxs.tolist(), split.tokens):
        refs[i].append(tokens)
    rng = np.random.default_rng(0)
    candidates = []
    for m in range(len(refs)):
        other = refs[rng.integers(len(refs))]
        candidate = list(other[rng.integers(len(other))])
        if m % 3 == 0:
            candidate = refs[m][m % len(refs[m])][: rng.integers(1, 12)]
        if m % 7 == 0:
            candidate = candidate + ["zzyzx", "qwv"]
        candidates.append(candidate)
    candidates[1] = []
    return refs, candidates


def coco_format(refs, candidates):
    return ({m: [" ".join(r) for r in rs] for m, rs in enumerate(refs)},
            {m: [" ".join(c)] for m, c in enumerate(candidates)})


def test_cider_equals_pycocoevalcap(dev):
    """Document frequencies from the evaluated references on both sides (pycocoevalcap's only mode)."""
    refs, candidates = dev
    _, theirs = Cider().compute_score(*coco_format(refs, candidates))
    ours = CiderD(refs).score(candidates, refs)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert ours[1] == 0.0 and ours.max() > 1.0
    # cooked references and explicit image indices give the same; a different corpus changes the idf
    cider = CiderD(refs)
    order = np.arange(len(refs))[::-1]
    np.testing.assert_allclose(cider.score([candidates[i] for i in order], cider.cook(refs), order), ours[order])
    other_corpus = CiderD(refs[: len(refs) // 2]).score(candidates, refs)
    assert np.abs(other_corpus - ours).max() > 1e-3


def test_corpus_bleu_from_counts_equals_pycocoevalcap(dev):
    refs, candidates = dev
    theirs, _ = Bleu(4).compute_score(*coco_format(refs, candidates), verbose=0)
    np.testing.assert_allclose(corpus_bleu(bleu_counts(candidates, refs).sum(axis=0)), theirs, rtol=1e-12)


def test_a_resample_equals_pycocoevalcap_on_the_resampled_set(dev):
    """Resample 0 of the bootstrap, scored from counts, equals pycocoevalcap scoring the images it
    drew (duplicates as separate ids; CIDEr with the full set's document frequencies, as the
    bootstrap holds them fixed: the mean of the full set's per-image scores)."""
    refs, candidates = dev
    scores = ImageScores.of(candidates, refs)
    weights = resample_weights(len(refs), resamples=3, seed=5)
    assert np.all(weights.sum(axis=1) == len(refs)) and weights.max() > 1
    drawn = np.repeat(np.arange(len(refs)), weights[0].astype(int))
    bleu, _ = Bleu(4).compute_score(*coco_format([refs[i] for i in drawn], [candidates[i] for i in drawn]), verbose=0)
    _, per_image = Cider().compute_score(*coco_format(refs, candidates))
    resampled = scores.corpus(weights)
    assert resampled["BLEU-4"][0] == pytest.approx(bleu[3], rel=1e-12)
    assert resampled["CIDEr"][0] == pytest.approx(per_image[drawn].mean(), abs=1e-9)


def test_intervals(dev):
    refs, candidates = dev
    scores = ImageScores.of(candidates, refs)
    intervals = bootstrap(scores, resamples=500, seed=1)
    for interval in intervals.values():
        assert interval.low < interval.value < interval.high
    assert bootstrap(scores, resamples=500, seed=1) == intervals  # seeded
    same = paired_bootstrap(scores, scores, resamples=200)
    assert all(i.value == i.low == i.high == 0.0 and not i.excludes_zero for i in same.values())
    own = ImageScores.of([r[0] for r in refs], refs)  # an image's own reference beats another image's
    better = paired_bootstrap(own, scores, resamples=500)
    assert all(i.excludes_zero and i.low > 0 for i in better.values())
    # pairing: 1% less CIDEr on a third of the images is small but systematic and detected; the same
    # scores given to other images are no systematic difference
    nearly = ImageScores(scores.bleu, np.where(np.arange(len(refs)) % 3 == 0, scores.cider * 0.99, scores.cider))
    assert paired_bootstrap(scores, nearly, resamples=500)["CIDEr"].excludes_zero
    assert not paired_bootstrap(scores, ImageScores(scores.bleu, scores.cider[::-1].copy()),
                                resamples=500)["CIDEr"].excludes_zero


def test_diversity():
    training = [["a", "dog", "runs"], ["a", "cat", "sits"], ["two", "dogs"]]
    d = diversity(["a dog runs", "a dog runs", "a dog", "two dogs", "a big dog runs"], training)
    assert d == {"captions": 5, "distinct": 4, "vocabulary": 6, "copied": 3 / 5}

"""decode_loop against a plain per-image loop written independently, on a small NumPy captioner."""

import numpy as np
import pytest

from dlmie.captioning.decode import decode_loop
from dlmie.data.vocab import END, START
from dlmie.parts import _decoding, stand_in_captioner


def reference(start, step, features, max_length, choose_one):
    """Each image on its own: feed <START>, stop at <END> or after max_length words."""
    words, maps, totals = [], [], []
    for i in range(len(features)):
        f = features[i : i + 1]
        state, word, caption, attention, total = start(f), np.array([START]), [], [], 0.0
        for _ in range(max_length):
            log_probs, *state, a = step(word, *state, f)
            word = np.array([choose_one(log_probs[0])])
            total += log_probs[0, word[0]]
            attention.append(a[0])
            if word[0] == END:
                break
            caption.append(int(word[0]))
        words.append(caption)
        maps.append(np.array(attention))
        totals.append(total)
    return words, maps, np.array(totals)


@pytest.mark.parametrize("regions, max_length, ends", [(4, 6, (2, 4, None)), (0, 5, (0, 3)), (3, 3, (None, None)),
                                                       (2, 7, (None, 1, 5, 2)), (2, 4, (1,))])
def test_greedy_decode_loop_matches_one_image_at_a_time(regions, max_length, ends):
    fx = _decoding(len(ends), regions, max_length, ends)(np.random.default_rng(max_length))
    start, step = stand_in_captioner(fx)
    got = decode_loop(start, step, fx["features"], max_length, lambda lp: np.argmax(lp, axis=1))
    words, maps, totals = reference(start, step, fx["features"], max_length, np.argmax)
    assert got.words == words
    assert np.allclose(got.log_prob, totals, rtol=1e-12, atol=0)
    assert [len(w) for w in words] == [max_length if t is None else t for t in ends]
    if regions:
        assert all(np.allclose(g, m) for g, m in zip(got.attention, maps))
    else:
        assert got.attention is None


def test_choose_is_called_once_per_step_on_every_row():
    fx = _decoding(3, 2, 6, (1, 4, None))(np.random.default_rng(0))
    start, step = stand_in_captioner(fx)
    rows = []

    def choose(log_probs):
        rows.append(len(log_probs))
        return np.argmax(log_probs, axis=1)

    decode_loop(start, step, fx["features"], 6, choose)
    assert rows == [3] * 6


def test_max_length_below_one_is_rejected():
    fx = _decoding(1, 2, 3, (None,))(np.random.default_rng(0))
    start, step = stand_in_captioner(fx)
    with pytest.raises(ValueError, match="max_length"):
        decode_loop(start, step, fx["features"], 0, lambda lp: np.argmax(lp, axis=1))

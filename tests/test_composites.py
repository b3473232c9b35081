"""Side-by-side composites: the left image is in the left half of the picture and of the grid, the
captions name both classes after their sides, position channels, whitening, the side share of
synthetic attention, seeding, and a measurement end to end with an untrained model."""

from types import SimpleNamespace

import numpy as np
import pytest

import dlmie  # noqa: F401
from dlmie import layers as L
from dlmie.captioning import composite_attention as A, composites as C
from dlmie.data.whitening import Whitening
from dlmie.data.vocab import Vocabulary
from dlmie.models import show_attend_tell as sat

NAMES = np.array(["goldfish, Carassius auratus", "lemon", "brown bear", "the", "cat", "cat", "oboe", "pizza"])


class PoolingEncoder:
    """Stands in for MobileNetV2: 8 x 8 input, 2 x 2 average pooling -> a 4 x 4 grid of the 3 colours."""

    input_size = 8

    def features(self, images, layer, batch_size=16, progress=False):
        x = np.asarray(images, np.float32)
        n = len(x)
        pooled = x.reshape(n, 4, 2, 4, 2, 3).mean(axis=(2, 4))  # (N, 4, 4, 3)
        return pooled.reshape(n, 16, 3)  # row-major regions, as Network.features


def source_split(per_class=3, seed=0):
    """Random 4 x 4 images, per_class of each of the NAMES, as a data set split."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(NAMES)), per_class)
    images = rng.integers(0, 256, size=(len(labels), 4, 4, 3), dtype=np.uint8)
    return SimpleNamespace(images=images, labels=labels, names=NAMES)


def composites(seed=0, count=12):
    return C.make_composites(source_split(), np.array([0, 1, 6, 7]), per_class=2, count=count,
                             encoder=PoolingEncoder(), layer="grid", seed=seed)


def test_choose_classes_keeps_distinct_one_word_names():
    chosen = C.choose_classes(NAMES, 4, seed=3)
    # "brown bear" has two words, "the" is a template word, "cat" is not distinct
    assert sorted(chosen.tolist()) == [0, 1, 6, 7]
    assert C.short_name(NAMES[0]) == "goldfish"


def test_caption_names_both_sides_with_the_cue_in_front():
    tokens, sides, is_name = C.caption(("goldfish", "lemon"), first=1)
    assert " ".join(tokens) == "on the right a lemon and on the left a goldfish"
    assert sides == [1] * 5 + [0] * 6
    assert [t for t, n in zip(tokens, is_name) if n] == ["lemon", "goldfish"]


def test_layout_left_image_in_left_half_of_picture_and_grid():
    data = composites()
    rows = np.arange(len(data))
    pictures = data.composite_images(rows)
    assert pictures.shape == (len(data), 8, 16, 3)
    np.testing.assert_array_equal(pictures[:, :, :8], C.upscale(data.images[data.left], 8))
    np.testing.assert_array_equal(pictures[:, :, 8:], C.upscale(data.images[data.right], 8))
    features = data.features(rows)
    assert data.composite_grid == (4, 8) and features.shape == (len(data), 32, 3 + 2)
    grid = features[..., :3].reshape(len(data), 4, 8, 3)  # (h, 2w) row-major
    np.testing.assert_allclose(grid[:, :, :4], data.grids[data.left].reshape(-1, 4, 4, 3))
    np.testing.assert_allclose(grid[:, :, 4:], data.grids[data.right].reshape(-1, 4, 4, 3))
    # encoding the composite picture's halves gives the same grid: the halves are what the encoder saw
    halves = [PoolingEncoder().features(pictures[:, :, s : s + 8], "grid").reshape(-1, 4, 4, 3) for s in (0, 8)]
    np.testing.assert_allclose(np.concatenate(halves, axis=2), grid, rtol=1e-6)


def test_position_channels_are_row_and_column():
    position = C.with_position(np.zeros((1, 6, 1)), (2, 3))[0, :, 1:]
    np.testing.assert_allclose(position, [[-1, -1], [-1, 0], [-1, 1], [1, -1], [1, 0], [1, 1]])


def test_captions_name_the_classes_on_their_sides():
    data = composites(count=40)
    short = [C.short_name(n) for n in NAMES]
    for n in range(len(data)):
        left, right = short[data.labels[data.left[n]]], short[data.labels[data.right[n]]]
        assert left != right
        names = {side: data.tokens[n][p] for p, side in enumerate(data.sides[n]) if data.is_name[n, p]}
        assert names == {0: left, 1: right}
        assert data.tokens[n][2] == C.SIDES[data.sides[n, 0]]  # the side word precedes the first name
    assert set(data.sides[:, 0]) == {0, 1}  # either side is named first


def test_side_shares_on_synthetic_attention():
    h, w, steps = 2, 4, 3
    alpha = np.zeros((2, steps + 1, h * w))
    left_regions = [r * w + c for r in range(h) for c in range(w // 2)]
    alpha[:, :, left_regions] = 1 / len(left_regions)  # all mass on the left half
    alpha[1, 1] = 1 / (h * w)  # one step spread evenly
    sides = np.array([[0, 1, 0], [0, 0, 1]])
    shares = A.side_shares(alpha, (h, w), sides)
    np.testing.assert_allclose(shares, [[1, 0, 1], [1, 0.5, 0]])
    mean, error = A.mean_and_error([0.4, 0.6])
    assert np.isclose(mean, 0.5) and np.isclose(error, np.std([0.4, 0.6], ddof=1) / np.sqrt(2))



def test_side_shares_against_a_loop():
    """Unnormalized weights, an extra step, against a region-by-region loop; an odd grid raises."""
    rng = np.random.default_rng(3)
    h, w, steps = 3, 4, 5
    alpha = rng.uniform(0.1, 1.0, (2, steps + 1, h * w))
    sides = rng.integers(0, 2, (2, steps))
    expected = np.zeros((2, steps))
    for n in range(2):
        for t in range(steps):
            on = [alpha[n, t, l] for l in range(h * w) if (l % w >= w // 2) == bool(sides[n, t])]
            expected[n, t] = sum(on) / alpha[n, t].sum()
    np.testing.assert_allclose(A.side_shares(alpha, (h, w), sides), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="no halves"):
        A.side_shares(rng.uniform(size=(2, steps, 6)), (2, 3), sides)
    with pytest.raises(ValueError, match="does not fit"):
        A.side_shares(alpha[:, :2], (h, w), sides)


def test_same_seed_same_composites_other_seed_others():
    a, b, c = composites(seed=5), composites(seed=5), composites(seed=6)
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.features(np.arange(len(a))), b.features(np.arange(len(b))))
    assert a.tokens != c.tokens or not np.array_equal(a.left, c.left)


def test_measure_returns_a_share_per_word():
    data = composites(count=5)
    vocab = Vocabulary.build(data.tokens)
    spec = sat.Spec(vocab_size=len(vocab), feature_dim=3 + 2, embed_dim=4, hidden_dim=5, attention_dim=3, dropout=0.0)
    result = A.measure(spec, L.shared_params(sat.init_params(spec, seed=0)), data, vocab, batch_size=2)
    assert result.alpha.shape == (5, 12, 32) and np.allclose(result.alpha.sum(axis=2), 1, atol=1e-5)
    assert result.shares.shape == (5, 11) and np.all((result.shares >= 0) & (result.shares <= 1))
    assert len(result.class_words) == 10 and len(result.other_words) == 45


def test_whitening_decorrelates_to_unit_variance():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4000, 3)) @ np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 0.2], [0.0, 0.0, 0.01]]) + 5
    whitening = Whitening.fit(vectors.reshape(40, 100, 3), dim=2)
    out = whitening(vectors)
    assert out.shape == (4000, 2) and out.dtype == np.float32
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.eye(2), atol=1e-6)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-6)
    data = composites().whitened(Whitening.fit(composites().grids, dim=2))
    assert data.grids.shape[-1] == 2 and data.features([0]).shape == (1, 32, 2 + 2)

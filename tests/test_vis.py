"""Visualization by optimization: objectives, priors, regularizers, the ascent loop, inversion and
activations, on a tiny random conv net (16 x 16 inputs, two conv blocks)."""

import numpy as np
import pytest

from dlmie.gradcheck import check_gradients
from dlmie.images import Preprocessing, resize_bilinear
from dlmie.models import convnet
from dlmie.models.classifier import convnet_classifier
from dlmie.vis import objectives as O
from dlmie.vis.activations import layer_activations, receptive_field, top_activations, top_patches
from dlmie.vis.ascent import Snapshots, ascend, deep_dream, gradient_function, random_images
from dlmie.vis.inversion import invert
from dlmie.vis.priors import (alpha_norm, alpha_norm_gradient, alpha_norm_value, total_variation,
                              total_variation_gradient, total_variation_value)
from dlmie.vis.transforms import ClipContribution, ClipNorm, ClipRange, Jitter, L2Decay, Blur, gaussian_blur, yosinski

TINY = convnet.ConvNetSpec(conv=[(4, 3, 2, 1), (6, 3, 2, 1)], num_classes=3, input_size=16)
PRE = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def net():
    params = convnet.init_params(TINY, seed=3)
    rng = np.random.default_rng(4)
    for i in (1, 2):  # stored statistics that are not the identity, as in a trained network
        params[f"conv{i}.running_mean"] = rng.standard_normal(params[f"conv{i}.b"].shape).astype(np.float32) * 0.1
        params[f"conv{i}.running_var"] = (0.5 + rng.random(params[f"conv{i}.b"].shape)).astype(np.float32)
    return convnet_classifier("tiny", TINY, params, ["a", "b", "c"], ["a", "b", "c"], PRE)


def images(n, seed=0):
    return (np.random.default_rng(seed).standard_normal((n, 3, 16, 16))).astype(np.float32)


# ---------------------------------------------------------------- priors


def test_total_variation_gradient_matches_numeric():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6))
    # With beta = 1 the bottom-right pixel's gradient is sign(its left difference) + sign(its upper
    # difference), exactly 0 when they differ, where relative errors mean nothing: make both positive.
    x[:, :, -1, -1] = 5.0
    for beta in (1.0, 1.5, 2.0):
        errors = check_gradients(lambda x: total_variation_value(x, beta, 0.7), {"x": x})
        assert errors["x"] < 1e-6, (beta, errors)


def test_alpha_norm_gradient_matches_numeric():
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    assert check_gradients(lambda x: alpha_norm_value(x, 6.0, 1.3), {"x": x})["x"] < 1e-6


def _autodiff(value, x, *settings):
    """d value(x) / dx by PyTensor's autodiff of the symbolic prior on float64 variables (its
    Python-float settings become floatX constants: agreement to about 1e-7)."""
    import pytensor
    import pytensor.tensor as pt

    from dlmie import compile_cache

    v = pt.tensor(dtype="float64", shape=x.shape)
    return compile_cache.function([v], pytensor.grad(value(v, *settings), v))(x)


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 5, 1), (1, 3, 1, 4), (1, 1, 1, 1)])
def test_prior_gradients_match_the_engines_autodiff(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    if shape[2] > 3 and shape[3] > 3:
        x[:, :, 1:4, 1:4] = 0.4  # a flat region: beta < 2 rests on TV_EPS there
    for beta, V in ((2.0, 0.7), (1.5, 1.2), (1.0, 0.9), (3.0, 0.5)):
        want = _autodiff(total_variation_value, x, beta, V)
        assert np.allclose(total_variation_gradient(x, beta, V), want, rtol=1e-6, atol=1e-12), (shape, beta)
    for alpha, B in ((6.0, 1.3), (2.0, 0.8), (1.5, 1.0)):
        want = _autodiff(alpha_norm_value, x, alpha, B)
        assert np.allclose(alpha_norm_gradient(x, alpha, B), want, rtol=1e-6, atol=1e-12), (shape, alpha)


def test_prior_values_match_their_definitions():
    x = np.random.default_rng(2).standard_normal((1, 3, 4, 5))
    padded = np.pad(x[0], ((0, 0), (0, 1), (0, 1)), mode="edge")  # last row and column repeated
    tv = sum(((padded[k, i, j + 1] - padded[k, i, j]) ** 2 + (padded[k, i + 1, j] - padded[k, i, j]) ** 2) ** 0.5
             for k in range(3) for i in range(4) for j in range(5)) / (20 * 0.5)
    assert np.isclose(total_variation_value(x, 1.0, 0.5), tv, rtol=1e-6)
    norms = np.sqrt((x[0] ** 2).sum(axis=0))
    assert np.isclose(alpha_norm_value(x, 6.0, 2.0), np.mean((norms / 2.0) ** 6))


# ---------------------------------------------------------------- regularizers


def test_clip_norm_zeroes_exactly_the_pixels_below_the_percentile():
    rng = np.random.default_rng(0)
    directions = rng.standard_normal((2, 3, 4, 4))
    directions /= np.sqrt((directions ** 2).sum(axis=1, keepdims=True))
    norms = np.stack([rng.permutation(16) + 1.0 for _ in range(2)]).reshape(2, 4, 4)  # 1..16 per image
    x = (directions * norms[:, None]).astype(np.float32)
    out = ClipNorm(25).after(x, np.zeros_like(x), 0)  # 25th percentile of 1..16: 4.75
    zeroed = np.all(out == 0, axis=1)
    assert np.array_equal(zeroed, norms < 4.75) and zeroed.sum() == 8
    assert np.array_equal(out[:, :, ~zeroed[0]][0], x[:, :, ~zeroed[0]][0])


def test_clip_contribution_zeroes_exactly_the_pixels_below_the_percentile():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    grad = rng.standard_normal((1, 3, 4, 4)).astype(np.float32)
    contribution = np.abs((x * grad).sum(axis=1))
    out = ClipContribution(50).after(x, grad, 0)
    below = contribution < np.median(contribution)
    assert np.array_equal(np.all(out == 0, axis=1), below) and below.sum() == 8
    assert np.array_equal(out * ~below[:, None], x * ~below[:, None])


def test_decay_shrinks_and_blur_keeps_the_mean():
    x = images(2)
    shrunk = L2Decay(0.1).after(x, None, 0)
    assert np.allclose(shrunk, 0.9 * x) and np.linalg.norm(shrunk) < np.linalg.norm(x)
    with pytest.raises(ValueError):
        L2Decay(-0.1)
    blurred = Blur(1.0, every=2).after(x, None, 1)
    assert np.allclose(blurred.mean(axis=(2, 3)), x.mean(axis=(2, 3)), atol=1e-6)
    assert blurred.std() < x.std()
    assert np.array_equal(Blur(1.0, every=2).after(x, None, 0), x), "blurs only every second step"
    assert np.array_equal(gaussian_blur(x, 0), x)


@pytest.mark.parametrize("shape, sigma", [((2, 3, 9, 11), 0.5), ((2, 3, 9, 11), 1.3), ((1, 2, 3, 2), 2.0),
                                          ((1, 1, 5, 1), 0.8), ((1, 1, 1, 1), 1.0), ((2, 4, 6), 0.7)])
def test_gaussian_blur_matches_scipy(shape, sigma):
    from scipy.ndimage import gaussian_filter

    x = np.random.default_rng(len(shape) + shape[-1]).standard_normal(shape)
    want = gaussian_filter(x, sigma=(0,) * (x.ndim - 2) + (sigma, sigma), mode="reflect")
    assert np.allclose(gaussian_blur(x, sigma), want, rtol=1e-12, atol=1e-12)
    x32 = x.astype(np.float32)
    assert gaussian_blur(x32, sigma).dtype == np.float32
    assert np.allclose(gaussian_blur(x32, sigma), want, atol=1e-6)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        gaussian_blur(x, -sigma)


def test_jitter_is_undone_exactly():
    x = images(2)
    jitter = Jitter(3, seed=0)
    shifted = jitter.before(x, 0)
    assert not np.array_equal(shifted, x)
    assert np.array_equal(jitter.undo(shifted), x)


def test_clip_range_keeps_valid_pixels():
    x = 10 * images(2)
    low, high = PRE.valid_range()
    out = ClipRange(PRE).after(x, None, 0)
    assert np.all(out >= low[:, None, None] - 1e-6) and np.all(out <= high[:, None, None] + 1e-6)
    assert np.allclose(PRE.invert(out), np.clip(PRE.invert(x), 0, 1))


def test_resize_bilinear():
    maps = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    assert np.allclose(resize_bilinear(maps, (5, 7)), maps)
    assert np.allclose(resize_bilinear(np.full((3, 3), 2.0), 12), 2.0)
    up = resize_bilinear(np.array([[0.0, 1.0]]), (1, 4))  # centres at 0.25, 0.75 of the 2 source pixels
    assert np.allclose(up, [[0, 0.25, 0.75, 1]])


# ---------------------------------------------------------------- objectives


def test_neuron_before_relu_moves_a_silent_unit(net):
    """A unit that its ReLU silences has no gradient; its pre-ReLU value has one, and its ReLU is
    the unit's value."""
    x = images(4)
    conv1 = layer_activations(net, x)["conv1"]
    n, c, row, col = np.argwhere(conv1 == 0)[0]
    single = x[n : n + 1]
    post, pre = O.neuron("conv1", int(c), int(row), int(col)), O.neuron("conv1", int(c), int(row), int(col), pre_relu=True)
    value_post, grad_post = gradient_function(net, post)(single, *post.values)
    value_pre, grad_pre = gradient_function(net, pre)(single, *pre.values)
    assert value_post == 0 and value_pre < 0
    assert not np.any(grad_post) and np.any(grad_pre)
    with pytest.raises(ValueError, match="not the output of layers.relu"):
        gradient_function(net, O.neuron("scores", 0, pre_relu=True))


def test_objectives_values(net):
    x = images(2)
    acts = layer_activations(net, x)
    value = lambda objective: gradient_function(net, objective)(x, *objective.values)[0]
    assert np.isclose(value(O.class_score(1)), acts["scores"][:, 1].sum(), rtol=1e-5)
    assert np.isclose(value(O.class_score([2, 0])), acts["scores"][0, 2] + acts["scores"][1, 0], rtol=1e-5)
    assert np.isclose(value(O.channel("conv2", 3)), acts["conv2"][:, 3].mean(axis=(1, 2)).sum(), rtol=1e-5)
    assert np.isclose(value(O.neuron("conv2", 4)), acts["conv2"][:, 4, 1, 1].sum(), rtol=1e-5)  # 4 x 4 grid
    assert np.isclose(value(O.neuron("conv1", 2, 5, 6)), acts["conv1"][:, 2, 5, 6].sum(), rtol=1e-5)
    assert np.isclose(value(O.mean_square_activation("conv1")), (acts["conv1"] ** 2).mean(axis=(1, 2, 3)).sum(), rtol=1e-5)
    phi0 = acts["conv2"][0]
    expected = ((acts["conv2"] - phi0) ** 2).sum(axis=(1, 2, 3)).sum() / (phi0 ** 2).sum()
    assert np.isclose(value(O.feature_distance("conv2", phi0)), expected, rtol=1e-5)
    tv = total_variation(2.0, 0.5)
    combined = O.class_score(1) - 0.5 * tv + 2 * O.channel("conv1", 0)
    parts = value(O.class_score(1)) - 0.5 * value(tv) + 2 * value(O.channel("conv1", 0))
    assert np.isclose(value(combined), parts, rtol=1e-5)
    assert np.isclose(value(-alpha_norm(6, 2.0)), -alpha_norm_value(x, 6, 2.0), rtol=1e-5)


def test_new_values_reuse_the_compiled_function(net):
    assert gradient_function(net, O.class_score(0)) is gradient_function(net, O.class_score(2))
    assert gradient_function(net, 0.1 * O.channel("conv1", 0)) is gradient_function(net, 3 * O.channel("conv1", 3))
    assert gradient_function(net, O.channel("conv1", 0)) is not gradient_function(net, O.channel("conv2", 0))


# ---------------------------------------------------------------- the loop and its uses


def test_ascent_increases_its_objective(net):
    snapshots = Snapshots(every=5)
    x0 = random_images(net, 2, seed=1)
    result = ascend(net, O.class_score([0, 2]), x0, steps=20, lr=0.05,
                    transforms=yosinski(PRE, decay=0.01, blur_sigma=0.5, blur_every=4, jitter=1),
                    callback=snapshots, progress=False)
    assert result.x.shape == x0.shape and result.values.shape == (20,)
    scores = net.class_scores(result.x)
    assert scores[0, 0] > net.class_scores(x0)[0, 0] and scores[1, 2] > net.class_scores(x0)[1, 2]
    assert result.values[-1] > result.values[0]
    assert snapshots.steps == [5, 10, 15, 20] and np.array_equal(snapshots.images[-1], result.x)


def test_deep_dream_keeps_the_size_and_grows_the_layer(net):
    x = images(1, seed=3)
    dreamed = deep_dream(net, x, "conv2", octaves=2, steps=5, lr=0.05, progress=False)
    assert dreamed.shape == x.shape
    energy = lambda x: (layer_activations(net, x)["conv2"] ** 2).mean()
    assert energy(dreamed) > energy(x)


def test_inversion_lowers_the_feature_error(net):
    x0 = PRE(np.random.default_rng(5).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8))
    result = invert(net, x0, "conv1", steps=60, lr=0.1, lambda_alpha=0.0, lambda_tv=0.0, progress=False)
    start = invert(net, x0, "conv1", steps=1, lr=0.0, progress=False)
    assert result.error < 0.2 * start.error
    assert result.losses[-1] < result.losses[0]


# ---------------------------------------------------------------- activations


def test_receptive_field_matches_the_architecture(net):
    # conv1 3x3 stride 2 pad 1: unit (r, c) sees rows 2r-1 .. 2r+1; conv2 (same) on top: 2*(2r-1)-1 .. +6
    assert receptive_field(net, "conv1") == ((-1, -1), (3, 3), 2)
    field = receptive_field(net, "conv2")
    assert field == ((-3, -3), (7, 7), 4)
    assert field.box(0, 0, 16) == (0, 4, 0, 4) and field.box(2, 3, 16) == (5, 12, 9, 16)


def test_top_activations_and_patches(net):
    raw = np.random.default_rng(6).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    peaks = top_activations(net, raw, ["conv2"], k=4, batch_size=3, progress=False)["conv2"]
    acts = layer_activations(net, PRE(raw))["conv2"]
    assert np.allclose(peaks.peaks, acts.max(axis=(2, 3)))
    assert peaks.values.shape == peaks.images.shape == (6, 4)
    assert np.allclose(acts[peaks.images, np.arange(6)[:, None], peaks.rows, peaks.cols], peaks.values)
    for c in range(6):
        assert list(peaks.top(c, 4)) == list(np.argsort(-acts[:, c].max(axis=(1, 2)), kind="stable")[:4])
    crops = top_patches(raw, peaks, receptive_field(net, "conv2"), 1, 3)
    assert len(crops) == 3 and all(c.ndim == 3 and 0 < c.shape[0] <= 7 for c in crops)
    with pytest.raises(ValueError):
        peaks.top(1, 5)


def _top_k_reference(a, k):
    """top_k_activations by loops: every image's first maximum in row-major order, then the images
    sorted by (-peak, image index)."""
    n, c, h, w = a.shape
    out = np.zeros((4, c, k))
    for ch in range(c):
        found = []
        for i in range(n):
            best = (a[i, ch, 0, 0], 0, 0)
            for r in range(h):
                for col in range(w):
                    if a[i, ch, r, col] > best[0]:
                        best = (a[i, ch, r, col], r, col)
            found.append((-best[0], i, best[1], best[2]))
        for j, (v, i, r, col) in enumerate(sorted(found)[:k]):
            out[:, ch, j] = (-v, i, r, col)
    return out


@pytest.mark.parametrize("shape, k, ties", [((5, 3, 4, 3), 3, False), ((6, 4, 3, 3), 4, True), ((4, 2, 2, 5), 4, True),
                                            ((1, 3, 1, 1), 1, False), ((3, 2, 1, 6), 2, True)])
def test_top_k_activations_matches_a_loop(shape, k, ties):
    from dlmie.vis.activations import top_k_activations

    a = np.random.default_rng(sum(shape)).standard_normal(shape)
    if ties:  # ReLU zeros and small integers: equal peaks across images and equal values within a map
        a = np.maximum(0, np.round(2 * a))
    got = top_k_activations(a, k)
    assert np.array_equal(np.stack(got), _top_k_reference(a, k))
    assert all(g.shape == (shape[1], k) for g in got)


def test_top_k_activations_rejects_a_k_out_of_range():
    from dlmie.vis.activations import top_k_activations

    a = np.zeros((3, 2, 2, 2))
    with pytest.raises(ValueError, match="k = 5 is more than the 3 images"):
        top_k_activations(a, 5)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k_activations(a, 0)


def test_ascent_warns_when_the_gradient_stays_zero(net):
    flat = O.Objective("flat", ("flat",), lambda scores, activations, x: 0 * x.sum())
    with pytest.warns(UserWarning, match="gradient was 0 at every step"):
        ascend(net, flat, images(1), steps=2, lr=0.1, progress=False)

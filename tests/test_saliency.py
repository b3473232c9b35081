"""Saliency (vanilla, SmoothGrad, guided backprop, fooling images), its sanity checks, and the plot helpers."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytensor  # noqa: E402
import pytest  # noqa: E402

from dlmie import compile_cache, plots  # noqa: E402
from dlmie.images import Preprocessing  # noqa: E402
from dlmie.layers import relu, shared_params  # noqa: E402
from dlmie.models import convnet  # noqa: E402
from dlmie.models.classifier import convnet_classifier  # noqa: E402
from dlmie.models.network import Network  # noqa: E402
from dlmie.vis import sanity, saliency  # noqa: E402

IDENTITY = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1))  # x = pixels / 255
TINY = convnet.ConvNetSpec(conv=[(4, 3, 1, 1), (6, 3, 2, 1)], num_classes=3, input_size=16)


def tiny_convnet(seed=0):
    """A two-block conv net with batch norm statistics that are not the identity."""
    params = convnet.init_params(TINY, seed=seed)
    rng = np.random.default_rng(seed)
    for name in params:
        if name.endswith(("running_mean", "beta")):
            params[name] = (0.1 * rng.standard_normal(params[name].shape)).astype(np.float32)
    pre = Preprocessing(mean=(0.5, 0.4, 0.3), std=(0.25, 0.25, 0.25))
    return convnet_classifier("tiny", TINY, params, ["a", "b", "c"], ["n1", "n2", "n3"], pre)


def mlp(weights):
    """scores = relu(relu(flatten(x) @ W1) @ W2) @ W3, or flatten(x) @ W1 for one matrix."""
    def build(x, params):
        h = x.flatten(2)
        names = sorted(params)
        for name in names[:-1]:
            h = relu(h @ params[name])
        scores = h @ params[names[-1]]
        return scores, {"scores": scores}

    classes = weights[-1].shape[1]
    params = shared_params({f"W{i}": w.astype(np.float32) for i, w in enumerate(weights, start=1)})
    return Network("mlp", params, build, 4, IDENTITY, [f"c{k}" for k in range(classes)], [""] * classes)


def test_linear_saliency_is_the_chosen_class_weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3 * 4 * 4, 5))
    net = mlp([w])
    x = rng.standard_normal((3, 3, 4, 4)).astype(np.float32)
    labels = np.array([4, 0, 2])
    maps = saliency.saliency_map(net, x, labels)
    expected = np.abs(w[:, labels].T.reshape(3, 3, 4, 4)).max(axis=1)
    assert maps.shape == (3, 4, 4)
    assert np.allclose(maps, expected, rtol=1e-6)
    summed = np.abs(w.sum(axis=1).reshape(3, 4, 4)).max(axis=0)
    assert not np.allclose(maps[0], summed), "the map of one class, not of the sum over classes"
    # A linear model's gradient is the same everywhere, so averaging over noise changes nothing.
    assert np.allclose(saliency.smoothgrad(net, x, labels, samples=3), expected, rtol=1e-5)


def test_gradient_functions_are_compiled_once(monkeypatch):
    net = mlp([np.ones((48, 2))])
    compiled, compile_function = [], compile_cache.function

    def counting(*args, **kwargs):
        compiled.append(args)
        return compile_function(*args, **kwargs)

    monkeypatch.setattr(compile_cache, "function", counting)
    for labels in ([1], [0, 1], [1, 1, 0]):  # other classes, other batch sizes: the same function
        saliency.saliency_map(net, np.ones((len(labels), 3, 4, 4), np.float32), labels)
        saliency.guided_backprop(net, np.ones((len(labels), 3, 4, 4), np.float32), labels)
    assert len(compiled) == 2


def test_guided_backprop_matches_numpy_and_keeps_forward_values():
    rng = np.random.default_rng(1)
    w1, w2, w3 = rng.standard_normal((48, 10)), rng.standard_normal((10, 8)), rng.standard_normal((8, 3))
    net = mlp([w1, w2, w3])
    x = rng.standard_normal((4, 3, 4, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 1])
    vanilla = saliency.input_gradient(net, x, labels)

    guided = saliency.guided_backprop(net, x, labels)

    xf = x.reshape(4, -1).astype(np.float64)
    a1 = xf @ w1
    a2 = np.maximum(a1, 0) @ w2
    g = w3[:, labels].T                              # d s_k / d h2
    g = g * (a2 > 0) * (g > 0)                       # guided ReLU 2: positive inputs, positive gradients
    g = g @ w2.T
    g = g * (a1 > 0) * (g > 0)                       # guided ReLU 1
    expected = (g @ w1.T).reshape(x.shape)
    assert np.allclose(guided, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(guided, vanilla, atol=1e-3), "every ReLU was replaced"
    assert np.allclose(saliency.input_gradient(net, x, labels), vanilla), "the network's own graph is untouched"

    forward = pytensor.function([net.x], saliency.guided_graph(net.scores))
    assert np.array_equal(forward(x), net.class_scores(x))


def test_guided_graph_keeps_conv_net_forward_values():
    net = tiny_convnet()
    x = net.preprocessing(np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    forward = pytensor.function([net.x], saliency.guided_graph(net.scores))
    assert np.allclose(forward(x), net.class_scores(x), rtol=1e-6, atol=1e-6)
    grads = saliency.guided_backprop(net, x, [0, 2])
    assert grads.shape == x.shape and np.any(grads != 0)


def test_cascading_randomization_restores_weights():
    net = tiny_convnet()
    before = {name: p.get_value() for name, p in net.params.items()}
    x = net.preprocessing(np.random.default_rng(3).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))

    result = sanity.cascading_randomization(net, x, [0, 1, 2])

    assert result.layers == ["original", "scores", "conv2", "conv1"]
    assert result.maps.shape == (4, 3, 16, 16)
    assert result.spearman.shape == result.spearman_signed.shape == (4, 3)
    assert np.allclose(result.spearman[0], 1.0) and np.allclose(result.spearman_signed[0], 1.0)
    assert result.spearman[-1].mean() < 0.9, "a fully random network explains differently"
    for name, value in before.items():
        assert np.array_equal(net.params[name].get_value(), value), name
    assert np.allclose(saliency.saliency_map(net, x, [0, 1, 2]), result.maps[0])


def test_pointing_game_and_energy_on_known_boxes():
    maps = np.zeros((2, 8, 8))
    maps[0, 2, 5] = 1.0  # row 2, column 5: x = 5, y = 2
    maps[1, 5, 2] = 1.0  # the transposed point
    boxes = np.array([[4, 1, 6, 3], [4, 1, 6, 3]])  # x0, y0, x1, y1 inclusive
    assert sanity.pointing_game(maps, boxes).tolist() == [True, False]
    edge = np.zeros((1, 8, 8))
    edge[0, 3, 6] = 1.0  # on the box's last row and column: inclusive
    assert sanity.pointing_game(edge, boxes[:1]).tolist() == [True]

    uniform = np.ones((1, 8, 8))
    assert np.allclose(sanity.energy_in_box(uniform, np.array([[0, 0, 3, 1]])), 8 / 64)
    assert np.allclose(sanity.energy_in_box(maps, boxes), [1.0, 0.0])

    prior = sanity.center_prior(2, 8, 8)
    assert prior.shape == (2, 8, 8) and np.isclose(prior.max(), np.exp(-0.5 / 8))
    table = sanity.localization({"peaks": maps}, np.array([[2, 2, 5, 5], [0, 0, 1, 1]]))
    assert list(table) == ["peaks", "center prior"]
    assert table["center prior"]["pointing_game"] == 0.5  # the centered box is hit, the corner one missed
    assert table["peaks"]["energy_in_box"] == 0.5


def test_fooling_image_reaches_the_target():
    rng = np.random.default_rng(5)
    net = mlp([rng.standard_normal((48, 16)), rng.standard_normal((16, 4))])
    images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    predicted = net.class_scores(net.preprocessing(images)).argmax(axis=1)
    targets = (predicted + 1) % 4

    result = saliency.fooling_images(net, images, targets, step=0.1, max_steps=200)

    assert result.fooled.all() and np.all(result.steps >= 1)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert np.allclose(result.change, result.images - images / 255, atol=1e-6)
    again = net.class_scores(net.preprocessing(result.images * 255)).argmax(axis=1)
    assert np.array_equal(again, targets)


def test_fooling_images_matches_an_image_by_image_loop():
    """The batched procedure against the definition, one image at a time: 0 steps for an image
    already taken for its target, max_steps for one never reached."""
    rng = np.random.default_rng(11)
    net = mlp([rng.standard_normal((48, 16)), rng.standard_normal((16, 4))])
    images = rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8)
    ranked = np.argsort(-net.class_scores(net.preprocessing(images)), axis=1)
    targets = np.array([ranked[0, 0], ranked[1, 1], ranked[2, 1], ranked[3, 3]])
    low, high = net.preprocessing(np.zeros((1, 4, 4, 3))), net.preprocessing(np.full((1, 4, 4, 3), 255.0))

    result = saliency.fooling_images(net, images, targets, step=0.05, max_steps=12)

    for i in range(4):
        x, steps = net.preprocessing(images[i:i + 1]), 0
        while steps < 12 and net.class_scores(x).argmax() != targets[i]:
            g = saliency.input_gradient(net, x, targets[i:i + 1])
            x, steps = saliency.fooling_step(x, g, low, high, 0.05), steps + 1
        assert result.steps[i] == steps
        assert result.fooled[i] == (net.class_scores(x).argmax() == targets[i])
        assert np.allclose(result.images[i], net.preprocessing.invert(x)[0], atol=1e-6)
    assert result.steps[0] == 0 and np.allclose(result.change[0], 0, atol=1e-6)
    assert result.steps.max() == 12 and not result.fooled.all()


def test_the_stand_in_gradient_of_fooling_images_is_the_networks():
    """dlmie.parts grades fooling_images with a NumPy gradient of its ReLU network: the engine's."""
    from dlmie.parts import _mlp, stand_in_input_gradient

    rng = np.random.default_rng(2)
    net = _mlp([rng.standard_normal((48, 10)), rng.standard_normal((10, 8)), rng.standard_normal((8, 5))])
    x = net.preprocessing(rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
    labels = np.array([4, 0, 2])
    expected = saliency.input_gradient(net, x, labels)
    assert np.allclose(stand_in_input_gradient(net, x, labels), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


def test_overlay_never_wraps_negative_values():
    image = np.zeros((4, 4, 3), np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0], heat[1, 1] = -1.0, 1.0
    overlay = plots.heatmap_overlay(image, heat, alpha=0.5)
    brightness = overlay.sum(axis=2)
    assert overlay.dtype == np.float32 and overlay.min() >= 0 and overlay.max() <= 1
    assert brightness[0, 0] == brightness.min() < brightness[2, 2] < brightness[1, 1]
    with pytest.raises(ValueError, match="does not match"):
        plots.heatmap_overlay(np.zeros((4, 6, 3)), np.zeros((6, 4)))
    assert np.allclose(plots.signed_image(np.array([-2.0, 0.0, 1.0])), [0.0, 0.5, 0.75])


def test_image_grid_saves(tmp_path):
    fig = plots.image_grid([np.zeros((4, 4, 3), np.uint8), np.ones((4, 4))], ["image", "map"], ncols=3,
                           boxes=[(0, 1, 2, 3), None])
    path = plots.save_figure(fig, tmp_path / "figures" / "grid.png")
    assert path.exists() and path.stat().st_size > 0


def test_a_figure_title_never_covers_the_panel_titles():
    """Notebook 08's composites: a caption over the figure, each panel titled with its word."""
    from dlmie.captioning.attention import attention_figure

    image, alpha = np.zeros((64, 128, 3), np.uint8), np.full((2, 98), 1 / 98, np.float32)
    words = ["basketball · 0.95 on its half", "sock · 0.91 on its half"]
    caption = "on the right a basketball and on the left a sock"
    given = attention_figure(image, words, alpha, (7, 14), ncols=3, size=3.2, title=caption)
    added_later = attention_figure(image, words, alpha, (7, 14), ncols=3, size=3.2)
    added_later.suptitle(caption, fontsize=9)
    for fig in (given, added_later):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        title = fig._suptitle.get_window_extent(renderer)
        panels = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.title.get_text()]
        assert fig._suptitle.get_text() == caption and len(panels) == 3
        assert all(title.y0 > panel.y1 for panel in panels)  # the caption is above every panel title
        matplotlib.pyplot.close(fig)


def test_wrapped_titles_fit_the_cell_and_keep_their_line_breaks():
    title = "beam: a little girl in a blue shirt is standing on a sidewalk next to a bench\ntruth: a girl"
    lines = plots.wrap_title(title, 2.0).split("\n")
    assert max(map(len, lines)) <= 32 and lines[-1] == "truth: a girl"
    assert " ".join(lines[:-1]).split() == title.split("\n")[0].split()  # no word lost or broken


def test_epoch_curves_skip_epochs_without_the_key_and_mark_the_kept_epoch():
    import matplotlib.pyplot as plt

    from dlmie.plots import epoch_curves

    fig, ax = plt.subplots()
    history = [{"epoch": 0, "val": 3.0}, {"epoch": 1, "val": 2.0, "train": 2.5}, {"epoch": 2, "val": 2.2, "train": 2.0}]
    epoch_curves(ax, history, {"val": "validation", "train": "train"}, kept=1)
    val, train = ax.get_lines()[:2]
    assert list(val.get_xdata()) == [0, 1, 2] and list(train.get_xdata()) == [1, 2]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["validation", "train", "kept: epoch 1"]
    plt.close(fig)

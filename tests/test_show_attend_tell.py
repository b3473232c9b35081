"""Show, Attend and Tell: attention is a distribution, gradients of the penalty and of the full loss,
decoding returns one attention map per word, and the model can memorize two captions."""

import functools

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from dlmie import layers as L
from dlmie.captioning.decode import Decoder
from dlmie.data.vocab import END, START, Vocabulary
from dlmie.gradcheck import check_gradients, rel_error
from dlmie.models import show_attend_tell as sat
from dlmie.training.captioner import CaptionerConfig, CaptionerTrainer

GRAD_TOL = 1e-6
rng = np.random.default_rng(7)
SPEC = sat.Spec(vocab_size=9, feature_dim=5, embed_dim=4, hidden_dim=6, attention_dim=3, dropout=0.0,
                doubly_stochastic=0.7)
CAPTIONS = np.array([[START, 4, 5, 6, END, 0], [START, 7, END, 0, 0, 0]])


def test_attention_sums_to_one_and_penalty_value():
    params = L.shared_params(sat.init_params(SPEC, seed=1))
    f, c = pt.tensor3("f"), pt.lmatrix("c")
    total, _, alpha = sat.loss(SPEC, params, f, c, train=False, return_attention=True)
    features = rng.standard_normal((2, 4, 5)).astype(np.float32)
    a = pytensor.function([f, c], alpha)(features, CAPTIONS)
    assert a.shape == (2, 5, 4) and np.all(a >= 0) and np.allclose(a.sum(axis=2), 1, atol=1e-6)
    mask = (CAPTIONS[:, 1:] != 0).astype(np.float32)
    expected = 0.7 * np.mean(np.sum((1 - (a * mask[..., None]).sum(axis=1)) ** 2, axis=1))
    al, m = pt.tensor3("a"), pt.matrix("m")
    penalty = pytensor.function([al, m], sat.doubly_stochastic_penalty(al, m, 0.7))(a, mask)
    assert np.isclose(penalty, expected, rtol=1e-5)


def test_doubly_stochastic_penalty_gradient():
    alpha = rng.random((3, 4, 5))
    alpha /= alpha.sum(axis=2, keepdims=True)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=float)
    errors = check_gradients(lambda alpha: sat.doubly_stochastic_penalty(alpha, pt.as_tensor(mask), 0.7), {"alpha": alpha})
    assert errors["alpha"] < GRAD_TOL


def test_full_loss_gradients():
    params = {k: rng.standard_normal(v.shape) * 0.5 for k, v in sat.init_params(SPEC, seed=2).items()}

    def build(features, **p):
        return sat.loss(SPEC, p, features, pt.as_tensor(CAPTIONS), train=False)[0]

    errors = check_gradients(build, {"features": rng.standard_normal((2, 4, 5)), **params}, h=1e-4)
    assert set(errors) >= {"features", "att.Wa", "att.w", "gate.w", "gate.b", "lstm.Wz", "out.Lz", "init_c.W"}
    for name, err in errors.items():
        assert err < GRAD_TOL, f"d{name}: {err:.2e}"


def recurrence_inputs(spec, seed):
    """Random float64 inputs of sat.recurrence (T=4, N=2, L=3) and the weights it reads for `spec`."""
    r = np.random.default_rng(seed)
    h, d, a = spec.hidden_dim, spec.feature_dim, spec.attention_dim
    weights = {"lstm.Wz": r.standard_normal((d, 4 * h)) * 0.5, "lstm.Wh": r.standard_normal((h, 4 * h)) * 0.5,
               "att.Wh": r.standard_normal((h, a)), "att.w": r.standard_normal(a) * 2,
               "gate.w": r.standard_normal(h), "gate.b": np.array(0.3)}
    inputs = {"xw": r.standard_normal((4, 2, 4 * h)), "h0": r.standard_normal((2, h)) * 0.5,
              "c0": r.standard_normal((2, h)), "annotations": r.standard_normal((2, 3, d)),
              "projected": r.standard_normal((2, 3, a))}
    return inputs, {name: weights[name] for name in sat._step_weights(spec)}


def all_outputs(outputs):
    """h, c, z, alpha (T, N, ...) side by side: one expression, so that one check covers each."""
    return pt.concatenate(outputs, axis=2)


def test_recurrence_pullback_gradients():
    """The written-out backward pass against finite differences, every output and input, gate on and off."""
    for gate in (True, False):
        spec = sat.Spec(**{**SPEC.to_dict(), "gate": gate})
        inputs, weights = recurrence_inputs(spec, seed=3)

        def build(xw, h0, c0, annotations, projected, **w):
            return all_outputs(sat.recurrence(spec, w, xw, h0, c0, annotations, projected))

        errors = check_gradients(build, {**inputs, **weights}, h=1e-4)
        assert set(errors) == set(inputs) | set(weights)
        for name, err in errors.items():
            # 1e-5: over four steps of the LSTM some entries of the gradient nearly cancel, and
            # rel_error, taken entry by entry, reaches a few 1e-6 on those (the test below checks
            # the values themselves to 1e-10).
            assert err < 1e-5, f"gate={gate} d{name}: {err:.2e}"


def test_recurrence_pullback_equals_the_derived_one():
    """The same gradients (to rounding, in float64) as pytensor.grad of the plain scan, whose backward
    pass recomputes every forward step."""
    inputs, weights = recurrence_inputs(SPEC, seed=4)
    values = {**inputs, **weights}
    variables = {name: pt.tensor(name=name, dtype="float64", shape=v.shape) for name, v in values.items()}
    ins = [variables[n] for n in inputs]
    step_weights = [variables[n] for n in weights]
    written_out = all_outputs(sat.recurrence(SPEC, dict(zip(weights, step_weights)), *ins))
    derived = all_outputs(sat._recurrence(SPEC, *ins, *step_weights)[:4])
    dout = pt.constant(rng.standard_normal((4, 2, 2 * SPEC.hidden_dim + SPEC.feature_dim + 3)))
    grads = [g for out in (written_out, derived) for g in pytensor.grad(pt.sum(out * dout), list(variables.values()))]
    results = pytensor.function(list(variables.values()), grads)(*values.values())
    for name, a, b in zip(values, results[: len(values)], results[len(values) :]):
        assert rel_error(a, b) < 1e-10, f"d{name}: {rel_error(a, b):.2e}"


def test_loss_gradients_without_the_written_out_pullback(monkeypatch):
    """The handout leaves dlmie.models.show_attend_tell_bptt out: the recurrence then has no custom
    pullback and pytensor.grad derives the loop's backward pass. The loss's gradients, in float64,
    are the written-out pullback's to rounding."""
    assert sat.bptt is not None  # the solution uses the written-out pullback
    r = np.random.default_rng(11)
    values = {"features": r.standard_normal((2, 4, 5)),
              **{k: r.standard_normal(v.shape) * 0.5 for k, v in sat.init_params(SPEC, seed=5).items()}}
    variables = {name: pt.tensor(name=name, dtype="float64", shape=v.shape) for name, v in values.items()}

    def gradients():
        params = {k: v for k, v in variables.items() if k != "features"}
        total = sat.loss(SPEC, params, variables["features"], pt.as_tensor(CAPTIONS), train=False)[0]
        return pytensor.grad(total, list(variables.values()))

    # One function: PyTensor compares the two recurrence Ops (their forward graphs are equal), which
    # freezes the written-out pullback with every cotangent connected, act's too.
    written_out = gradients()
    monkeypatch.setattr(sat, "bptt", None)
    derived = gradients()
    results = pytensor.function(list(variables.values()), written_out + derived)(*values.values())
    for name, a, b in zip(values, results[: len(values)], results[len(values) :]):
        assert rel_error(a, b) < 1e-10, f"d{name}: {rel_error(a, b):.2e}"


def test_recurrence_pullback_with_the_gates_read():
    """A cotangent of the gates act (the recurrence drops act, but PyTensor hands the pullback one
    when it compares two recurrence Ops) reaches the inputs as pytensor.grad of the plain scan has it."""
    inputs, weights = recurrence_inputs(SPEC, seed=6)
    values = {**inputs, **weights}
    variables = [pt.tensor(name=name, dtype="float64", shape=v.shape) for name, v in values.items()]
    stand_ins = [v.type() for v in variables]
    op = OpFromGraph(stand_ins, list(sat._recurrence(SPEC, *stand_ins)), inline=True,
                     pullback=functools.partial(sat.bptt.recurrence_pullback, functools.partial(sat._attend_step, SPEC)))
    r = np.random.default_rng(12)
    douts = [pt.constant(r.standard_normal((4, 2, width))) for width in (6, 6, 5, 3, 24)]  # h, c, z, alpha, act

    def cost(outputs):
        return sum(pt.sum(out * dout) for out, dout in zip(outputs, douts))

    grads = pytensor.grad(cost(op(*variables)), variables) + pytensor.grad(cost(sat._recurrence(SPEC, *variables)), variables)
    results = pytensor.function(variables, grads)(*values.values())
    for name, a, b in zip(values, results[: len(values)], results[len(values) :]):
        assert rel_error(a, b) < 1e-10, f"d{name}: {rel_error(a, b):.2e}"


def test_memorize_two_captions_and_decode_attention():
    vocab = Vocabulary(["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "runs", "cat", "sleeps"])
    spec = sat.Spec(vocab_size=len(vocab), feature_dim=6, embed_dim=16, hidden_dim=32, attention_dim=16, dropout=0.0)
    features = rng.standard_normal((2, 4, 6)).astype(np.float32)
    captions = np.array([[START, 4, 5, 6, END], [START, 4, 7, 8, END]])
    config = CaptionerConfig(model="show_attend_tell", lr=1e-2, dropout=0.0)
    trainer = CaptionerTrainer(config, spec, sat.init_params(spec, seed=0))
    for _ in range(250):
        loss, _ = trainer.train_step(features, captions)
    decoder = Decoder.compile(sat, spec, trainer.params)
    for decoded in (decoder.greedy(features, max_length=8), decoder.beam_search(features, beam_size=3, max_length=8)):
        assert decoded.captions(vocab) == ["a dog runs", "a cat sleeps"]
        assert [m.shape for m in decoded.attention] == [(4, 4), (4, 4)]  # 3 words + <END>, 4 regions
        assert all(np.allclose(m.sum(axis=1), 1, atol=1e-5) for m in decoded.attention)


def test_attention_overlay_lands_on_the_hot_region():
    """A 3 x 4 grid (not square, so a transposition shows) with all weight on row 2, column 1."""
    from dlmie.captioning.attention import attention_figure, attention_maps
    from dlmie.plots import heatmap_overlay

    alpha = np.zeros((1, 12), np.float32)
    alpha[0, 2 * 4 + 1] = 1.0
    maps = attention_maps(alpha, (3, 4), (60, 80))  # each region is a 20 x 20 pixel cell
    assert maps.shape == (1, 60, 80) and maps.min() >= 0
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 40 <= y < 60 and 20 <= x < 40
    gray = np.full((60, 80, 3), 128, np.uint8)
    overlay = heatmap_overlay(gray, maps[0], alpha=0.6)
    brightness = overlay.sum(axis=2)
    assert brightness[50, 30] > brightness[10, 70] and brightness[50, 30] > brightness[50, 70]
    fig = attention_figure(gray, ["hot"], alpha, (3, 4))
    assert len(fig.axes) >= 2


def test_attention_comparison_puts_each_caption_on_its_own_row():
    """Two models with different grids (3 x 4 and 2 x 3, not square, so a transposition shows) on
    one 60 x 80 image: each word's panel is hot where its model looked; a shorter row ends blank."""
    from dlmie.captioning.attention import attention_comparison_figure

    gray = np.full((60, 80, 3), 128, np.uint8)
    fine = np.zeros((2, 12), np.float32)
    fine[0, 2 * 4 + 1] = 1.0  # row 2, column 1: pixels y 40-59, x 20-39
    fine[1, 0 * 4 + 3] = 1.0  # row 0, column 3: pixels y 0-19, x 60-79
    coarse = np.zeros((1, 6), np.float32)
    coarse[0, 1 * 3 + 0] = 1.0  # row 1, column 0: pixels y 30-59, x 0-26
    fig = attention_comparison_figure([("fine", gray, ["dog", "ball"], fine, (3, 4)),
                                       ("coarse", gray, ["dog"], coarse, (2, 3))])
    axes = np.array(fig.axes).reshape(2, 3)
    assert [[ax.get_title() for ax in row] for row in axes] == [["fine", "dog", "ball"], ["coarse", "dog", ""]]
    assert not axes[1, 2].images  # the blank cell draws nothing

    def hottest(ax):
        overlay = np.asarray(ax.images[0].get_array()).sum(axis=2)
        return np.unravel_index(np.argmax(overlay), overlay.shape)

    y, x = hottest(axes[0, 1])
    assert 40 <= y < 60 and 20 <= x < 40
    y, x = hottest(axes[0, 2])
    assert y < 20 and x >= 60
    y, x = hottest(axes[1, 1])
    assert y >= 30 and x < 27
    with pytest.raises(ValueError, match="2 words but attention for 1"):
        attention_comparison_figure([("short", gray, ["a", "b"], coarse, (2, 3))])


def test_committed_vgg16_model_attends_over_the_14_by_14_conv5_3_grid():
    from dlmie.models import vgg16
    from dlmie.models.captioners import default_path, load_captioner

    captioner = load_captioner(default_path("show_attend_tell_vgg16"))
    assert (captioner.kind, captioner.encoder, captioner.layer) == ("show_attend_tell", "vgg16", vgg16.GRID_LAYER)
    regions, channels = (vgg16.INPUT_SIZE // 2 ** 4) ** 2, vgg16.BLOCKS[-1][0]  # conv5_3 follows four poolings
    assert captioner.spec.feature_dim == channels == 512 and regions == 196
    grid = np.random.default_rng(0).random((2, regions, channels), np.float32)
    decoded = captioner.caption(grid, beam_size=2)
    assert [a.shape for a in decoded.attention] == [(len(w) + 1, regions) for w in decoded.words]


def _soft_attention_inputs(n, l, seed):
    r = np.random.default_rng(seed)
    d, h, a = 4, 3, 5
    return {"annotations": r.standard_normal((n, l, d)), "projected": r.standard_normal((n, l, a)),
            "h_prev": r.standard_normal((n, h)), "Wh": r.standard_normal((h, a)), "w": r.standard_normal(a)}


@pytest.mark.parametrize("n, l", [(3, 5), (1, 1), (1, 4)])
def test_soft_attention_forward_matches_attend(n, l):
    inputs = _soft_attention_inputs(n, l, seed=n * 10 + l)
    z, alpha, hidden = sat.soft_attention_forward(*inputs.values())
    variables = {k: pt.tensor(name=k, dtype="float64", shape=v.shape) for k, v in inputs.items()}
    spec = sat.Spec(vocab_size=1, feature_dim=4, gate=False)
    outs = sat.attend(spec, {"att.Wh": variables["Wh"], "att.w": variables["w"]},
                      variables["annotations"], variables["projected"], variables["h_prev"])
    z_engine, alpha_engine = pytensor.function(list(variables.values()), list(outs))(*inputs.values())
    assert rel_error(z, z_engine) < 1e-10 and rel_error(alpha, alpha_engine) < 1e-10
    assert hidden.shape == (n, l, 5) and np.allclose(alpha.sum(axis=1), 1)


def test_soft_attention_forward_does_not_overflow():
    inputs = _soft_attention_inputs(2, 4, seed=3)
    inputs["w"] = inputs["w"] * 5000
    z, alpha, _ = sat.soft_attention_forward(*inputs.values())
    assert np.all(np.isfinite(z)) and np.allclose(alpha.sum(axis=1), 1)


@pytest.mark.parametrize("n, l", [(3, 5), (1, 1), (1, 4)])
def test_soft_attention_backward_matches_autodiff_and_finite_differences(n, l):
    from dlmie.gradcheck import numerical_gradient

    inputs = _soft_attention_inputs(n, l, seed=100 + n * 10 + l)
    r = np.random.default_rng(l)
    dz, dalpha = r.standard_normal((n, 4)), r.standard_normal((n, l))
    _, alpha, hidden = sat.soft_attention_forward(*inputs.values())
    grads = sat.soft_attention_backward(dz, dalpha, inputs["annotations"], alpha, hidden, inputs["h_prev"],
                                        inputs["Wh"], inputs["w"])
    engine = sat.attend_gradients(*inputs.values(), dz, dalpha)

    def loss():
        z, a, _ = sat.soft_attention_forward(*inputs.values())
        return float((z * dz).sum() + (a * dalpha).sum())

    for (name, value), mine in zip(inputs.items(), grads):
        assert mine.shape == value.shape
        assert rel_error(mine, engine[name]) < 1e-8, name
        assert rel_error(mine, numerical_gradient(loss, value, h=1e-6)) < 1e-5, name

"""Checks of the assignment's parts: each part run on the inputs of its fixture and compared with
the outputs the solution computed from them, by cs231n's relative error.

A part is one function of dlmie that a student writes (the part's name is the function's name).
Its fixture, tests/graded/fixtures/<part>.npz, holds one or more cases of small float64 inputs and
the solution's outputs for them (written once by tests/graded/make_fixtures.py). A part with a
backward pass written out also has a numeric gradient check, which needs no expected outputs.
The graded tests (tests/graded) and the notebooks' check cells run the same checks:

    check_part("conv2d")      # in a notebook: one line per output, with PASS or FAIL
    assert_case("conv2d", "stride2_pad2")   # in a test: AssertionError "conv2d: rel_error ... > tolerance ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor.tensor as pt
from dlmie import compile_cache
from dlmie.data import REPO_ROOT
from dlmie.gradcheck import check_gradients, numerical_gradient, rel_error

FIXTURES = REPO_ROOT / "tests" / "graded" / "fixtures"
GRADIENT = "gradient"  # the case name of a numeric gradient check


class Result(NamedTuple):
    """One compared output: its part, case and name, the relative error and the tolerance."""

    part: str
    case: str
    name: str
    error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)  # a NaN error fails

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{self.part} [{self.case}] {self.name}: rel_error {self.error:.2e}  "
                f"(tolerance {self.tolerance:.0e})  {verdict}")


def compare(got, want) -> float:
    """cs231n's relative error of two arrays, made safe for grading: a shape mismatch, or a NaN or
    infinity where the other has none (or another one), is an infinite error; matching infinities
    are ignored."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)) or not np.array_equal(got[~finite], want[~finite]):
        return float("inf")
    return rel_error(got[finite], want[finite]) if finite.any() else 0.0


# ---------------------------------------------------------------- fixtures


def fixture_path(part: str) -> Path:
    return FIXTURES / f"{part}.npz"


def load_fixture(part: str) -> dict:
    """case -> {"in": {name: array}, "out": {name: array}} from tests/graded/fixtures/<part>.npz,
    whose keys are "<case>/in/<name>" and "<case>/out/<name>"."""
    path = fixture_path(part)
    if not path.is_file():
        raise FileNotFoundError(f"no fixture for part {part!r} at {path}; the teacher writes them with `make fixtures`")
    cases = {}
    with np.load(path) as data:
        for key in data.files:
            case, kind, name = key.split("/", 2)
            cases.setdefault(case, {"in": {}, "out": {}})[kind][name] = data[key]
    return cases


def save_fixture(part: str, cases: dict) -> Path:
    """Write cases (as `load_fixture` returns them) to the part's fixture, atomically."""
    arrays = {f"{case}/{kind}/{name}": np.asarray(value)
              for case, kinds in cases.items() for kind, values in kinds.items() for name, value in values.items()}
    path = fixture_path(part)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **arrays)
    partial.replace(path)
    return path


# ---------------------------------------------------------------- how each part is run


def _compile(build, inputs: dict, ints=()):
    """Compile build(**variables) for float64 (integer for the names in `ints`) variables of the
    inputs' shapes and evaluate it on them. Returns the outputs as a tuple of arrays."""
    variables = {name: pt.tensor(name=name, dtype="int64" if name in ints else "float64", shape=np.shape(value))
                 for name, value in inputs.items()}
    outputs = build(**variables)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    f = compile_cache.function(list(variables.values()), list(outputs), on_unused_input="ignore")
    return tuple(f(*(np.asarray(v, "int64" if n in ints else "float64") for n, v in inputs.items())))


def _conv2d(fx):
    from dlmie import layers as L

    stride, pad = int(fx["stride"]), int(fx["pad"])
    (out,) = _compile(lambda x, w, b: L.conv2d(x, w, b, stride, pad), {k: fx[k] for k in ("x", "w", "b")})
    return {"out": out}


def _conv2d_gradient(fx):
    from dlmie import layers as L

    stride, pad = int(fx["stride"]), int(fx["pad"])
    return check_gradients(lambda x, w, b: L.conv2d(x, w, b, stride, pad), {k: fx[k] for k in ("x", "w", "b")})


def _temporal_softmax_loss(fx):
    from dlmie import layers as L

    (loss,) = _compile(L.temporal_softmax_loss, {k: fx[k] for k in ("scores", "y", "mask")}, ints=("y",))
    return {"loss": loss}


def _temporal_softmax_loss_gradient(fx):
    from dlmie import layers as L

    return check_gradients(L.temporal_softmax_loss, {k: fx[k] for k in ("scores", "y", "mask")}, wrt=["scores"])


def _lstm_step_forward(fx):
    from dlmie.kernels.lstm import lstm_step_forward

    h, c, act = lstm_step_forward(fx["a"].copy(), fx["c_prev"].copy())
    return {"h": h, "c": c, "act": act}


def _lstm_step_backward(fx):
    from dlmie.kernels.lstm import lstm_step_backward

    d_a, d_c_prev = lstm_step_backward(*(fx[k].copy() for k in ("act", "c_prev", "c", "dh", "dc")))
    return {"d_a": d_a, "d_c_prev": d_c_prev}


def _lstm_step_backward_gradient(fx):
    """lstm_step_backward against centered differences of lstm_step_forward's sum(h dh + c dc)."""
    from dlmie.kernels.lstm import lstm_step_backward, lstm_step_forward

    a, c_prev, dh, dc = (fx[k].copy() for k in ("a", "c_prev", "dh", "dc"))
    _, c, act = lstm_step_forward(a, c_prev)
    d_a, d_c_prev = lstm_step_backward(act, c_prev, c, dh, dc)

    def loss():
        h_next, c_next, _ = lstm_step_forward(a, c_prev)
        return float((h_next * dh).sum() + (c_next * dc).sum())

    return {"a": rel_error(d_a, numerical_gradient(loss, a)),
            "c_prev": rel_error(d_c_prev, numerical_gradient(loss, c_prev))}


def _mlp(weights):
    """A ReLU network scores = relu(relu(flatten(x) W1) W2) W3 on 3 x S x S inputs, float64 weights."""
    from dlmie.images import Preprocessing
    from dlmie.layers import relu, shared_params
    from dlmie.models.network import Network

    def build(x, params):
        h = x.flatten(2)
        for k in range(1, len(params)):
            h = relu(h @ params[f"W{k}"])
        scores = h @ params[f"W{len(params)}"]
        return scores, {"scores": scores}

    size = int(round(np.sqrt(weights[0].shape[0] / 3)))
    classes = weights[-1].shape[1]
    params = shared_params({f"W{k}": w for k, w in enumerate(weights, start=1)})
    return Network("mlp", params, build, size, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)),
                   [f"c{k}" for k in range(classes)], [""] * classes)


def _input_gradient(fx):
    from dlmie.vis.saliency import input_gradient

    net = _mlp([fx[k] for k in sorted(fx) if k.startswith("W")])
    g = input_gradient(net, fx["x"].astype(np.float32), fx["labels"], guided=bool(fx["guided"]),
                       batch_size=int(fx["batch_size"]))
    return {"gradient": g}


def _fooling_step(fx):
    from dlmie.vis.saliency import fooling_step

    return {"x": fooling_step(*(fx[k].copy() for k in ("x", "g", "low", "high")), float(fx["step"]))}


def _ascent_step(fx):
    """One step on the objective sum(W x) - sum(x^2) / 2 (gradient W - x), with the transforms of
    the fixture: jitter, L2 decay and blur when their settings are nonzero."""
    from dlmie.vis.ascent import ascent_step
    from dlmie.vis.transforms import Blur, Jitter, L2Decay

    w = fx["W"]

    def gradient(view):
        return float((w * view).sum() - 0.5 * (view ** 2).sum()), w - view

    transforms = [t for t, on in ((Jitter(int(fx["jitter"]), seed=int(fx["seed"])), fx["jitter"]),
                                  (L2Decay(float(fx["decay"])), fx["decay"]),
                                  (Blur(float(fx["blur_sigma"]), int(fx["blur_every"])), fx["blur_sigma"])) if on]
    x, velocity, value, g = ascent_step(gradient, fx["x"].copy(), fx["velocity"].copy(), int(fx["step"]),
                                        float(fx["lr"]), transforms, bool(fx["normalize"]), float(fx["momentum"]))
    return {"x": x, "velocity": velocity, "value": value, "g": g}


def _zero_below_percentile(fx):
    from dlmie.vis.transforms import ClipContribution, zero_below_percentile

    if "grad" in fx:  # through the regularizer that uses it
        return {"x": ClipContribution(float(fx["percentile"])).after(fx["x"].copy(), fx["grad"].copy(), 0)}
    return {"x": zero_below_percentile(fx["x"].copy(), fx["score"].copy(), float(fx["percentile"]))}


def _value(function, fx, names, symbolic):
    """function(*arrays, *settings) on NumPy arrays, or compiled on float64 variables."""
    settings = [float(fx[k]) for k in names]
    if symbolic:
        (value,) = _compile(lambda x: function(x, *settings), {"x": fx["x"]})
        return value
    return function(fx["x"].copy(), *settings)


def _alpha_norm_value(fx):
    from dlmie.vis.priors import alpha_norm_value

    return {"value": _value(alpha_norm_value, fx, ("alpha", "B"), bool(fx["symbolic"]))}


def _total_variation_value(fx):
    from dlmie.vis.priors import total_variation_value

    return {"value": _value(total_variation_value, fx, ("beta", "V"), bool(fx["symbolic"]))}


def _relative_feature_distance(fx):
    from dlmie.vis.objectives import relative_feature_distance

    if bool(fx["symbolic"]):
        (value,) = _compile(relative_feature_distance, {"phi": fx["phi"], "phi0": fx["phi0"]})
    else:
        value = relative_feature_distance(fx["phi"].copy(), fx["phi0"].copy())
    return {"value": value}


def _channel_objective(fx):
    from dlmie.vis.objectives import channel_objective

    (value,) = _compile(channel_objective, {"a": fx["a"], "c": fx["c"]}, ints=("c",))
    return {"value": value}


def _show_and_tell_loss(fx):
    from dlmie.models import show_and_tell

    spec = show_and_tell.Spec(**{k: int(fx[f"spec.{k}"]) for k in ("vocab_size", "feature_dim", "embed_dim", "hidden_dim")},
                              dropout=0.0)
    names = [k for k in fx if k not in ("features", "captions") and not k.startswith("spec.")]

    def build(features, captions, **params):
        return show_and_tell.show_and_tell_loss(spec, params, features, captions, train=False)[0]

    (loss,) = _compile(build, {"features": fx["features"], "captions": fx["captions"], **{k: fx[k] for k in names}},
                       ints=("captions",))
    return {"loss": loss}


def _beam_step(fx):
    from dlmie.captioning.decode import beam_step

    score, beam, words = beam_step(fx["score"].copy(), fx["log_probs"].copy(), fx["finished"].astype(bool))
    return {"score": score, "beam": beam, "words": words}


def _attend(fx):
    from dlmie.models import show_attend_tell as sat

    spec = sat.Spec(vocab_size=1, feature_dim=fx["annotations"].shape[2], gate=bool(fx["gate"]))
    names = ("att.Wh", "att.w", "gate.w", "gate.b")

    def build(annotations, projected, h_prev, **params):
        return sat.attend(spec, params, annotations, projected, h_prev)

    z, alpha = _compile(build, {k: fx[k] for k in ("annotations", "projected", "h_prev", *names)})
    return {"z": z, "alpha": alpha}


def _doubly_stochastic_penalty(fx):
    from dlmie.models.show_attend_tell import doubly_stochastic_penalty

    weight = float(fx["weight"])
    (value,) = _compile(lambda alpha, mask: doubly_stochastic_penalty(alpha, mask, weight),
                        {"alpha": fx["alpha"], "mask": fx["mask"]})
    return {"value": value}


def _doubly_stochastic_penalty_gradient(fx):
    from dlmie.models.show_attend_tell import doubly_stochastic_penalty

    weight = float(fx["weight"])
    return check_gradients(lambda alpha, mask: doubly_stochastic_penalty(alpha, mask, weight),
                           {"alpha": fx["alpha"], "mask": fx["mask"]}, wrt=["alpha"])


def _attention_maps(fx):
    from dlmie.captioning.attention import attention_maps

    return {"maps": attention_maps(fx["alpha"].copy(), tuple(int(v) for v in fx["grid"]),
                                   tuple(int(v) for v in fx["size"]))}


@dataclass(frozen=True)
class Part:
    """How to check one part.

    - run: fixture inputs -> {output name: array}, calling the part's function
    - tolerance: of the relative error of every output
    - gradient: fixture inputs -> {input name: relative error of a numeric gradient check}, or None
    - gradient_tolerance: of those errors
    """

    run: Callable[[dict], dict]
    tolerance: float
    gradient: Callable[[dict], dict] | None = None
    gradient_tolerance: float = 1e-6


# Float64 throughout, except input_gradient (a float32 network input) and attention_maps (float32 maps).
PARTS = {
    "conv2d": Part(_conv2d, 1e-8, _conv2d_gradient),
    "input_gradient": Part(_input_gradient, 1e-5),
    "fooling_step": Part(_fooling_step, 1e-8),
    "ascent_step": Part(_ascent_step, 1e-8),
    "zero_below_percentile": Part(_zero_below_percentile, 1e-8),
    "alpha_norm_value": Part(_alpha_norm_value, 1e-8),
    "total_variation_value": Part(_total_variation_value, 1e-8),
    "relative_feature_distance": Part(_relative_feature_distance, 1e-8),
    "channel_objective": Part(_channel_objective, 1e-8),
    "lstm_step_forward": Part(_lstm_step_forward, 1e-8),
    "lstm_step_backward": Part(_lstm_step_backward, 1e-8, _lstm_step_backward_gradient),
    "temporal_softmax_loss": Part(_temporal_softmax_loss, 1e-8, _temporal_softmax_loss_gradient),
    "show_and_tell_loss": Part(_show_and_tell_loss, 1e-8),
    "beam_step": Part(_beam_step, 1e-8),
    "attend": Part(_attend, 1e-8),
    "doubly_stochastic_penalty": Part(_doubly_stochastic_penalty, 1e-8, _doubly_stochastic_penalty_gradient),
    "attention_maps": Part(_attention_maps, 1e-5),
}


def _part(part: str) -> Part:
    if part not in PARTS:
        raise ValueError(f"no part {part!r}; the parts are {', '.join(PARTS)}")
    return PARTS[part]


def run_case(part: str, inputs: dict) -> dict:
    """The part's outputs on one case's inputs (make_fixtures.py records them from the solution)."""
    return {name: np.asarray(value) for name, value in _part(part).run(inputs).items()}


def case_results(part: str, case: str) -> list[Result]:
    """Run one case of a part's fixture and compare: one Result per output (per input of a
    gradient check)."""
    spec, cases = _part(part), load_fixture(part)
    if case not in cases:
        raise ValueError(f"{part}: no case {case!r} in {fixture_path(part)}; its cases are {', '.join(cases)}")
    inputs, expected = cases[case]["in"], cases[case]["out"]
    if case == GRADIENT:
        return [Result(part, case, f"d{name}", error, spec.gradient_tolerance)
                for name, error in spec.gradient(inputs).items()]
    got = spec.run(inputs)
    return [Result(part, case, name, compare(got[name], want) if name in got else float("inf"), spec.tolerance)
            for name, want in expected.items()]


def assert_case(part: str, case: str) -> None:
    """Raise an AssertionError naming the function and by how much, if any output of the case is off."""
    for result in case_results(part, case):
        assert result.passed, (f"{part}: rel_error {result.error:.2e} > tolerance {result.tolerance:.0e} "
                               f"(output {result.name}, case {case})")


def check_part(part: str) -> None:
    """Run every case of a part's fixture and print one line per output with PASS or FAIL; for
    notebooks. A case that needs a part not written yet prints one line saying which."""
    for case in load_fixture(part):
        try:
            results = case_results(part, case)
        except NotImplementedError as err:
            print(f"{part} [{case}]: not implemented yet ({err})")
            continue
        for result in results:
            print(result)

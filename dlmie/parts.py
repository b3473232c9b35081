"""The assignment's parts: one table that the practice checks, the graded tests, the handout and
the teacher's grader all read.

A part is one function of dlmie that a student writes (the part's name is the function's name).
Each part has cases; a case has its points, a one-line description of its inputs (what a student
is told when it fails) and a generator of its inputs. A case is of one of three kinds:

- VALUE: the part's outputs on the inputs, compared with the solution's by relative error;
- GRADIENT: a backward pass. The practice check compares it with centered differences (no
  expected values needed); hidden grading compares the student's gradients with the solution's on
  the same inputs;
- ERROR: the inputs are invalid and the part must raise the exception the docstring names.

Practice cases are drawn once from PRACTICE_SEED (`make fixtures` stores them with the
solution's outputs in tests/graded/fixtures/); the teacher's grader draws the same kinds of cases
from a seed of its own, so the inputs of a graded case are never in the handout.

Where a part builds on another part, its cases run with *stand-ins* for the lower part: simple
functions with the lower part's signature that are deliberately not the lower part (see
`standing_in`). A part is then graded on what it does itself, whatever the state of the parts
beneath it.
"""

from __future__ import annotations

import contextlib
import importlib
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

VALUE, GRADIENT, ERROR = "value", "gradient", "error"
PRACTICE_SEED = 2014


@dataclass(frozen=True)
class Case:
    """One case of a part.

    - name: identifier, unique within its part
    - points: what it earns when it passes (>= 1)
    - about: the kind of input in words, e.g. "N = 1, stride 2, pad 0" (shown on failure)
    - make: rng -> inputs (name -> NumPy array); runs on the teacher's side only (it may call the
      solution, e.g. to hand a part what a lower part would have produced)
    - kind: VALUE, GRADIENT or ERROR
    - error: for ERROR cases, the exception type's name the part must raise
    """

    name: str
    points: int
    about: str
    make: Callable[[np.random.Generator], dict]
    kind: str = VALUE
    error: str = ""


@dataclass(frozen=True)
class Part:
    """How to run and check one part.

    - name, notebook: the function's name and the notebook ("05_lstm_and_scan") that introduces it
    - run: inputs -> {output name: array}, calling the part's function
    - tolerance: of the relative error of every output
    - cases: the part's cases, in order
    - backward: inputs -> {input name: gradient array} for GRADIENT cases (hidden grading)
    - gradient: inputs -> {input name: relative error of a numeric gradient check} (practice)
    - gradient_tolerance: of those errors, and of the hidden backward's relative error
    - stand_ins: "module.function" of a lower part -> the stand-in to run in its place
    """

    name: str
    notebook: str
    run: Callable[[dict], dict]
    tolerance: float
    cases: tuple[Case, ...]
    backward: Callable[[dict], dict] | None = None
    gradient: Callable[[dict], dict] | None = None
    gradient_tolerance: float = 1e-6
    stand_ins: dict = field(default_factory=dict)

    def case(self, name: str) -> Case:
        for case in self.cases:
            if case.name == name:
                return case
        raise ValueError(f"{self.name}: no case {name!r}; its cases are {', '.join(c.name for c in self.cases)}")

    @property
    def points(self) -> int:
        return sum(c.points for c in self.cases)


def case_rng(seed: int, part: str, case: str) -> np.random.Generator:
    """The generator of one case's inputs: the same (seed, part, case) always draws the same inputs."""
    return np.random.default_rng([seed, zlib.crc32(part.encode()), zlib.crc32(case.encode())])


def make_inputs(part: str, case: str, seed: int) -> dict:
    """A case's inputs drawn from `seed`: floats as float64, everything else as drawn."""
    inputs = PARTS[part].case(case).make(case_rng(seed, part, case))
    return {k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind in "fb" else np.asarray(v)
            for k, v in inputs.items()}


@contextlib.contextmanager
def standing_in(part: str):
    """Within the block, the lower parts that `part` builds on are replaced by their stand-ins
    (module attributes, and the same name in the part's own module if it imported it)."""
    saved = []
    try:
        for dotted, stand_in in PARTS[part].stand_ins.items():
            module_name, name = dotted.rsplit(".", 1)
            module = importlib.import_module(module_name)
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, stand_in)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def run_case(part: str, inputs: dict, kind: str = VALUE) -> dict:
    """The part's outputs on one case's inputs (its gradients for a GRADIENT case), with the part's
    stand-ins in place: what the solution's run records as expected, and what a worker returns."""
    spec = PARTS[part]
    function = spec.backward if kind == GRADIENT else spec.run
    with standing_in(part):
        return {name: np.asarray(value) for name, value in function(inputs).items()}


def gradient_errors(part: str, inputs: dict) -> dict:
    """The numeric gradient check of a GRADIENT case: input name -> relative error."""
    with standing_in(part):
        return PARTS[part].gradient(inputs)


# ---------------------------------------------------------------- how each part is run


def _compile(build, inputs: dict, ints=()):
    """Compile build(**variables) for float64 (integer for the names in `ints`) variables of the
    inputs' shapes and evaluate it on them. Returns the outputs as a tuple of arrays."""
    import pytensor.tensor as pt

    from dlmie import compile_cache

    variables = {name: pt.tensor(name=name, dtype="int64" if name in ints else "float64", shape=np.shape(value))
                 for name, value in inputs.items()}
    outputs = build(**variables)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    f = compile_cache.function(list(variables.values()), list(outputs), on_unused_input="ignore")
    return tuple(f(*(np.asarray(v, "int64" if n in ints else "float64") for n, v in inputs.items())))


def _gradients(build, inputs: dict, wrt, seed, ints=()):
    """Gradients of sum(out * dout) with respect to the inputs `wrt`, dout drawn from `seed` with the
    output's shape: the backward pass a GRADIENT case grades."""
    import pytensor
    import pytensor.tensor as pt

    from dlmie import compile_cache

    variables = {name: pt.tensor(name=name, dtype="int64" if name in ints else "float64", shape=np.shape(value))
                 for name, value in inputs.items()}
    values = [np.asarray(v, "int64" if n in ints else "float64") for n, v in inputs.items()]
    out = build(**variables)
    out = out[0] if isinstance(out, (tuple, list)) else out
    shape = compile_cache.function(list(variables.values()), out.shape, on_unused_input="ignore")(*values)
    dout = np.random.default_rng(int(seed)).standard_normal(tuple(shape))
    grads = pytensor.grad(pt.sum(out * pt.constant(dout)), [variables[n] for n in wrt])
    f = compile_cache.function(list(variables.values()), grads, on_unused_input="ignore")
    return {f"d{name}": g for name, g in zip(wrt, f(*values))}


def _conv2d_build(stride, pad):
    from dlmie import layers as L

    return lambda x, w, b: L.conv2d(x, w, b, stride, pad)


def _conv2d(fx):
    (out,) = _compile(_conv2d_build(int(fx["stride"]), int(fx["pad"])), {k: fx[k] for k in ("x", "w", "b")})
    return {"out": out}


def _conv2d_backward(fx):
    return _gradients(_conv2d_build(int(fx["stride"]), int(fx["pad"])), {k: fx[k] for k in ("x", "w", "b")},
                      ("x", "w", "b"), fx["dout_seed"])


def _conv2d_gradient(fx):
    from dlmie.gradcheck import check_gradients

    return check_gradients(_conv2d_build(int(fx["stride"]), int(fx["pad"])), {k: fx[k] for k in ("x", "w", "b")})


def _loss_inputs(fx):
    return {k: fx[k] for k in ("scores", "y", "mask")}


def _temporal_softmax_loss(fx):
    from dlmie import layers as L

    (loss,) = _compile(L.temporal_softmax_loss, _loss_inputs(fx), ints=("y",))
    return {"loss": loss}


def _temporal_softmax_loss_backward(fx):
    from dlmie import layers as L

    return _gradients(L.temporal_softmax_loss, _loss_inputs(fx), ("scores",), fx["dout_seed"], ints=("y",))


def _temporal_softmax_loss_gradient(fx):
    from dlmie import layers as L
    from dlmie.gradcheck import check_gradients

    return check_gradients(L.temporal_softmax_loss, _loss_inputs(fx), wrt=["scores"])


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
    from dlmie.gradcheck import numerical_gradient, rel_error
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
    the case: jitter, L2 decay and blur when their settings are nonzero."""
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


def _value(function, fx, names):
    """function(*arrays, *settings) on NumPy arrays, or compiled on float64 variables."""
    settings = [float(fx[k]) for k in names]
    if bool(fx["symbolic"]):
        (value,) = _compile(lambda x: function(x, *settings), {"x": fx["x"]})
        return value
    return function(fx["x"].copy(), *settings)


def _alpha_norm_value(fx):
    from dlmie.vis.priors import alpha_norm_value

    return {"value": _value(alpha_norm_value, fx, ("alpha", "B"))}


def _total_variation_value(fx):
    from dlmie.vis.priors import total_variation_value

    return {"value": _value(total_variation_value, fx, ("beta", "V"))}


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


def stand_in_lstm(x, h0, wx, wh, b, c0=None):
    """Stands in for the LSTM (rnn.lstm) while show_and_tell_loss is graded: a plain tanh RNN over
    the first H columns of the gates, h_t = tanh(x_t wx + h_{t-1} wh + b)[:, :H]; c is h."""
    import pytensor
    import pytensor.tensor as pt

    hidden = h0.shape[1]
    projected = (pt.tensordot(x, wx, axes=[[2], [0]]) + b).dimshuffle(1, 0, 2)

    def step(p, h_prev):
        return pt.tanh(p + pt.dot(h_prev, wh))[:, :hidden]

    h = pytensor.scan(step, sequences=[projected], outputs_info=[h0], return_updates=False)
    h = h.dimshuffle(1, 0, 2)
    return h, h


def stand_in_temporal_softmax_loss(scores, y, mask, weights=None):
    """Stands in for temporal_softmax_loss while show_and_tell_loss is graded: the masked mean
    square of the scores plus the masked sum of the target words' scores, over the minibatch."""
    import pytensor.tensor as pt

    n, t, v = scores.shape
    picked = scores.reshape((n * t, v))[pt.arange(n * t), y.flatten()].reshape((n, t))
    per_step = (scores ** 2).mean(axis=2) + picked
    if weights is not None:
        per_step = per_step * weights.dimshuffle(0, "x")
    return (per_step * pt.cast(mask, scores.dtype)).sum() / pt.cast(n, scores.dtype)


def _beam_step(fx):
    from dlmie.captioning.decode import beam_step

    score, beam, words = beam_step(fx["score"].copy(), fx["log_probs"].copy(), fx["finished"].astype(bool))
    return {"score": score, "beam": beam, "words": words}


def stand_in_captioner(fx):
    """A small deterministic captioner built from a case's arrays, for grading decode_loop:
    start: features -> [h_0 = tanh(features Wi), t = 0, the image's row in fx["features"]];
    step: (words, h, t, row, features) -> h' = tanh(h Wh + E[words]),
    log_probs = log_softmax(h' Wo + end_bias[row, t] at <END>), attention = softmax(h' Wa)
    ((N, 0) when Wa has no columns). Returns (start, step)."""
    from dlmie.data.vocab import END

    def start(features):
        rows = np.array([np.flatnonzero((fx["features"] == f).all(axis=1))[0] for f in features])
        return [np.tanh(features @ fx["Wi"]), np.zeros(len(features), np.int64), rows]

    def step(words, h, t, rows, features):
        h = np.tanh(h @ fx["Wh"] + fx["E"][words])
        logits = h @ fx["Wo"]
        logits[:, END] += fx["end_bias"][rows, np.minimum(t, fx["end_bias"].shape[1] - 1)]
        log_probs = logits - logits.max(axis=1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
        attention = _softmax(h @ fx["Wa"]) if fx["Wa"].shape[1] else np.zeros((len(h), 0))
        return [log_probs, h, t + 1, rows, attention]

    return start, step


def _decode_loop(fx):
    """decode_loop on the stand-in captioner, choosing greedily or by inverse-CDF draws from the
    case's uniform numbers u (one row per call of choose); the Decoded as padded arrays."""
    from dlmie.captioning.decode import decode_loop

    start, step = stand_in_captioner(fx)
    max_length, calls = int(fx["max_length"]), []

    def choose(log_probs):
        if not bool(fx["sampled"]):
            return np.argmax(log_probs, axis=1)
        cdf = np.cumsum(np.exp(log_probs), axis=1)
        u = fx["u"][min(len(calls), len(fx["u"]) - 1)]
        calls.append(1)
        return np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), cdf.shape[1] - 1)

    decoded = decode_loop(start, step, fx["features"].copy(), max_length, choose)
    n, regions = len(fx["features"]), fx["Wa"].shape[1]
    words = np.full((n, max_length), -1)
    attention = np.full((n, max_length, regions), -1.0)
    for i, w in enumerate(decoded.words):
        words[i, : len(w)] = w
        if decoded.attention is not None:
            attention[i, : len(decoded.attention[i])] = decoded.attention[i]
    return {"words": words, "length": np.array([len(w) for w in decoded.words]), "log_prob": decoded.log_prob,
            "attention": attention, "no_attention": np.array(decoded.attention is None)}


_ATTEND_PARAMS = ("att.Wh", "att.w", "gate.w", "gate.b")


def _attend_build(fx):
    from dlmie.models import show_attend_tell as sat

    spec = sat.Spec(vocab_size=1, feature_dim=fx["annotations"].shape[2], gate=bool(fx["gate"]))

    def build(annotations, projected, h_prev, **params):
        return sat.attend(spec, params, annotations, projected, h_prev)

    return build, {k: fx[k] for k in ("annotations", "projected", "h_prev", *_ATTEND_PARAMS)}


def _attend(fx):
    build, inputs = _attend_build(fx)
    z, alpha = _compile(build, inputs)
    return {"z": z, "alpha": alpha}


def _soft_attention_forward(fx):
    from dlmie.models.show_attend_tell import soft_attention_forward

    z, alpha, hidden = soft_attention_forward(*(fx[k].copy() for k in ("annotations", "projected", "h_prev", "Wh", "w")))
    return {"z": z, "alpha": alpha, "hidden": hidden}


_SOFT_ATTENTION_INPUTS = ("annotations", "projected", "h_prev", "Wh", "w")


def _soft_attention_backward(fx):
    from dlmie.models.show_attend_tell import soft_attention_backward

    grads = soft_attention_backward(*(fx[k].copy() for k in ("dz", "dalpha", "annotations", "alpha", "hidden",
                                                               "h_prev", "Wh", "w")))
    return {f"d{k}": g for k, g in zip(_SOFT_ATTENTION_INPUTS, grads)}


def _soft_attention_backward_gradient(fx):
    """soft_attention_backward against centered differences of soft_attention_forward's
    sum(z dz) + sum(alpha dalpha)."""
    from dlmie.gradcheck import numerical_gradient, rel_error
    from dlmie.models.show_attend_tell import soft_attention_forward

    values = {k: fx[k].copy() for k in _SOFT_ATTENTION_INPUTS}
    _, alpha, hidden = soft_attention_forward(*values.values())
    grads = _soft_attention_backward({**fx, "alpha": alpha, "hidden": hidden})

    def loss():
        z, alpha, _ = soft_attention_forward(*values.values())
        return float((z * fx["dz"]).sum() + (alpha * fx["dalpha"]).sum())

    return {k: rel_error(grads[f"d{k}"], numerical_gradient(loss, values[k])) for k in _SOFT_ATTENTION_INPUTS}

def _penalty_build(fx):
    from dlmie.models.show_attend_tell import doubly_stochastic_penalty

    weight = float(fx["weight"])
    return lambda alpha, mask: doubly_stochastic_penalty(alpha, mask, weight)


def _doubly_stochastic_penalty(fx):
    (value,) = _compile(_penalty_build(fx), {"alpha": fx["alpha"], "mask": fx["mask"]})
    return {"value": value}


def _doubly_stochastic_penalty_backward(fx):
    return _gradients(_penalty_build(fx), {"alpha": fx["alpha"], "mask": fx["mask"]}, ("alpha",), fx["dout_seed"])


def _doubly_stochastic_penalty_gradient(fx):
    from dlmie.gradcheck import check_gradients

    return check_gradients(_penalty_build(fx), {"alpha": fx["alpha"], "mask": fx["mask"]}, wrt=["alpha"])


def _attention_maps(fx):
    from dlmie.captioning.attention import attention_maps

    return {"maps": attention_maps(fx["alpha"].copy(), tuple(int(v) for v in fx["grid"]),
                                   tuple(int(v) for v in fx["size"]))}


# ---------------------------------------------------------------- the cases' inputs


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _conv(n, c, h, w, f, k, stride, pad):
    def make(r):
        return {"x": r.standard_normal((n, c, h, w)), "w": r.standard_normal((f, c, k, k)),
                "b": r.standard_normal(f), "stride": stride, "pad": pad, "dout_seed": r.integers(1 << 30)}
    return make


def _input_gradient_case(guided):
    def make(r):
        return {"W1": r.standard_normal((48, 10)), "W2": r.standard_normal((10, 8)), "W3": r.standard_normal((8, 5)),
                "x": r.standard_normal((5, 3, 4, 4)), "labels": r.integers(0, 5, 5), "batch_size": 2,
                "guided": guided}
    return make


def _fooling(r):
    low = -np.broadcast_to(r.uniform(0.9, 1.4, 3)[None, :, None, None], (1, 3, 4, 4)).copy()
    high = np.broadcast_to(r.uniform(0.9, 1.5, 3)[None, :, None, None], (1, 3, 4, 4)).copy()
    x = np.clip(1.3 * r.standard_normal((3, 3, 4, 4)), low, high)  # some pixels at a bound
    g = r.standard_normal((3, 3, 4, 4))
    g[2] = np.where(x[2] >= high[0], np.abs(g[2]), 0.0)  # image 2 only pushes outwards: no step
    return {"x": x, "g": g, "low": low, "high": high, "step": r.uniform(0.3, 1.0)}


def _ascent(regularized):
    def make(r):
        settings = ({"jitter": 2, "seed": int(r.integers(100)), "decay": 0.05, "blur_sigma": 0.6, "blur_every": 2,
                     "normalize": True, "momentum": 0.5} if regularized else
                    {"jitter": 0, "seed": 0, "decay": 0.0, "blur_sigma": 0.0, "blur_every": 1,
                     "normalize": False, "momentum": 0.0})
        return {"x": r.standard_normal((2, 3, 6, 6)), "velocity": 0.1 * r.standard_normal((2, 3, 6, 6)),
                "W": r.standard_normal((2, 3, 6, 6)), "step": 3, "lr": 0.1, **settings}
    return make


def _percentile_norm(r):
    x = r.standard_normal((2, 3, 5, 5))
    return {"x": x, "score": np.sqrt((x ** 2).sum(axis=1)), "percentile": r.uniform(20, 40)}


def _percentile_contribution(r):
    return {"x": r.standard_normal((2, 3, 5, 5)), "grad": r.standard_normal((2, 3, 5, 5)), "percentile": r.uniform(45, 65)}


def _prior(names, symbolic):
    def make(r):
        lows = {"alpha": 3.0, "B": 0.8, "beta": 1.5, "V": 0.7}
        return {"x": r.standard_normal((2, 3, 4, 5)), "symbolic": symbolic,
                **{k: lows[k] + r.uniform(0, 2) for k in names}}
    return make


def _feature_distance(shape, symbolic):
    def make(r):
        return {"phi": r.standard_normal(shape), "phi0": r.standard_normal(shape[1:]), "symbolic": symbolic}
    return make


def _channels(shape, per_image):
    def make(r):
        c = r.integers(0, shape[1], shape[0]) if per_image else np.array(r.integers(0, shape[1]))
        return {"a": r.standard_normal(shape), "c": c}
    return make


def _lstm_forward(n, h):
    def make(r):
        return {"a": r.standard_normal((n, 4 * h)) * 2, "c_prev": r.standard_normal((n, h))}
    return make


def _lstm_backward(n, h, scale):
    def make(r):
        from dlmie.kernels.lstm import lstm_step_forward

        a, c_prev = r.standard_normal((n, 4 * h)) * scale, r.standard_normal((n, h))
        dh, dc = r.standard_normal((2, n, h))
        _, c, act = lstm_step_forward(a, c_prev)  # the solution's forward: the lower part's outputs
        return {"a": a, "c_prev": c_prev, "act": act, "c": c, "dh": dh, "dc": dc}
    return make


def _softmax_loss(n, t, v, empty_row):
    def make(r):
        mask = (r.random((n, t)) > 0.3) * 1.0
        mask[0, :2], mask[0, 2:] = 1, 0
        if empty_row:
            mask[-1] = 0
        return {"scores": r.standard_normal((n, t, v)), "y": r.integers(0, v, (n, t)), "mask": mask,
                "dout_seed": r.integers(1 << 30)}
    return make


def _captioner(n, captions):
    def make(r):
        from dlmie.models import show_and_tell

        spec = show_and_tell.Spec(vocab_size=9, feature_dim=7, embed_dim=5, hidden_dim=6, dropout=0.0)
        params = {k: r.standard_normal(v.shape) * 0.5 for k, v in show_and_tell.init_params(spec, seed=0).items()}
        return {"features": r.standard_normal((n, 7)), "captions": np.array(captions), **params,
                **{f"spec.{k}": getattr(spec, k) for k in ("vocab_size", "feature_dim", "embed_dim", "hidden_dim")}}
    return make


def _beam(n, k, v, first):
    def make(r):
        if first:
            score, finished = np.tile([0.0] + [-np.inf] * (k - 1), (n, 1)), np.zeros((n, k))
        else:
            score = -np.sort(r.uniform(0.2, 3.5, (n, k)), axis=1)
            finished = (r.random((n, k)) > 0.5) * 1.0
        return {"score": score, "log_probs": np.log(_softmax(2 * r.standard_normal((n, k, v)))), "finished": finished}
    return make


def _decoding(n, regions, max_length, ends, sampled=False):
    """A stand-in captioner (see stand_in_captioner) of V = 7 words whose caption i ends at step
    ends[i] (a large <END> bias there, a large negative one before; None: never ends)."""
    def make(r):
        h, d, v = 5, 4, 7
        end_bias = np.full((n, max_length + 1), -30.0)
        for i, t in enumerate(ends):
            if t is not None:
                end_bias[i, t:] = 30.0
        return {"features": r.standard_normal((n, d)), "Wi": r.standard_normal((d, h)),
                "Wh": r.standard_normal((h, h)), "E": 2 * r.standard_normal((v, h)),
                "Wo": 3 * r.standard_normal((h, v)), "Wa": r.standard_normal((h, regions)), "end_bias": end_bias,
                "max_length": max_length, "sampled": sampled, "u": r.uniform(0.05, 0.95, (max_length, n))}
    return make


def _attention(n, l, gate):
    def make(r):
        d, h, a = 4, 3, 6
        return {"annotations": r.standard_normal((n, l, d)), "projected": r.standard_normal((n, l, a)),
                "h_prev": r.standard_normal((n, h)), "att.Wh": r.standard_normal((h, a)), "att.w": r.standard_normal(a),
                "gate.w": r.standard_normal(h), "gate.b": np.array(r.uniform(-1, 1)), "gate": gate}
    return make


def _soft_attention(n, l, scale=1.0):
    """Soft attention's inputs: D = 4, H = 3, A = 5; w scaled by `scale` (large scores: the softmax
    must not overflow)."""
    def make(r):
        d, h, a = 4, 3, 5
        return {"annotations": r.standard_normal((n, l, d)), "projected": 0.5 * r.standard_normal((n, l, a)),
                "h_prev": r.standard_normal((n, h)), "Wh": 0.5 * r.standard_normal((h, a)), "w": scale * r.standard_normal(a),
                "dz": r.standard_normal((n, d)), "dalpha": r.standard_normal((n, l))}
    return make


def _soft_attention_grads(n, l):
    """Soft attention's backward inputs: the forward's inputs, the upstream gradients, and alpha
    and hidden from the solution's forward (what the lower part would have given)."""
    def make(r):
        from dlmie.models.show_attend_tell import soft_attention_forward

        inputs = _soft_attention(n, l)(r)
        _, alpha, hidden = soft_attention_forward(*(inputs[k] for k in _SOFT_ATTENTION_INPUTS))
        return {**inputs, "alpha": alpha, "hidden": hidden}
    return make


def _penalty(n, t, l, empty_caption):
    def make(r):
        lengths = r.integers(1, t + 1, n)
        if empty_caption:
            lengths[-1] = 0
        mask = (np.arange(t)[None] < lengths[:, None]) * 1.0
        return {"alpha": _softmax(r.standard_normal((n, t, l))), "mask": mask, "weight": r.uniform(0.5, 2.0),
                "dout_seed": r.integers(1 << 30)}
    return make


def _maps(grid, size, fits=True):
    def make(r):
        # Weights in (0, 1) that need not sum to 1: with one region a softmax would be all ones,
        # the same maps whatever the seed.
        regions = grid[0] * grid[1] + (0 if fits else 2)
        return {"alpha": r.uniform(0.05, 1.0, (2, regions)), "grid": np.array(grid), "size": np.array(size)}
    return make


# ---------------------------------------------------------------- the table

# Float64 throughout, except input_gradient (a float32 network input) and attention_maps (float32 maps).
PARTS = {p.name: p for p in (
    Part("conv2d", "00_engine_and_layers", _conv2d, 1e-8, (
        Case("stride1_pad1", 2, "N = 2, 3 x 3 filters, stride 1, pad 1", _conv(2, 3, 7, 6, 4, 3, 1, 1)),
        Case("stride2_pad2", 2, "N = 1, 5 x 5 filters, stride 2, pad 2", _conv(1, 2, 9, 7, 3, 5, 2, 2)),
        Case("one_image_stride2_pad0", 2, "N = 1, one channel, 3 x 3 filters, stride 2, pad 0",
             _conv(1, 1, 7, 5, 2, 3, 2, 0)),
        Case("gradient", 2, "gradients of x, w, b; N = 2, stride 2, pad 1", _conv(2, 2, 5, 6, 3, 3, 2, 1), GRADIENT),
    ), backward=_conv2d_backward, gradient=_conv2d_gradient),
    Part("input_gradient", "01_saliency", _input_gradient, 1e-5, (
        Case("vanilla", 4, "5 images, batches of 2, plain ReLU backward", _input_gradient_case(False)),
        Case("guided", 2, "5 images, batches of 2, guided backpropagation", _input_gradient_case(True)),
    )),
    Part("fooling_step", "01_saliency", _fooling_step, 1e-8, (
        Case("bounded", 4, "3 images, some pixels at their bounds", _fooling),
    )),
    Part("ascent_step", "02_class_visualization", _ascent_step, 1e-8, (
        Case("regularized", 4, "jitter, L2 decay, blur, normalized step with momentum", _ascent(True)),
        Case("plain", 2, "no regularizer, no momentum", _ascent(False)),
    )),
    Part("zero_below_percentile", "02_class_visualization", _zero_below_percentile, 1e-8, (
        Case("norm", 2, "score = the pixel norm", _percentile_norm),
        Case("contribution", 2, "through ClipContribution", _percentile_contribution),
    )),
    Part("relative_feature_distance", "03_feature_inversion", _relative_feature_distance, 1e-8, (
        Case("spatial_numpy", 2, "NumPy, (N, C, H, W) features", _feature_distance((3, 4, 2, 2), False)),
        Case("vector_symbolic", 1, "PyTensor, (N, D) features", _feature_distance((3, 6), True)),
    )),
    Part("alpha_norm_value", "03_feature_inversion", _alpha_norm_value, 1e-8, (
        Case("numpy", 2, "NumPy arrays", _prior(("alpha", "B"), False)),
        Case("symbolic", 1, "PyTensor variables", _prior(("alpha", "B"), True)),
    )),
    Part("total_variation_value", "03_feature_inversion", _total_variation_value, 1e-8, (
        Case("numpy", 3, "NumPy arrays", _prior(("beta", "V"), False)),
        Case("symbolic", 1, "PyTensor variables", _prior(("beta", "V"), True)),
    )),
    Part("channel_objective", "04_activation_maps", _channel_objective, 1e-8, (
        Case("one_channel", 1, "one channel for every image", _channels((3, 4, 2, 3), False)),
        Case("channel_per_image", 2, "a channel per image", _channels((3, 4, 2, 3), True)),
        Case("vector_layer", 1, "(N, D) activations", _channels((3, 5), True)),
    )),
    Part("lstm_step_forward", "05_lstm_and_scan", _lstm_step_forward, 1e-8, (
        Case("random", 4, "N = 3, H = 5", _lstm_forward(3, 5)),
        Case("one_sequence", 2, "N = 1, H = 2", _lstm_forward(1, 2)),
    )),
    Part("lstm_step_backward", "05_lstm_and_scan", _lstm_step_backward, 1e-8, (
        Case("random", 5, "N = 3, H = 5", _lstm_backward(3, 5, 2.0)),
        Case("gradient", 5, "N = 2, H = 4", _lstm_backward(2, 4, 1.0), GRADIENT),
    ), backward=_lstm_step_backward, gradient=_lstm_step_backward_gradient),
    Part("temporal_softmax_loss", "05_lstm_and_scan", _temporal_softmax_loss, 1e-8, (
        Case("random", 2, "N = 3, T = 4, V = 6", _softmax_loss(3, 4, 6, False)),
        Case("empty_row", 1, "a caption whose mask is all zeros", _softmax_loss(3, 4, 5, True)),
        Case("gradient", 2, "gradient of the scores; N = 2, T = 3, V = 5", _softmax_loss(2, 3, 5, False), GRADIENT),
    ), backward=_temporal_softmax_loss_backward, gradient=_temporal_softmax_loss_gradient),
    Part("show_and_tell_loss", "06_show_and_tell", _show_and_tell_loss, 1e-8, (
        Case("padded", 4, "N = 3 captions padded with <NULL>",
             _captioner(3, [[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0], [1, 8, 8, 4, 5, 2]])),
        Case("short", 4, "N = 2, captions of one word or none", _captioner(2, [[1, 3, 2], [1, 2, 0]])),
    ), stand_ins={"dlmie.rnn.lstm": stand_in_lstm, "dlmie.layers.temporal_softmax_loss": stand_in_temporal_softmax_loss}),
    Part("decode_loop", "06_show_and_tell", _decode_loop, 1e-8, (
        Case("greedy", 3, "N = 3, greedy, attention over 4 regions; captions end at steps 2, 4, and never",
             _decoding(3, 4, 6, (2, 4, None))),
        Case("end_first", 2, "N = 2, no attention; one caption is <END> at the first step",
             _decoding(2, 0, 5, (0, 3))),
        Case("max_length", 1, "N = 2, no caption ends: both cut at max_length = 3", _decoding(2, 3, 3, (None, None))),
        Case("one_sampled", 2, "N = 1, words drawn by choose from its own random numbers", _decoding(1, 2, 6, (3,), True)),
        Case("bad_max_length", 1, "max_length = 0: a ValueError", _decoding(1, 2, 0, (None,)), ERROR, error="ValueError"),
    )),
    Part("beam_step", "06_show_and_tell", _beam_step, 1e-8, (
        Case("first_step", 2, "the first step: one live beam per image", _beam(2, 3, 7, True)),
        Case("with_finished", 2, "some beams finished", _beam(2, 3, 7, False)),
        Case("beam_size_1", 2, "beam size 1", _beam(3, 1, 5, False)),
    )),
    Part("attend", "07_show_attend_tell", _attend, 1e-8, (
        Case("gate", 4, "N = 2, L = 5 regions, with the gate", _attention(2, 5, True)),
        Case("no_gate", 2, "N = 2, L = 5 regions, without the gate", _attention(2, 5, False)),
        Case("one_region", 1, "N = 1, one region", _attention(1, 1, True)),
    )),
    Part("doubly_stochastic_penalty", "07_show_attend_tell", _doubly_stochastic_penalty, 1e-8, (
        Case("random", 1, "N = 3, T = 4, L = 5", _penalty(3, 4, 5, False)),
        Case("empty_caption", 1, "a caption of no word", _penalty(3, 4, 5, True)),
        Case("gradient", 1, "gradient of alpha; N = 2, T = 3, L = 4", _penalty(2, 3, 4, False), GRADIENT),
    ), backward=_doubly_stochastic_penalty_backward, gradient=_doubly_stochastic_penalty_gradient),
    Part("soft_attention_forward", "07_show_attend_tell", _soft_attention_forward, 1e-8, (
        Case("random", 2, "N = 3, L = 5 regions", _soft_attention(3, 5)),
        Case("large_scores", 1, "scores in the thousands: a softmax that does not overflow", _soft_attention(2, 4, 2000.0)),
        Case("one_region", 1, "N = 1, one region", _soft_attention(1, 1)),
    )),
    Part("soft_attention_backward", "07_show_attend_tell", _soft_attention_backward, 1e-8, (
        Case("random", 3, "N = 3, L = 5 regions", _soft_attention_grads(3, 5)),
        Case("one_region", 1, "N = 1, one region (alpha = 1)", _soft_attention_grads(1, 1)),
        Case("gradient", 4, "gradients of annotations, projected, h_prev, Wh, w; N = 2, L = 3",
             _soft_attention_grads(2, 3), GRADIENT),
    ), backward=_soft_attention_backward, gradient=_soft_attention_backward_gradient, gradient_tolerance=1e-5),
    Part("attention_maps", "08_attention_maps", _attention_maps, 1e-5, (
        Case("wide_grid", 1, "a 2 x 3 grid onto a 5 x 7 image", _maps((2, 3), (5, 7))),
        Case("one_region", 1, "a 1 x 1 grid", _maps((1, 1), (3, 4))),
        Case("does_not_fit", 1, "weights that do not fit the grid: a ValueError", _maps((2, 2), (4, 4), fits=False),
             ERROR, error="ValueError"),
    )),
)}

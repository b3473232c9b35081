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
    - derived: the part is a backward pass the student derives and writes (it has a GRADIENT case:
      centered differences in practice)
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
    derived: bool = False

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


def _batchnorm_forward(fx):
    from dlmie.numpy_layers import batchnorm_forward

    out, (xhat, _, std) = batchnorm_forward(fx["x"].copy(), fx["gamma"].copy(), fx["beta"].copy(), float(fx["eps"]))
    return {"out": out, "xhat": xhat, "std": std}


def _batchnorm_backward(fx, name="batchnorm_backward"):
    from dlmie import numpy_layers

    backward = getattr(numpy_layers, name)
    dx, dgamma, dbeta = backward(fx["dout"].copy(), tuple(fx[k].copy() for k in ("xhat", "gamma", "std")))
    return {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}


def _batchnorm_backward_staged(fx):
    return _batchnorm_backward(fx, "batchnorm_backward_staged")


def _engine_batchnorm(shape, eps):
    """The engine's training-mode batch norm for float64 input of `shape`: a function
    (x, gamma, beta) -> out. Built from PyTensor's own ops (`dlmie.layers.batchnorm` without its
    kernel), not from `dlmie.kernels.BatchNormTrain`, which in the student handout computes with
    the student's batchnorm_forward."""
    import pytensor.tensor as pt

    from dlmie import compile_cache
    from dlmie.layers import batchnorm

    x = pt.tensor("x", dtype="float64", shape=tuple(shape))
    gamma, beta = (pt.tensor(name, dtype="float64", shape=(shape[1],)) for name in ("gamma", "beta"))
    zeros = np.zeros(shape[1])  # running statistics: their updates are not used
    out, _ = batchnorm(x, gamma, beta, zeros, zeros, train=True, eps=float(eps), kernel=False)
    return compile_cache.function([x, gamma, beta], out)


def _batchnorm_backward_gradient(fx, name="batchnorm_backward"):
    """batchnorm_backward against centered differences of sum(out * dout), out computed by the
    engine's compiled forward pass (not the student's batchnorm_forward)."""
    from dlmie.gradcheck import numerical_gradient, rel_error

    x, gamma, beta, dout = (fx[k].copy() for k in ("x", "gamma", "beta", "dout"))
    forward = _engine_batchnorm(x.shape, float(fx["eps"]))
    grads = _batchnorm_backward(fx, name)

    def loss():
        return float((forward(x, gamma, beta) * dout).sum())

    return {input_name: rel_error(grads[f"d{input_name}"], numerical_gradient(loss, value))
            for input_name, value in (("x", x), ("gamma", gamma), ("beta", beta))}


def _batchnorm_backward_staged_gradient(fx):
    return _batchnorm_backward_gradient(fx, "batchnorm_backward_staged")


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


def _stand_in_cell(a, c_prev, tanh):
    """The stand-in LSTM step (NumPy or PyTensor, by `tanh`): act = tanh a in four blocks p, q, r, s
    of H columns; c = p ⊙ c_prev + q and h = r + s ⊙ c_prev. Deliberately not the LSTM."""
    hidden = c_prev.shape[1]
    act = tanh(a)
    p, q, r, s = (act[:, k * hidden : (k + 1) * hidden] for k in range(4))
    return r + s * c_prev, p * c_prev + q, act


class StandInLSTMCell:
    """Stands in for the LSTM cell Op (dlmie.kernels.LSTMCell) while the recurrence parts are graded:
    the same call, `StandInLSTMCell()(a, c_prev)` -> (h, c, act), with the stand-in step above, so
    that lstm_recurrence and lstm_backward_through_time are graded whatever the state of the
    student's lstm_step_forward and lstm_step_backward (which the Op runs in the handout)."""

    def __call__(self, a, c_prev):
        import pytensor.tensor as pt

        return _stand_in_cell(a, c_prev, pt.tanh)


class StandInLSTMCellGrad:
    """Stands in for dlmie.kernels.LSTMCellGrad: the backward pass of the stand-in step,
    `StandInLSTMCellGrad()(act, c_prev, c, dh, dc)` -> (d_a, d_c_prev)."""

    def __call__(self, act, c_prev, c, dh, dc):
        import pytensor.tensor as pt

        hidden = c_prev.shape[1]
        p, q, r, s = (act[:, k * hidden : (k + 1) * hidden] for k in range(4))
        d_a = pt.concatenate([dc * c_prev, dc, dh, dh * c_prev], axis=1) * (1 - act**2)
        return d_a, dc * p + dh * s


def _stand_in_forward(projected, h0, c0, wh):
    """The stand-in step over the steps of projected (T, N, 4H), in NumPy: h, c (T, N, H), act (T, N, 4H)."""
    h, c, steps = h0, c0, []
    for p in projected:
        h, c, act = _stand_in_cell(p + h @ wh, c, np.tanh)
        steps.append((h, c, act))
    return tuple(np.stack(values) for values in zip(*steps))


def stand_in_lstm_recurrence(projected, h0, c0, wh):
    """Stands in for rnn.lstm_recurrence while lstm_backward_through_time is graded through rnn.lstm:
    the stand-in step over time, computed in NumPy by an Op without a gradient of its own (rnn.lstm's
    pullback, the student's backward pass, supplies it)."""
    return _StandInRecurrence()(projected, h0, c0, wh)


def _stand_in_recurrence_op():
    from pytensor.graph.basic import Apply
    from pytensor.graph.op import Op
    import pytensor.tensor as pt

    class StandInRecurrence(Op):
        __props__ = ()

        def make_node(self, projected, h0, c0, wh):
            inputs = [pt.as_tensor_variable(v) for v in (projected, h0, c0, wh)]
            dtype = inputs[0].dtype
            return Apply(self, inputs, [pt.tensor3(dtype=dtype), pt.tensor3(dtype=dtype), pt.tensor3(dtype=dtype)])

        def perform(self, node, inputs, output_storage):
            for storage, value in zip(output_storage, _stand_in_forward(*inputs)):
                storage[0] = value.astype(node.outputs[0].dtype)

    return StandInRecurrence


class _LazyOp:
    """The stand-in recurrence Op class, made at its first use (parts.py imports no PyTensor)."""

    cls = None

    def __call__(self):
        if _LazyOp.cls is None:
            _LazyOp.cls = _stand_in_recurrence_op()
        return _LazyOp.cls()


_StandInRecurrence = _LazyOp()


def _lstm_recurrence(fx):
    from dlmie.rnn import lstm_recurrence

    h, c, act = _compile(lstm_recurrence, {k: fx[k] for k in ("projected", "h0", "c0", "wh")})
    return {"h": h, "c": c, "act": act}


_BPTT_INPUTS = ("h", "c", "act", "h0", "c0", "wh", "dh", "dc")


def _lstm_backward_through_time(fx):
    from dlmie.rnn import lstm_backward_through_time

    outputs = _compile(lstm_backward_through_time, {k: fx[k] for k in _BPTT_INPUTS})
    return dict(zip(("d_projected", "d_h0", "d_c0", "d_wh"), outputs))


def _lstm_backward_through_time_backward(fx):
    """The gradients rnn.lstm takes through its pullback (the student's backward pass)."""
    return _gradients(_lstm_sequence, _lstm_sequence_inputs(fx), ("x", "h0", "c0", "wx", "wh", "b"), fx["dout_seed"])


def _lstm_sequence(x, h0, c0, wx, wh, b):
    import pytensor.tensor as pt

    from dlmie import rnn

    return pt.concatenate(rnn.lstm(x, h0, wx, wh, b, c0=c0), axis=2)


def _lstm_sequence_inputs(fx):
    return {k: fx[k] for k in ("x", "h0", "c0", "wx", "wh", "b")}


def _lstm_backward_through_time_gradient(fx):
    """rnn.lstm's gradients (its pullback: the student's lstm_backward_through_time) against centered
    differences of its forward pass, both with the stand-in step and recurrence."""
    from dlmie.gradcheck import check_gradients

    return check_gradients(_lstm_sequence, _lstm_sequence_inputs(fx))


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


def _fooling_images(fx):
    from dlmie.vis.saliency import fooling_images

    net = _mlp([fx[k] for k in sorted(fx) if k.startswith("W")])
    result = fooling_images(net, fx["images"].astype(np.uint8), fx["targets"], float(fx["step"]), int(fx["max_steps"]))
    return {"images": result.images, "steps": result.steps, "change": result.change, "fooled": result.fooled}


def stand_in_input_gradient(net, x, labels, guided=False, batch_size=32):
    """Stands in for input_gradient while fooling_images is graded: the gradient of each image's
    chosen class score of the case's ReLU network (`_mlp`), backpropagated by hand in NumPy."""
    weights = [net.params[f"W{k}"].get_value() for k in range(1, len(net.params) + 1)]
    activations = [np.asarray(x, np.float64).reshape(len(x), -1)]
    for w in weights[:-1]:
        activations.append(np.maximum(activations[-1] @ w, 0))
    g = weights[-1][:, np.asarray(labels)].T
    for w, a in zip(weights[-2::-1], activations[:0:-1]):
        g = (g * (a > 0)) @ w.T
    return g.reshape(np.shape(x)).astype(np.float32)


def stand_in_fooling_step(x, g, low, high, step):
    """Stands in for fooling_step while fooling_images is graded: a step of `step` along the sign
    of the gradient (an L-infinity step, not fooling_step's L2 one), clipped to [low, high]."""
    return np.clip(x + step * np.sign(g), low, high).astype(x.dtype)


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


def _gaussian_blur(fx):
    from dlmie.vis.transforms import gaussian_blur

    return {"x": gaussian_blur(fx["x"].copy(), float(fx["sigma"]))}


def stand_in_gaussian_blur(x, sigma, truncate=4.0):
    """Stands in for gaussian_blur while ascent_step is graded: each pixel moved towards its
    image's channel mean by a share sigma / (1 + sigma). Not a blur."""
    x = np.asarray(x)
    share = sigma / (1.0 + sigma)
    return ((1 - share) * x + share * x.mean(axis=(-2, -1), keepdims=True)).astype(x.dtype)


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


def _prior_gradient(part, fx, names):
    """The student's gradient of a prior (part `part` of dlmie.vis.priors) on the case's images."""
    from dlmie.vis import priors

    return {"dx": getattr(priors, part)(fx["x"].copy(), *(float(fx[k]) for k in names))}


def _prior_gradient_check(part, value, names):
    """The student's gradient of a prior against centered differences of its value (NumPy, float64)."""
    def check(fx):
        from dlmie.gradcheck import numerical_gradient, rel_error
        from dlmie.vis import priors

        x, settings = fx["x"].copy(), [float(fx[k]) for k in names]
        dx = getattr(priors, part)(x.copy(), *settings)
        return {"x": rel_error(dx, numerical_gradient(lambda: float(getattr(priors, value)(x, *settings)), x))}
    return check


def _alpha_norm_gradient(fx):
    return _prior_gradient("alpha_norm_gradient", fx, ("alpha", "B"))


def _total_variation_gradient(fx):
    return _prior_gradient("total_variation_gradient", fx, ("beta", "V"))


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


def _top_k_activations(fx):
    from dlmie.vis.activations import top_k_activations

    values, images, rows, cols = top_k_activations(fx["a"].copy(), int(fx["k"]))
    return {"values": values, "images": images, "rows": rows, "cols": cols}


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


def _side_shares(fx):
    from dlmie.captioning.composite_attention import side_shares

    return {"shares": side_shares(fx["alpha"].copy(), tuple(int(v) for v in fx["grid"]), fx["sides"].copy())}


def _self_critical_advantages(fx):
    from dlmie.training.scst import self_critical_advantages

    baseline = "greedy" if bool(fx["greedy"]) else "mean"
    greedy_rewards = fx["greedy_rewards"].copy() if "greedy_rewards" in fx else None
    return {"advantages": self_critical_advantages(fx["rewards"].copy(), baseline, greedy_rewards)}


def _policy_gradient_inputs(fx):
    return tuple(fx[k].copy() for k in ("scores", "words", "mask", "advantages"))


def _policy_gradient_loss(fx):
    from dlmie.training.scst import policy_gradient_loss

    loss, dscores = policy_gradient_loss(*_policy_gradient_inputs(fx))
    return {"loss": np.asarray(loss, np.float64), "dscores": dscores}


def _policy_gradient_loss_backward(fx):
    return {"dscores": _policy_gradient_loss(fx)["dscores"]}


def _policy_gradient_loss_gradient(fx):
    """policy_gradient_loss's dscores against centered differences of its loss."""
    from dlmie.gradcheck import numerical_gradient, rel_error
    from dlmie.training.scst import policy_gradient_loss

    scores, words, mask, advantages = _policy_gradient_inputs(fx)
    _, dscores = policy_gradient_loss(scores.copy(), words, mask, advantages)
    numeric = numerical_gradient(lambda: policy_gradient_loss(scores, words, mask, advantages)[0], scores)
    return {"scores": rel_error(dscores, numeric)}


# ---------------------------------------------------------------- the cases' inputs


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _conv(n, c, h, w, f, k, stride, pad):
    def make(r):
        return {"x": r.standard_normal((n, c, h, w)), "w": r.standard_normal((f, c, k, k)),
                "b": r.standard_normal(f), "stride": stride, "pad": pad, "dout_seed": r.integers(1 << 30)}
    return make


def _batchnorm_inputs(shape, zero_variance=False, eps=1e-5):
    def make(r):
        features = (1, shape[1]) + (1,) * (len(shape) - 2)
        x = r.standard_normal(shape) * r.uniform(0.5, 3.0, features) + r.standard_normal(features)
        if zero_variance:
            x[:, 1] = 1.5  # a constant feature (exact in binary, so is its mean): only eps keeps it finite
        return {"x": x, "gamma": r.uniform(0.5, 2.0, shape[1]) * r.choice([-1, 1], shape[1]),
                "beta": r.standard_normal(shape[1]), "eps": eps}
    return make


def _batchnorm_cache(shape, zero_variance=False, eps=1e-5):
    def make(r):
        from dlmie.numpy_layers import batchnorm_forward

        inputs = _batchnorm_inputs(shape, zero_variance, eps)(r)
        _, (xhat, _, std) = batchnorm_forward(inputs["x"], inputs["gamma"], inputs["beta"], eps)  # the solution's
        return {**inputs, "xhat": xhat, "std": std, "dout": r.standard_normal(shape)}
    return make


def _batchnorm_bad(x_shape, features):
    def make(r):
        return {"x": r.standard_normal(x_shape), "gamma": r.standard_normal(features),
                "beta": r.standard_normal(features), "eps": 1e-5}
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


def _fooling_network(r):
    return {"W1": r.standard_normal((48, 10)), "W2": r.standard_normal((10, 8)), "W3": r.standard_normal((8, 5))}


def _fooling_case(kind):
    """3 images of 4 x 4 and their targets: for "all" and "already", each image's most likely class
    that the solution (with the stand-ins) reaches within max_steps, image 1's own predicted class
    for "already" (0 steps); for "max_steps", the least likely classes and 2 steps."""
    def make(r):
        from dlmie.vis.saliency import fooling_images

        for _ in range(50):
            weights = _fooling_network(r)
            images = r.integers(0, 256, (3, 4, 4, 3))
            inputs = {**weights, "images": images, "step": 0.05, "max_steps": 2 if kind == "max_steps" else 60}
            net = _mlp([weights[k] for k in ("W1", "W2", "W3")])
            ranked = np.argsort(-net.class_scores(net.preprocessing(images.astype(np.uint8))), axis=1)
            if kind == "max_steps":
                return {**inputs, "targets": ranked[:, -1]}
            with standing_in("fooling_images"):
                reached = np.array([fooling_images(net, images.astype(np.uint8), ranked[:, k], 0.05, 60).fooled
                                    for k in range(1, ranked.shape[1])])  # (classes - 1, 3)
            if reached.any(axis=0).all():
                targets = ranked[np.arange(3), 1 + reached.argmax(axis=0)]
                if kind == "already":
                    targets[1] = ranked[1, 0]
                return {**inputs, "targets": targets}
        raise RuntimeError("no reachable targets in 50 draws")
    return make


def _ascent(regularized):
    def make(r):
        settings = ({"jitter": 2, "seed": int(r.integers(100)), "decay": 0.05, "blur_sigma": 0.6, "blur_every": 2,
                     "normalize": True, "momentum": 0.5} if regularized else
                    {"jitter": 0, "seed": 0, "decay": 0.0, "blur_sigma": 0.0, "blur_every": 1,
                     "normalize": False, "momentum": 0.0})
        return {"x": r.standard_normal((2, 3, 6, 6)), "velocity": 0.1 * r.standard_normal((2, 3, 6, 6)),
                "W": r.standard_normal((2, 3, 6, 6)), "step": 3, "lr": 0.1, **settings}
    return make


def _blur_images(shape, low, high):
    def make(r):
        return {"x": r.standard_normal(shape), "sigma": r.uniform(low, high)}
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


def _prior_images(shape, name, low, high, scale, flat=False):
    """Images of `shape` and the prior's settings: exponent `name` uniform in [low, high], scale
    (B or V) in [scale, scale + 1]. Away from the points where centered differences are poor:
    for alpha, every pixel's norm is in [0.5, 1.5] B; for TV, neighbouring pixels differ by at
    least 0.05 (redrawn until they do), but with `flat` a 3 x 3 block of equal pixels in every
    channel, where TV^beta's gradient for beta < 2 rests on TV_EPS (the block is 0, so that
    0 +- h is exact and the differences of the flat terms are exactly symmetric)."""
    def make(r):
        size = scale + r.uniform(0, 1)
        x = r.standard_normal(shape)
        if name == "alpha":
            norms = np.sqrt((x ** 2).sum(axis=1, keepdims=True))
            return {"x": x / norms * size * r.uniform(0.5, 1.5, norms.shape), "alpha": r.uniform(low, high), "B": size}
        for _ in range(10000):
            x = r.standard_normal(shape)
            if flat:
                x[:, :, 1:4, 1:4] = 0.0
            d = np.concatenate([np.diff(x, axis=2).ravel(), np.diff(x, axis=3).ravel()])
            if np.all((d == 0) | (np.abs(d) >= 0.05)):
                break
        return {"x": x, "beta": r.uniform(low, high), "V": size}
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


def _top_k_case(shape, k, ties=False):
    """Activations of `shape` and k; with `ties`, ReLU zeros and small integers, so that peaks tie
    across images and maxima repeat within a map."""
    def make(r):
        a = r.standard_normal(shape)
        return {"a": np.maximum(0.0, np.round(2 * a)) if ties else a, "k": k}
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


def _recurrence(n, t, h, bad_wh=False):
    def make(r):
        wh = r.standard_normal((h + (1 if bad_wh else 0), 4 * h)) * 0.5
        return {"projected": r.standard_normal((t, n, 4 * h)), "h0": r.standard_normal((n, h)),
                "c0": r.standard_normal((n, h)), "wh": wh}
    return make


def _through_time(n, t, h, dh=True, dc=True):
    def make(r):
        projected, h0, c0 = r.standard_normal((t, n, 4 * h)), r.standard_normal((n, h)), r.standard_normal((n, h))
        wh = r.standard_normal((h, 4 * h)) * 0.5
        hs, cs, act = _stand_in_forward(projected, h0, c0, wh)  # what the stand-in recurrence stores
        return {"h": hs, "c": cs, "act": act, "h0": h0, "c0": c0, "wh": wh,
                "dh": r.standard_normal((t, n, h)) * dh, "dc": r.standard_normal((t, n, h)) * dc}
    return make


def _through_time_gradient(n, t, d, h):
    def make(r):
        return {"x": r.standard_normal((n, t, d)), "h0": r.standard_normal((n, h)), "c0": r.standard_normal((n, h)),
                "wx": r.standard_normal((d, 4 * h)) * 0.5, "wh": r.standard_normal((h, 4 * h)) * 0.5,
                "b": r.standard_normal(4 * h) * 0.5, "dout_seed": r.integers(1 << 30)}
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


def _shares(n, grid, extra_steps, normalized=True):
    def make(r):
        words = 5
        alpha = r.uniform(0.05, 1.0, (n, words + extra_steps, grid[0] * grid[1]))
        if normalized:
            alpha /= alpha.sum(axis=2, keepdims=True)
        return {"alpha": alpha, "grid": np.array(grid), "sides": r.integers(0, 2, (n, words))}
    return make


def _rewards(b, k, greedy, equal_image=False, with_greedy=True):
    def make(r):
        rewards = r.uniform(0.0, 2.0, (b, k))
        if equal_image:  # one image's samples all score the same: its advantages are 0
            rewards[0] = r.uniform(0.1, 1.0)
        inputs = {"rewards": rewards, "greedy": int(greedy)}
        if with_greedy:
            inputs["greedy_rewards"] = r.uniform(0.0, 2.0, b)
        return inputs
    return make


def _policy_gradient(n, t, v, scale=1.0, masked_caption=False, zero_advantage=False, fits=True):
    def make(r):
        lengths = r.integers(1, t + 1, n)
        if masked_caption:
            lengths[-1] = 0
        advantages = r.standard_normal(n + (0 if fits else 1))
        if zero_advantage:
            advantages[0] = 0.0
        return {"scores": scale * r.standard_normal((n, t, v)), "words": r.integers(0, v, (n, t)),
                "mask": (np.arange(t)[None] < lengths[:, None]) * 1.0, "advantages": advantages}
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
    Part("batchnorm_forward", "00_engine_and_layers", _batchnorm_forward, 1e-8, (
        Case("random", 2, "N = 5, D = 4", _batchnorm_inputs((5, 4))),
        Case("two_rows", 1, "N = 2, D = 3", _batchnorm_inputs((2, 3))),
        Case("zero_variance", 1, "N = 4, D = 3, feature 1 constant (eps matters)", _batchnorm_inputs((4, 3), True)),
        Case("one_feature", 1, "N = 6, D = 1", _batchnorm_inputs((6, 1))),
        Case("spatial", 2, "(N, C, H, W) = (2, 3, 2, 3), per channel", _batchnorm_inputs((2, 3, 2, 3))),
        Case("three_dims", 1, "x of shape (2, 3, 4): a ValueError", _batchnorm_bad((2, 3, 4), 3), ERROR,
             error="ValueError"),
        Case("gamma_shape", 1, "gamma and beta of 4 values for D = 3: a ValueError", _batchnorm_bad((5, 3), 4),
             ERROR, error="ValueError"),
    )),
    Part("batchnorm_backward", "00_engine_and_layers", _batchnorm_backward, 1e-8, (
        Case("random", 2, "N = 5, D = 4", _batchnorm_cache((5, 4))),
        Case("zero_variance", 1, "N = 4, D = 3, feature 1 constant", _batchnorm_cache((4, 3), True)),
        Case("two_rows_one_feature", 1, "N = 2, D = 1", _batchnorm_cache((2, 1))),
        Case("spatial", 2, "(N, C, H, W) = (2, 3, 2, 3), per channel", _batchnorm_cache((2, 3, 2, 3))),
        Case("gradient", 3, "dx, dgamma, dbeta; N = 4, D = 3", _batchnorm_cache((4, 3)), GRADIENT),
        Case("gradient_spatial", 1, "dx, dgamma, dbeta; (N, C, H, W) = (2, 2, 2, 2), a constant channel",
             _batchnorm_cache((2, 2, 2, 2), True, eps=1e-3), GRADIENT),
    ), backward=_batchnorm_backward, gradient=_batchnorm_backward_gradient, gradient_tolerance=1e-6, derived=True),
    Part("batchnorm_backward_staged", "00_engine_and_layers", _batchnorm_backward_staged, 1e-8, (
        Case("random", 2, "N = 5, D = 4", _batchnorm_cache((5, 4))),
        Case("zero_variance", 1, "N = 4, D = 3, feature 1 constant", _batchnorm_cache((4, 3), True)),
        Case("spatial", 2, "(N, C, H, W) = (2, 3, 2, 3), per channel", _batchnorm_cache((2, 3, 2, 3))),
        Case("gradient", 2, "dx, dgamma, dbeta; N = 3, D = 2", _batchnorm_cache((3, 2)), GRADIENT),
    ), backward=_batchnorm_backward_staged, gradient=_batchnorm_backward_staged_gradient,
        gradient_tolerance=1e-6, derived=True),
    Part("input_gradient", "01_saliency", _input_gradient, 1e-5, (
        Case("vanilla", 4, "5 images, batches of 2, plain ReLU backward", _input_gradient_case(False)),
        Case("guided", 2, "5 images, batches of 2, guided backpropagation", _input_gradient_case(True)),
    )),
    Part("fooling_step", "01_saliency", _fooling_step, 1e-8, (
        Case("bounded", 4, "3 images, some pixels at their bounds", _fooling),
    )),
    Part("fooling_images", "01_saliency", _fooling_images, 1e-5, (
        Case("all_fooled", 3, "3 images, each toward its runner-up class", _fooling_case("all")),
        Case("already_target", 2, "image 1 is already predicted as its target: 0 steps", _fooling_case("already")),
        Case("max_steps", 2, "least likely targets, max_steps = 2: not reached", _fooling_case("max_steps")),
    ), stand_ins={"dlmie.vis.saliency.input_gradient": stand_in_input_gradient,
                  "dlmie.vis.saliency.fooling_step": stand_in_fooling_step}),
    Part("ascent_step", "02_class_visualization", _ascent_step, 1e-8, (
        Case("regularized", 4, "jitter, L2 decay, blur, normalized step with momentum", _ascent(True)),
        Case("plain", 2, "no regularizer, no momentum", _ascent(False)),
    ), stand_ins={"dlmie.vis.transforms.gaussian_blur": stand_in_gaussian_blur}),
    Part("gaussian_blur", "02_class_visualization", _gaussian_blur, 1e-8, (
        Case("random", 3, "N = 2, C = 3, 6 x 7 images, sigma in [0.5, 1.5]", _blur_images((2, 3, 6, 7), 0.5, 1.5)),
        Case("wide_kernel", 2, "a 3 x 2 image, sigma in [1.5, 2.5]: the radius exceeds the image",
             _blur_images((1, 2, 3, 2), 1.5, 2.5)),
        Case("one_pixel_wide", 1, "a 5 x 1 image", _blur_images((1, 1, 5, 1), 0.6, 1.2)),
        Case("no_blur", 1, "sigma = 0: x unchanged", _blur_images((2, 3, 4, 4), 0.0, 0.0)),
        Case("negative_sigma", 1, "sigma < 0: a ValueError", _blur_images((1, 3, 4, 4), -1.0, -0.1), ERROR,
             error="ValueError"),
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
    Part("alpha_norm_gradient", "03_feature_inversion", _alpha_norm_gradient, 1e-8, (
        Case("random", 2, "N = 2, alpha in [3, 6]", _prior_images((2, 3, 4, 5), "alpha", 3.0, 6.0, 1.5)),
        Case("alpha_below_2", 1, "alpha in [1.2, 1.8], no all-zero pixel", _prior_images((2, 3, 3, 4), "alpha", 1.2, 1.8, 0.8)),
        Case("gradient", 2, "centered differences of alpha_norm_value; N = 2, alpha in [3, 6]",
             _prior_images((2, 3, 3, 4), "alpha", 3.0, 6.0, 1.5), GRADIENT),
        Case("one_pixel_wide", 1, "centered differences; a 4 x 1 image, N = 1",
             _prior_images((1, 2, 4, 1), "alpha", 2.5, 6.0, 0.8), GRADIENT),
    ), backward=_alpha_norm_gradient,
        gradient=_prior_gradient_check("alpha_norm_gradient", "alpha_norm_value", ("alpha", "B")),
        gradient_tolerance=1e-5, derived=True),
    Part("total_variation_gradient", "03_feature_inversion", _total_variation_gradient, 1e-8, (
        Case("random", 2, "N = 2, beta in [1.5, 3]", _prior_images((2, 3, 4, 5), "beta", 1.5, 3.0, 0.7)),
        Case("one_row", 1, "a 1 x 6 image: dy is 0 everywhere", _prior_images((2, 2, 1, 6), "beta", 1.5, 3.0, 0.7)),
        Case("gradient", 3, "centered differences of total_variation_value; N = 2, beta in [1.5, 3]",
             _prior_images((2, 2, 4, 5), "beta", 1.5, 3.0, 0.7), GRADIENT),
        Case("flat_beta_below_2", 2, "centered differences; a flat 3 x 3 block, beta in [1.2, 1.8]",
             _prior_images((1, 2, 5, 6), "beta", 1.2, 1.8, 0.7, flat=True), GRADIENT),
        Case("one_pixel_wide", 1, "centered differences; a 5 x 1 image: dx is 0 everywhere",
             _prior_images((1, 2, 5, 1), "beta", 1.2, 2.5, 0.7), GRADIENT),
    ), backward=_total_variation_gradient,
        gradient=_prior_gradient_check("total_variation_gradient", "total_variation_value", ("beta", "V")),
        gradient_tolerance=1e-5, derived=True),
    Part("channel_objective", "04_activation_maps", _channel_objective, 1e-8, (
        Case("one_channel", 1, "one channel for every image", _channels((3, 4, 2, 3), False)),
        Case("channel_per_image", 2, "a channel per image", _channels((3, 4, 2, 3), True)),
        Case("vector_layer", 1, "(N, D) activations", _channels((3, 5), True)),
    )),
    Part("top_k_activations", "04_activation_maps", _top_k_activations, 1e-8, (
        Case("random", 3, "N = 5 images, C = 3 channels, 4 x 3 grid, k = 3", _top_k_case((5, 3, 4, 3), 3)),
        Case("ties", 2, "integer activations with zeros: tied peaks and repeated maxima, k = 4 of 6",
             _top_k_case((6, 4, 3, 3), 4, ties=True)),
        Case("k_equals_n", 1, "k = N = 4, a 2 x 5 grid", _top_k_case((4, 2, 2, 5), 4)),
        Case("one_unit", 1, "N = 1, a 1 x 1 grid, k = 1", _top_k_case((1, 3, 1, 1), 1)),
        Case("k_too_large", 1, "k = 5 > N = 3: a ValueError", _top_k_case((3, 2, 2, 2), 5), ERROR, error="ValueError"),
    )),
    Part("lstm_step_forward", "05_lstm_and_scan", _lstm_step_forward, 1e-8, (
        Case("random", 4, "N = 3, H = 5", _lstm_forward(3, 5)),
        Case("one_sequence", 2, "N = 1, H = 2", _lstm_forward(1, 2)),
    )),
    Part("lstm_step_backward", "05_lstm_and_scan", _lstm_step_backward, 1e-8, (
        Case("random", 5, "N = 3, H = 5", _lstm_backward(3, 5, 2.0)),
        Case("gradient", 5, "N = 2, H = 4", _lstm_backward(2, 4, 1.0), GRADIENT),
    ), backward=_lstm_step_backward, gradient=_lstm_step_backward_gradient, derived=True),
    Part("lstm_recurrence", "05_lstm_and_scan", _lstm_recurrence, 1e-8, (
        Case("several_steps", 4, "N = 3, T = 5, H = 4", _recurrence(3, 5, 4)),
        Case("one_step", 2, "T = 1: a single step", _recurrence(2, 1, 3)),
        Case("one_sequence", 2, "N = 1, T = 4, H = 2", _recurrence(1, 4, 2)),
        Case("wh_mismatch", 1, "wh of H + 1 rows: a ValueError", _recurrence(2, 3, 3, bad_wh=True),
             ERROR, error="ValueError"),
    ), stand_ins={"dlmie.rnn.LSTMCell": StandInLSTMCell, "dlmie.kernels.LSTMCell": StandInLSTMCell}),
    Part("lstm_backward_through_time", "05_lstm_and_scan", _lstm_backward_through_time, 1e-8, (
        Case("random", 4, "N = 2, T = 4, H = 3, gradients of h and c", _through_time(2, 4, 3)),
        Case("dh_only", 2, "N = 3, T = 3, H = 2, dc = 0", _through_time(3, 3, 2, dc=False)),
        Case("dc_only_one_step", 2, "N = 2, T = 1, H = 3, dh = 0", _through_time(2, 1, 3, dh=False)),
        Case("gradient", 5, "gradients of rnn.lstm (x, h0, c0, wx, wh, b); N = 2, T = 4, D = 3, H = 3",
             _through_time_gradient(2, 4, 3, 3), GRADIENT),
    ), backward=_lstm_backward_through_time_backward, gradient=_lstm_backward_through_time_gradient,
        stand_ins={"dlmie.rnn.LSTMCellGrad": StandInLSTMCellGrad, "dlmie.kernels.LSTMCellGrad": StandInLSTMCellGrad,
                   "dlmie.rnn.lstm_recurrence": stand_in_lstm_recurrence}, derived=True),
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
    ), backward=_soft_attention_backward, gradient=_soft_attention_backward_gradient, gradient_tolerance=1e-5,
         derived=True),
    Part("attention_maps", "08_attention_maps", _attention_maps, 1e-5, (
        Case("wide_grid", 1, "a 2 x 3 grid onto a 5 x 7 image", _maps((2, 3), (5, 7))),
        Case("one_region", 1, "a 1 x 1 grid", _maps((1, 1), (3, 4))),
        Case("does_not_fit", 1, "weights that do not fit the grid: a ValueError", _maps((2, 2), (4, 4), fits=False),
             ERROR, error="ValueError"),
    )),
    Part("side_shares", "08_attention_maps", _side_shares, 1e-8, (
        Case("random", 2, "N = 3 composites on a 2 x 4 grid, an extra <END> step", _shares(3, (2, 4), 1)),
        Case("one_composite", 1, "N = 1, a 1 x 2 grid (one region a half), no extra step", _shares(1, (1, 2), 0)),
        Case("unnormalized", 1, "weights that do not sum to 1 over the regions", _shares(2, (3, 4), 1, False)),
        Case("odd_width", 1, "a grid of odd width: a ValueError", _shares(2, (2, 3), 1), ERROR, error="ValueError"),
    )),
    Part("self_critical_advantages", "09_self_critical", _self_critical_advantages, 1e-8, (
        Case("mean", 2, "B = 3 images, K = 4 samples, mean-of-others baseline", _rewards(3, 4, False)),
        Case("greedy", 2, "B = 3, K = 2, greedy baseline", _rewards(3, 2, True)),
        Case("greedy_one_sample", 1, "B = 1 image, K = 1 sample, greedy baseline", _rewards(1, 1, True)),
        Case("equal_rewards", 1, "mean baseline, one image's samples all equal", _rewards(2, 3, False, True)),
        Case("mean_one_sample", 1, "mean baseline with K = 1: a ValueError", _rewards(2, 1, False), ERROR,
             error="ValueError"),
        Case("greedy_missing", 1, "greedy baseline without greedy_rewards: a ValueError",
             _rewards(2, 3, True, with_greedy=False), ERROR, error="ValueError"),
    )),
    Part("policy_gradient_loss", "09_self_critical", _policy_gradient_loss, 1e-8, (
        Case("random", 3, "N = 3, T = 4, V = 5, padded captions", _policy_gradient(3, 4, 5)),
        Case("masked_and_zero", 2, "a caption whose mask is all zeros, an advantage of 0",
             _policy_gradient(3, 4, 5, masked_caption=True, zero_advantage=True)),
        Case("large_scores", 1, "scores of about 1000 (stability)", _policy_gradient(2, 3, 4, scale=1000.0)),
        Case("one_caption", 1, "N = 1, T = 2, V = 3", _policy_gradient(1, 2, 3)),
        Case("gradient", 3, "gradient of the scores; N = 2, T = 3, V = 4", _policy_gradient(2, 3, 4), GRADIENT),
        Case("does_not_fit", 1, "advantages that do not fit the captions: a ValueError",
             _policy_gradient(2, 3, 4, fits=False), ERROR, error="ValueError"),
    ), backward=_policy_gradient_loss_backward, gradient=_policy_gradient_loss_gradient, gradient_tolerance=1e-7,
         derived=True),
)}

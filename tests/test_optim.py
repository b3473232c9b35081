"""Update rules against NumPy references written from the formulas, step for step, in float64."""

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import optim
from dlmie.gradcheck import rel_error

STEPS = 5


def quadratic_problem(seed=0):
    """f(p) = 0.5 * sum(a * p**2) + sum(c * p) with a > 0: convex, minimum at -c / a."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, (3, 4))
    c = rng.standard_normal((3, 4))
    p0 = rng.standard_normal((3, 4))
    return a, c, p0


def run_rule(rule, steps=STEPS, **hyper):
    """Run `steps` PyTensor updates of `rule` on the quadratic; return the parameter after each step."""
    a, c, p0 = quadratic_problem()
    p = pytensor.shared(p0.copy(), name="p", shape=p0.shape)
    loss = 0.5 * pt.sum(a * p**2) + pt.sum(c * p)
    updates = rule([p], [pytensor.grad(loss, p)], **hyper)
    step = pytensor.function([], loss, updates=updates)
    trajectory, losses = [], []
    for _ in range(steps):
        losses.append(float(step()))
        trajectory.append(p.get_value().copy())
    return trajectory, losses, updates


def numpy_trajectory(update, steps=STEPS):
    """The same problem in NumPy; `update(p, g, state, t)` returns the new p (state is a dict)."""
    a, c, p = quadratic_problem()
    state, trajectory = {}, []
    for t in range(1, steps + 1):
        p = update(p, a * p + c, state, t)
        trajectory.append(p.copy())
    return trajectory


def np_sgd(p, g, state, t, lr=0.1):
    return p - lr * g


def np_momentum(p, g, state, t, lr=0.1, mu=0.9):
    v = mu * state.get("v", 0.0) - lr * g
    state["v"] = v
    return p + v


def np_rmsprop(p, g, state, t, lr=0.01, decay=0.99, eps=1e-8):
    cache = decay * state.get("cache", 0.0) + (1 - decay) * g**2
    state["cache"] = cache
    return p - lr * g / (np.sqrt(cache) + eps)


def np_adam(p, g, state, t, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    m = beta1 * state.get("m", 0.0) + (1 - beta1) * g
    v = beta2 * state.get("v", 0.0) + (1 - beta2) * g**2
    state["m"], state["v"] = m, v
    return p - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)


CASES = [
    (optim.sgd, np_sgd, {"lr": 0.1}),
    (optim.momentum, np_momentum, {"lr": 0.1, "mu": 0.9}),
    (optim.rmsprop, np_rmsprop, {"lr": 0.01, "decay": 0.99}),
    (optim.adam, np_adam, {"lr": 0.01}),
]


@pytest.mark.parametrize("rule,reference,hyper", CASES, ids=[c[0].__name__ for c in CASES])
def test_rule_matches_numpy_step_for_step(rule, reference, hyper):
    ours, _, _ = run_rule(rule, **hyper)
    expected = numpy_trajectory(reference)
    for step, (p_ours, p_ref) in enumerate(zip(ours, expected), start=1):
        assert rel_error(p_ours, p_ref) < 1e-6, f"{rule.__name__} differs at step {step}"


@pytest.mark.parametrize("rule,reference,hyper", CASES, ids=[c[0].__name__ for c in CASES])
def test_rule_decreases_quadratic(rule, reference, hyper):
    _, losses, _ = run_rule(rule, steps=100, **hyper)
    assert losses[-1] < losses[0] - 0.5, f"{rule.__name__}: loss {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_learning_rate_can_be_a_shared_variable():
    lr = pytensor.shared(np.float64(0.1))
    ours, _, _ = run_rule(optim.sgd, steps=1, lr=lr)
    assert rel_error(ours[0], numpy_trajectory(np_sgd, steps=1)[0]) < 1e-12


def test_adam_step_counter_and_state():
    _, _, updates = run_rule(optim.adam, steps=3, lr=0.01)
    p = [var for var, _ in updates if var.name == "p"]
    state = optim.optimizer_state(updates, p)
    names = sorted(var.name for var in state)
    assert names == ["adam.t", "p.m", "p.v"]
    counter = next(var for var in state if var.name == "adam.t")
    assert counter.get_value() == 3


@pytest.mark.parametrize("python_backend", [False, True], ids=["c", "python"])
def test_adam_in_place_keeps_earlier_reads_of_the_parameter(python_backend):
    """AdamUpdate overwrites p, m and v in place in a compiled step (the rewrite swaps it in), and
    an output that reads p still sees the value from before the update (PyTensor orders the read
    first). The NumPy `perform` (Python backend) gives the same trajectory."""
    from pytensor.compile.mode import Mode
    from dlmie.kernels import AdamUpdate

    a, c, p0 = quadratic_problem()
    p = pytensor.shared(p0.copy(), name="p", shape=p0.shape)
    loss = 0.5 * pt.sum(a * p**2) + pt.sum(c * p)
    updates = optim.adam([p], [pytensor.grad(loss, p)], lr=0.01)
    mode = Mode(linker="py", optimizer="fast_run") if python_backend else None
    step = pytensor.function([], [loss, 2 * p], updates=updates, mode=mode)
    adam_ops = [n.op for n in step.maker.fgraph.apply_nodes if isinstance(n.op, AdamUpdate)]
    assert len(adam_ops) == 1 and adam_ops[0].inplace
    expected = numpy_trajectory(np_adam, steps=3)
    before = p0
    for t in range(3):
        _, twice_p = step()
        assert rel_error(twice_p, 2 * before) < 1e-12, "the read of p must come before the update"
        assert rel_error(p.get_value(), expected[t]) < 1e-6
        before = p.get_value().copy()


def test_clip_by_global_norm():
    g1, g2 = pt.vector(dtype="float64"), pt.matrix(dtype="float64")
    clipped, norm = optim.clip_by_global_norm([g1, g2], max_norm=1.0)
    f = pytensor.function([g1, g2], [*clipped, norm])
    a, b = np.array([3.0, 0.0]), np.array([[0.0, 4.0]])  # joint norm 5
    ca, cb, n = f(a, b)
    assert np.isclose(n, 5.0)
    assert rel_error(ca, a / 5) < 1e-12 and rel_error(cb, b / 5) < 1e-12
    small_a, small_b, _ = f(a / 10, b / 10)  # norm 0.5 < 1: unchanged
    assert rel_error(small_a, a / 10) < 1e-12 and rel_error(small_b, b / 10) < 1e-12


@pytest.mark.parametrize("rule", ["adam", "momentum"])
def test_each_weight_gradient_is_one_gemm(rule):
    """A training step reads dW = X^T dY several times (the clipping norm, the update's scalings);
    dlmie.config keeps PyTensor from folding each scaling into a GEMM of its own, which made the
    step compute the same weight gradient three times."""
    x, y = pt.matrix("x"), pt.matrix("y")
    w = pytensor.shared(np.zeros((8, 5), pytensor.config.floatX), name="w")
    loss = pt.sqr(pt.dot(x, w) - y).sum()
    grads, _ = optim.clip_by_global_norm(pytensor.grad(loss, [w]), 5.0)
    updates = getattr(optim, rule)([w], grads, 0.01)
    step = pytensor.function([x, y], loss, updates=updates)
    gemms = [node for node in step.maker.fgraph.toposort()
             if type(node.op).__name__ in ("Dot22", "Dot22Scalar", "Gemm", "Dot", "Gemv")]
    assert len(gemms) == 2, gemms  # x w forward, x^T dY backward (once)


def test_keep_buffers_mode_keeps_intermediate_arrays_between_calls():
    """Training steps compile with dlmie.config.keep_buffers_mode: same backend and rewrites as the
    default mode, but the VM keeps its intermediate arrays between calls (allow_gc=False)."""
    from dlmie.config import keep_buffers_mode

    x = pt.matrix("x")
    default = pytensor.function([x], pt.exp(x) * 2)
    kept = pytensor.function([x], pt.exp(x) * 2, mode=keep_buffers_mode())
    assert default.vm.allow_gc and not kept.vm.allow_gc
    assert type(kept.vm) is type(default.vm)
    value = np.ones((2, 3), pytensor.config.floatX)
    assert np.allclose(kept(value), default(value))

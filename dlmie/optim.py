"""Update rules as PyTensor updates, cs231n's optim.py on a symbolic engine.

Each rule takes the parameters (shared variables), their symbolic gradients and its
hyper-parameters, and returns a list of `(shared_variable, new_value)` pairs to pass to
`pytensor.function(..., updates=...)`. The rule's state (velocities, moment estimates, the
step counter) lives in shared variables created here; they are exactly the updated shared
variables that are not parameters, which is what a checkpoint saves (see `optimizer_state`).

A learning rate may be a number or a scalar shared variable, so that a schedule can change it
between steps without recompiling.
"""

from __future__ import annotations

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie.kernels import AdamUpdate
from dlmie.layers import scalar


def _zeros_like(param, suffix):
    value = param.get_value(borrow=True)
    return pytensor.shared(np.zeros_like(value), name=f"{param.name or 'param'}.{suffix}", shape=value.shape)


def sgd(params, grads, lr):
    """Vanilla stochastic gradient descent: p <- p - lr * g."""
    return [(p, p - scalar(lr, p.dtype) * g) for p, g in zip(params, grads)]


def momentum(params, grads, lr, mu=0.9):
    """SGD with momentum: v <- mu * v - lr * g; p <- p + v."""
    updates = []
    for p, g in zip(params, grads):
        v = _zeros_like(p, "velocity")
        v_new = scalar(mu, p.dtype) * v - scalar(lr, p.dtype) * g
        updates += [(v, v_new), (p, p + v_new)]
    return updates


def rmsprop(params, grads, lr, decay=0.99, eps=1e-8):
    """RMSProp: c <- decay * c + (1 - decay) * g^2; p <- p - lr * g / (sqrt(c) + eps)."""
    updates = []
    for p, g in zip(params, grads):
        cache = _zeros_like(p, "cache")
        cache_new = scalar(decay, p.dtype) * cache + scalar(1 - decay, p.dtype) * pt.sqr(g)
        step = scalar(lr, p.dtype) * g / (pt.sqrt(cache_new) + scalar(eps, p.dtype))
        updates += [(cache, cache_new), (p, p - step)]
    return updates


def adam(params, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam (Kingma & Ba 2015) with bias correction driven by one shared step counter t.

    t <- t + 1; m <- beta1 m + (1 - beta1) g; v <- beta2 v + (1 - beta2) g^2;
    p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    Each parameter's three updates are one compiled Op (`kernels.AdamUpdate`, vectorized, in
    place); the bias corrections are scalars computed once per step.
    """
    # An integer counter: a float32 one would stop counting at 2**24 steps.
    t = pytensor.shared(np.asarray(0, dtype=np.int64), name="adam.t")
    t_new = t + 1
    updates = [(t, t_new)]
    for p, g in zip(params, grads):
        m, v = _zeros_like(p, "m"), _zeros_like(p, "v")
        step_size = scalar(lr, p.dtype) / (1 - scalar(beta1, p.dtype) ** scalar(t_new, p.dtype))
        v_scale = 1 / (1 - scalar(beta2, p.dtype) ** scalar(t_new, p.dtype))
        p_new, m_new, v_new = AdamUpdate(beta1, beta2, eps)(p, m, v, g, step_size, v_scale)
        updates += [(m, m_new), (v, v_new), (p, p_new)]
    return updates


def clip_by_global_norm(grads, max_norm):
    """Scale all gradients together so that their joint L2 norm is at most `max_norm`.

    Inputs:
    - grads: list of symbolic gradients
    - max_norm: positive number
    Returns:
    - clipped: list of gradients, each multiplied by min(1, max_norm / norm)
    - norm: the symbolic global norm before clipping, sqrt(sum of all squared entries)
    """
    norm = pt.sqrt(sum(pt.sum(pt.sqr(g)) for g in grads))
    scale = pt.minimum(1.0, max_norm / pt.maximum(norm, 1e-12))
    return [g * pt.cast(scale, g.dtype) for g in grads], norm


def optimizer_state(updates, params):
    """The shared variables an update list keeps besides the parameters (for checkpoints)."""
    param_set = set(params)
    return [var for var, _ in updates if var not in param_set]

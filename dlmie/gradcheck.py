"""Numerical gradient checks, cs231n style: compare PyTensor's symbolic gradient with centered
finite differences in float64 and report the relative error next to its tolerance.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt


def rel_error(x, y):
    """Largest elementwise relative error max |x - y| / max(1e-8, |x| + |y|), as in cs231n."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """Centered finite differences of a scalar function with respect to an array it reads.

    Inputs:
    - f: takes no arguments and returns a float computed from the current contents of `x`
    - x: float64 array, changed in place one element at a time and restored
    - h: step size
    Returns:
    - grad: array of x's shape, grad[i] = (f(x + h e_i) - f(x - h e_i)) / (2 h)
    """
    grad = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = f()
        x[index] = old - h
        f_minus = f()
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def check_gradients(build, inputs: dict, wrt=None, seed: int = 0, h: float = 1e-5) -> dict:
    """Relative error between symbolic and numerical gradients of a PyTensor expression.

    The expression's output is reduced to the scalar sum(out * dout) with a fixed random dout,
    so every output element's gradient is checked (the upstream-gradient trick of cs231n).

    Inputs:
    - build: function taking PyTensor variables as keyword arguments (one per entry of
      `inputs`) and returning an expression, or a tuple whose first element is the expression
      (layers such as batchnorm return `(out, updates)`)
    - inputs: name -> NumPy array; float arrays are cast to float64, integer arrays stay
    - wrt: names to differentiate (default: every float input)
    - seed: seed of dout
    - h: finite-difference step
    Returns:
    - errors: name -> relative error between symbolic and numerical gradient
    """
    values = {
        name: (np.array(v, dtype=np.float64) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
        for name, v in inputs.items()
    }
    wrt = [n for n, v in values.items() if v.dtype.kind == "f"] if wrt is None else list(wrt)
    variables = {name: pt.tensor(name=name, dtype=v.dtype, shape=v.shape) for name, v in values.items()}
    out = build(**variables)
    out = out[0] if isinstance(out, tuple) else out
    dout_shape = pytensor.function(list(variables.values()), out.shape)(*values.values())
    dout = np.random.default_rng(seed).standard_normal(tuple(dout_shape))
    loss = pt.sum(out * pt.constant(dout))
    grads = pytensor.grad(loss, [variables[n] for n in wrt])
    order = list(values)
    f_loss = pytensor.function([variables[n] for n in order], loss)
    f_grads = pytensor.function([variables[n] for n in order], grads)
    symbolic = f_grads(*values.values())

    def current_loss():
        return float(f_loss(*(values[n] for n in order)))

    return {
        name: rel_error(g, numerical_gradient(current_loss, values[name], h))
        for name, g in zip(wrt, symbolic)
    }


def report(title: str, errors: dict, tolerance: float = 1e-6) -> bool:
    """Print one line per checked input: the relative error, the tolerance and OK or FAIL.

    Returns True when every error is below the tolerance.
    """
    ok = True
    for name, err in errors.items():
        passed = err < tolerance
        ok &= passed
        print(f"{title:<28} d{name:<10} rel_error={err:.2e}  (tolerance {tolerance:.0e})  {'OK' if passed else 'FAIL'}")
    return ok

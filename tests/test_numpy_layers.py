"""The NumPy reference layers (dlmie.numpy_layers) against the engine's compiled kernels, an
explicit loop, and centered differences."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from dlmie import compile_cache
from dlmie.gradcheck import numerical_gradient, rel_error
from dlmie.kernels import BatchNormTrain
from dlmie.numpy_layers import batchnorm_backward, batchnorm_backward_staged, batchnorm_forward


def loop_batchnorm(x, gamma, beta, eps):
    """Feature by feature, value by value: the definition, with no broadcasting."""
    x4 = x.reshape(x.shape[0], x.shape[1], -1)
    out = np.empty_like(x4)
    for j in range(x4.shape[1]):
        values = [v for n in range(x4.shape[0]) for v in x4[n, j]]
        mu = sum(values) / len(values)
        var = sum((v - mu) ** 2 for v in values) / len(values)
        for n in range(x4.shape[0]):
            for k in range(x4.shape[2]):
                out[n, j, k] = gamma[j] * (x4[n, j, k] - mu) / (var + eps) ** 0.5 + beta[j]
    return out.reshape(x.shape)


def engine(shape, eps):
    """(x, gamma, beta, dout) -> (out, dx, dgamma, dbeta) with BatchNormTrain and pytensor.grad."""
    x = pt.tensor("x", dtype="float64", shape=shape)
    gamma, beta = pt.dvector("gamma"), pt.dvector("beta")
    dout = pt.tensor("dout", dtype="float64", shape=shape)
    out = BatchNormTrain(eps)(x, gamma, beta)[0]
    grads = pytensor.grad((out * dout).sum(), [x, gamma, beta])
    return compile_cache.function([x, gamma, beta, dout], [out, *grads])


@pytest.mark.parametrize("shape", [(5, 4), (2, 3), (6, 1), (3, 2, 2, 3), (1, 3)])
def test_batchnorm_matches_the_engine_and_a_loop(shape):
    rng = np.random.default_rng(len(shape) + shape[0])
    x = 3 * rng.standard_normal(shape) + 1
    x[:, 0] = 0.75  # a constant feature: out = beta there
    gamma, beta, dout = rng.standard_normal(shape[1]), rng.standard_normal(shape[1]), rng.standard_normal(shape)
    out, cache = batchnorm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)

    assert rel_error(out, loop_batchnorm(x, gamma, beta, 1e-5)) < 1e-12
    assert np.allclose(out[:, 0], beta[0])
    e_out, e_dx, e_dgamma, e_dbeta = engine(shape, 1e-5)(x, gamma, beta, dout)
    assert rel_error(out, e_out) < 1e-10
    assert rel_error(dx, e_dx) < 1e-8 and rel_error(dgamma, e_dgamma) < 1e-10 and rel_error(dbeta, e_dbeta) < 1e-12
    s_dx, s_dgamma, s_dbeta = batchnorm_backward_staged(dout, cache)
    assert rel_error(s_dx, e_dx) < 1e-8 and rel_error(s_dgamma, e_dgamma) < 1e-10 and rel_error(s_dbeta, e_dbeta) < 1e-12
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    assert np.allclose(dx.sum(axis=axes), 0, atol=1e-8)  # out does not change when a feature is shifted


def test_batchnorm_backward_against_centered_differences():
    rng = np.random.default_rng(3)
    x, gamma, beta, dout = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal((4, 3))
    _, cache = batchnorm_forward(x, gamma, beta)

    def loss():
        return float((batchnorm_forward(x, gamma, beta)[0] * dout).sum())

    numeric = [numerical_gradient(loss, value) for value in (x, gamma, beta)]
    for backward in (batchnorm_backward, batchnorm_backward_staged):
        for grad, expected in zip(backward(dout, cache), numeric):
            assert rel_error(grad, expected) < 1e-7


def test_batchnorm_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, D\) or \(N, C, H, W\)"):
        batchnorm_forward(np.zeros((2, 3, 4)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="one value per feature"):
        batchnorm_forward(np.zeros((2, 3)), np.ones(4), np.zeros(4))

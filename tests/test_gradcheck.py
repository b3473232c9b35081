"""The gradient checker itself must catch a wrong gradient, or its passes mean nothing."""

import numpy as np
import pytensor.tensor as pt
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

import dlmie  # noqa: F401
from dlmie.gradcheck import check_gradients, numerical_gradient, rel_error, report


def test_rel_error():
    assert rel_error(np.ones(3), np.ones(3)) == 0
    assert np.isclose(rel_error([1.0], [3.0]), 0.5)


def test_numerical_gradient_of_known_function():
    x = np.array([1.0, -2.0, 0.5])
    grad = numerical_gradient(lambda: float(np.sum(x**3)), x)
    assert rel_error(grad, 3 * x**2) < 1e-8
    assert np.array_equal(x, [1.0, -2.0, 0.5]), "x must be restored"


class WrongSquare(Op):
    """x**2 whose gradient claims 3x instead of 2x."""

    def make_node(self, x):
        x = pt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = inputs[0] ** 2

    def pullback(self, inputs, outputs, cotangents):
        return [3 * inputs[0] * cotangents[0]]


def test_checker_flags_a_wrong_gradient(capsys):
    x = np.random.default_rng(0).standard_normal((3, 2))
    good = check_gradients(lambda x: x**2, {"x": x})
    bad = check_gradients(lambda x: WrongSquare()(x), {"x": x})
    assert good["x"] < 1e-8
    assert bad["x"] > 1e-2
    assert report("square", good) is True
    assert report("wrong square", bad) is False
    assert "FAIL" in capsys.readouterr().out


def test_integer_inputs_are_not_differentiated():
    errors = check_gradients(lambda x, i: x[i], {"x": np.arange(4.0), "i": np.array([0, 2])})
    assert list(errors) == ["x"]


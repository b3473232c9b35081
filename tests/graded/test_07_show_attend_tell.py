"""Notebook 07: the soft-attention step with its gate and the doubly stochastic penalty
(dlmie/models/show_attend_tell.py)."""

import pytest

from dlmie.checks import GRADIENT, assert_case

NOTEBOOK = "07_show_attend_tell"


@pytest.mark.graded(part="attend", points=5)
def test_attend_with_gate():
    assert_case("attend", "gate")


@pytest.mark.graded(part="attend", points=2)
def test_attend_without_gate():
    assert_case("attend", "no_gate")


@pytest.mark.graded(part="doubly_stochastic_penalty", points=2)
def test_doubly_stochastic_penalty():
    assert_case("doubly_stochastic_penalty", "random")


@pytest.mark.graded(part="doubly_stochastic_penalty", points=1)
def test_doubly_stochastic_penalty_gradient():
    assert_case("doubly_stochastic_penalty", GRADIENT)

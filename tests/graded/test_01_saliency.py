"""Notebook 01: the gradient of each image's chosen class score, and one fooling-image step (dlmie/vis/saliency.py)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "01_saliency"


@pytest.mark.graded(part="input_gradient", points=4)
def test_input_gradient_of_the_chosen_class_scores():
    assert_case("input_gradient", "vanilla")


@pytest.mark.graded(part="input_gradient", points=2)
def test_input_gradient_guided():
    assert_case("input_gradient", "guided")


@pytest.mark.graded(part="fooling_step", points=4)
def test_fooling_step_at_the_bounds():
    assert_case("fooling_step", "bounded")

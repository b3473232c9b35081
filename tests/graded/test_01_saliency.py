"""Notebook 01_saliency: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "01_saliency"


@pytest.mark.graded(part="input_gradient", points=4)
def test_input_gradient_vanilla():
    assert_case("input_gradient", "vanilla")


@pytest.mark.graded(part="input_gradient", points=2)
def test_input_gradient_guided():
    assert_case("input_gradient", "guided")


@pytest.mark.graded(part="fooling_step", points=4)
def test_fooling_step_bounded():
    assert_case("fooling_step", "bounded")


@pytest.mark.graded(part="fooling_images", points=3)
def test_fooling_images_all_fooled():
    assert_case("fooling_images", "all_fooled")


@pytest.mark.graded(part="fooling_images", points=2)
def test_fooling_images_already_target():
    assert_case("fooling_images", "already_target")


@pytest.mark.graded(part="fooling_images", points=2)
def test_fooling_images_max_steps():
    assert_case("fooling_images", "max_steps")

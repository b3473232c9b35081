"""Notebook 02_class_visualization: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "02_class_visualization"


@pytest.mark.graded(part="ascent_step", points=4)
def test_ascent_step_regularized():
    assert_case("ascent_step", "regularized")


@pytest.mark.graded(part="ascent_step", points=2)
def test_ascent_step_plain():
    assert_case("ascent_step", "plain")


@pytest.mark.graded(part="gaussian_blur", points=3)
def test_gaussian_blur_random():
    assert_case("gaussian_blur", "random")


@pytest.mark.graded(part="gaussian_blur", points=2)
def test_gaussian_blur_wide_kernel():
    assert_case("gaussian_blur", "wide_kernel")


@pytest.mark.graded(part="gaussian_blur", points=1)
def test_gaussian_blur_one_pixel_wide():
    assert_case("gaussian_blur", "one_pixel_wide")


@pytest.mark.graded(part="gaussian_blur", points=1)
def test_gaussian_blur_no_blur():
    assert_case("gaussian_blur", "no_blur")


@pytest.mark.graded(part="gaussian_blur", points=1)
def test_gaussian_blur_negative_sigma():
    assert_case("gaussian_blur", "negative_sigma")


@pytest.mark.graded(part="zero_below_percentile", points=2)
def test_zero_below_percentile_norm():
    assert_case("zero_below_percentile", "norm")


@pytest.mark.graded(part="zero_below_percentile", points=2)
def test_zero_below_percentile_contribution():
    assert_case("zero_below_percentile", "contribution")

"""Notebook 03_feature_inversion: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "03_feature_inversion"


@pytest.mark.graded(part="relative_feature_distance", points=2)
def test_relative_feature_distance_spatial_numpy():
    assert_case("relative_feature_distance", "spatial_numpy")


@pytest.mark.graded(part="relative_feature_distance", points=1)
def test_relative_feature_distance_vector_symbolic():
    assert_case("relative_feature_distance", "vector_symbolic")


@pytest.mark.graded(part="alpha_norm_value", points=2)
def test_alpha_norm_value_numpy():
    assert_case("alpha_norm_value", "numpy")


@pytest.mark.graded(part="alpha_norm_value", points=1)
def test_alpha_norm_value_symbolic():
    assert_case("alpha_norm_value", "symbolic")


@pytest.mark.graded(part="total_variation_value", points=3)
def test_total_variation_value_numpy():
    assert_case("total_variation_value", "numpy")


@pytest.mark.graded(part="total_variation_value", points=1)
def test_total_variation_value_symbolic():
    assert_case("total_variation_value", "symbolic")


@pytest.mark.graded(part="alpha_norm_gradient", points=2)
def test_alpha_norm_gradient_random():
    assert_case("alpha_norm_gradient", "random")


@pytest.mark.graded(part="alpha_norm_gradient", points=1)
def test_alpha_norm_gradient_alpha_below_2():
    assert_case("alpha_norm_gradient", "alpha_below_2")


@pytest.mark.graded(part="alpha_norm_gradient", points=2)
def test_alpha_norm_gradient_gradient():
    assert_case("alpha_norm_gradient", "gradient")


@pytest.mark.graded(part="alpha_norm_gradient", points=1)
def test_alpha_norm_gradient_one_pixel_wide():
    assert_case("alpha_norm_gradient", "one_pixel_wide")


@pytest.mark.graded(part="total_variation_gradient", points=2)
def test_total_variation_gradient_random():
    assert_case("total_variation_gradient", "random")


@pytest.mark.graded(part="total_variation_gradient", points=1)
def test_total_variation_gradient_one_row():
    assert_case("total_variation_gradient", "one_row")


@pytest.mark.graded(part="total_variation_gradient", points=3)
def test_total_variation_gradient_gradient():
    assert_case("total_variation_gradient", "gradient")


@pytest.mark.graded(part="total_variation_gradient", points=2)
def test_total_variation_gradient_flat_beta_below_2():
    assert_case("total_variation_gradient", "flat_beta_below_2")


@pytest.mark.graded(part="total_variation_gradient", points=1)
def test_total_variation_gradient_one_pixel_wide():
    assert_case("total_variation_gradient", "one_pixel_wide")

"""Notebook 00_engine_and_layers: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "00_engine_and_layers"


@pytest.mark.graded(part="conv2d", points=2)
def test_conv2d_stride1_pad1():
    assert_case("conv2d", "stride1_pad1")


@pytest.mark.graded(part="conv2d", points=2)
def test_conv2d_stride2_pad2():
    assert_case("conv2d", "stride2_pad2")


@pytest.mark.graded(part="conv2d", points=2)
def test_conv2d_one_image_stride2_pad0():
    assert_case("conv2d", "one_image_stride2_pad0")


@pytest.mark.graded(part="conv2d", points=2)
def test_conv2d_gradient():
    assert_case("conv2d", "gradient")


@pytest.mark.graded(part="batchnorm_forward", points=2)
def test_batchnorm_forward_random():
    assert_case("batchnorm_forward", "random")


@pytest.mark.graded(part="batchnorm_forward", points=1)
def test_batchnorm_forward_two_rows():
    assert_case("batchnorm_forward", "two_rows")


@pytest.mark.graded(part="batchnorm_forward", points=1)
def test_batchnorm_forward_zero_variance():
    assert_case("batchnorm_forward", "zero_variance")


@pytest.mark.graded(part="batchnorm_forward", points=1)
def test_batchnorm_forward_one_feature():
    assert_case("batchnorm_forward", "one_feature")


@pytest.mark.graded(part="batchnorm_forward", points=2)
def test_batchnorm_forward_spatial():
    assert_case("batchnorm_forward", "spatial")


@pytest.mark.graded(part="batchnorm_forward", points=1)
def test_batchnorm_forward_three_dims():
    assert_case("batchnorm_forward", "three_dims")


@pytest.mark.graded(part="batchnorm_forward", points=1)
def test_batchnorm_forward_gamma_shape():
    assert_case("batchnorm_forward", "gamma_shape")


@pytest.mark.graded(part="batchnorm_backward", points=2)
def test_batchnorm_backward_random():
    assert_case("batchnorm_backward", "random")


@pytest.mark.graded(part="batchnorm_backward", points=1)
def test_batchnorm_backward_zero_variance():
    assert_case("batchnorm_backward", "zero_variance")


@pytest.mark.graded(part="batchnorm_backward", points=1)
def test_batchnorm_backward_two_rows_one_feature():
    assert_case("batchnorm_backward", "two_rows_one_feature")


@pytest.mark.graded(part="batchnorm_backward", points=2)
def test_batchnorm_backward_spatial():
    assert_case("batchnorm_backward", "spatial")


@pytest.mark.graded(part="batchnorm_backward", points=3)
def test_batchnorm_backward_gradient():
    assert_case("batchnorm_backward", "gradient")


@pytest.mark.graded(part="batchnorm_backward", points=1)
def test_batchnorm_backward_gradient_spatial():
    assert_case("batchnorm_backward", "gradient_spatial")


@pytest.mark.graded(part="batchnorm_backward_staged", points=2)
def test_batchnorm_backward_staged_random():
    assert_case("batchnorm_backward_staged", "random")


@pytest.mark.graded(part="batchnorm_backward_staged", points=1)
def test_batchnorm_backward_staged_zero_variance():
    assert_case("batchnorm_backward_staged", "zero_variance")


@pytest.mark.graded(part="batchnorm_backward_staged", points=2)
def test_batchnorm_backward_staged_spatial():
    assert_case("batchnorm_backward_staged", "spatial")


@pytest.mark.graded(part="batchnorm_backward_staged", points=2)
def test_batchnorm_backward_staged_gradient():
    assert_case("batchnorm_backward_staged", "gradient")

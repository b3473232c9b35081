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

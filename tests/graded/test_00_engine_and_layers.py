"""Notebook 00: the convolution's forward pass by im2col and one GEMM (dlmie/layers.py)."""

import pytest

from dlmie.checks import GRADIENT, assert_case

NOTEBOOK = "00_engine_and_layers"


@pytest.mark.graded(part="conv2d", points=3)
def test_conv2d_stride1_pad1():
    assert_case("conv2d", "stride1_pad1")


@pytest.mark.graded(part="conv2d", points=3)
def test_conv2d_stride2_pad2():
    assert_case("conv2d", "stride2_pad2")


@pytest.mark.graded(part="conv2d", points=2)
def test_conv2d_gradient():
    assert_case("conv2d", GRADIENT)

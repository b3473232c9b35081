"""Notebook 05: the LSTM step forward and backward (dlmie/kernels/lstm.py) and the masked temporal
softmax loss (dlmie/layers.py)."""

import pytest

from dlmie.checks import GRADIENT, assert_case

NOTEBOOK = "05_lstm_and_scan"


@pytest.mark.graded(part="lstm_step_forward", points=6)
def test_lstm_step_forward():
    assert_case("lstm_step_forward", "random")


@pytest.mark.graded(part="lstm_step_backward", points=5)
def test_lstm_step_backward():
    assert_case("lstm_step_backward", "random")


@pytest.mark.graded(part="lstm_step_backward", points=5)
def test_lstm_step_backward_numeric_gradient():
    assert_case("lstm_step_backward", GRADIENT)


@pytest.mark.graded(part="temporal_softmax_loss", points=3)
def test_temporal_softmax_loss():
    assert_case("temporal_softmax_loss", "random")


@pytest.mark.graded(part="temporal_softmax_loss", points=2)
def test_temporal_softmax_loss_gradient():
    assert_case("temporal_softmax_loss", GRADIENT)

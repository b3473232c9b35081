"""Notebook 05_lstm_and_scan: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "05_lstm_and_scan"


@pytest.mark.graded(part="lstm_step_forward", points=4)
def test_lstm_step_forward_random():
    assert_case("lstm_step_forward", "random")


@pytest.mark.graded(part="lstm_step_forward", points=2)
def test_lstm_step_forward_one_sequence():
    assert_case("lstm_step_forward", "one_sequence")


@pytest.mark.graded(part="lstm_step_backward", points=5)
def test_lstm_step_backward_random():
    assert_case("lstm_step_backward", "random")


@pytest.mark.graded(part="lstm_step_backward", points=5)
def test_lstm_step_backward_gradient():
    assert_case("lstm_step_backward", "gradient")


@pytest.mark.graded(part="temporal_softmax_loss", points=2)
def test_temporal_softmax_loss_random():
    assert_case("temporal_softmax_loss", "random")


@pytest.mark.graded(part="temporal_softmax_loss", points=1)
def test_temporal_softmax_loss_empty_row():
    assert_case("temporal_softmax_loss", "empty_row")


@pytest.mark.graded(part="temporal_softmax_loss", points=2)
def test_temporal_softmax_loss_gradient():
    assert_case("temporal_softmax_loss", "gradient")

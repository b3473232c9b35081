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


@pytest.mark.graded(part="lstm_recurrence", points=4)
def test_lstm_recurrence_several_steps():
    assert_case("lstm_recurrence", "several_steps")


@pytest.mark.graded(part="lstm_recurrence", points=2)
def test_lstm_recurrence_one_step():
    assert_case("lstm_recurrence", "one_step")


@pytest.mark.graded(part="lstm_recurrence", points=2)
def test_lstm_recurrence_one_sequence():
    assert_case("lstm_recurrence", "one_sequence")


@pytest.mark.graded(part="lstm_recurrence", points=1)
def test_lstm_recurrence_wh_mismatch():
    assert_case("lstm_recurrence", "wh_mismatch")


@pytest.mark.graded(part="lstm_backward_through_time", points=4)
def test_lstm_backward_through_time_random():
    assert_case("lstm_backward_through_time", "random")


@pytest.mark.graded(part="lstm_backward_through_time", points=2)
def test_lstm_backward_through_time_dh_only():
    assert_case("lstm_backward_through_time", "dh_only")


@pytest.mark.graded(part="lstm_backward_through_time", points=2)
def test_lstm_backward_through_time_dc_only_one_step():
    assert_case("lstm_backward_through_time", "dc_only_one_step")


@pytest.mark.graded(part="lstm_backward_through_time", points=5)
def test_lstm_backward_through_time_gradient():
    assert_case("lstm_backward_through_time", "gradient")


@pytest.mark.graded(part="temporal_softmax_loss", points=2)
def test_temporal_softmax_loss_random():
    assert_case("temporal_softmax_loss", "random")


@pytest.mark.graded(part="temporal_softmax_loss", points=1)
def test_temporal_softmax_loss_empty_row():
    assert_case("temporal_softmax_loss", "empty_row")


@pytest.mark.graded(part="temporal_softmax_loss", points=2)
def test_temporal_softmax_loss_gradient():
    assert_case("temporal_softmax_loss", "gradient")

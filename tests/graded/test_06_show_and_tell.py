"""Notebook 06: the Show and Tell loss (dlmie/models/show_and_tell.py; it runs the LSTM and
temporal_softmax_loss of notebook 05) and one beam-search step (dlmie/captioning/decode.py)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "06_show_and_tell"


@pytest.mark.graded(part="show_and_tell_loss", points=4)
def test_show_and_tell_loss_padded_captions():
    assert_case("show_and_tell_loss", "padded")


@pytest.mark.graded(part="show_and_tell_loss", points=4)
def test_show_and_tell_loss_short_captions():
    assert_case("show_and_tell_loss", "short")


@pytest.mark.graded(part="beam_step", points=3)
def test_beam_step_first_step():
    assert_case("beam_step", "first_step")


@pytest.mark.graded(part="beam_step", points=3)
def test_beam_step_with_finished_beams():
    assert_case("beam_step", "with_finished")

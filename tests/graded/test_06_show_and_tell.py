"""Notebook 06_show_and_tell: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "06_show_and_tell"


@pytest.mark.graded(part="show_and_tell_loss", points=4)
def test_show_and_tell_loss_padded():
    assert_case("show_and_tell_loss", "padded")


@pytest.mark.graded(part="show_and_tell_loss", points=4)
def test_show_and_tell_loss_short():
    assert_case("show_and_tell_loss", "short")


@pytest.mark.graded(part="decode_loop", points=3)
def test_decode_loop_greedy():
    assert_case("decode_loop", "greedy")


@pytest.mark.graded(part="decode_loop", points=2)
def test_decode_loop_end_first():
    assert_case("decode_loop", "end_first")


@pytest.mark.graded(part="decode_loop", points=1)
def test_decode_loop_max_length():
    assert_case("decode_loop", "max_length")


@pytest.mark.graded(part="decode_loop", points=2)
def test_decode_loop_one_sampled():
    assert_case("decode_loop", "one_sampled")


@pytest.mark.graded(part="decode_loop", points=1)
def test_decode_loop_bad_max_length():
    assert_case("decode_loop", "bad_max_length")


@pytest.mark.graded(part="beam_step", points=2)
def test_beam_step_first_step():
    assert_case("beam_step", "first_step")


@pytest.mark.graded(part="beam_step", points=2)
def test_beam_step_with_finished():
    assert_case("beam_step", "with_finished")


@pytest.mark.graded(part="beam_step", points=2)
def test_beam_step_beam_size_1():
    assert_case("beam_step", "beam_size_1")

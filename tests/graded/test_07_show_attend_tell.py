"""Notebook 07_show_attend_tell: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "07_show_attend_tell"


@pytest.mark.graded(part="attend", points=4)
def test_attend_gate():
    assert_case("attend", "gate")


@pytest.mark.graded(part="attend", points=2)
def test_attend_no_gate():
    assert_case("attend", "no_gate")


@pytest.mark.graded(part="attend", points=1)
def test_attend_one_region():
    assert_case("attend", "one_region")


@pytest.mark.graded(part="doubly_stochastic_penalty", points=1)
def test_doubly_stochastic_penalty_random():
    assert_case("doubly_stochastic_penalty", "random")


@pytest.mark.graded(part="doubly_stochastic_penalty", points=1)
def test_doubly_stochastic_penalty_empty_caption():
    assert_case("doubly_stochastic_penalty", "empty_caption")


@pytest.mark.graded(part="doubly_stochastic_penalty", points=1)
def test_doubly_stochastic_penalty_gradient():
    assert_case("doubly_stochastic_penalty", "gradient")


@pytest.mark.graded(part="soft_attention_forward", points=2)
def test_soft_attention_forward_random():
    assert_case("soft_attention_forward", "random")


@pytest.mark.graded(part="soft_attention_forward", points=1)
def test_soft_attention_forward_large_scores():
    assert_case("soft_attention_forward", "large_scores")


@pytest.mark.graded(part="soft_attention_forward", points=1)
def test_soft_attention_forward_one_region():
    assert_case("soft_attention_forward", "one_region")


@pytest.mark.graded(part="soft_attention_backward", points=3)
def test_soft_attention_backward_random():
    assert_case("soft_attention_backward", "random")


@pytest.mark.graded(part="soft_attention_backward", points=1)
def test_soft_attention_backward_one_region():
    assert_case("soft_attention_backward", "one_region")


@pytest.mark.graded(part="soft_attention_backward", points=4)
def test_soft_attention_backward_gradient():
    assert_case("soft_attention_backward", "gradient")

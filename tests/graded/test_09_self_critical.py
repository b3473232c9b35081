"""Notebook 09_self_critical: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "09_self_critical"


@pytest.mark.graded(part="self_critical_advantages", points=2)
def test_self_critical_advantages_mean():
    assert_case("self_critical_advantages", "mean")


@pytest.mark.graded(part="self_critical_advantages", points=2)
def test_self_critical_advantages_greedy():
    assert_case("self_critical_advantages", "greedy")


@pytest.mark.graded(part="self_critical_advantages", points=1)
def test_self_critical_advantages_greedy_one_sample():
    assert_case("self_critical_advantages", "greedy_one_sample")


@pytest.mark.graded(part="self_critical_advantages", points=1)
def test_self_critical_advantages_equal_rewards():
    assert_case("self_critical_advantages", "equal_rewards")


@pytest.mark.graded(part="self_critical_advantages", points=1)
def test_self_critical_advantages_mean_one_sample():
    assert_case("self_critical_advantages", "mean_one_sample")


@pytest.mark.graded(part="self_critical_advantages", points=1)
def test_self_critical_advantages_greedy_missing():
    assert_case("self_critical_advantages", "greedy_missing")


@pytest.mark.graded(part="policy_gradient_loss", points=3)
def test_policy_gradient_loss_random():
    assert_case("policy_gradient_loss", "random")


@pytest.mark.graded(part="policy_gradient_loss", points=2)
def test_policy_gradient_loss_masked_and_zero():
    assert_case("policy_gradient_loss", "masked_and_zero")


@pytest.mark.graded(part="policy_gradient_loss", points=1)
def test_policy_gradient_loss_large_scores():
    assert_case("policy_gradient_loss", "large_scores")


@pytest.mark.graded(part="policy_gradient_loss", points=1)
def test_policy_gradient_loss_one_caption():
    assert_case("policy_gradient_loss", "one_caption")


@pytest.mark.graded(part="policy_gradient_loss", points=3)
def test_policy_gradient_loss_gradient():
    assert_case("policy_gradient_loss", "gradient")


@pytest.mark.graded(part="policy_gradient_loss", points=1)
def test_policy_gradient_loss_does_not_fit():
    assert_case("policy_gradient_loss", "does_not_fit")

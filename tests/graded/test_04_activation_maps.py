"""Notebook 04_activation_maps: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "04_activation_maps"


@pytest.mark.graded(part="channel_objective", points=1)
def test_channel_objective_one_channel():
    assert_case("channel_objective", "one_channel")


@pytest.mark.graded(part="channel_objective", points=2)
def test_channel_objective_channel_per_image():
    assert_case("channel_objective", "channel_per_image")


@pytest.mark.graded(part="channel_objective", points=1)
def test_channel_objective_vector_layer():
    assert_case("channel_objective", "vector_layer")


@pytest.mark.graded(part="top_k_activations", points=3)
def test_top_k_activations_random():
    assert_case("top_k_activations", "random")


@pytest.mark.graded(part="top_k_activations", points=2)
def test_top_k_activations_ties():
    assert_case("top_k_activations", "ties")


@pytest.mark.graded(part="top_k_activations", points=1)
def test_top_k_activations_k_equals_n():
    assert_case("top_k_activations", "k_equals_n")


@pytest.mark.graded(part="top_k_activations", points=1)
def test_top_k_activations_one_unit():
    assert_case("top_k_activations", "one_unit")


@pytest.mark.graded(part="top_k_activations", points=1)
def test_top_k_activations_k_too_large():
    assert_case("top_k_activations", "k_too_large")

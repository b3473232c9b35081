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

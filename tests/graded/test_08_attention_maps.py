"""Notebook 08_attention_maps: its parts' practice cases (written by make_fixtures.py from dlmie.parts)."""

import pytest

from dlmie.checks import assert_case

NOTEBOOK = "08_attention_maps"


@pytest.mark.graded(part="attention_maps", points=1)
def test_attention_maps_wide_grid():
    assert_case("attention_maps", "wide_grid")


@pytest.mark.graded(part="attention_maps", points=1)
def test_attention_maps_one_region():
    assert_case("attention_maps", "one_region")


@pytest.mark.graded(part="attention_maps", points=1)
def test_attention_maps_does_not_fit():
    assert_case("attention_maps", "does_not_fit")


@pytest.mark.graded(part="side_shares", points=2)
def test_side_shares_random():
    assert_case("side_shares", "random")


@pytest.mark.graded(part="side_shares", points=1)
def test_side_shares_one_composite():
    assert_case("side_shares", "one_composite")


@pytest.mark.graded(part="side_shares", points=1)
def test_side_shares_unnormalized():
    assert_case("side_shares", "unnormalized")


@pytest.mark.graded(part="side_shares", points=1)
def test_side_shares_odd_width():
    assert_case("side_shares", "odd_width")

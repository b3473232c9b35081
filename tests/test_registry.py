"""Encoders and captioners by name: each name gives its own module, an unknown name says which exist."""

import pytest

from dlmie.models import show_attend_tell
from dlmie.models.captioners import CAPTIONERS, captioner_module
from dlmie.models.encoders import ENCODERS, grid_layer
from dlmie.models.registry import module_by_name


def test_names_give_their_modules():
    assert CAPTIONERS == ("show_and_tell", "show_attend_tell", "show_attend_tell_hard")
    assert [captioner_module(name).__name__ for name in CAPTIONERS] == [f"dlmie.models.{n}" for n in CAPTIONERS]
    assert captioner_module("show_attend_tell") is show_attend_tell
    assert ENCODERS == ("mobilenet_v2", "vgg16")
    assert (grid_layer("mobilenet_v2"), grid_layer("vgg16")) == ("conv_last", "conv5_3")


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown captioner 'show_tell': use one of show_and_tell, show_attend_tell, "
                                         r"show_attend_tell_hard$"):
        captioner_module("show_tell")
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet50': use one of mobilenet_v2, vgg16$"):
        grid_layer("resnet50")
    with pytest.raises(ValueError, match=r"unknown widget 'c': use one of a, b$"):
        module_by_name("widget", "c", {"a": "json", "b": "csv"})

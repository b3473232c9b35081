"""Notebook 08: attention weights upsampled onto the image (dlmie/captioning/attention.py)."""

import numpy as np
import pytest

from dlmie.captioning.attention import attention_maps
from dlmie.checks import assert_case

NOTEBOOK = "08_attention_maps"


@pytest.mark.graded(part="attention_maps", points=2)
def test_attention_maps():
    assert_case("attention_maps", "wide_grid")


@pytest.mark.graded(part="attention_maps", points=1)
def test_attention_maps_rejects_weights_that_do_not_fit_the_grid():
    with pytest.raises(ValueError, match="does not fit"):
        attention_maps(np.full((2, 6), 1 / 6), (2, 2), (4, 4))

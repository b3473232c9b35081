"""One image loader for every entry point: any mode, any size, clear errors; preprocessing round trip."""

import numpy as np
import pytest
from PIL import Image

from dlmie.images import Preprocessing, load_image


def test_modes_and_sizes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.bmp")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    rgba = np.dstack([rgb, np.zeros((20, 30), np.uint8)])  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=95)

    assert np.array_equal(load_image(tmp_path / "rgb.png"), rgb)
    assert np.array_equal(load_image(tmp_path / "rgb.bmp"), rgb)
    gray = load_image(tmp_path / "gray.png")
    assert gray.shape == (20, 30, 3) and np.array_equal(gray[..., 1], rgb[..., 0])
    assert load_image(tmp_path / "palette.png").shape == (20, 30, 3)
    assert np.all(load_image(tmp_path / "rgba.png") == 255), "transparent pixels are composited on white"
    jpeg = load_image(tmp_path / "photo.jpg", size=64)
    assert jpeg.shape == (64, 64, 3) and jpeg.dtype == np.uint8


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    with pytest.raises(ValueError, match="broken.jpg is not a readable image"):
        load_image(broken)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        load_image(text)


def test_preprocessing_round_trip_and_channel_order():
    images = np.random.default_rng(1).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    rgb = Preprocessing(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    x = rgb(images)
    assert x.shape == (2, 3, 5, 4) and x.dtype == np.float32
    assert np.allclose(x[:, 0], (images[..., 0] / 255 - 0.4) / 0.2, atol=1e-6)
    assert np.allclose(rgb.invert(x), images / 255, atol=1e-6)

    # Keras VGG-16 convention: BGR, 0-255, minus the channel means.
    bgr = Preprocessing(mean=(103.939, 116.779, 123.68), std=(1, 1, 1), channel_order="BGR", scale=255)
    x = bgr(images)
    assert np.allclose(x[:, 0], images[..., 2] - 103.939, atol=1e-4)  # channel 0 is blue
    assert np.allclose(bgr.invert(x), images / 255, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        rgb(np.zeros((4, 4)))

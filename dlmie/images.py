"""Images in and out: one loader for every entry point, and the conversions around a model.

Arrays a person looks at are (H, W, 3) uint8 RGB; arrays a model sees are (N, 3, H, W) float32,
normalized by the model's own preprocessing (see `Preprocessing`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def load_image(path, size: int | None = None) -> np.ndarray:
    """Read any image file PIL understands (JPEG, PNG, BMP, ...) as RGB.

    Grayscale and palette images are converted to RGB; an alpha channel is composited on white.
    Inputs:
    - path: the image file
    - size: if given, the image is resized (bilinear, aspect ratio not kept) to size x size
    Returns:
    - (H, W, 3) uint8
    Raises ValueError naming the file when it cannot be read as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            else:
                image = image.convert("RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path} is not a readable image ({err}); use a JPEG, PNG or BMP file") from err


@dataclass
class Preprocessing:
    """How a model wants its input: x = (image / 255 - mean) / std per channel, in `channel_order`.

    - mean, std: per-channel constants in the model's channel order, for images scaled to [0, 1]
      (scale 255 and std 1 give the "0-255 minus mean" convention of Caffe/Keras VGG-16)
    - channel_order: "RGB" or "BGR"
    - scale: what a pixel value of 1.0 means before normalization (1 or 255)
    """

    mean: tuple
    std: tuple
    channel_order: str = "RGB"
    scale: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) or (H, W, 3) uint8 RGB -> (N, 3, H, W) float32 model input."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
        x = images.astype(np.float32) * (self.scale / 255.0)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def invert(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) or (3, H, W) model input -> (N, H, W, 3) float RGB in [0, 1], clipped."""
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        images = x.transpose(0, 2, 3, 1) * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)
        if self.channel_order == "BGR":
            images = images[..., ::-1]
        return np.clip(images * (255.0 / self.scale) / 255.0, 0, 1)

    def valid_range(self) -> tuple[np.ndarray, np.ndarray]:
        """The model-input values of black and white pixels: (low, high), each (3,) float32 in the
        model's channel order, so that low[c] <= x[:, c] <= high[c] for every image."""
        low = (0.0 - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        high = (self.scale - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return low.astype(np.float32), high.astype(np.float32)

    def clip(self, x: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) model input -> the same, each channel clipped to `valid_range`."""
        low, high = self.valid_range()
        return np.clip(x, low[:, None, None], high[:, None, None]).astype(np.float32, copy=False)


# ---------------------------------------------------------------- operations on model inputs and maps


def roll(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift images circularly by dy rows and dx columns; roll(roll(x, dy, dx), -dy, -dx) is x.

    Inputs:
    - x: (..., H, W)
    - dy, dx: shifts in pixels (positive: down, right)
    Returns:
    - a new array of x's shape
    """
    return np.roll(x, (dy, dx), axis=(-2, -1))


def random_shift(max_shift: int, rng: np.random.Generator) -> tuple[int, int]:
    """A jitter: (dy, dx), each uniform in [-max_shift, max_shift]."""
    dy, dx = rng.integers(-max_shift, max_shift + 1, size=2)
    return int(dy), int(dx)


def _interpolation_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) linear-interpolation weights with pixel centres aligned (half-pixel offsets),
    as image resizing does: output pixel i samples input position (i + 0.5) * source / target - 0.5."""
    position = np.clip((np.arange(target) + 0.5) * source / target - 0.5, 0, source - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, source - 1)
    weight = position - lower
    matrix = np.zeros((target, source))
    matrix[np.arange(target), lower] += 1 - weight
    matrix[np.arange(target), upper] += weight
    return matrix


def resize_bilinear(maps: np.ndarray, size) -> np.ndarray:
    """Bilinear resizing of maps or images over their last two axes (no antialiasing).

    Used to lay an activation map (e.g. 8 x 8) over its 64 x 64 image, and to change the scale
    of images between deep-dream octaves.
    Inputs:
    - maps: (..., h, w) float
    - size: int or (H, W), the new height and width
    Returns:
    - (..., H, W) float32
    """
    maps = np.asarray(maps, np.float32)
    height, width = (size, size) if np.isscalar(size) else size
    rows = _interpolation_matrix(maps.shape[-2], height).astype(np.float32)
    cols = _interpolation_matrix(maps.shape[-1], width).astype(np.float32)
    return rows @ maps @ cols.T

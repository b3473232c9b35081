"""Figure helpers the notebooks share: grids of images and maps, heat-map overlays, signed images, saving.

Images here are (H, W, 3) RGB, uint8 or float in [0, 1]; maps are (H, W) float. Everything is
composed in float, so no value ever wraps around through uint8.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np


def as_float_image(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 or float image -> float32 in [0, 1] (uint8 divided by 255, floats clipped)."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255
    return np.clip(image.astype(np.float32), 0, 1)


def normalize(values: np.ndarray) -> np.ndarray:
    """Min-max normalization of any float array to [0, 1] (all zeros for a constant array)."""
    values = np.asarray(values, np.float32)
    spread = np.ptp(values)
    return (values - values.min()) / spread if spread > 0 else np.zeros_like(values)


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "inferno") -> np.ndarray:
    """Blend a colored heat map over an image, in float.

    The heat map is min-max normalized first, so its lowest value (a negative one included) takes
    the colormap's first (darkest, for the default) color and its highest the last.
    Inputs:
    - image: (H, W, 3) uint8 or float in [0, 1]
    - heat: (H, W) float, aligned with the image (row i, column j is the same pixel)
    - alpha: weight of the heat map's color
    - cmap: a matplotlib colormap name
    Returns:
    - (H, W, 3) float32 in [0, 1], (1 - alpha) * image + alpha * cmap(heat)
    """
    image = as_float_image(image)
    if heat.shape != image.shape[:2]:
        raise ValueError(f"heat map {heat.shape} does not match the image {image.shape[:2]}")
    color = plt.get_cmap(cmap)(normalize(heat))[..., :3].astype(np.float32)
    return (1 - alpha) * image + alpha * color


def signed_image(values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Show signed values (a gradient, an image difference) as an image around mid-grey.

    Inputs:
    - values: (H, W, 3) or (H, W) float, any sign
    - scale: 0.5 + scale * values is shown; None fills the range, scale = 0.5 / max |values|
    Returns:
    - values' shape, float32 in [0, 1]; 0 is grey 0.5, positive lighter, negative darker
    """
    values = np.asarray(values, np.float32)
    if scale is None:
        scale = 0.5 / max(float(np.abs(values).max()), 1e-12)
    return np.clip(0.5 + scale * values, 0, 1)


def wrap_title(title: str, width_inches: float) -> str:
    """An 8-point title broken into lines that fit `width_inches` (a caption under an image);
    the title's own line breaks are kept."""
    chars = max(12, int(width_inches * 16))  # about 16 characters of 8-point text per inch
    return "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))


def image_grid(images, titles=None, ncols: int = 4, cmap: str = "inferno", size: float = 2.2, boxes=None,
               title: str | None = None):
    """A grid of images and maps without axes, filled row by row.

    Inputs:
    - images: list of (H, W, 3) uint8 / float [0, 1] images or (H, W) maps (drawn with `cmap`,
      min-max scaled per map), or None for an empty cell
    - titles: list of str, one per image, or None
    - ncols: images per row
    - size: inches per cell
    - boxes: list with one (x0, y0, x1, y1) box (inclusive pixel coordinates) or None per image,
      drawn as a rectangle; or None
    - title: one line over the whole grid (the figure's suptitle), or None
    Returns the matplotlib Figure.
    """
    nrows = -(-len(images) // ncols)
    titles = None if titles is None else [wrap_title(t, size) for t in titles]
    lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    tallest = max(np.shape(image)[0] / np.shape(image)[1] for image in images if image is not None)  # height / width
    # a cell is `size` wide and as tall as its tallest image; an 8-point title line takes about 0.2 inch
    row_height = size * tallest + 0.2 * lines + 0.1
    # Constrained layout keeps a suptitle clear of the panel titles, also one a caller adds later
    # (tight_layout ignores the suptitle and lets it cover the first row's titles).
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row_height * nrows + (0.3 if title else 0)),
                             squeeze=False, layout="constrained")
    if title is not None:
        fig.suptitle(title, fontsize=9)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images) or images[i] is None:
            continue
        image = np.asarray(images[i])
        if image.ndim == 2:
            ax.imshow(image, cmap=cmap)
        else:
            ax.imshow(as_float_image(image))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        if boxes is not None and boxes[i] is not None:
            x0, y0, x1, y1 = boxes[i]  # pixel (row, column) covers [column - 0.5, column + 0.5] in imshow's axes
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1,
                                       fill=False, edgecolor="cyan", linewidth=1))
    return fig


def epoch_curves(ax, history: list, lines: dict, kept: int | None = None, style: str = "o-") -> None:
    """A training history's values per epoch on one matplotlib axis, and the epoch whose weights were kept.

    Inputs:
    - ax: the axis to draw on
    - history: one dict per epoch with "epoch" and values (a checkpoint's meta["history"]); an
      epoch without a key has no point on its line
    - lines: history key -> legend label, one line each
    - kept: the kept epoch (a dotted vertical line), or None
    - style: matplotlib format of the lines
    """
    for key, label in lines.items():
        points = [(h["epoch"], h[key]) for h in history if key in h]
        ax.plot([e for e, _ in points], [v for _, v in points], style, label=label, markersize=4)
    if kept is not None:
        ax.axvline(kept, color="gray", ls=":", label=f"kept: epoch {kept}")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)


def caption_gallery(image_dir, names: list, captions: dict, count: int = 8, ncols: int = 4):
    """Images of a split with the captions of each captioner below them.

    Inputs:
    - image_dir: the folder of the images
    - names: the M image file names, in the order of the captions
    - captions: label -> M captions (str), one line per label under each image
    - count: how many images, spread evenly over the M
    Returns the figure (image_grid's).
    """
    from dlmie.images import load_image

    shown = list(range(0, len(names), max(1, len(names) // count)))[:count]
    images = [load_image(Path(image_dir) / names[i], size=224) for i in shown]
    titles = ["\n".join(f"{label}: {texts[i]}" for label, texts in captions.items()) for i in shown]
    return image_grid(images, titles, ncols=ncols, size=3.2)


def save_figure(fig, path, dpi: int = 120) -> Path:
    """Write a figure (PNG, or whatever the suffix says), creating the folder; returns the path.

    A relative path is taken from the repository root (build/figures/... lands in the same place
    whether a notebook runs from notebooks/ or from the root)."""
    from dlmie.data import REPO_ROOT

    path = Path(path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def channel_mosaic(maps: np.ndarray, ncols: int | None = None, pad: int = 1, per_map: bool = False) -> np.ndarray:
    """Tile the channels of one layer's activations into a single map, as in the deep-visualization toolbox.

    Inputs:
    - maps: (C, h, w) float, e.g. ReLU activations of one image at one layer
    - ncols: maps per row (default: about square)
    - pad: pixels of separation between maps
    - per_map: scale each map to [0, 1] on its own; by default the whole layer shares one scale,
      so that weak and dead channels look weak and dead
    Returns:
    - (rows * (h + pad) - pad, ncols * (w + pad) - pad) float32 in [0, 1]; the separation and the
      unused cells are NaN, which imshow leaves transparent
    """
    maps = np.asarray(maps, np.float32)
    count, h, w = maps.shape
    ncols = ncols or int(np.ceil(np.sqrt(count)))
    nrows = -(-count // ncols)
    scaled = np.stack([normalize(m) for m in maps]) if per_map else normalize(maps)
    mosaic = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan, np.float32)
    for c in range(count):
        row, col = divmod(c, ncols)
        mosaic[row * (h + pad) : row * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = scaled[c]
    return mosaic

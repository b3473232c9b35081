"""Where a Show-Attend-Tell model looked: per-word attention maps over the image.

A decoded caption carries, for every generated word (and its <END>), attention weights over the
L = H x W regions of the encoder grid, region l being row l // W, column l % W (the order of
`Network.features`). Here they become images: reshaped to the grid, upsampled bilinearly to the
picture (non-negative weights stay non-negative; nothing wraps), and overlaid word by word.
"""

from __future__ import annotations

import numpy as np

from dlmie.images import resize_bilinear


def attention_maps(alpha: np.ndarray, grid: tuple, size: tuple) -> np.ndarray:
    """Attention weights as maps the size of the image (Xu et al. 2015, section 5.4: the weights
    upsampled onto the picture).

    Word k's map M_k is its weights laid on the H' x W' grid, region l at row l // W' and column
    l % W', then upsampled bilinearly to H x W with pixel centres aligned, so that each region's
    weight lands at the centre of its patch of the image and every pixel is a convex combination
    of at most four neighbouring weights.

    Inputs:
    - alpha: (K, L) weights of K words over L = H' * W' regions
    - grid: (H', W') of the encoder grid
    - size: (H, W) of the image
    Returns:
    - (K, H, W) float32 maps, non-negative like the weights; row i, column j is pixel (i, j) of the image
    Raises:
    - ValueError "attention of shape (K, L) does not fit a H' x W' grid" (naming both shapes) when
      alpha is not two-dimensional with H' * W' columns
    """
    alpha = np.asarray(alpha, np.float32)
    ### BEGIN SOLUTION
    if alpha.ndim != 2 or alpha.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"attention of shape {alpha.shape} does not fit a {grid[0]} x {grid[1]} grid")
    return resize_bilinear(alpha.reshape(len(alpha), grid[0], grid[1]), size)
    ### END SOLUTION


def attention_panels(image: np.ndarray, alpha: np.ndarray, grid: tuple) -> list:
    """The image followed by each word's attention overlaid on it.

    Inputs:
    - image: (H, W, 3) uint8 RGB, the picture the encoder saw (any size: maps are resized to it)
    - alpha: (K, L) attention weights of K words; grid: (H', W') of the encoder
    Returns K + 1 (H, W, 3) images: the image, then word k's overlay.
    """
    from dlmie.plots import heatmap_overlay

    maps = attention_maps(alpha, grid, image.shape[:2])
    return [image] + [heatmap_overlay(image, m, alpha=0.6) for m in maps]


def attention_figure(image: np.ndarray, words: list, alpha: np.ndarray, grid: tuple, ncols: int = 5, size: float = 2.2,
                     title: str | None = None):
    """A grid of the image with each word's attention overlaid (the image alone first).

    Inputs:
    - image: (H, W, 3) uint8 RGB, the picture the encoder saw (any size: maps are resized to it)
    - words: the K generated words (decoded, with "<END>" last if the caption ended)
    - alpha: (K, L) their attention weights; grid: (H', W') of the encoder
    - ncols, size: panels per row, inches per panel
    - title: a line over the whole figure (the caption, say), or None
    Returns a matplotlib Figure.
    """
    from dlmie.plots import image_grid

    return image_grid(attention_panels(image, alpha, grid), ["(image)"] + list(words), ncols=ncols, size=size,
                      title=title)


def attention_comparison_figure(rows: list, size: float = 1.6, title: str | None = None):
    """Several captions' attention, one caption per row, e.g. two encoders' models on the same images.

    Inputs:
    - rows: list of (label, image, words, alpha, grid): a row's first panel is `image` titled
      `label`, then each of the K `words` with its attention `alpha` (K, L) over the (H', W') `grid`
      overlaid; rows of fewer words end in empty cells
    - size: inches per panel; title: a line over the whole figure, or None
    Returns a matplotlib Figure.
    """
    from dlmie.plots import image_grid

    ncols = 1 + max(len(words) for _, _, words, _, _ in rows)
    panels, titles = [], []
    for label, image, words, alpha, grid in rows:
        row = attention_panels(image, alpha, grid)
        if len(row) != len(words) + 1:
            raise ValueError(f"row {label!r} has {len(words)} words but attention for {len(row) - 1}")
        blank = ncols - len(row)
        panels += row + [None] * blank
        titles += [label] + list(words) + [""] * blank
    return image_grid(panels, titles, ncols=ncols, size=size, title=title)

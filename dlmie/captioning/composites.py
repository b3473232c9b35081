"""A measurement where the right answer is known: does Show-Attend-Tell look at the object it names?

Two Tiny-ImageNet images of different classes are put side by side and captioned with both class
names, each after the side it is on, in an order chosen by a coin flip:

    on the left a goldfish and on the right a lemon        (the left object named first)
    on the right a lemon and on the left a goldfish        (the right object named first)

Why this template. Show-Attend-Tell starts from h_0 = tanh(W mean_i a_i): the mean of the grid
already tells the decoder *which* objects the image holds, in no order, but not *where* they are.
Any caption that depends only on which objects are present ("a goldfish next to a lemon", names
in alphabetical order) can therefore be produced without looking anywhere: trained on such captions, the loss
falls to its floor while the attention stays uniform. What the mean loses is the pairing of places and contents, so the
caption names each object by its side, and only attention to that side can tell which name comes
next. Under teacher forcing the attention at word t, alpha_t, depends on the words before t, so
the side word must come before the name, as here. The order is random, so a name's position in
the caption says nothing about its side. The first name can only be found by looking; the second
could also be inferred (the object not yet named), so its share shows whether the model looks
anyway. A model that does not look puts about half of its attention on the named half (chance,
0.5: the halves have the same number of regions).

Where a region is. The attention scores each region from its feature vector and h_{t-1} only; a
CNN's features say little about absolute position (the two halves, encoded apart as below, are
interchangeable), so, as Transformers do, each region's feature vector gets its position
appended: its row and its column, scaled to [-1, 1] (`with_position`). Without them "left" could
not be learned.

Class names are Tiny-ImageNet's short names (the first synonym) of one word, so each name is
generated at exactly one step, and never one of the template's words.

Each half is encoded on its own at the encoder's input size (224 x 224 for MobileNetV2) and the
two h x w grids are joined along the width into one h x 2w grid (7 x 14): region l is row
l // 2w, column l % 2w, and columns 0 .. w - 1 are exactly the left image. Encoding the halves
apart, rather than the 224 x 448 composite in one pass, keeps the left columns' features free of
the right image (the receptive fields of MobileNetV2's last layer span hundreds of pixels and
would reach across the seam), so the half a region belongs to is unambiguous; and every source
image is encoded once and reused in many composites.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dlmie.data.vocab import tokenize
from dlmie.images import resize_bilinear

SIDES = ("left", "right")
CHANCE = 0.5  # the share of the regions in one half
TEMPLATE_WORDS = {"on", "the", "a", "and", *SIDES}  # what a class name must not be


def short_name(name: str) -> str:
    """A class's short name: its first comma-separated synonym, tokenized ("goldfish, Carassius
    auratus" -> "goldfish", "Egyptian cat" -> "egyptian cat")."""
    return " ".join(tokenize(name.split(",")[0]))


def choose_classes(names, k: int, seed: int = 0) -> np.ndarray:
    """K classes that can be named in one word, distinct from each other and from the template's words.

    Inputs:
    - names: (C,) class names of the data set, label order (Tiny-ImageNet's Split.names)
    - k: how many classes; seed: of the random choice among the eligible ones
    Returns:
    - (k,) int64 class labels, sorted
    """
    short = [short_name(n) for n in names]
    eligible = [c for c, s in enumerate(short)
                if len(s.split()) == 1 and s not in TEMPLATE_WORDS and short.count(s) == 1]
    if k > len(eligible):
        raise ValueError(f"only {len(eligible)} of the {len(names)} classes have a distinct one-word name; "
                         f"asked for {k}")
    return np.sort(np.random.default_rng(seed).choice(eligible, size=k, replace=False)).astype(np.int64)


def caption(names: tuple, first: int) -> tuple[list[str], list[int], list[bool]]:
    """The caption of one composite.

    Inputs:
    - names: (name of the left object, name of the right object)
    - first: the side named first, 0 (left) or 1 (right)
    Returns:
    - tokens: the W = 11 words; sides: W ints, the side (0 left, 1 right) of the object whose
      phrase ("on the left a X", "and on the right a Y") each word belongs to; is_name: W bools,
      True at the two names
    """
    tokens, sides, is_name = [], [], []
    for i, side in enumerate((first, 1 - first)):
        words = ["and"] * i + ["on", "the", SIDES[side], "a", names[side]]
        tokens += words
        sides += [side] * len(words)
        is_name += [False] * (len(words) - 1) + [True]
    return tokens, sides, is_name


def side_by_side(left: np.ndarray, right: np.ndarray, size: int) -> np.ndarray:
    """Composite images: each source resized (bilinear) to size x size, the left one in columns 0 .. size - 1.

    Inputs:
    - left, right: (N, S, S, 3) uint8 RGB
    Returns:
    - (N, size, 2 * size, 3) uint8
    """
    return np.concatenate([upscale(left, size), upscale(right, size)], axis=2)


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3) uint8, bilinear (the encoder's input size)."""
    x = resize_bilinear(np.asarray(images, np.float32).transpose(0, 3, 1, 2), size)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def join_grids(grids: np.ndarray, left: np.ndarray, right: np.ndarray, grid: tuple) -> np.ndarray:
    """The encoder grid of composites from the grids of their halves.

    Inputs:
    - grids: (M, h * w, D) the source images' grids, regions row-major
    - left, right: (N,) int rows of grids on each side
    - grid: (h, w)
    Returns:
    - (N, h * 2w, D) float32, region l at row l // 2w, column l % 2w; columns < w are the left image
    """
    h, w = grid
    halves = [grids[rows].reshape(len(rows), h, w, -1) for rows in (left, right)]
    joined = np.concatenate(halves, axis=2)
    return joined.reshape(len(left), h * 2 * w, -1).astype(np.float32, copy=False)


def with_position(features: np.ndarray, grid: tuple) -> np.ndarray:
    """Regions' feature vectors with their position appended (see the module docstring).

    Inputs:
    - features: (N, h * w, D) regions row-major; grid: (h, w)
    Returns:
    - (N, h * w, D + 2) float32: each region's features, then its row and its column, each
      scaled linearly from [0, h - 1] (or [0, w - 1]) to [-1, 1]
    """
    h, w = grid
    rows, cols = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    position = np.broadcast_to(np.stack([rows.ravel(), cols.ravel()], axis=1), (len(features), h * w, 2))
    return np.concatenate([features, position], axis=2).astype(np.float32)


def encode(encoder, images: np.ndarray, layer: str, batch_size: int = 16):
    """Encoder grids of images, at the encoder's (square) input size, with a progress bar.

    Inputs:
    - encoder: a dlmie Network (or anything with input_size and features(images, layer,
      batch_size=, progress=) -> (N, L, D) row-major regions)
    - images: (M, S, S, 3) uint8
    Returns:
    - grids: (M, L, D) float32; grid: (h, w) with h = w = sqrt(L)
    """
    grids = encoder.features(upscale(images, encoder.input_size), layer, batch_size=batch_size, progress=True)
    side = int(round(np.sqrt(grids.shape[1])))
    if side * side != grids.shape[1]:
        raise ValueError(f"a square input gave {grids.shape[1]} regions, not a square grid")
    return grids.astype(np.float32, copy=False), (side, side)


@dataclass
class CompositeSet:
    """N captioned composites built from M source images.

    - images: (M, S, S, 3) uint8 source images; labels: (M,) int64 their classes
    - grids: (M, h * w, D) float32 their encoder grids; grid: (h, w)
    - size: the side of one half as the encoder saw it (its input size)
    - left, right: (N,) int64 rows of the source images on each side
    - tokens: N captions, each a list of W words
    - sides: (N, W) int64, per word the side (0 left, 1 right) of the object its phrase names
    - is_name: (N, W) bool, True at the class names
    """

    images: np.ndarray
    labels: np.ndarray
    grids: np.ndarray
    grid: tuple
    size: int
    left: np.ndarray
    right: np.ndarray
    tokens: list
    sides: np.ndarray
    is_name: np.ndarray

    def __len__(self) -> int:
        return len(self.left)

    @property
    def composite_grid(self) -> tuple:
        """(h, 2w): the grid the captioner attends over."""
        return self.grid[0], 2 * self.grid[1]

    def features(self, rows) -> np.ndarray:
        """(n, h * 2w, D + 2) float32: the encoder grids of the composites `rows`, with each
        region's position appended (with_position)."""
        return with_position(join_grids(self.grids, self.left[rows], self.right[rows], self.grid), self.composite_grid)

    def whitened(self, whitening) -> "CompositeSet":
        """The same composites with the source grids whitened (D -> d features per region) by a
        dlmie.data.whitening.Whitening."""
        return dataclasses.replace(self, grids=whitening(self.grids))

    def composite_images(self, rows) -> np.ndarray:
        """(n, size, 2 size, 3) uint8: the composites `rows` as the encoder saw them."""
        return side_by_side(self.images[self.left[rows]], self.images[self.right[rows]], self.size)


def make_composites(split, classes, per_class: int, count: int, encoder, layer: str, seed: int = 0) -> CompositeSet:
    """Captioned composites of two images of different classes; see the module docstring.

    Inputs:
    - split: a data set with images (M0, S, S, 3) uint8, labels (M0,) int and names (C,) str
      (a Tiny-ImageNet Split)
    - classes: (K,) the labels to use (choose_classes)
    - per_class: source images drawn per class (all of a class if it has fewer)
    - count: N, the number of composites
    - encoder, layer: the encoder and its grid layer (see encode)
    - seed: everything random here (sources, pairs, sides, orders) follows from it
    Returns a CompositeSet: the classes on the left and the right are a random ordered pair of
    distinct classes, each image a random source of its class, the order of naming a coin flip.
    """
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(split.labels == c))[:per_class] for c in classes])
    source_labels = split.labels[chosen]
    by_class = {c: np.flatnonzero(source_labels == c) for c in classes}
    pairs = np.stack([rng.choice(classes, size=2, replace=False) for _ in range(count)])  # (left, right)
    left = np.array([rng.choice(by_class[c]) for c in pairs[:, 0]], np.int64)
    right = np.array([rng.choice(by_class[c]) for c in pairs[:, 1]], np.int64)
    first = rng.integers(2, size=count)
    short = [short_name(n) for n in split.names]
    captions = [caption((short[a], short[b]), f) for (a, b), f in zip(pairs, first)]
    grids, grid = encode(encoder, split.images[chosen], layer)
    return CompositeSet(split.images[chosen], source_labels, grids, grid, encoder.input_size, left, right,
                        [c[0] for c in captions], np.array([c[1] for c in captions], np.int64),
                        np.array([c[2] for c in captions], bool))

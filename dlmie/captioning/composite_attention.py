"""Does a Show-Attend-Tell look at the object it names? Training a small one on two-object
composites (`dlmie.captioning.composites`), measuring the share of its attention on the named
object's half, and the figure of that share against chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import compile_cache
from dlmie.captioning.composites import CHANCE, CompositeSet
from dlmie.data.vocab import Vocabulary
from dlmie.models import show_attend_tell
from dlmie.training.captioner import CaptionerConfig, CaptionerTask, CaptionerTrainer
from dlmie.training.loop import LoopConfig, fit


def train_on_composites(data: CompositeSet, epochs: int, batch_size: int = 32, seed: int = 0, embed_dim: int = 64,
                    hidden_dim: int = 128, attention_dim: int = 32, dropout: float = 0.2, lr: float = 1e-2):
    """Train a small Show-Attend-Tell on composites, with the captioners' training step (Adam,
    clipping, the doubly stochastic penalty) and the one training loop, in memory (no checkpoints).

    Inputs:
    - data: the training composites
    - epochs, batch_size, seed (weights, dropout, minibatch order), the model's sizes and Adam's
      learning rate (10x the Flickr8k captioners': on whitened features the attention of this small model
      reaches a share of 0.7-0.8 on the named half within 100 steps, rather than 300)
    Returns:
    - trainer: a dlmie.training.captioner.CaptionerTrainer; its params are the trained weights
    - vocab: the Vocabulary of the captions
    - losses: (epochs * batches,) float, the training loss of every step (nats per caption)
    """
    vocab = Vocabulary.build(data.tokens)
    captioned = CaptionedComposites(data, vocab.encode(data.tokens, max_length=data.sides.shape[1]).astype(np.int64))
    extra = {"attention_dim": attention_dim}
    config = CaptionerConfig(model="show_attend_tell", embed_dim=embed_dim, hidden_dim=hidden_dim, dropout=dropout,
                             batch_size=batch_size, lr=lr, epochs=epochs, seed=seed, extra=extra)
    spec = show_attend_tell.Spec(vocab_size=len(vocab), feature_dim=data.grids.shape[-1] + 2, embed_dim=embed_dim,
                                 hidden_dim=hidden_dim, dropout=dropout, **extra)
    trainer = CaptionerTrainer(config, spec, show_attend_tell.init_params(spec, seed))
    task = CaptionerTask(trainer, captioned, None, meta_base={})
    fit(task, None, LoopConfig(epochs=epochs, checkpoint_minutes=None))
    return trainer, vocab, np.array(task.losses)


@dataclass
class CaptionedComposites:
    """Composites with their encoded captions, as `CaptionerTask` reads a training set.

    - data: a CompositeSet; captions: (N, W + 2) int64, its captions encoded by the model's vocabulary
    """

    data: CompositeSet
    captions: np.ndarray

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """((B, h * 2w, D + 2) float32 features, (B, W + 2) int64 captions) of the composites `rows`."""
        return self.data.features(rows), self.captions[rows]


def teacher_forced_attention(spec, params: dict, data: CompositeSet, vocab: Vocabulary,
                             batch_size: int = 64) -> np.ndarray:
    """The attention of a Show-Attend-Tell while it reads each composite's own caption (no dropout).

    Inputs:
    - spec, params: the model (a Spec and name -> shared variable, e.g. trainer.spec, trainer.params)
    - data: composites; vocab: the model's vocabulary
    Returns:
    - alpha: (N, W + 1, h * 2w) float32; alpha[n, t] is the attention used to generate word t of
      caption n (t = W: its <END>)
    """
    features, captions_in = pt.tensor3("features"), pt.lmatrix("captions")
    _, _, alpha = show_attend_tell.loss(spec, params, features, captions_in, train=False, return_attention=True)
    attention = compile_cache.function([features, captions_in], alpha)
    captions = vocab.encode(data.tokens, max_length=data.sides.shape[1]).astype(np.int64)
    batches = tqdm(range(0, len(data), batch_size), desc="attention", unit="batch")
    return np.concatenate([attention(data.features(np.arange(s, min(s + batch_size, len(data)))),
                                     captions[s : s + batch_size]) for s in batches])


def side_shares(alpha: np.ndarray, grid: tuple, sides: np.ndarray) -> np.ndarray:
    """The share of each word's attention on a given half of the composite: the measurement
    s_t = Σ_{i ∈ half} α_ti / Σ_i α_ti of the notebook, at each of the caption's first W steps.

    Region l of the h x w grid is row l // w, column l % w (the order of `Network.features`);
    columns 0 .. w/2 - 1 are the left half, the others the right. The share is taken of the
    step's total weight, so weights that do not sum to 1 over the regions are measured alike.

    Inputs:
    - alpha: (N, T, h * w) non-negative attention weights over an h x w grid, T >= W (steps
      after the first W, such as the <END> step, are not measured)
    - grid: (h, w), w even
    - sides: (N, W) int, the half to measure at each of the first W steps (0 left, 1 right)
    Returns:
    - (N, W) float64 in [0, 1]: the share of attention on that half at each step
    Raises:
    - ValueError "has no halves" when w is odd
    - ValueError "does not fit" when alpha is not (N, T >= W, h * w)
    """
    h, w = grid
    ### BEGIN SOLUTION
    if w % 2:
        raise ValueError(f"a {h} x {w} grid has no halves: its width must be even")
    n, steps = sides.shape
    if alpha.ndim != 3 or alpha.shape[0] != n or alpha.shape[1] < steps or alpha.shape[2] != h * w:
        raise ValueError(f"attention of shape {alpha.shape} does not fit {n} captions of {steps} words "
                         f"on a {h} x {w} grid")
    maps = np.asarray(alpha, np.float64)[:, :steps].reshape(n, steps, h, w)
    on_left = maps[..., : w // 2].sum(axis=(2, 3)) / maps.sum(axis=(2, 3))
    return np.where(sides == 0, on_left, 1.0 - on_left)
    ### END SOLUTION


def mean_and_error(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (std with ddof 1 over sqrt(n))."""
    values = np.asarray(values, np.float64).ravel()
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


@dataclass
class Measurement:
    """Where the attention went, per composite and word.

    - shares: (N, W) the attention mass on the half of the object each word's phrase names
    - is_name: (N, W) bool, True at the class names
    - alpha: (N, W + 1, h * 2w) the attention itself (for figures)
    """

    shares: np.ndarray
    is_name: np.ndarray
    alpha: np.ndarray

    @property
    def class_words(self) -> np.ndarray:
        return self.shares[self.is_name]

    @property
    def other_words(self) -> np.ndarray:
        return self.shares[~self.is_name]

    def summary(self) -> str:
        lines = []
        for title, values in (("class words", self.class_words), ("other words", self.other_words)):
            mean, error = mean_and_error(values)
            lines.append(f"{title}: share on the named object's half {mean:.3f} ± {error:.3f} "
                         f"(N = {len(values)} steps of {len(self.shares)} composites; chance {CHANCE})")
        return "\n".join(lines)


def measure(spec, params: dict, data: CompositeSet, vocab: Vocabulary, batch_size: int = 64) -> Measurement:
    """The share of attention on the named object's half, at every word of every composite's caption.

    Inputs: a Show-Attend-Tell (spec, params), its vocabulary, and held-out composites.
    Returns a Measurement; for the other words (those of "on the left a", "and on the right a")
    the half is that of the object their phrase names.
    """
    alpha = teacher_forced_attention(spec, params, data, vocab, batch_size)
    return Measurement(side_shares(alpha, data.composite_grid, data.sides), data.is_name, alpha)


def share_figure(result: Measurement, data: CompositeSet):
    """Bar charts of the share on the named object's half, against chance.

    Inputs:
    - result: a Measurement of the composites `data`
    Returns a matplotlib Figure: class words vs other words (mean ± s.e.), and per position of the
    caption (labelled with its word, or <side> / <name> where the captions differ).
    """
    import matplotlib.pyplot as plt

    words = [column[0] if len(set(column)) == 1 else ("<name>" if named else "<side>")
             for column, named in zip(zip(*data.tokens), result.is_name[0])]

    fig, (ax, ax_pos) = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [1, 3]})
    groups = [mean_and_error(result.class_words), mean_and_error(result.other_words)]
    ax.bar([0, 1], [m for m, _ in groups], yerr=[e for _, e in groups], color=["tab:orange", "tab:blue"], capsize=4)
    ax.set_xticks([0, 1], ["class words", "other words"])
    per_position = [mean_and_error(result.shares[:, p]) for p in range(result.shares.shape[1])]
    colors = ["tab:orange" if named else "tab:blue" for named in result.is_name[0]]
    ax_pos.bar(range(len(words)), [m for m, _ in per_position], yerr=[e for _, e in per_position], color=colors,
               capsize=3)
    ax_pos.set_xticks(range(len(words)), words)
    for a in (ax, ax_pos):
        a.axhline(CHANCE, color="k", linestyle="--", linewidth=1, label="chance")
        a.set_ylim(0, 1)
    ax.set_ylabel("attention on the named half")
    ax_pos.set_title("by word of the caption (the phrase's object)", fontsize=9)
    ax_pos.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig

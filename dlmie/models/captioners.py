"""Captioners by name, and the trained captioner a checkpoint holds.

    captioner = load_captioner("runs/show_and_tell/best.npz")
    decoded = captioner.caption(grids, beam_size=3)       # grids: (N, L, D) encoder features
    print(decoded.captions(captioner.vocab))

A captioner module (show_and_tell, show_attend_tell, show_attend_tell_hard) has `Spec`, `init_params`, `loss`,
`decoder_graph`, and `INPUT`: "vector" if it reads one feature vector per image (the mean of
the encoder's grid), "grid" if it attends over the grid's regions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmie import checkpoint, layers as L
from dlmie.data.vocab import Vocabulary
from dlmie.models.registry import module_by_name

_MODULES = {"show_and_tell": "dlmie.models.show_and_tell", "show_attend_tell": "dlmie.models.show_attend_tell",
            "show_attend_tell_hard": "dlmie.models.show_attend_tell_hard"}
CAPTIONERS = tuple(_MODULES)


def captioner_module(name: str):
    """The captioner module called `name`, one of CAPTIONERS; ValueError for another name."""
    return module_by_name("captioner", name, _MODULES)


def model_input(module, features: np.ndarray) -> np.ndarray:
    """Encoder features as the captioner reads them: (N, L, D) grids for a "grid" model, their
    mean over regions (N, D) for a "vector" model. Vectors pass through for a vector model."""
    features = np.asarray(features, np.float32)
    if module.INPUT == "grid":
        if features.ndim != 3:
            raise ValueError(f"{module.KIND} attends over (N, L, D) grids, got features of shape {features.shape}; "
                             "extract a grid layer (the encoder's default)")
        return features
    return features.mean(axis=1) if features.ndim == 3 else features


@dataclass
class Captioner:
    """A trained captioner in inference mode.

    - kind: one of CAPTIONERS; module: its module
    - spec: the module's Spec; params: name -> shared variable
    - vocab: Vocabulary; encoder, layer: the image features it was trained on
    - max_length: the longest caption (in words) it was trained on
    """

    kind: str
    module: object
    spec: object
    params: dict
    vocab: Vocabulary
    encoder: str
    layer: str
    max_length: int
    _decoder: object = None

    def caption(self, features: np.ndarray, beam_size: int = 1, max_length: int | None = None):
        """Decode captions for encoder features ((N, L, D) grids or (N, D) vectors).

        beam_size 1 is greedy decoding. Returns a dlmie.captioning.decode.Decoded."""
        from dlmie.captioning.decode import Decoder

        if self._decoder is None:
            self._decoder = Decoder.compile(self.module, self.spec, self.params)
        x = model_input(self.module, features)
        length = max_length or self.max_length
        if beam_size == 1:
            return self._decoder.greedy(x, max_length=length)
        return self._decoder.beam_search(x, beam_size=beam_size, max_length=length)


def load_captioner(path) -> Captioner:
    """A captioner checkpoint written by `python -m dlmie.train_captioner` (best.npz or last.npz)."""
    arrays, meta = checkpoint.load(path)
    if meta.get("kind") != "captioner":
        raise ValueError(f"{path} is a dlmie checkpoint but not a captioner (kind={meta.get('kind')!r})")
    module = captioner_module(meta["model"])
    spec = module.Spec(**meta["spec"])
    names = module.init_params(spec).keys()
    missing = [n for n in names if n not in arrays]
    if missing:
        raise ValueError(f"{path}: weights {missing[:3]} are missing; the checkpoint is damaged")
    params = L.shared_params({n: arrays[n].astype(np.float32) for n in names})
    return Captioner(meta["model"], module, spec, params, Vocabulary.from_dict(meta["vocab"]),
                     meta["encoder"], meta["layer"], meta["max_length"])


def checkpoint_meta(model: str, spec, vocab: Vocabulary, encoder: str, layer: str, max_length: int) -> dict:
    """What load_captioner needs besides the weights."""
    return {"kind": "captioner", "model": model, "spec": spec.to_dict(), "vocab": vocab.to_dict(),
            "encoder": encoder, "layer": layer, "max_length": max_length}


# The commands' captioner when none is named: the committed one with the best dev CIDEr
# (docs/training.md, "Self-critical fine-tuning").
DEFAULT_CAPTIONER = "show_attend_tell_scst"


def default_path(name: str = DEFAULT_CAPTIONER) -> Path:
    """Where the repository keeps the captioner it trained: dlmie/models/weights/NAME.npz."""
    return Path(__file__).with_name("weights") / f"{name}.npz"

"""Train a captioner (Show and Tell, Show-Attend-Tell soft or hard) on Flickr8k image features.

    python -m dlmie.train_captioner --model show_and_tell             # into runs/show_and_tell/
    python -m dlmie.train_captioner --model show_and_tell --resume    # continue exactly where it stopped
    python -m dlmie.train_captioner --model show_attend_tell --encoder vgg16
    python -m dlmie.train_captioner --model show_attend_tell_hard     # stochastic attention, REINFORCE

Captions of the train list's images are the training set, those of the dev list's images the
validation set (the official split; only images present on disk count). The image features come
from `python -m dlmie.extract_features`, run automatically into build/features/ the first time.
Training is teacher-forced cross-entropy with Adam and global-norm gradient clipping, in
minibatches of captions padded with <NULL> (masked out of the loss). After every epoch the
validation loss is measured; the best epoch's weights go to OUT/best.npz (float16), and
training stops early once the validation loss has not improved for `patience` epochs.
OUT/last.npz (weights, Adam's moments, the dropout generator, the position in the epoch) lets
--resume continue bit for bit. One JSON line per epoch goes to OUT/log.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, layers as L, optim
from dlmie.config import training_mode
from dlmie.data import flickr8k
from dlmie.data.captions import pair_features
from dlmie.data.features import read_features
from dlmie.data.vocab import Vocabulary
from dlmie.models.captioners import CAPTIONERS, captioner_module, checkpoint_meta, model_input
from dlmie.models.encoders import ENCODERS, grid_layer

FEATURES_DIR = Path("build/features")


@dataclass
class CaptionConfig:
    """Every setting of a run; stored in its checkpoints, so --resume needs none of them again."""

    model: str = "show_and_tell"
    encoder: str = "mobilenet_v2"
    embed_dim: int = 256
    hidden_dim: int = 512
    dropout: float = 0.5
    min_count: int = 2  # words seen fewer times in the training captions become <UNK>
    max_length: int = 18  # words; 96% of Flickr8k's training captions are no longer
    batch_size: int = 128
    lr: float = 1e-3
    clip: float = 5.0
    epochs: int = 50
    patience: int = 5
    seed: int = 0
    extra: dict = field(default_factory=dict)  # model-specific Spec fields (Show-Attend-Tell's)


@dataclass
class CaptionData:
    """Encoded captions of one split and the features of its images.

    - features: (M, ...) float32, as the model reads them (see captioners.model_input)
    - captions: (N, max_length + 2) int64; image_idxs: (N,) int64 into features
    - references: M lists of raw captions; image_names: M file names
    """

    features: np.ndarray
    captions: np.ndarray
    image_idxs: np.ndarray
    references: list
    image_names: list


def features_file(data_root: Path, encoder: str) -> Path:
    """The grid features of every image of a Flickr8k folder; extracted on first use."""
    from dlmie.extract_features import extract
    from dlmie.models.encoders import load_encoder

    path = FEATURES_DIR / f"flickr8k_{encoder}_{grid_layer(encoder)}.h5"
    if not path.exists():
        print(f"extracting {encoder} features of {data_root / flickr8k.IMAGE_DIR} into {path} (once)...")
        result = extract(load_encoder(encoder), grid_layer(encoder), data_root / flickr8k.IMAGE_DIR, path)
        if result.skipped:
            print(f"warning: {len(result.skipped)} unreadable images were skipped")
    return path


def load_data(split, features, vocab: Vocabulary, max_length: int, module) -> CaptionData:
    """Pair a CaptionSplit with its image features and encode its captions."""
    split, feats, _ = pair_features(split, features)
    return CaptionData(model_input(module, feats), vocab.encode(split.tokens, max_length).astype(np.int64),
                       split.image_idxs, split.references(), list(split.images))


class CaptionTrainer:
    """The compiled training step and validation loss of one captioner, and its state."""

    def __init__(self, config: CaptionConfig, spec, weights: dict):
        self.config, self.spec = config, spec
        self.module = captioner_module(config.model)
        self.params = L.shared_params(weights)
        names = sorted(self.params)
        features = pt.tensor3("features") if self.module.INPUT == "grid" else pt.matrix("features")
        captions = pt.lmatrix("captions")
        self.rng = pt.random.shared_rng(seed=config.seed)
        loss, loss_updates = self.module.loss(spec, self.params, features, captions, train=True, rng=self.rng)
        grads, norm = optim.clip_by_global_norm(pytensor.grad(loss, [self.params[n] for n in names]), config.clip)
        updates = optim.adam([self.params[n] for n in names], grads, config.lr)
        # Adam's moments, and what the loss keeps besides the generator (hard attention's baseline)
        self.optimizer = {v.name: v for v in optim.optimizer_state(updates + loss_updates,
                                                                    [self.params[n] for n in names] + [self.rng])}
        self.train_step = pytensor.function([features, captions], [loss, norm], updates=updates + loss_updates,
                                          mode=training_mode())
        val_loss, _ = self.module.loss(spec, self.params, features, captions, train=False)
        self.val_loss = pytensor.function([features, captions], val_loss)

    def weights(self) -> dict:
        return {name: p.get_value() for name, p in self.params.items()}

    def state(self) -> tuple[dict, dict]:
        """Arrays (weights, Adam's moments and step, the loss's state) and the generator's state, for last.npz."""
        arrays = self.weights()
        arrays.update({name: v.get_value() for name, v in self.optimizer.items()})
        return arrays, self.rng.get_value().bit_generator.state

    def restore(self, arrays: dict, rng_state: dict):
        for name, var in {**self.params, **self.optimizer}.items():
            var.set_value(arrays[name])
        generator = self.rng.get_value()
        generator.bit_generator.state = rng_state
        self.rng.set_value(generator)

    def mean_loss(self, data: CaptionData, batch_size: int) -> float:
        """Validation loss per caption (the training loss's normalization), without dropout."""
        total = 0.0
        for start in range(0, len(data.captions), batch_size):
            rows = slice(start, start + batch_size)
            total += float(self.val_loss(data.features[data.image_idxs[rows]], data.captions[rows])) * len(data.captions[rows])
        return total / len(data.captions)


def train(out_dir: Path, config: CaptionConfig, resume: bool, data_root: Path,
          max_minutes: float | None = None, features_path: Path | None = None):
    """Train (or continue) a captioner in out_dir; see the module docstring."""
    out_dir.mkdir(parents=True, exist_ok=True)
    last, best = out_dir / "last.npz", out_dir / "best.npz"
    if resume:
        arrays, meta = checkpoint.load(last)
        config = CaptionConfig(**meta["config"])
        print(f"resuming {last}: epoch {meta['epoch'] + 1}, step {meta['step']}")
    elif last.exists():
        raise FileExistsError(f"{last} exists: pass --resume to continue it, or choose another --out")
    module = captioner_module(config.model)
    features = read_features(features_path or features_file(data_root, config.encoder))
    train_split, dev_split = flickr8k.load_split(data_root, "train"), flickr8k.load_split(data_root, "dev")
    print(train_split.summary())
    print(dev_split.summary())
    vocab = Vocabulary.from_dict(meta["vocab"]) if resume else Vocabulary.build(train_split.tokens, config.min_count)
    train_data = load_data(train_split, features, vocab, config.max_length, module)
    dev_data = load_data(dev_split, features, vocab, config.max_length, module)
    spec = module.Spec(vocab_size=len(vocab), feature_dim=train_data.features.shape[-1], embed_dim=config.embed_dim,
                       hidden_dim=config.hidden_dim, dropout=config.dropout, **config.extra)
    print(f"{config.model}: vocabulary {len(vocab)} words, {len(train_data.captions)} training captions, "
          f"features {train_data.features.shape[1:]} from {features.encoder} {features.layer}")
    print("compiling the training step...", flush=True)
    weights = module.init_params(spec, config.seed)
    trainer = CaptionTrainer(config, spec, weights)
    meta_base = checkpoint_meta(config.model, spec, vocab, features.encoder, features.layer, config.max_length)
    if resume:
        trainer.restore(arrays, meta["rng"])
        epoch, step, history = meta["epoch"], meta["step"], meta["history"]
    else:
        epoch, step, history = 0, 0, []

    def save_last(epoch, step):
        arrays, rng_state = trainer.state()
        checkpoint.save(last, arrays, {**meta_base, "config": asdict(config), "epoch": epoch, "step": step,
                                       "history": history, "rng": rng_state})

    steps_per_epoch = math.ceil(len(train_data.captions) / config.batch_size)
    started = time.time()
    while epoch < config.epochs and not _patience_ran_out(history, config.patience):
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_data.captions))
        bar = tqdm(range(step, steps_per_epoch), initial=step, total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
        running, seen, epoch_started = 0.0, 0, time.time()
        for step in bar:
            rows = order[step * config.batch_size : (step + 1) * config.batch_size]
            loss, norm = trainer.train_step(train_data.features[train_data.image_idxs[rows]], train_data.captions[rows])
            running, seen = running + float(loss) * len(rows), seen + len(rows)
            bar.set_postfix(loss=f"{running / seen:.3f}", grad_norm=f"{float(norm):.2f}")
            if max_minutes is not None and time.time() - started > 60 * max_minutes:
                bar.close()
                save_last(epoch, step + 1)
                print(f"stopped after {max_minutes} minutes; continue with --resume --out {out_dir}")
                return
        val_loss = trainer.mean_loss(dev_data, config.batch_size)
        record = {"epoch": epoch + 1, "train_loss": round(running / max(seen, 1), 4), "val_loss": round(val_loss, 4),
                  "minutes": round((time.time() - epoch_started) / 60, 2)}
        if record["val_loss"] <= min((r["val_loss"] for r in history), default=math.inf):
            weights = {n: w.astype(np.float16) for n, w in trainer.weights().items()}
            checkpoint.save(best, weights, {**meta_base, "config": asdict(config), "epoch": epoch + 1,
                                            "history": history + [record]})
            record["best"] = True
        history.append(record)
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        tqdm.write(json.dumps(record))
        epoch, step = epoch + 1, 0
        save_last(epoch, step)
    best_record = min(history, key=lambda r: r["val_loss"])
    arrays, meta = checkpoint.load(best)  # let the kept weights carry the whole run's curve
    checkpoint.save(best, arrays, {**meta, "history": history})
    print(f"training finished after {len(history)} epochs; best: epoch {best_record['epoch']}, "
          f"val_loss {best_record['val_loss']} -> {best}")


def _patience_ran_out(history: list, patience: int) -> bool:
    """True once the last `patience` epochs brought no new best validation loss."""
    if len(history) <= patience:
        return False
    best_epoch = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    return len(history) - 1 - best_epoch >= patience


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=CAPTIONERS, default="show_and_tell")
    parser.add_argument("--encoder", choices=ENCODERS, default="mobilenet_v2")
    parser.add_argument("--out", type=Path, help="folder for last.npz, best.npz and log.jsonl (default: runs/MODEL)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.npz")
    parser.add_argument("--data", type=Path, help="a Flickr8k folder (default: datasets/flickr8k)")
    parser.add_argument("--features", type=Path, help="an extract_features .h5 of the folder's images "
                                                      "(default: build/features/flickr8k_ENCODER_LAYER.h5, made if absent)")
    parser.add_argument("--epochs", type=int, default=CaptionConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=CaptionConfig.batch_size)
    parser.add_argument("--lr", type=float, default=CaptionConfig.lr)
    parser.add_argument("--max-minutes", type=float, help="checkpoint and stop after this long")
    args = parser.parse_args(argv)
    from dlmie.data import dataset_path

    data_root = args.data or dataset_path("flickr8k")
    config = CaptionConfig(model=args.model, encoder=args.encoder, epochs=args.epochs, batch_size=args.batch_size,
                           lr=args.lr)
    train(args.out or Path("runs") / args.model, config, args.resume, data_root, args.max_minutes, args.features)


if __name__ == "__main__":
    main()

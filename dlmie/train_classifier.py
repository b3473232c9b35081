"""Train the Tiny-ImageNet classifier: SGD with momentum, random crops and flips, cosine schedule.

    python -m dlmie.train_classifier                      # train from scratch into build/classifier/
    python -m dlmie.train_classifier --resume             # continue exactly where the last run stopped
    python -m dlmie.train_classifier --export MODEL.npz   # write the trained model for dlmie.models

Training takes several hours on a laptop CPU, so it checkpoints atomically every few minutes and
at every epoch's end; `--resume` restores the weights, the optimizer's velocities, the batch-norm
statistics and the position inside the epoch. Batches and augmentations are drawn from random
generators seeded by (seed, epoch, step), so a resumed run sees exactly the batches an
uninterrupted run would have seen. Each epoch appends one JSON line to `log.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, layers as L, optim
from dlmie.config import training_mode
from dlmie.data import dataset_path
from dlmie.data.tiny_imagenet import load_split
from dlmie.images import Preprocessing
from dlmie.models import convnet
from dlmie.models.classifier import accuracy

# Our Tiny-ImageNet network, in the spirit of cs231n's: a 5x5 stride-2 stem (64 -> 32), pairs of
# 3x3 blocks that halve the grid and double the channels (32 -> 16 -> 8 -> 4), global average
# pooling and one affine layer. Sized for a 2-core CPU: 175 M multiply-adds, 2.4 M parameters.
TINY_CONVNET = convnet.ConvNetSpec(
    conv=[(64, 5, 2, 2), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1),
          (256, 3, 2, 1), (256, 3, 1, 1), (512, 3, 2, 1)],
    hidden=[],
    num_classes=100,
    input_size=64,
    global_pool=True,
)


@dataclass
class TrainConfig:
    """Every setting of a run; stored in the checkpoint, so --resume needs none of them again."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    crop_padding: int = 4
    seed: int = 0
    checkpoint_minutes: float = 5.0
    spec: dict = field(default_factory=TINY_CONVNET.to_dict)


def learning_rate(config: TrainConfig, epoch_progress: float) -> float:
    """Linear warm-up, then cosine decay to zero at the last epoch (epoch_progress in epochs)."""
    if epoch_progress < config.warmup_epochs:
        return config.lr * (epoch_progress + 1e-3) / config.warmup_epochs
    t = (epoch_progress - config.warmup_epochs) / max(config.epochs - config.warmup_epochs, 1e-9)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(t, 1.0)))


def augment(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Random translation (reflect-pad by `padding`, crop back) and horizontal flip.

    Inputs:
    - images: (N, H, W, 3) uint8
    Returns:
    - (N, H, W, 3) uint8, a new array
    """
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * padding + 1, (2, n))
    flip = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i in range(n):
        crop = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


class Trainer:
    """The compiled training and evaluation functions of one model, and the state a checkpoint holds."""

    def __init__(self, config: TrainConfig, weights: dict, preprocessing: Preprocessing):
        """weights: name -> array, exactly the names of convnet.init_params(spec)."""
        self.config = config
        self.spec = convnet.ConvNetSpec.from_dict(config.spec)
        self.preprocessing = preprocessing
        self.params = L.shared_params(weights)
        trainable = [p for name, p in self.params.items() if convnet.is_trainable(name)]
        decayed = [p for name, p in self.params.items() if name.endswith(".W")]

        x, y = pt.tensor4("x"), pt.lvector("y")
        self.lr = pytensor.shared(np.float32(config.lr), name="lr")
        scores, _, bn_updates = convnet.forward(self.spec, self.params, x, train=True)
        data_loss = L.softmax_cross_entropy(scores, y)
        loss = data_loss + L.scalar(0.5 * config.weight_decay, "float32") * sum(pt.sum(w**2) for w in decayed)
        updates = optim.momentum(trainable, pytensor.grad(loss, trainable), self.lr, config.momentum)
        self.velocities = {v.name: v for v in optim.optimizer_state(updates, trainable)}
        correct = pt.sum(pt.eq(pt.argmax(scores, axis=1), y))
        self.train_step = pytensor.function([x, y], [data_loss, correct], updates=updates + bn_updates,
                                          mode=training_mode())
        eval_scores, _, _ = convnet.forward(self.spec, self.params, x, train=False)
        self.scores = pytensor.function([x], eval_scores)

    def state(self) -> dict:
        """Weights, running statistics and velocities as NumPy arrays, for a checkpoint."""
        arrays = {name: p.get_value() for name, p in self.params.items()}
        arrays.update({name: v.get_value() for name, v in self.velocities.items()})
        return arrays

    def load_velocities(self, arrays: dict):
        for name, var in self.velocities.items():
            var.set_value(arrays[name])

@dataclass
class EpochTotals:
    """What the epoch's log line sums over all of its steps; checkpointed with the position in the
    epoch, so that an epoch split across sessions logs its whole loss, accuracy and time."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: int = 0
    seconds: float = 0.0


def save_checkpoint(path: Path, trainer: Trainer, epoch: int, step: int, history: list, totals: EpochTotals):
    meta = {
        "config": trainer.config.__dict__,
        "preprocessing": trainer.preprocessing.to_dict(),
        "epoch": epoch,
        "step": step,
        "history": history,
        "epoch_totals": totals.__dict__,
    }
    checkpoint.save(path, trainer.state(), meta)


def export_model(last: Path, out: Path, data: Path):
    """Turn a training checkpoint into the model file dlmie.models loads: float16 weights (half
    the size), the architecture, the class ids and names, and the preprocessing constants."""
    arrays, meta = checkpoint.load(last)
    spec = convnet.ConvNetSpec.from_dict(meta["config"]["spec"])
    names = convnet.init_params(spec).keys()
    split = load_split(data, "val")
    model_meta = {
        "kind": "convnet",
        "spec": spec.to_dict(),
        "wnids": split.wnids.tolist(),
        "class_names": split.names.tolist(),
        "preprocessing": meta["preprocessing"],
        "training": {"config": meta["config"], "epochs_done": meta["epoch"], "history": meta["history"]},
    }
    return checkpoint.save(out, {name: arrays[name].astype(np.float16) for name in names}, model_meta)


def train(out_dir: Path, config: TrainConfig, resume: bool, data: Path,
          max_minutes: float | None = None, max_steps: int | None = None, epochs: int | None = None):
    """Train (or, with resume, continue) a run in out_dir on the Tiny-ImageNet folder `data`.

    Stops early, with a checkpoint, after max_minutes of training or max_steps batches. With
    resume, `epochs` (if given) changes the run's length, and so its cosine schedule from the
    current step on; during the warm-up the schedule does not depend on it, so the run is then
    exactly the one that would have started with that many epochs.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / "last.npz"
    train_split, val_split = load_split(data, "train"), load_split(data, "val")

    if resume:
        arrays, meta = checkpoint.load(last)  # weights and velocities
        config = TrainConfig(**meta["config"])
        preprocessing = Preprocessing(**meta["preprocessing"])
        epoch, step, history = meta["epoch"], meta["step"], meta["history"]
        totals = EpochTotals(**meta.get("epoch_totals", {}))  # checkpoints written before EpochTotals existed have none
        if epochs is not None and epochs != config.epochs:
            print(f"the run's length changes from {config.epochs} to {epochs} epochs; "
                  "the learning-rate schedule follows the new length from here")
            config.epochs = epochs
        print(f"resuming {last}: epoch {epoch + 1}/{config.epochs}, step {step}")
    else:
        if last.exists():
            raise FileExistsError(f"{last} exists: pass --resume to continue it, or choose another --out")
        pixels = train_split.images.reshape(-1, 3) / 255.0
        preprocessing = Preprocessing(mean=tuple(pixels.mean(0).round(4).tolist()),
                                      std=tuple(pixels.std(0).round(4).tolist()))
        arrays = convnet.init_params(convnet.ConvNetSpec.from_dict(config.spec), config.seed)
        epoch, step, history, totals = 0, 0, [], EpochTotals()

    print("compiling the training step...", flush=True)
    weight_names = convnet.init_params(convnet.ConvNetSpec.from_dict(config.spec)).keys()
    trainer = Trainer(config, {name: arrays[name] for name in weight_names}, preprocessing)
    if resume:
        trainer.load_velocities(arrays)
    steps_per_epoch = len(train_split.images) // config.batch_size
    started = last_save = time.time()
    steps_done = 0
    while epoch < config.epochs:
        order = np.random.default_rng([config.seed, epoch]).permutation(len(train_split.images))
        bar = tqdm(range(step, steps_per_epoch), initial=step, total=steps_per_epoch,
                   desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch")
        resumed_at = time.time() - totals.seconds
        for step in bar:
            trainer.lr.set_value(np.float32(learning_rate(config, epoch + step / steps_per_epoch)))
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            rng = np.random.default_rng([config.seed, epoch, step])
            x = preprocessing(augment(train_split.images[index], config.crop_padding, rng))
            loss, correct = trainer.train_step(x, train_split.labels[index])
            totals.loss_sum += float(loss) * len(index)
            totals.correct += float(correct)
            totals.seen += len(index)
            totals.seconds = time.time() - resumed_at
            bar.set_postfix(loss=f"{totals.loss_sum / totals.seen:.3f}", acc=f"{totals.correct / totals.seen:.3f}",
                            lr=f"{float(trainer.lr.get_value()):.4f}")
            steps_done += 1
            out_of_time = (max_minutes is not None and time.time() - started > 60 * max_minutes) or steps_done == max_steps
            if time.time() - last_save > 60 * config.checkpoint_minutes or out_of_time:
                save_checkpoint(last, trainer, epoch, step + 1, history, totals)
                last_save = time.time()
            if out_of_time:
                bar.close()
                print(f"stopped after {steps_done} steps; continue with --resume --out {out_dir}")
                return
        top1, top5 = accuracy(lambda images: trainer.scores(preprocessing(images)), val_split.images, val_split.labels)
        seconds = time.time() - resumed_at
        seen = max(totals.seen, 1)
        record = {"epoch": epoch + 1, "train_loss": round(totals.loss_sum / seen, 4),
                  "train_acc": round(totals.correct / seen, 4), "val_top1": round(top1, 4),
                  "val_top5": round(top5, 4), "minutes": round(seconds / 60, 2),
                  "images_per_s": round(totals.seen / seconds, 1)}
        history.append(record)
        with open(out_dir / "log.jsonl", "a") as log:
            log.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
        epoch, step, totals = epoch + 1, 0, EpochTotals()
        save_checkpoint(last, trainer, epoch, step, history, totals)
        last_save = time.time()
    print(f"training finished: {history[-1] if history else 'no epochs'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/tiny_convnet"), help="folder for last.npz and log.jsonl (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.npz")
    parser.add_argument("--epochs", type=int, help=f"length of the run (default {TrainConfig.epochs}; "
                                                   "with --resume, changes the run's length)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--max-minutes", type=float, help="checkpoint and stop after this long")
    parser.add_argument("--max-steps", type=int, help="checkpoint and stop after this many batches")
    parser.add_argument("--data", type=Path, help="Tiny-ImageNet folder (default: datasets/tiny-imagenet-100-A)")
    parser.add_argument("--export", type=Path, metavar="MODEL.npz", help="write OUT/last.npz as a model file and exit")
    args = parser.parse_args(argv)
    data = args.data or dataset_path("tiny-imagenet-100-A")
    if args.export:
        print(f"wrote {export_model(args.out / 'last.npz', args.export, data)}")
        return
    config = TrainConfig(epochs=args.epochs or TrainConfig.epochs, batch_size=args.batch_size, lr=args.lr)
    train(args.out, config, args.resume, data, args.max_minutes, args.max_steps, args.epochs if args.resume else None)


if __name__ == "__main__":
    main()

"""Training the Tiny-ImageNet classifier: SGD with momentum, L2 on the weights, random translations
and flips, linear warm-up and a cosine schedule, through the one loop of `dlmie.training.loop`.

    train(Path("runs/tiny_convnet"), ClassifierConfig(), resume=False, data=dataset_path("tiny-imagenet-100-A"))
    export_model(Path("runs/tiny_convnet/last.npz"), Path("model.npz"), data)

Batches and augmentations are drawn from generators seeded by (seed, epoch, step), so a resumed
run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, compile_cache, layers as L, optim
from dlmie.config import keep_buffers_mode
from dlmie.data.tiny_imagenet import load_split
from dlmie.images import Preprocessing
from dlmie.models import convnet
from dlmie.models.classifier import accuracy
from dlmie.training.loop import EpochOrder, LoopConfig, RunDir, fit


@dataclass
class ClassifierConfig:
    """Every setting of a run; stored in the checkpoint, so resuming needs none of them again."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    crop_padding: int = 4
    seed: int = 0
    checkpoint_minutes: float = 5.0
    spec: dict = field(default_factory=convnet.TINY_CONVNET.to_dict)


def learning_rate(config: ClassifierConfig, epoch_progress: float) -> float:
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


class ClassifierTrainer:
    """The compiled training and evaluation functions of one conv net, and the state a checkpoint holds."""

    def __init__(self, config: ClassifierConfig, weights: dict, preprocessing: Preprocessing):
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
        self.train_step = compile_cache.function([x, y], [data_loss, correct], updates=updates + bn_updates,
                                                 mode=keep_buffers_mode())
        eval_scores, _, _ = convnet.forward(self.spec, self.params, x, train=False)
        self.scores = compile_cache.function([x], eval_scores)

    def state(self) -> dict:
        """Weights, running statistics and velocities as NumPy arrays, for a checkpoint."""
        arrays = {name: p.get_value() for name, p in self.params.items()}
        arrays.update({name: v.get_value() for name, v in self.velocities.items()})
        return arrays

    def load_velocities(self, arrays: dict):
        for name, var in self.velocities.items():
            var.set_value(arrays[name])


class ClassifierTask:
    """The classifier's side of `dlmie.training.loop.fit`: one augmented batch per step, validation
    accuracy at every epoch's end."""

    def __init__(self, trainer: ClassifierTrainer, train_split, val_split):
        self.trainer, self.config = trainer, trainer.config
        self.train_split, self.val_split = train_split, val_split
        self.steps_per_epoch = len(train_split.images) // self.config.batch_size
        self.order = EpochOrder(self.config.seed, len(train_split.images))

    def train_batch(self, epoch: int, step: int) -> dict:
        config, split = self.config, self.train_split
        self.trainer.lr.set_value(np.float32(learning_rate(config, epoch + step / self.steps_per_epoch)))
        index = self.order.batch(epoch, step, config.batch_size)
        rng = np.random.default_rng([config.seed, epoch, step])
        x = self.trainer.preprocessing(augment(split.images[index], config.crop_padding, rng))
        loss, correct = self.trainer.train_step(x, split.labels[index])
        return {"loss": float(loss) * len(index), "correct": float(correct), "seen": len(index)}

    def postfix(self, totals: dict) -> dict:
        seen = max(totals["seen"], 1)
        return {"loss": f"{totals['loss'] / seen:.3f}", "acc": f"{totals['correct'] / seen:.3f}",
                "lr": f"{float(self.trainer.lr.get_value()):.4f}"}

    def end_epoch(self, epoch: int, totals: dict) -> dict:
        trainer, split = self.trainer, self.val_split
        top1, top5 = accuracy(lambda images: trainer.scores(trainer.preprocessing(images)), split.images, split.labels)
        seen = max(totals.get("seen", 0), 1)
        return {"train_loss": round(totals.get("loss", 0.0) / seen, 4),
                "train_acc": round(totals.get("correct", 0.0) / seen, 4),
                "val_top1": round(top1, 4), "val_top5": round(top5, 4),
                "images_per_s": round(totals.get("seen", 0) / max(totals.get("seconds", 0.0), 1e-9), 1)}

    def arrays(self) -> dict:
        return self.trainer.state()

    def meta(self) -> dict:
        return {"config": asdict(self.config), "preprocessing": self.trainer.preprocessing.to_dict()}

    def restore(self, arrays: dict, meta: dict):
        self.trainer.load_velocities(arrays)

    def best_weights(self) -> dict:
        return {name: p.get_value().astype(np.float16) for name, p in self.trainer.params.items()}


def export_model(last: Path, out: Path, data: Path) -> Path:
    """Turn a training checkpoint into the model file dlmie.models loads: float16 weights (half
    the size), the architecture, the class ids and names, and the preprocessing constants."""
    arrays, meta = checkpoint.load(last)
    spec = convnet.ConvNetSpec.from_dict(meta["config"]["spec"])
    names = convnet.init_params(spec).keys()
    split = load_split(data, "val")
    position = meta["position"]
    model_meta = {
        "kind": "convnet",
        "spec": spec.to_dict(),
        "wnids": split.wnids.tolist(),
        "class_names": split.names.tolist(),
        "preprocessing": meta["preprocessing"],
        "training": {"config": meta["config"], "epochs_done": position["epoch"], "history": position["history"]},
    }
    return checkpoint.save(out, {name: arrays[name].astype(np.float16) for name in names}, model_meta)


def train(out_dir: Path, config: ClassifierConfig, resume: bool, data: Path, max_minutes: float | None = None,
          max_steps: int | None = None, epochs: int | None = None, init: Path | None = None):
    """Train (or, with resume, continue) a run in out_dir on the Tiny-ImageNet folder `data`.

    Stops early, with a checkpoint, after max_minutes of training or max_steps batches. With
    resume, `epochs` (if given) changes the run's length, and so its cosine schedule from the
    current step on; during the warm-up the schedule does not depend on it, so the run is then
    exactly the one that would have started with that many epochs. `init`: a model file
    (export_model's) whose weights start a new run instead of random ones, e.g. to continue
    training from committed weights with a new schedule (the velocities start at zero).
    """
    run = RunDir(out_dir)
    train_split, val_split = load_split(data, "train"), load_split(data, "val")
    meta = None
    if resume:
        arrays, meta = run.load_last()
        config = ClassifierConfig(**meta["config"])
        preprocessing = Preprocessing(**meta["preprocessing"])
        if epochs is not None and epochs != config.epochs:
            print(f"the run's length changes from {config.epochs} to {epochs} epochs; "
                  "the learning-rate schedule follows the new length from here")
            config.epochs = epochs
    else:
        run.check_fresh()
        if init is not None:
            arrays, model_meta = checkpoint.load(init)
            spec = convnet.ConvNetSpec.from_dict(config.spec)
            if model_meta.get("kind") != "convnet" or convnet.ConvNetSpec.from_dict(model_meta["spec"]) != spec:
                raise ValueError(f"{init} is not a model file of this architecture (kind convnet, {spec})")
            arrays = {name: value.astype(np.float32) for name, value in arrays.items()}
            preprocessing = Preprocessing(**model_meta["preprocessing"])
        else:
            pixels = train_split.images.reshape(-1, 3) / 255.0
            preprocessing = Preprocessing(mean=tuple(pixels.mean(0).round(4).tolist()),
                                          std=tuple(pixels.std(0).round(4).tolist()))
            arrays = convnet.init_params(convnet.ConvNetSpec.from_dict(config.spec), config.seed)

    print("compiling the training step...", flush=True)
    weight_names = convnet.init_params(convnet.ConvNetSpec.from_dict(config.spec)).keys()
    trainer = ClassifierTrainer(config, {name: arrays[name] for name in weight_names}, preprocessing)
    task = ClassifierTask(trainer, train_split, val_split)
    if resume:
        task.restore(arrays, meta)
    position = fit(task, run, LoopConfig(epochs=config.epochs, checkpoint_minutes=config.checkpoint_minutes,
                                         max_minutes=max_minutes, max_steps=max_steps), resume_meta=meta)
    if position.epoch >= config.epochs:
        print(f"training finished: {position.history[-1] if position.history else 'no epochs'}")

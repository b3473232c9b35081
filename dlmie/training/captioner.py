"""Training a captioner (Show and Tell, Show-Attend-Tell soft or hard) on image features, through the
one loop of `dlmie.training.loop`.

    train(Path("runs/show_and_tell"), CaptionerConfig(), resume=False, data_root=dataset_path("flickr8k"))

Captions of the train list's images are the training set, those of the dev list's images the
validation set (the official split; only images present on disk count). Training is teacher-forced
cross-entropy with Adam and global-norm gradient clipping, in minibatches of captions padded with
<NULL> (masked out of the loss). After every epoch the validation loss is measured; the best
epoch's weights go to best.npz (float16), and training stops early once the validation loss has
not improved for `patience` epochs. last.npz (weights, Adam's moments, the dropout generator, the
position in the epoch) lets a resumed run continue bit for bit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, compile_cache, layers as L, optim
from dlmie.config import keep_buffers_mode
from dlmie.data import flickr8k
from dlmie.data.captions import pair_features
from dlmie.data.features import extract, read_features
from dlmie.data.vocab import Vocabulary
from dlmie.models.captioners import captioner_module, checkpoint_meta, model_input
from dlmie.models.encoders import grid_layer, load_encoder
from dlmie.training.loop import EpochOrder, LoopConfig, RunDir, fit

FEATURES_DIR = Path("build/features")


@dataclass
class CaptionerConfig:
    """Every setting of a run; stored in its checkpoints, so resuming needs none of them again."""

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

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """The captions `rows` and their images' features: ((B, ...) float32, (B, T) int64)."""
        return self.features[self.image_idxs[rows]], self.captions[rows]


def features_file(data_root: Path, encoder: str) -> Path:
    """The grid features of every image of a Flickr8k folder; extracted on first use."""
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


class CaptionerTrainer:
    """The compiled training step and validation loss of one captioner, and its state.

    - train_step(features, captions) -> [loss, gradient norm before clipping] updates the weights;
      with weighted=True it takes (features, captions, weights): (N,) float32, how much each
      caption's cross-entropy counts (self-critical training's advantages)
    - val_loss(features, captions) -> the loss without dropout
    """

    def __init__(self, config: CaptionerConfig, spec, weights: dict, weighted: bool = False):
        self.config, self.spec = config, spec
        self.module = captioner_module(config.model)
        self.params = L.shared_params(weights)
        names = sorted(self.params)
        features = pt.tensor3("features") if self.module.INPUT == "grid" else pt.matrix("features")
        captions = pt.lmatrix("captions")
        inputs, weighting = [features, captions], {}
        if weighted:
            weighting["weights"] = pt.vector("weights")
            inputs.append(weighting["weights"])
        self.rng = pt.random.shared_rng(seed=config.seed)
        loss, loss_updates = self.module.loss(spec, self.params, features, captions, train=True, rng=self.rng,
                                              **weighting)
        grads, norm = optim.clip_by_global_norm(pytensor.grad(loss, [self.params[n] for n in names]), config.clip)
        updates = optim.adam([self.params[n] for n in names], grads, config.lr)
        # Adam's moments, and what the loss keeps besides the generator (hard attention's baseline)
        self.optimizer = {v.name: v for v in optim.optimizer_state(updates + loss_updates,
                                                                    [self.params[n] for n in names] + [self.rng])}
        self.train_step = compile_cache.function(inputs, [loss, norm], updates=updates + loss_updates,
                                                 mode=keep_buffers_mode())
        val_loss, _ = self.module.loss(spec, self.params, features, captions, train=False)
        self.val_loss = compile_cache.function([features, captions], val_loss)

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
        for start in range(0, len(data), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data)))
            total += float(self.val_loss(*data.batch(rows))) * len(rows)
        return total / len(data)


class CaptionerTask:
    """A captioner's side of `dlmie.training.loop.fit`: one minibatch of captions per step, the
    validation loss at every epoch's end (none when `dev` is None).

    - trainer: a CaptionerTrainer
    - train, dev: CaptionData, or any captioned set with len() and batch(rows) -> (features, captions)
    - meta_base: what every checkpoint of the run carries besides the configuration (checkpoint_meta)
    """

    def __init__(self, trainer: CaptionerTrainer, train, dev, meta_base: dict):
        self.trainer, self.config = trainer, trainer.config
        self.train, self.dev, self.meta_base = train, dev, meta_base
        self.steps_per_epoch = -(-len(train) // self.config.batch_size)
        self.order = EpochOrder(self.config.seed, len(train))
        self.losses = []  # every step's training loss (nats per caption), in this process
        self.grad_norm = float("nan")  # the last step's gradient norm, before clipping

    def train_batch(self, epoch: int, step: int) -> dict:
        rows = self.order.batch(epoch, step, self.config.batch_size)
        loss, norm = self.trainer.train_step(*self.train.batch(rows))
        self.losses.append(float(loss))
        self.grad_norm = float(norm)
        return {"loss": float(loss) * len(rows), "seen": len(rows)}

    def postfix(self, totals: dict) -> dict:
        return {"loss": f"{totals['loss'] / max(totals['seen'], 1):.3f}", "grad_norm": f"{self.grad_norm:.2f}"}

    def end_epoch(self, epoch: int, totals: dict) -> dict:
        record = {"train_loss": round(totals.get("loss", 0.0) / max(totals.get("seen", 0), 1), 4)}
        if self.dev is not None:
            record["val_loss"] = round(self.trainer.mean_loss(self.dev, self.config.batch_size), 4)
        return record

    def arrays(self) -> dict:
        return self.trainer.state()[0]

    def meta(self) -> dict:
        return {**self.meta_base, "config": asdict(self.config), "rng": self.trainer.state()[1]}

    def restore(self, arrays: dict, meta: dict):
        self.trainer.restore(arrays, meta["rng"])

    def best_weights(self) -> dict:
        return {name: w.astype(np.float16) for name, w in self.trainer.weights().items()}


@dataclass
class Prepared:
    """What a captioner run starts from (see `prepare`).

    - config: CaptionerConfig (the stored one when resuming); spec: the model's Spec
    - weights: name -> float32 array, the starting weights (random, --init's, or overwritten by
      `resume` later); module: the captioner module
    - train, dev: CaptionData; meta_base: checkpoint_meta of the run
    - resume: (arrays, meta) of last.npz when resuming, else None
    """

    config: CaptionerConfig
    spec: object
    weights: dict
    module: object
    train: CaptionData
    dev: CaptionData
    meta_base: dict
    resume: tuple | None


def prepare(run: RunDir, config: CaptionerConfig, resume: bool, data_root: Path, features_path: Path | None = None,
            init: Path | None = None, self_critical: bool = False, epochs: int | None = None) -> Prepared:
    """Load the data, vocabulary, architecture and starting weights of a run in `run`.

    Inputs: as `train`'s. Resuming takes the configuration, vocabulary and architecture stored in
    run.last; `init` takes the vocabulary, architecture and weights of a checkpoint.
    self_critical: the run is self-critical training (dlmie.training.scst); a resumed run must be
    of the same kind.
    epochs: with resume, a new length for the run (else the checkpoint's configuration decides).
    """
    meta = init_arrays = init_meta = None
    if resume:
        arrays, meta = run.load_last()
        if ("scst" in meta) != self_critical:
            kind = "self-critical" if "scst" in meta else "cross-entropy"
            raise ValueError(f"{run.last} is a {kind} run: resume it {'with' if 'scst' in meta else 'without'} --scst")
        config = CaptionerConfig(**meta["config"])
        if epochs is not None and epochs != config.epochs:
            print(f"the run's length changes from {config.epochs} to {epochs} epochs")
            config.epochs = epochs
    else:
        run.check_fresh()
        if init is not None:
            init_arrays, init_meta = checkpoint.load(init)
            if init_meta.get("kind") != "captioner" or init_meta.get("model") != config.model:
                raise ValueError(f"{init} is not a {config.model} checkpoint (kind {init_meta.get('kind')!r}, "
                                 f"model {init_meta.get('model')!r}): pass --model to match it")
            if init_meta["encoder"] != config.encoder:
                raise ValueError(f"{init} was trained on {init_meta['encoder']} features, not {config.encoder}: "
                                 f"pass --encoder {init_meta['encoder']}")
    module = captioner_module(config.model)
    features = read_features(features_path or features_file(data_root, config.encoder))
    train_split, dev_split = flickr8k.load_split(data_root, "train"), flickr8k.load_split(data_root, "dev")
    print(train_split.summary())
    print(dev_split.summary())
    stored = meta or init_meta
    vocab = Vocabulary.from_dict(stored["vocab"]) if stored else Vocabulary.build(train_split.tokens, config.min_count)
    train_data = load_data(train_split, features, vocab, config.max_length, module)
    dev_data = load_data(dev_split, features, vocab, config.max_length, module)
    if stored:
        spec = module.Spec(**stored["spec"])
        if spec.feature_dim != train_data.features.shape[-1]:
            raise ValueError(f"{init or run.last} reads {spec.feature_dim}-dimensional features; "
                             f"these are {train_data.features.shape[-1]}-dimensional")
    else:
        unknown = sorted(set(config.extra) - {f.name for f in dataclasses.fields(module.Spec)})
        if unknown:
            raise ValueError(f"{config.model} has no Spec field {', '.join(unknown)}; its fields are "
                             f"{', '.join(f.name for f in dataclasses.fields(module.Spec))}")
        spec = module.Spec(vocab_size=len(vocab), feature_dim=train_data.features.shape[-1],
                           embed_dim=config.embed_dim, hidden_dim=config.hidden_dim, dropout=config.dropout,
                           **config.extra)
    print(f"{config.model}: vocabulary {len(vocab)} words, {len(train_data.captions)} training captions, "
          f"features {train_data.features.shape[1:]} from {features.encoder} {features.layer}")
    weights = module.init_params(spec, config.seed)
    if init_arrays is not None:
        weights = {name: init_arrays[name].astype(np.float32) for name in weights}
    meta_base = checkpoint_meta(config.model, spec, vocab, features.encoder, features.layer, config.max_length)
    return Prepared(config, spec, weights, module, train_data, dev_data, meta_base,
                    (arrays, meta) if resume else None)


def train(out_dir: Path, config: CaptionerConfig, resume: bool, data_root: Path,
          max_minutes: float | None = None, features_path: Path | None = None, init: Path | None = None,
          epochs: int | None = None):
    """Train (or continue) a captioner in out_dir; see the module docstring.

    epochs: with resume, a new length for the run (else the checkpoint's configuration decides).
    init: a captioner checkpoint (best.npz, or a committed model) whose weights and vocabulary start
    a new run instead of random ones, e.g. to continue training from committed weights (Adam's
    moments start at zero); its architecture replaces config's model sizes.
    """
    run = RunDir(out_dir)
    prepared = prepare(run, config, resume, data_root, features_path, init, epochs=epochs)
    print("compiling the training step...", flush=True)
    trainer = CaptionerTrainer(prepared.config, prepared.spec, prepared.weights)
    task = CaptionerTask(trainer, prepared.train, prepared.dev, prepared.meta_base)
    if prepared.resume:
        task.restore(*prepared.resume)
    config = prepared.config
    position = fit(task, run, LoopConfig(epochs=config.epochs, monitor="val_loss", mode="min",
                                         patience=config.patience, checkpoint_minutes=5.0, max_minutes=max_minutes),
                   resume_meta=prepared.resume[1] if prepared.resume else None)
    if position.step == 0 and position.history:  # not stopped inside an epoch by max_minutes
        best = min(position.history, key=lambda r: r["val_loss"])
        print(f"training finished after {len(position.history)} epochs; best: epoch {best['epoch']}, "
              f"val_loss {best['val_loss']} -> {run.best}")

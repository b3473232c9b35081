"""The one epoch loop every model here trains with: progress bar, atomic checkpoints, exact resume,
a JSON log line per epoch, the best epoch's weights, early stopping and limits on time and steps.

    task = ClassifierTask(...)                 # what to train: see `Task`
    fit(task, RunDir("runs/tiny_convnet"), LoopConfig(epochs=20))

The loop owns *where* a run is (epoch, step inside it, the sums of the epoch so far, the history of
finished epochs) and writes it with the task's arrays into `last.npz`, so `fit(..., resume=True)`
continues exactly where a run stopped: an epoch split over several runs logs the same numbers as an
unsplit one, provided the task draws its batches from generators seeded by (seed, epoch, step).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from dlmie import checkpoint


class Task(Protocol):
    """What `fit` trains. Each method is called by the loop only.

    - steps_per_epoch: batches in one epoch
    - train_batch(epoch, step) -> dict of sums over the batch (e.g. {"loss": loss * n, "seen": n});
      the loop adds them up over the epoch, so an epoch's mean is sum / seen
    - postfix(totals) -> dict of strings for the progress bar
    - end_epoch(epoch, totals) -> the epoch's log record (train means, validation metrics)
    - arrays() -> name -> array: everything `restore` needs (weights, optimizer state)
    - meta() -> JSON-able dict stored beside them (configuration, vocabulary, generator states)
    - restore(arrays, meta): the inverse of arrays() and meta()
    - best_weights() -> name -> array: what best.npz keeps (e.g. float16 weights, no optimizer state)
    """

    steps_per_epoch: int

    def train_batch(self, epoch: int, step: int) -> dict: ...
    def postfix(self, totals: dict) -> dict: ...
    def end_epoch(self, epoch: int, totals: dict) -> dict: ...
    def arrays(self) -> dict: ...
    def meta(self) -> dict: ...
    def restore(self, arrays: dict, meta: dict) -> None: ...
    def best_weights(self) -> dict: ...


@dataclass
class LoopConfig:
    """How long and how carefully to train.

    - epochs: the run's length
    - monitor: the log record's key that decides the best epoch (None: no best.npz, no early stop)
    - mode: "min" or "max", whether a smaller or larger `monitor` is better
    - patience: stop once this many epochs brought no new best (None: never)
    - checkpoint_minutes: write last.npz at least this often inside an epoch (None: at epoch ends only)
    - max_minutes, max_steps: checkpoint and stop after this long / this many batches in this call
    """

    epochs: int
    monitor: str | None = None
    mode: str = "min"
    patience: int | None = None
    checkpoint_minutes: float | None = 5.0
    max_minutes: float | None = None
    max_steps: int | None = None


@dataclass
class Position:
    """Where a run is: epochs done, batches done in the current epoch, the sums over those batches
    (with "seconds", the time spent on them), and one log record per finished epoch."""

    epoch: int = 0
    step: int = 0
    totals: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


class EpochOrder:
    """The order in which an epoch visits n examples: a permutation seeded by (seed, epoch), so that
    a resumed run visits them exactly as an uninterrupted one. The current epoch's is kept."""

    def __init__(self, seed: int, n: int):
        self.seed, self.n = seed, n
        self._epoch, self._order = None, None

    def batch(self, epoch: int, step: int, batch_size: int) -> np.ndarray:
        """(B,) int64 indices of batch `step` of `epoch` (the last batch of an epoch may be shorter)."""
        if self._epoch != epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order[step * batch_size : (step + 1) * batch_size]


class RunDir:
    """A training run's folder: last.npz (resumable state), best.npz (the best epoch's weights),
    log.jsonl (one line per epoch). A folder holds one run: starting afresh where last.npz exists is
    refused, so nothing is overwritten by accident."""

    def __init__(self, path):
        self.path = Path(path)
        self.last, self.best, self.log = self.path / "last.npz", self.path / "best.npz", self.path / "log.jsonl"

    def check_fresh(self):
        if self.last.exists():
            raise FileExistsError(f"{self.last} exists: pass --resume to continue it, or choose another --out")

    def load_last(self) -> tuple[dict, dict]:
        """(arrays, meta) of last.npz; a FileNotFoundError says how to start a run instead."""
        if not self.last.exists():
            raise FileNotFoundError(f"{self.last} does not exist: there is no run to resume in {self.path} "
                                    "(start one without --resume)")
        return checkpoint.load(self.last)

    def append_log(self, record: dict):
        """Add one line to log.jsonl, atomically: the file is rewritten beside itself and renamed."""
        old = self.log.read_text() if self.log.exists() else ""
        fd, tmp = tempfile.mkstemp(prefix=".log.jsonl.", suffix=".part", dir=self.path)
        with os.fdopen(fd, "w") as f:
            f.write(old + json.dumps(record) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.log)


def patience_ran_out(history: list, monitor: str, mode: str, patience: int | None) -> bool:
    """True once the last `patience` epochs brought no new best value of history[i][monitor]."""
    if patience is None or len(history) <= patience:
        return False
    values = [r[monitor] for r in history]
    best = int(np.argmin(values) if mode == "min" else np.argmax(values))
    return len(history) - 1 - best >= patience


def _improves(value: float, history: list, monitor: str, mode: str) -> bool:
    previous = [r[monitor] for r in history]
    if mode == "min":
        return value <= min(previous, default=math.inf)
    return value >= max(previous, default=-math.inf)


def fit(task: Task, run: RunDir | None, config: LoopConfig, resume_meta: dict | None = None) -> Position:
    """Train `task` until config.epochs are done, patience runs out or a limit is reached.

    Inputs:
    - task: see Task; when resuming, already restored from last.npz (task.restore)
    - run: where checkpoints and the log go; None trains in memory only (no files)
    - config: see LoopConfig
    - resume_meta: the meta of the last.npz being continued (its "position"), or None to start
    Returns the Position reached. A run stopped by a limit has its last.npz written first.
    """
    if config.mode not in ("min", "max"):
        raise ValueError(f"LoopConfig.mode must be 'min' or 'max', not {config.mode!r}")
    if run is not None:
        run.path.mkdir(parents=True, exist_ok=True)
    position = Position(**resume_meta["position"]) if resume_meta else Position()
    if resume_meta:
        print(f"resuming {run.last}: epoch {position.epoch + 1}/{config.epochs}, step {position.step}")

    def save_last():
        if run is not None:
            checkpoint.save(run.last, task.arrays(), {**task.meta(), "position": asdict(position)})

    started = last_save = time.time()
    steps_done = 0
    while position.epoch < config.epochs and not patience_ran_out(position.history, config.monitor, config.mode,
                                                                   config.patience):
        bar = tqdm(range(position.step, task.steps_per_epoch), initial=position.step, total=task.steps_per_epoch,
                   desc=f"epoch {position.epoch + 1}/{config.epochs}", unit="batch")
        resumed_at = time.time() - position.totals.get("seconds", 0.0)
        for step in bar:
            for name, value in task.train_batch(position.epoch, step).items():
                position.totals[name] = position.totals.get(name, 0.0) + float(value)
            position.step = step + 1
            position.totals["seconds"] = time.time() - resumed_at
            bar.set_postfix(task.postfix(position.totals))
            steps_done += 1
            out_of_time = ((config.max_minutes is not None and time.time() - started >= 60 * config.max_minutes)
                           or steps_done == config.max_steps)
            due = config.checkpoint_minutes is not None and time.time() - last_save > 60 * config.checkpoint_minutes
            if due or out_of_time:
                save_last()
                last_save = time.time()
            if out_of_time:
                bar.close()
                where = f"; continue with --resume --out {run.path}" if run is not None else ""
                print(f"stopped after {steps_done} steps{where}")
                return position
        bar.close()
        record = {"epoch": position.epoch + 1, **task.end_epoch(position.epoch, position.totals),
                  "minutes": round(position.totals.get("seconds", 0.0) / 60, 2)}
        if config.monitor is not None and _improves(record[config.monitor], position.history, config.monitor,
                                                    config.mode):
            record["best"] = True
            if run is not None:
                checkpoint.save(run.best, task.best_weights(),
                                {**task.meta(), "epoch": record["epoch"], "history": position.history + [record]})
        position.history.append(record)
        if run is not None:
            run.append_log(record)
        tqdm.write(json.dumps(record))
        position.epoch, position.step, position.totals = position.epoch + 1, 0, {}
        save_last()
        last_save = time.time()
    if run is not None and run.best.exists():
        arrays, meta = checkpoint.load(run.best)  # the kept weights carry the whole run's curve
        checkpoint.save(run.best, arrays, {**meta, "history": position.history})
    return position

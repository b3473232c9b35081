"""Train the Tiny-ImageNet classifier: SGD with momentum, random crops and flips, cosine schedule.

    python -m dlmie.train_classifier                      # train from scratch into runs/tiny_convnet/
    python -m dlmie.train_classifier --resume             # continue exactly where the last run stopped
    python -m dlmie.train_classifier --init dlmie/models/weights/tiny_convnet.npz --out runs/more --epochs 5
    python -m dlmie.train_classifier --export MODEL.npz   # write the trained model for dlmie.models

Training takes hours on a laptop CPU, so it checkpoints atomically every few minutes and at every
epoch's end; `--resume` restores the weights, the optimizer's velocities, the batch-norm statistics
and the position inside the epoch. `--init` starts a new run from a model file's weights (a warm
restart from committed weights). Each epoch appends one JSON line to OUT/log.jsonl. The training
itself is `dlmie.training.classifier`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.cli import USER_ERRORS, report
from dlmie.data import dataset_path
from dlmie.training.classifier import ClassifierConfig, export_model, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.train_classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/tiny_convnet"),
                        help="folder for last.npz and log.jsonl (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.npz")
    parser.add_argument("--init", type=Path, metavar="MODEL.npz", help="start from this model file's weights")
    parser.add_argument("--epochs", type=int, help=f"length of the run (default {ClassifierConfig.epochs}; "
                                                   "with --resume, changes the run's length)")
    parser.add_argument("--batch-size", type=int, default=ClassifierConfig.batch_size)
    parser.add_argument("--lr", type=float, default=ClassifierConfig.lr)
    parser.add_argument("--max-minutes", type=float, help="checkpoint and stop after this long")
    parser.add_argument("--max-steps", type=int, help="checkpoint and stop after this many batches")
    parser.add_argument("--data", type=Path, help="Tiny-ImageNet folder (default: datasets/tiny-imagenet-100-A)")
    parser.add_argument("--export", type=Path, metavar="MODEL.npz", help="write OUT/last.npz as a model file and exit")
    args = parser.parse_args(argv)
    if args.resume and args.init:
        parser.error("--resume continues OUT/last.npz; --init starts a new run: pass one of them")
    try:
        data = args.data or dataset_path("tiny-imagenet-100-A")
        if args.export:
            print(f"wrote {export_model(args.out / 'last.npz', args.export, data)}")
            return 0
        config = ClassifierConfig(epochs=args.epochs or ClassifierConfig.epochs, batch_size=args.batch_size,
                                  lr=args.lr)
        train(args.out, config, args.resume, data, args.max_minutes, args.max_steps,
              args.epochs if args.resume else None, init=args.init)
        return 0
    except USER_ERRORS as err:
        return report(err)


if __name__ == "__main__":
    sys.exit(main())

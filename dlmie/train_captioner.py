"""Train a captioner (Show and Tell, Show-Attend-Tell soft or hard) on Flickr8k image features.

    python -m dlmie.train_captioner --model show_and_tell             # into runs/show_and_tell/
    python -m dlmie.train_captioner --model show_and_tell --resume    # continue exactly where it stopped
    python -m dlmie.train_captioner --model show_attend_tell --encoder vgg16
    python -m dlmie.train_captioner --model show_attend_tell_hard     # stochastic attention, REINFORCE
    python -m dlmie.train_captioner --model show_attend_tell --init dlmie/models/weights/show_attend_tell.npz --out runs/more
    python -m dlmie.train_captioner --model show_attend_tell --scst --init dlmie/models/weights/show_attend_tell.npz \
        --scst-samples 5 --scst-baseline mean --scst-lambda 0.0 --lr 5e-5 --out runs/sat_scst

The image features come from `python -m dlmie.extract_features`, run automatically into
build/features/ the first time. OUT/best.npz keeps the best epoch's weights (float16), OUT/last.npz
the resumable state, OUT/log.jsonl one line per epoch. `--init` starts a new run from a
checkpoint's weights and vocabulary (a warm restart from committed weights). `--scst` fine-tunes
such a start on CIDEr-D by self-critical sequence training, keeping the epoch with the best dev
CIDEr-D. The training itself is `dlmie.training.captioner` and `dlmie.training.scst`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.cli import USER_ERRORS, report
from dlmie.data import dataset_path
from dlmie.models.captioners import CAPTIONERS
from dlmie.models.encoders import ENCODERS
from dlmie.training.captioner import CaptionerConfig, train
from dlmie.training.scst import BASELINES, SCSTConfig, train_scst

SCST_LR, SCST_EPOCHS = 5e-5, 20


def _given(value, default):
    return default if value is None else value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.train_captioner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=CAPTIONERS, default="show_and_tell")
    parser.add_argument("--encoder", choices=ENCODERS, default="mobilenet_v2")
    parser.add_argument("--out", type=Path, help="folder for last.npz, best.npz and log.jsonl (default: runs/MODEL)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.npz")
    parser.add_argument("--init", type=Path, metavar="CKPT.npz", help="start from this checkpoint's weights")
    parser.add_argument("--data", type=Path, help="a Flickr8k folder (default: datasets/flickr8k)")
    parser.add_argument("--features", type=Path, help="an extract_features .h5 of the folder's images "
                                                      "(default: build/features/flickr8k_ENCODER_LAYER.h5, made if absent)")
    parser.add_argument("--epochs", type=int,
                        help=f"length of the run (default {CaptionerConfig.epochs}, with --scst {SCST_EPOCHS}; "
                             "with --resume, changes the run's length)")
    parser.add_argument("--patience", type=int, default=CaptionerConfig.patience,
                        help="stop after this many epochs without a better dev score")
    parser.add_argument("--batch-size", type=int, default=CaptionerConfig.batch_size)
    parser.add_argument("--lr", type=float, help=f"default {CaptionerConfig.lr}, with --scst {SCST_LR}")
    parser.add_argument("--max-minutes", type=float, help="checkpoint and stop after this long")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a field of the model's Spec, e.g. --set entropy=0.01 (repeatable)")
    scst = parser.add_argument_group("self-critical training (--scst, from --init's weights)")
    scst.add_argument("--scst", action="store_true", help="fine-tune on CIDEr-D by self-critical sequence training")
    scst.add_argument("--scst-samples", type=int, default=SCSTConfig.samples, help="captions drawn per image")
    scst.add_argument("--scst-baseline", choices=BASELINES, default=SCSTConfig.baseline,
                      help="mean: the other samples' mean reward (Luo 2020); greedy: the greedy caption's (Rennie 2017)")
    scst.add_argument("--scst-lambda", type=float, default=SCSTConfig.xe_weight,
                      help="weight of cross-entropy in lambda XE + (1 - lambda) RL")
    scst.add_argument("--scst-entropy", type=float, default=SCSTConfig.entropy, help="entropy bonus weight")
    scst.add_argument("--scst-kl", type=float, default=SCSTConfig.kl, help="weight of the KL penalty to the --init model")
    scst.add_argument("--scst-images", type=int, default=SCSTConfig.images, help="images per minibatch")
    args = parser.parse_args(argv)
    try:
        extra = dict(_spec_field(item) for item in args.set)
    except ValueError as err:
        parser.error(str(err))
    if args.resume and args.init:
        parser.error("--resume continues OUT/last.npz; --init starts a new run: pass one of them")
    config = CaptionerConfig(model=args.model, encoder=args.encoder,
                             epochs=_given(args.epochs, SCST_EPOCHS if args.scst else CaptionerConfig.epochs),
                             batch_size=args.batch_size, lr=_given(args.lr, SCST_LR if args.scst else CaptionerConfig.lr),
                             patience=args.patience, extra=extra)
    try:
        data_root = args.data or dataset_path("flickr8k")
        out = args.out or Path("runs") / (args.model + ("_scst" if args.scst else ""))
        new_length = args.epochs if args.resume else None
        if args.scst:
            scst_config = SCSTConfig(samples=args.scst_samples, baseline=args.scst_baseline, xe_weight=args.scst_lambda,
                                     entropy=args.scst_entropy, kl=args.scst_kl, images=args.scst_images)
            train_scst(out, config, scst_config, args.resume, data_root, args.max_minutes, args.features,
                       init=args.init, epochs=new_length)
        else:
            train(out, config, args.resume, data_root, args.max_minutes, args.features, init=args.init,
                  epochs=new_length)
        return 0
    except USER_ERRORS as err:
        return report(err)


def _spec_field(item: str) -> tuple[str, object]:
    """"entropy=0.01" -> ("entropy", 0.01): a number where it reads as one, else the string."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
    try:
        return name, int(value) if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        return name, value


if __name__ == "__main__":
    sys.exit(main())

"""Top-1 / top-5 accuracy of a classifier on a folder in Tiny-ImageNet layout.

    python -m dlmie.eval_classifier [--model NAME] --data DIR

DIR holds wnids.txt, words.txt, val/val_annotations.txt and val/images/. The last line printed is
`top1=0.xxx top5=0.xxx n=N`. The folder's classes must be the model's classes, in the same order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.cli import USER_ERRORS, report
from dlmie.data.tiny_imagenet import load_split
from dlmie.models.classifier import CLASSIFIERS, DEFAULT_MODEL, accuracy, load_classifier


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.eval_classifier", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(CLASSIFIERS)} (default {DEFAULT_MODEL}), or a model .npz")
    parser.add_argument("--data", type=Path, required=True, help="a Tiny-ImageNet-layout folder")
    args = parser.parse_args(argv)
    try:
        model = load_classifier(args.model)
    except USER_ERRORS as err:
        return report(err)
    split = load_split(args.data, "val", cache=False)
    if list(split.wnids) != model.class_ids:
        print(f"error: the classes of {args.data}/wnids.txt differ from the model's ({model.name})", file=sys.stderr)
        return 2
    top1, top5 = accuracy(model.probabilities, split.images, split.labels)
    print(f"top1={top1:.3f} top5={top5:.3f} n={len(split.labels)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

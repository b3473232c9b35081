"""Print the top-5 classes of image files.

    python -m dlmie.classify [--model NAME] IMAGE...

Any file PIL reads (JPEG, PNG, BMP; grayscale, RGBA, any size) is converted to RGB and resized
to the model's input size. A file that cannot be read is reported and the others still classified;
the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from dlmie import cli
from dlmie.cli import USER_ERRORS, report
from dlmie.images import load_image
from dlmie.models.classifier import CLASSIFIERS, DEFAULT_MODEL, load_classifier


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.classify", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"one of {', '.join(CLASSIFIERS)} (default {DEFAULT_MODEL}), or a model .npz")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        model = load_classifier(args.model)
    except USER_ERRORS as err:
        return report(err)
    failed = 0
    for path in args.images:
        try:
            image = load_image(path, size=model.input_size)
        except (ValueError, FileNotFoundError) as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            failed += 1
            continue
        probs = model.probabilities(image[None])[0]
        print(path)
        for k in np.argsort(-probs)[: args.top]:
            print(f"  {probs[k]:6.1%}  {model.class_names[k]} ({model.class_ids[k]})")
    return 1 if failed else 0


if __name__ == "__main__":
    cli.finish(main())

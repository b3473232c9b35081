"""Evaluate a captioner on a Flickr8k-layout folder with the COCO caption metrics.

    python -m dlmie.eval_captions --checkpoint runs/show_and_tell/best.npz --data datasets/flickr8k --split dev --beam 3

DIR holds Flicker8k_Dataset/, Flickr8k.token.txt and the Flickr_8k.*Images.txt lists. The
features of the split's images are extracted with the captioner's own encoder (images missing
from the folder are left out and counted). The last line printed is
`BLEU-1=… BLEU-2=… BLEU-3=… BLEU-4=… METEOR=… ROUGE_L=… CIDEr=…`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.cli import USER_ERRORS, report
from dlmie.captioning.metrics import evaluate, format_scores
from dlmie.captioning.splits import caption_split
from dlmie.models.captioners import default_path, load_captioner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.eval_captions", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=default_path("show_and_tell"),
                        help="a captioner checkpoint (default: the committed Show and Tell model)")
    parser.add_argument("--data", type=Path, required=True, help="a Flickr8k-layout folder")
    parser.add_argument("--split", choices=("dev", "test", "train"), default="test")
    parser.add_argument("--beam", type=int, default=3, help="beam size (1: greedy decoding)")
    parser.add_argument("--spice", action="store_true", help="also compute SPICE (downloads CoreNLP at first use)")
    parser.add_argument("--show", type=int, default=5, help="print this many example captions")
    args = parser.parse_args(argv)
    try:
        captioner = load_captioner(args.checkpoint)
        references, candidates = caption_split(captioner, args.data, args.split, args.beam)
    except USER_ERRORS as err:
        return report(err)
    for name in list(candidates)[: args.show]:
        print(f"{name}: {candidates[name]}")
    print(f"{captioner.kind} on {len(candidates)} {args.split} images, beam {args.beam}")
    print(format_scores(evaluate(references, candidates, spice=args.spice)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Caption image files with a trained captioner.

    python -m dlmie.caption [--checkpoint CKPT] [--beam K] IMAGE...

Any file PIL reads works; one line per image, `IMAGE: caption`. A file that cannot be read is
reported and the others are still captioned; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.extract_features import encode_files
from dlmie.models.captioners import default_path, load_captioner
from dlmie.models.encoders import load_encoder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.caption", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--checkpoint", type=Path, default=default_path("show_and_tell"),
                        help="a captioner checkpoint (default: the committed Show and Tell model)")
    parser.add_argument("--beam", type=int, default=3, help="beam size (1: greedy decoding)")
    args = parser.parse_args(argv)
    try:
        captioner = load_captioner(args.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    net = load_encoder(captioner.encoder)
    failed = 0
    for path in args.images:
        _, feats, skipped = next(encode_files(net, captioner.layer, path.parent, [path.name], progress=False))
        if skipped:
            failed += 1
            continue
        print(f"{path}: {captioner.caption(feats, beam_size=args.beam).captions(captioner.vocab)[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Caption image files with a trained captioner.

    python -m dlmie.caption [--checkpoint CKPT] [--beam K] IMAGE...
    python -m dlmie.caption --checkpoint SAT_CKPT --attention OUT.png IMAGE

Any file PIL reads works; one line per image, `IMAGE: caption`. A file that cannot be read is
reported and the others are still captioned; the exit status is 1 if any failed. With
--attention, a Show-Attend-Tell model also writes the figure of each word's attention map
(OUT.png for one image; OUT_<image name>.png for each of several).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie import cli
from dlmie.cli import USER_ERRORS, report
from dlmie.data.features import encode_files
from dlmie.images import load_image
from dlmie.models.captioners import DEFAULT_CAPTIONER, default_path, load_captioner
from dlmie.models.encoders import load_encoder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.caption", description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--checkpoint", type=Path, default=default_path(),
                        help=f"a captioner checkpoint (default: the committed {DEFAULT_CAPTIONER}, the best on dev)")
    parser.add_argument("--beam", type=int, default=3, help="beam size (1: greedy decoding)")
    parser.add_argument("--attention", type=Path, metavar="OUT.png", help="write the per-word attention figure")
    args = parser.parse_args(argv)
    try:
        captioner = load_captioner(args.checkpoint)
    except USER_ERRORS as err:
        return report(err)
    if args.attention and captioner.module.INPUT != "grid":
        print(f"error: --attention needs an attention model; {args.checkpoint} is {captioner.kind}", file=sys.stderr)
        return 2
    net = load_encoder(captioner.encoder)
    failed = 0
    for path in args.images:
        _, feats, skipped = next(encode_files(net, captioner.layer, path.parent, [path.name], progress=False))
        if skipped:
            failed += 1
            continue
        decoded = captioner.caption(feats, beam_size=args.beam)
        print(f"{path}: {decoded.captions(captioner.vocab)[0]}")
        if args.attention:
            out = args.attention if len(args.images) == 1 else args.attention.with_name(
                f"{args.attention.stem}_{path.stem}{args.attention.suffix}")
            write_attention_figure(out, load_image(path), decoded, captioner, net.grid_shape(captioner.layer))
            print(f"  attention figure: {out}")
    return 1 if failed else 0


def write_attention_figure(out: Path, image, decoded, captioner, grid) -> None:
    """The per-word attention figure of the first decoded caption, saved to `out`."""
    from dlmie.captioning.attention import attention_figure
    from dlmie.plots import save_figure

    words = [captioner.vocab.idx_to_word[i] for i in decoded.words[0]]
    alpha = decoded.attention[0]
    if len(alpha) > len(words):
        words.append("<END>")
    save_figure(attention_figure(image, words, alpha, grid), out)


if __name__ == "__main__":
    cli.finish(main())

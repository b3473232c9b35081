"""Evaluate a captioner on a Flickr8k-layout folder with the COCO caption metrics.

    python -m dlmie.eval_captions --checkpoint runs/show_and_tell/best.npz --data datasets/flickr8k --split dev --beam 3
    python -m dlmie.eval_captions --checkpoint runs/sat_scst/best.npz --data datasets/flickr8k --split dev \\
        --compare dlmie/models/weights/show_attend_tell.npz

DIR holds Flicker8k_Dataset/, Flickr8k.token.txt and the Flickr_8k.*Images.txt lists. The
features of the split's images are extracted with the captioner's own encoder (images missing
from the folder are left out and counted). Besides the metrics it prints the diversity of the
captions (distinct captions, words used, copies of a training caption of the folder's present
train images), 95% bootstrap intervals of BLEU-4 and CIDEr (resampling the images), and with
--compare the same for a second checkpoint and a paired bootstrap of the difference. The last
line printed is `BLEU-1=… BLEU-2=… BLEU-3=… BLEU-4=… METEOR=… ROUGE_L=… CIDEr=…` of --checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.captioning.bootstrap import bootstrap, paired_bootstrap
from dlmie.captioning.evaluation import judge
from dlmie.captioning.metrics import format_scores
from dlmie.captioning.splits import split_features
from dlmie.cli import USER_ERRORS, report
from dlmie.data import flickr8k
from dlmie.models.captioners import DEFAULT_CAPTIONER, default_path, load_captioner


def _caption(captioner, names, features, beam: int) -> dict:
    return dict(zip(names, captioner.caption(features, beam_size=beam).captions(captioner.vocab)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.eval_captions", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=default_path(),
                        help=f"a captioner checkpoint (default: the committed {DEFAULT_CAPTIONER}, the best on dev)")
    parser.add_argument("--data", type=Path, required=True, help="a Flickr8k-layout folder")
    parser.add_argument("--split", choices=("dev", "test", "train"), default="test")
    parser.add_argument("--beam", type=int, default=3, help="beam size (1: greedy decoding)")
    parser.add_argument("--compare", type=Path, metavar="CKPT",
                        help="a second captioner, judged on the same images; the difference is bootstrapped in pairs")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    parser.add_argument("--spice", action="store_true", help="also compute SPICE (downloads CoreNLP at first use)")
    parser.add_argument("--show", type=int, default=5, help="print this many example captions")
    args = parser.parse_args(argv)
    if args.compare is not None and args.compare.resolve() == args.checkpoint.resolve():
        parser.error("--compare names the --checkpoint itself: compare another checkpoint")
    try:
        captioner = load_captioner(args.checkpoint)
        other = load_captioner(args.compare) if args.compare else None
        names, features, refs = split_features(captioner, args.data, args.split)
        references = dict(zip(names, refs))
        candidates = {args.checkpoint: _caption(captioner, names, features, args.beam)}
        if other is not None:
            if (other.encoder, other.layer) != (captioner.encoder, captioner.layer):
                other_names, features, _ = split_features(other, args.data, args.split)
                if other_names != names:
                    raise ValueError(f"{args.compare}'s encoder could read {len(other_names)} of the {args.split} "
                                     f"images, {args.checkpoint}'s {len(names)}: a paired comparison needs the same")
            candidates[args.compare] = _caption(other, names, features, args.beam)
        train = flickr8k.load_split(args.data, "train")
    except USER_ERRORS as err:
        return report(err)
    judged = {path: judge(references, c, train.tokens, spice=args.spice) for path, c in candidates.items()}
    for name in names[: args.show]:
        print(f"{name}: {candidates[args.checkpoint][name]}")
        if other is not None:
            print(f"{' ' * len(name)}  {candidates[args.compare][name]}  (--compare)")
    width = max(len(str(path)) for path in candidates)
    print(f"diversity on the {len(names)} {args.split} images (copies: of the {len(train):,} captions of the "
          f"{len(train.images):,} present train images)")
    print(f"  {'checkpoint':<{width}}  distinct captions  words used  copies of a training caption")
    for path, j in judged.items():
        d = j.diversity
        print(f"  {str(path):<{width}}  {d['distinct']:>8} ({d['distinct'] / d['captions']:6.1%})  {d['vocabulary']:>10}"
              f"  {d['copied']:>12.1%}")
    print(f"95% bootstrap intervals ({args.resamples} resamples of the {len(names)} images, seed {args.seed}):")
    for path, j in judged.items():
        intervals = bootstrap(j.per_image, args.resamples, args.seed)
        print(f"  {str(path):<{width}}  " + "  ".join(f"{m} {i}" for m, i in intervals.items()))
    if other is not None:
        print(f"paired bootstrap of {args.checkpoint} - {args.compare} (the same resamples for both):")
        for metric, i in paired_bootstrap(judged[args.checkpoint].per_image, judged[args.compare].per_image,
                                          args.resamples, args.seed).items():
            print(f"  {metric:<6} {i.signed()}  {'excludes' if i.excludes_zero else 'includes'} 0: {i.verdict}")
        print(f"{other.kind} {args.compare}: {format_scores(judged[args.compare].scores)}")
    print(f"{captioner.kind} on {len(names)} {args.split} images, beam {args.beam}")
    print(format_scores(judged[args.checkpoint].scores))
    return 0


if __name__ == "__main__":
    sys.exit(main())

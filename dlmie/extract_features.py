"""Run an ImageNet encoder over a folder of images and write their features to an HDF5 file.

    python -m dlmie.extract_features --encoder mobilenet_v2 --data flickr8k --out build/features/flickr8k_mobilenet_v2.h5
    python -m dlmie.extract_features --encoder vgg16 --layer conv5_3 --data path/to/images --out feats.h5

--data is a data set (flickr8k, coco2014-val-images) or any folder; every file with an image
extension in it is encoded (resized to the encoder's input size), in sorted order. Images that
cannot be read are skipped with a warning and counted at the end. The file is written as
OUT.part and renamed to OUT when complete; if the run is interrupted, the same command resumes
from the images already in OUT.part. The extraction and the file layout are in `dlmie.data.features`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmie.cli import USER_ERRORS, report
from dlmie.data.features import extract, image_folder
from dlmie.models.encoders import ENCODERS, grid_layer, load_encoder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dlmie.extract_features", description=__doc__.split("\n")[0])
    parser.add_argument("--encoder", choices=ENCODERS, default="mobilenet_v2")
    parser.add_argument("--layer", help="layer to store (default: the encoder's last conv grid, "
                                        "vgg16 conv5_3 or mobilenet_v2 conv_last)")
    parser.add_argument("--data", required=True, help="flickr8k, coco2014-val-images, or an image folder")
    parser.add_argument("--out", type=Path, required=True, help="the .h5 file to write")
    parser.add_argument("--weights", type=Path, help="the encoder's weight file (default: the fetched one)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        folder = image_folder(args.data)
        net = load_encoder(args.encoder, args.weights)
        result = extract(net, args.layer or grid_layer(args.encoder), folder, args.out, args.batch_size,
                         args.dtype, args.overwrite)
    except USER_ERRORS as err:
        return report(err)
    if result.skipped:
        print(f"warning: {len(result.skipped)} unreadable images were skipped (listed in {result.out}:/skipped)",
              file=sys.stderr)
    print(f"wrote {result.out}: {result.encoded} images encoded now, {result.resumed} from an interrupted run, "
          f"{len(result.skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

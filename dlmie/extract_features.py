"""Run an ImageNet encoder over a folder of images and write their features to an HDF5 file.

    python -m dlmie.extract_features --encoder mobilenet_v2 --data flickr8k --out build/features/flickr8k_mobilenet_v2.h5
    python -m dlmie.extract_features --encoder vgg16 --layer conv5_3 --data path/to/images --out feats.h5

--data is a data set (flickr8k, coco2014-val-images) or any folder; every file with an image
extension in it is encoded (resized to the encoder's input size), in sorted order. Images that
cannot be read are skipped with a warning and counted at the end. The file is written as
OUT.part and renamed to OUT when complete; if the run is interrupted, the same command resumes
from the images already in OUT.part. The layout is described in `dlmie.data.features`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dlmie.images import load_image
from dlmie.models.encoders import ENCODERS, grid_layer, load_encoder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Image folders inside the data sets that hold images (data set name -> subfolder of its path).
IMAGE_SETS = {"flickr8k": "Flicker8k_Dataset", "coco2014-val-images": "."}


@dataclass
class Extraction:
    """What a run did: images encoded now, images already in the file (resumed), images skipped."""

    out: Path
    encoded: int
    resumed: int
    skipped: list


def image_folder(data: str) -> Path:
    """A data set name from IMAGE_SETS or a folder path -> the folder holding the images."""
    if data in IMAGE_SETS:
        from dlmie.data import dataset_path

        return dataset_path(data) / IMAGE_SETS[data]
    folder = Path(data)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {data!r} is neither a folder nor one of the data sets {', '.join(IMAGE_SETS)}")
    return folder


def image_files(folder: Path) -> list[str]:
    """Names (relative to folder, sorted) of the files in it whose suffix says image."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise ValueError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return names


def encode_files(net, layer: str, folder: Path, names: list, batch_size: int = 16, progress: bool = True):
    """Encode image files in batches, skipping (with a warning) those that cannot be read.

    Inputs:
    - net: a dlmie Network; layer: one of its layer names
    - folder: the folder holding the files; names: file names relative to it
    Yields, per batch: (encoded names, their features (B, ...) float32, skipped names).
    """
    bar = tqdm(total=len(names), desc=f"{net.name} {layer}", unit="img", disable=not progress)
    for start in range(0, len(names), batch_size):
        images, kept, skipped = [], [], []
        for name in names[start : start + batch_size]:
            try:
                images.append(load_image(folder / name, size=net.input_size))
                kept.append(name)
            except (ValueError, OSError) as err:
                tqdm.write(f"warning: skipping {name}: {err}", file=sys.stderr)
                skipped.append(name)
        feats = net.features(np.stack(images), layer, batch_size=len(kept)) if kept else None
        bar.update(len(names[start : start + batch_size]))
        yield kept, feats, skipped
    bar.close()


def _open_part(part: Path, attrs: dict):
    """Open (resume) or create the partial file; returns the h5py.File."""
    import h5py

    if part.exists():
        try:
            f = h5py.File(part, "a")
        except OSError:
            print(f"warning: {part} is damaged (interrupted while writing?); starting it again", file=sys.stderr)
            part.unlink()
        else:
            differs = {k: (f.attrs.get(k), v) for k, v in attrs.items() if str(f.attrs.get(k)) != str(v)}
            if differs:
                f.close()
                raise ValueError(f"{part} is an interrupted run with other settings "
                                 f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in differs.items())}); "
                                 "delete it or rerun that command")
            if "features" in f:  # features are appended before names: a run stopped in between left extra rows
                f["features"].resize(len(f["images"]), axis=0)
            return f
    f = h5py.File(part, "w")
    f.attrs.update(attrs)
    f.attrs["complete"] = 0
    text = h5py.string_dtype("utf-8")
    f.create_dataset("images", (0,), dtype=text, maxshape=(None,))
    f.create_dataset("skipped", (0,), dtype=text, maxshape=(None,))
    return f


def _append(dataset, values):
    n = len(dataset)
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values


def extract(net, layer: str, folder, out, batch_size: int = 16, dtype: str = "float16",
            overwrite: bool = False, progress: bool = True) -> Extraction:
    """Encode every image of `folder` with `net` at `layer` into the feature file `out`.

    Inputs:
    - net: a dlmie Network (see dlmie.models.encoders); layer: one of net.layer_names
    - folder: the image folder; out: the .h5 file to write (refused if it exists, unless overwrite)
    - batch_size: images per forward pass; dtype: storage type of the features (float16 halves the file)
    Returns an Extraction; raises FileExistsError, ValueError for bad arguments.
    """
    folder, out = Path(folder), Path(out)
    net.layer_output(layer)  # a clear error for a wrong layer before anything is written
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    names = image_files(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    grid = net.grid_shape(layer)
    attrs = {"encoder": net.name, "layer": layer, "source": str(folder.resolve()), "dtype": dtype}
    f = _open_part(part, attrs)
    try:
        if grid is not None:
            f.attrs["grid"] = grid
        done = {s.decode() if isinstance(s, bytes) else s for s in [*f["images"][:], *f["skipped"][:]]}
        resumed = len(f["images"])
        todo = [n for n in names if n not in done]
        encoded = 0
        for kept, feats, skipped in encode_files(net, layer, folder, todo, batch_size, progress):
            if skipped:
                _append(f["skipped"], skipped)
            if kept:
                feats = feats.astype(dtype)
                if "features" not in f:
                    f.create_dataset("features", (0, *feats.shape[1:]), dtype=dtype,
                                     maxshape=(None, *feats.shape[1:]), chunks=(1, *feats.shape[1:]))
                _append(f["features"], feats)
                _append(f["images"], kept)
                encoded += len(kept)
            f.flush()
        if "features" not in f:
            raise ValueError(f"none of the {len(names)} image files in {folder} could be read")
        skipped = [s.decode() if isinstance(s, bytes) else s for s in f["skipped"][:]]
        f.attrs["complete"] = 1
    finally:
        f.close()
    os.replace(part, out)
    return Extraction(out, encoded, resumed, skipped)


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
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result.skipped:
        print(f"warning: {len(result.skipped)} unreadable images were skipped (listed in {result.out}:/skipped)",
              file=sys.stderr)
    print(f"wrote {result.out}: {result.encoded} images encoded now, {result.resumed} from an interrupted run, "
          f"{len(result.skipped)} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

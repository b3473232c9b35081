"""The images of a Flickr8k split, encoded for a trained captioner.

    names, features, references = split_features(captioner, root, "dev")
    captions = captioner.caption(features, beam_size=3).captions(captioner.vocab)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmie.data import flickr8k
from dlmie.data.features import encode_files
from dlmie.models.encoders import load_encoder


def split_features(captioner, root: Path | None, split: str, batch_size: int = 16, net=None,
                   max_images: int | None = None):
    """Encode the present images of one Flickr8k split with the captioner's encoder.

    Inputs:
    - captioner: a dlmie.models.captioners.Captioner (its encoder and layer are used)
    - root: the Flickr8k folder (None: the fetched data set); split: "train", "dev" or "test"
    - net: that encoder, if already loaded (loading and compiling it takes a while); else it is loaded
    - max_images: encode only the first this many present images of the split
    Returns (names: M image names, features (M, ...) float32, references: M lists of captions);
    images that cannot be read are left out with a warning.
    """
    data = flickr8k.load_split(root, split)
    print(data.summary())
    if not data.images:
        raise ValueError(f"none of the {data.num_listed} images of the {split} list are in {data.image_dir}")
    net = load_encoder(captioner.encoder) if net is None else net
    names, feats = [], []
    for kept, batch, _ in encode_files(net, captioner.layer, data.image_dir, data.images[:max_images], batch_size):
        names += kept
        if kept:
            feats.append(batch)
    references = dict(zip(data.images, data.references()))
    return names, np.concatenate(feats), [references[n] for n in names]


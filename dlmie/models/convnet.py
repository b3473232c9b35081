"""Conv–batchnorm–ReLU classifiers: our Tiny-ImageNet network and cs231n's pretrained model.

Both are the same family, described by a plain `ConvNetSpec`: a stack of conv blocks
(conv → spatial batch norm → ReLU), then either flattening (cs231n) or global average pooling,
hidden affine blocks (affine → batch norm → ReLU), and a final affine layer to class scores.

Parameters live in a dict name -> shared variable, arctic-captions style, with names that say
where they belong: ``conv3.W``, ``conv3.gamma``, ``conv3.running_mean``, ``fc1.W``, ``scores.b``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
from dlmie import layers as L
from dlmie.kernels.conv import output_size as conv_output_size


@dataclass
class ConvNetSpec:
    """The architecture, as plain data (it is stored in every checkpoint).

    - conv: one (filters, size, stride, pad) per conv block
    - hidden: widths of the affine–batchnorm–ReLU blocks after the conv stack
    - num_classes: width of the score layer
    - input_size: height = width of the (square) input images
    - global_pool: average the last conv grid over space (True) or flatten it (False)
    """

    conv: list = field(default_factory=list)
    hidden: list = field(default_factory=list)
    num_classes: int = 100
    input_size: int = 64
    global_pool: bool = True

    def conv_grid(self) -> int:
        """Height (= width) of the last conv block's output."""
        size = self.input_size
        for _, k, stride, pad in self.conv:
            size = conv_output_size(size, k, stride, pad)
        return size

    def layer_names(self) -> list[str]:
        """Every named activation, input to output: conv1..convK, fc1..fcM, scores."""
        return [f"conv{i}" for i in range(1, len(self.conv) + 1)] + [
            f"fc{j}" for j in range(1, len(self.hidden) + 1)
        ] + ["scores"]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConvNetSpec":
        return cls(**{**d, "conv": [tuple(c) for c in d["conv"]]})


# Our Tiny-ImageNet network, in the spirit of cs231n's: a 5x5 stride-2 stem (64 -> 32), pairs of
# 3x3 blocks that halve the grid and double the channels (32 -> 16 -> 8 -> 4), global average
# pooling and one affine layer. Sized for a laptop CPU: 175 M multiply-adds, 2.4 M parameters.
TINY_CONVNET = ConvNetSpec(
    conv=[(64, 5, 2, 2), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1),
          (256, 3, 2, 1), (256, 3, 1, 1), (512, 3, 2, 1)],
    hidden=[],
    num_classes=100,
    input_size=64,
    global_pool=True,
)

# cs231n's PretrainedCNN (assignment 3, 2015/16): nine conv blocks, then affine-batchnorm-relu, affine.
CS231N_SPEC = ConvNetSpec(
    conv=[(64, 5, 2, 2), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (256, 3, 2, 1),
          (256, 3, 1, 1), (512, 3, 2, 1), (512, 3, 1, 1), (1024, 3, 2, 1)],
    hidden=[512],
    num_classes=100,
    input_size=64,
    global_pool=False,
)


def init_params(spec: ConvNetSpec, seed: int = 0, dtype="float32") -> dict:
    """He-initialized weights (Kaiming 2015), zero biases, unit batch-norm scale.

    Returns name -> NumPy array: convI.{W (F, C, k, k), b, gamma, beta, running_mean,
    running_var} (F,), fcJ.{W (D, H), b, gamma, beta, running_mean, running_var}, scores.{W, b}.
    """
    rng = np.random.default_rng(seed)
    params, channels = {}, 3

    def norm_params(prefix, width):
        params[f"{prefix}.gamma"] = np.ones(width)
        params[f"{prefix}.beta"] = np.zeros(width)
        params[f"{prefix}.running_mean"] = np.zeros(width)
        params[f"{prefix}.running_var"] = np.ones(width)

    for i, (filters, k, _, _) in enumerate(spec.conv, start=1):
        fan_in = channels * k * k
        params[f"conv{i}.W"] = rng.standard_normal((filters, channels, k, k)) * np.sqrt(2 / fan_in)
        params[f"conv{i}.b"] = np.zeros(filters)
        norm_params(f"conv{i}", filters)
        channels = filters
    width = channels if spec.global_pool else channels * spec.conv_grid() ** 2
    for j, hidden in enumerate(spec.hidden, start=1):
        params[f"fc{j}.W"] = rng.standard_normal((width, hidden)) * np.sqrt(2 / width)
        params[f"fc{j}.b"] = np.zeros(hidden)
        norm_params(f"fc{j}", hidden)
        width = hidden
    params["scores.W"] = rng.standard_normal((width, spec.num_classes)) * np.sqrt(1 / width)
    params["scores.b"] = np.zeros(spec.num_classes)
    return {name: value.astype(dtype) for name, value in params.items()}


def is_trainable(name: str) -> bool:
    """Running batch-norm statistics are state, not parameters: the optimizer leaves them alone."""
    return not name.endswith((".running_mean", ".running_var"))


def forward(spec: ConvNetSpec, params: dict, x, train: bool):
    """The network's symbolic forward pass.

    Inputs:
    - spec: the architecture
    - params: name -> shared variable (or any tensor), as made by `layers.shared_params(init_params(spec))`
    - x: (N, 3, H, W) preprocessed images, H = W = spec.input_size
    - train: batch statistics and running-statistic updates (True) or running statistics (False)
    Returns:
    - scores: (N, num_classes)
    - activations: dict layer name -> its output after ReLU: convI (N, F, H', W'), fcJ (N, H);
      and "scores"
    - updates: list of (running statistic, new value); empty when train is False
    """
    activations, updates = {}, []
    h = x
    for i, (_, _, stride, pad) in enumerate(spec.conv, start=1):
        p = f"conv{i}"
        h = L.conv2d(h, params[f"{p}.W"], params[f"{p}.b"], stride, pad)
        h, bn_updates = L.batchnorm(h, params[f"{p}.gamma"], params[f"{p}.beta"],
                                    params[f"{p}.running_mean"], params[f"{p}.running_var"], train)
        h = L.relu(h)
        activations[p], updates = h, updates + bn_updates
    h = L.global_avg_pool(h) if spec.global_pool else h.flatten(2)
    for j in range(1, len(spec.hidden) + 1):
        p = f"fc{j}"
        h = L.affine(h, params[f"{p}.W"], params[f"{p}.b"])
        h, bn_updates = L.batchnorm(h, params[f"{p}.gamma"], params[f"{p}.beta"],
                                    params[f"{p}.running_mean"], params[f"{p}.running_var"], train)
        h = L.relu(h)
        activations[p], updates = h, updates + bn_updates
    scores = L.affine(h, params["scores.W"], params["scores.b"])
    activations["scores"] = scores
    return scores, activations, updates

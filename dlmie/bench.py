"""Benchmarks: dlmie (PyTensor, C backend) against reference implementations.

    python -m dlmie.bench                       # every benchmark
    python -m dlmie.bench gemm_1024 --repeats 5  # some of them
    python -m dlmie.bench --list                # their names and what they measure
    python -m dlmie.bench --compile             # time to the first conv-net gradient, cold vs warm cache
    python -m dlmie.bench --threads 1           # OpenBLAS and torch on one thread each

Each benchmark prints one row per reference: our median time, the reference's median time and
the ratio ours / reference (below 1: we are faster). Ours and the reference are timed alternately
in one process (ours, reference, ours, ...), so that load changes on a shared machine weigh on both
medians alike instead of biasing the ratio. The header names the BLAS that PyTensor
links (``dlmie.config.BLAS``, chosen by ``DLMIE_BLAS``), the torch version and thread counts,
so that tables from different machines or settings can be compared. Thread counts come from
the environment (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS; default: every CPU); ``--threads N`` sets
both and restarts the process, since the libraries read them when they load.

Adding a benchmark: write a function that returns ``(ours, references)`` -- ``ours`` a callable
taking no arguments, ``references`` a dict from a reference's name to a callable (or to a string
saying why it is skipped) -- and add one line to ``BENCHMARKS``.

PyTorch is an optional extra (``pip install dlmie[bench]``); without it the torch rows say
"skipped (pip install torch)".
"""

from __future__ import annotations

import argparse
import functools
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L

TORCH_MISSING = "skipped (pip install torch)"
AGREEMENT_TOL = 1e-4

# The small conv net: conv3x3-relu-maxpool2 three times, then an affine layer to 100 classes.
IMAGE_SHAPE = (3, 64, 64)  # Tiny-ImageNet
CONV_CHANNELS = (32, 64, 128)
NUM_CLASSES = 100


# ---------------------------------------------------------------- the small conv net, three ways


def convnet_params(seed: int = 0) -> dict:
    """He-initialized float32 weights of the small conv net: w1..w3 (F, C, 3, 3), b1..b3, w4 (D, 100), b4."""
    rng = np.random.default_rng(seed)
    params, c = {}, IMAGE_SHAPE[0]
    for i, f in enumerate(CONV_CHANNELS, start=1):
        params[f"w{i}"] = rng.standard_normal((f, c, 3, 3)) * np.sqrt(2 / (c * 9))
        params[f"b{i}"] = rng.standard_normal(f) * 0.1
        c = f
    d = c * (IMAGE_SHAPE[1] // 8) * (IMAGE_SHAPE[2] // 8)
    params["w4"] = rng.standard_normal((d, NUM_CLASSES)) * np.sqrt(2 / d)
    params["b4"] = rng.standard_normal(NUM_CLASSES) * 0.1
    return {k: v.astype(np.float32) for k, v in params.items()}


def convnet_inputs(batch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 images (batch, 3, 64, 64) and upstream scores gradient dout (batch, 100)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *IMAGE_SHAPE)).astype(np.float32)
    dout = rng.standard_normal((batch, NUM_CLASSES)).astype(np.float32)
    return x, dout


def compile_convnet(params: dict):
    """dlmie: one compiled PyTensor function (x, dout) -> (scores, dx), dx = d sum(scores * dout) / dx.

    With dout one-hot in class k, dx is the saliency map of class k. The batch size is left
    free, so one compiled function serves every batch size.
    """
    p = {k: pytensor.shared(v, name=k, shape=v.shape) for k, v in params.items()}
    x = pt.tensor("x", dtype="float32", shape=(None, *IMAGE_SHAPE))
    dout = pt.matrix("dout", dtype="float32")
    h = x
    for i in range(1, len(CONV_CHANNELS) + 1):
        h = L.max_pool(L.relu(L.conv2d(h, p[f"w{i}"], p[f"b{i}"], stride=1, pad=1)), 2)
    scores = L.affine(h, p["w4"], p["b4"])
    dx = pytensor.grad(pt.sum(scores * dout), x)
    return pytensor.function([x, dout], [scores, dx])


@functools.cache
def _compiled_convnet():
    return compile_convnet(convnet_params())


def torch_convnet(params: dict):
    """PyTorch CPU: the same net and weights; returns (x, dout) -> (scores, dx) as NumPy arrays,
    or None when torch is not installed. Weights do not require gradients, so backward computes
    only the input gradient, as ours does."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    t = {k: torch.from_numpy(v) for k, v in params.items()}
    w4 = t["w4"].T.contiguous()

    def run(x, dout):
        x = torch.from_numpy(x).requires_grad_()
        h = x
        for i in range(1, len(CONV_CHANNELS) + 1):
            h = F.max_pool2d(F.relu(F.conv2d(h, t[f"w{i}"], t[f"b{i}"], padding=1)), 2)
        scores = F.linear(h.flatten(1), w4, t["b4"])
        scores.backward(torch.from_numpy(dout))
        return scores.detach().numpy(), x.grad.numpy()

    return run


def _conv_forward(x, w, b):
    """3x3 convolution, stride 1, pad 1, by im2col + one matmul; returns (out, cache)."""
    n, c, h, width = x.shape
    f = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
    cols = windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * 9, n * h * width)
    out = w.reshape(f, -1) @ cols + b[:, None]  # (F, N*H*W)
    return out.reshape(f, n, h, width).transpose(1, 0, 2, 3), (x.shape, w)


def _conv_backward(dout, cache):
    """Input gradient of `_conv_forward`: matmul back to columns, then col2im by 9 shifted adds."""
    (n, c, h, width), w = cache
    f = w.shape[0]
    dcols = w.reshape(f, -1).T @ dout.transpose(1, 0, 2, 3).reshape(f, -1)
    dcols = dcols.reshape(c, 3, 3, n, h, width)
    dxp = np.zeros((c, n, h + 2, width + 2), dtype=dout.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + h, j : j + width] += dcols[:, i, j]
    return dxp[:, :, 1:-1, 1:-1].transpose(1, 0, 2, 3)


def _relu_pool_forward(a):
    """max_pool2(relu(a)) on non-overlapping 2x2 blocks; returns (out, cache)."""
    n, c, h, w = a.shape
    blocks = np.maximum(a, 0).reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    return out, (a, blocks, out)


def _relu_pool_backward(dout, cache):
    """Gradient to every tied maximum of its window (as PyTensor), then through the relu."""
    a, blocks, out = cache
    mask = blocks == out[:, :, :, None, :, None]
    return (mask * dout[:, :, :, None, :, None]).reshape(a.shape) * (a > 0)


def numpy_convnet(params: dict):
    """Plain NumPy: im2col forward and hand-written backward; returns (x, dout) -> (scores, dx)."""

    def run(x, dout):
        caches, h = [], x
        for i in range(1, len(CONV_CHANNELS) + 1):
            a, conv_cache = _conv_forward(h, params[f"w{i}"], params[f"b{i}"])
            h, pool_cache = _relu_pool_forward(a)
            caches.append((conv_cache, pool_cache))
        scores = h.reshape(len(x), -1) @ params["w4"] + params["b4"]
        dh = (dout @ params["w4"].T).reshape(h.shape)
        for conv_cache, pool_cache in reversed(caches):
            dh = _conv_backward(_relu_pool_backward(dh, pool_cache), conv_cache)
        return scores, dh

    return run


def scaled_error(x, y) -> float:
    """max |x - y| / max |y|: the error relative to the array's scale. Elementwise relative error
    (``rel_error``) is dominated by gradient entries that cancel to ~0 in float32."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))


def convnet_agreement(batch: int = 2) -> dict:
    """Scaled errors of dlmie's and torch's (scores, dx) against the NumPy reference.

    Returns {"dlmie scores": err, "dlmie dx": err, "torch scores": ..., "torch dx": ...}; the
    torch entries are missing when torch is not installed.
    """
    params, (x, dout) = convnet_params(), convnet_inputs(batch)
    expected = numpy_convnet(params)(x, dout)
    implementations = {"dlmie": _compiled_convnet(), "torch": torch_convnet(params)}
    errors = {}
    for name, run in implementations.items():
        if run is not None:
            for what, got, want in zip(("scores", "dx"), run(x, dout), expected):
                errors[f"{name} {what}"] = scaled_error(got, want)
    return errors


# ---------------------------------------------------------------- benchmarks


def convnet_fwd_inputgrad(batch: int):
    """Small conv net: forward scores + input gradient (what a saliency map needs).

    64x64x3 -> [conv3x3-relu-maxpool2] x 3 -> affine 100, float32, the same weights in every
    implementation; checks that dlmie, torch and NumPy agree before anything is timed.
    References: PyTorch CPU, and NumPy im2col with a hand-written backward pass."""
    errors = convnet_agreement()
    bad = {k: v for k, v in errors.items() if v > AGREEMENT_TOL}
    assert not bad, f"implementations disagree (scaled error > {AGREEMENT_TOL}): {bad}"
    params, (x, dout) = convnet_params(), convnet_inputs(batch)
    ours, torch_run, numpy_run = _compiled_convnet(), torch_convnet(params), numpy_convnet(params)
    return (
        lambda: ours(x, dout),
        {
            "torch": TORCH_MISSING if torch_run is None else (lambda: torch_run(x, dout)),
            "numpy": lambda: numpy_run(x, dout),
        },
    )


def gemm(m: int, k: int, n: int):
    """float32 GEMM (m, k) @ (k, n).

    Ours: a compiled PyTensor function, so the BLAS it links (see DLMIE_BLAS). Reference: NumPy's
    matmul, on the OpenBLAS bundled with NumPy."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    sa, sb = pt.matrix("a", dtype="float32"), pt.matrix("b", dtype="float32")
    f = pytensor.function([sa, sb], pt.dot(sa, sb))
    assert scaled_error(f(a, b), a @ b) < 1e-5
    return lambda: f(a, b), {"numpy": lambda: a @ b}


def torch_classifier(spec, params: dict):
    """The dlmie.models.convnet network `spec` with weights `params` as a torch.nn.Sequential
    (None without torch): conv-batchnorm-ReLU blocks, pooling or flattening, affine blocks."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None

    def tensor(name, transpose=False):
        value = params[name].T if transpose else params[name]
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(value, np.float32)))

    def norm(module, prefix):
        module.weight, module.bias = tensor(f"{prefix}.gamma"), tensor(f"{prefix}.beta")
        module.running_mean.copy_(torch.from_numpy(params[f"{prefix}.running_mean"]))
        module.running_var.copy_(torch.from_numpy(params[f"{prefix}.running_var"]))
        return module

    layers, channels = [], 3
    with torch.no_grad():
        for i, (filters, k, stride, pad) in enumerate(spec.conv, start=1):
            conv = nn.Conv2d(channels, filters, k, stride, pad)
            conv.weight, conv.bias = tensor(f"conv{i}.W"), tensor(f"conv{i}.b")
            layers += [conv, norm(nn.BatchNorm2d(filters), f"conv{i}"), nn.ReLU()]
            channels = filters
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()] if spec.global_pool else [nn.Flatten()]
        for j in range(1, len(spec.hidden) + 1):
            affine = nn.Linear(*params[f"fc{j}.W"].shape)
            affine.weight, affine.bias = tensor(f"fc{j}.W", transpose=True), tensor(f"fc{j}.b")
            layers += [affine, norm(nn.BatchNorm1d(params[f"fc{j}.W"].shape[1]), f"fc{j}"), nn.ReLU()]
        scores = nn.Linear(*params["scores.W"].shape)
        scores.weight, scores.bias = tensor("scores.W", transpose=True), tensor("scores.b")
    return nn.Sequential(*layers, scores)


def _classifier_setup(batch: int):
    """The committed Tiny-ImageNet architecture with He-initialized weights, and a random batch."""
    from dlmie.models import convnet
    from dlmie.train_classifier import TINY_CONVNET

    params = convnet.init_params(TINY_CONVNET, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)
    y = rng.integers(0, TINY_CONVNET.num_classes, batch)
    return TINY_CONVNET, params, x, y


def classifier_train_step(batch: int):
    """Tiny-ImageNet classifier (dlmie.train_classifier.TINY_CONVNET): one SGD-momentum training step.

    Forward in training mode (batch statistics), cross-entropy + L2 on the weights, backward to every
    parameter, momentum update. Reference: the same network and weights in PyTorch CPU, with
    weight decay on the same tensors. Images/s = batch / time."""
    from dlmie.images import Preprocessing
    from dlmie.train_classifier import Trainer, TrainConfig

    spec, params, x, y = _classifier_setup(batch)
    config = TrainConfig(batch_size=batch, spec=spec.to_dict())
    trainer = Trainer(config, params, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    net = torch_classifier(spec, params)
    if net is None:
        return lambda: trainer.train_step(x, y), {"torch": TORCH_MISSING}
    import torch

    decayed = [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() > 1]
    others = [p for name, p in net.named_parameters() if not (name.endswith("weight") and p.dim() > 1)]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": config.weight_decay},
                                 {"params": others, "weight_decay": 0.0}], lr=config.lr, momentum=config.momentum)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()

    def torch_step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        optimizer.step()

    return lambda: trainer.train_step(x, y), {"torch": torch_step}


def classifier_fwd_inputgrad(batch: int):
    """Tiny-ImageNet classifier in inference mode: one class score and its gradient w.r.t. the input
    (a saliency map). Checks that dlmie and torch agree first. Reference: PyTorch CPU, same weights."""
    from dlmie.images import Preprocessing
    from dlmie.models.classifier import convnet_classifier

    spec, params, x, _ = _classifier_setup(batch)
    names = [str(k) for k in range(spec.num_classes)]
    model = convnet_classifier("bench", spec, params, names, names, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    ours = model.gradient_function(lambda scores, activations: scores[:, 7].sum())
    net = torch_classifier(spec, params)
    if net is None:
        return lambda: ours(x), {"torch": TORCH_MISSING}
    import torch

    net.eval()

    def torch_run():
        xt = torch.from_numpy(x).requires_grad_()
        score = net(xt)[:, 7].sum()
        score.backward()
        return score.item(), xt.grad.numpy()

    value, grad = ours(x)
    ref_value, ref_grad = torch_run()
    assert scaled_error(grad, ref_grad) < AGREEMENT_TOL, "dlmie and torch input gradients disagree"
    assert abs(value - ref_value) <= AGREEMENT_TOL * max(1.0, abs(ref_value))
    return lambda: ours(x), {"torch": torch_run}


# One class-visualization step's regularizers (Yosinski et al. 2015, all of them, blurring every step).
CLASSVIS_REGULARIZERS = {"decay": 0.01, "blur_sigma": 0.5, "norm_percentile": 10, "contribution_percentile": 10,
                         "jitter": 4}


def torch_classvis_step(net, k: int, lr: float, low: np.ndarray, high: np.ndarray):
    """The step of `dlmie.vis.ascent.ascend` with `dlmie.vis.transforms.yosinski(CLASSVIS_REGULARIZERS)`,
    written as a PyTorch user would: (x, (dy, dx)) -> the next x, NumPy in and out.

    The blur pads symmetrically (scipy's "reflect", which torch's padding modes lack) with scipy's
    kernel: sigma 0.5 truncated at 4 sigma."""
    import torch
    import torch.nn.functional as F

    r = CLASSVIS_REGULARIZERS
    radius = int(4 * r["blur_sigma"] + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / r["blur_sigma"]) ** 2)
    kernel = torch.from_numpy((taps / taps.sum()).astype(np.float32))
    low_t, high_t = (torch.from_numpy(v)[None, :, None, None] for v in (low, high))

    def blur(x):
        for axis in (2, 3):
            n = x.shape[axis]
            x = torch.cat([x.narrow(axis, 0, radius).flip(axis), x, x.narrow(axis, n - radius, radius).flip(axis)], axis)
            weight = kernel.view(1, 1, -1, 1) if axis == 2 else kernel.view(1, 1, 1, -1)
            x = F.conv2d(x, weight.repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])
        return x

    def zero_below(x, score, percentile):
        threshold = torch.quantile(score.flatten(1), percentile / 100, dim=1)
        return x * (score >= threshold[:, None, None])[:, None]

    def step(x, shift):
        view = torch.roll(torch.from_numpy(x), shift, (2, 3)).requires_grad_()
        net(view)[:, k].sum().backward()
        with torch.no_grad():
            g = torch.roll(view.grad, (-shift[0], -shift[1]), (2, 3))
            g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-12)
            x = (torch.from_numpy(x) + lr * g) * (1 - r["decay"])
            x = blur(x)
            x = zero_below(x, x.pow(2).sum(1).sqrt(), r["norm_percentile"])
            x = zero_below(x, (x * g).sum(1).abs(), r["contribution_percentile"])
            return torch.maximum(torch.minimum(x, high_t), low_t).numpy()

    return step


def classvis_step(batch: int):
    """Class visualization: one regularized ascent step on a class score of the Tiny-ImageNet classifier.

    One step of dlmie.vis.ascent.ascend on TINY_CONVNET (He-initialized): jitter, forward, gradient of
    one class score w.r.t. the image, normalized update, then L2 decay, blur, clipping of small-norm
    and small-contribution pixels and of the pixel range. Reference: the same step in PyTorch CPU
    (network and regularizers in torch), same weights; checks that both steps agree first."""
    from dlmie.images import Preprocessing, random_shift
    from dlmie.models.classifier import convnet_classifier
    from dlmie.vis.ascent import ascend
    from dlmie.vis.objectives import class_score
    from dlmie.vis.transforms import yosinski

    spec, params, x, _ = _classifier_setup(batch)
    names = [str(k) for k in range(spec.num_classes)]
    preprocessing = Preprocessing(mean=(0.48, 0.45, 0.39), std=(0.28, 0.27, 0.28))
    model = convnet_classifier("bench", spec, params, names, names, preprocessing)
    x = preprocessing.clip(x)
    objective, lr = class_score(7), 0.05

    def ours(seed=0):
        transforms = yosinski(preprocessing, blur_every=1, seed=seed, **CLASSVIS_REGULARIZERS)
        return ascend(model, objective, x, 1, lr, transforms, progress=False).x

    net = torch_classifier(spec, params)
    if net is None:
        return ours, {"torch": TORCH_MISSING}
    net.eval()
    torch_step = torch_classvis_step(net, 7, lr, *preprocessing.valid_range())
    shift = random_shift(CLASSVIS_REGULARIZERS["jitter"], np.random.default_rng(0))  # the shift of ours(seed=0)
    assert scaled_error(ours(), torch_step(x, shift)) < AGREEMENT_TOL, "dlmie and torch class-visualization steps disagree"
    return ours, {"torch": lambda: torch_step(x, shift)}

def vgg16_features(batch: int):
    """VGG-16 conv5_3 features (the 14 x 14 x 512 grid captioning attends over), 224 x 224 input, forward only.

    He-initialized weights in the real file's shapes (the timing does not depend on their values).
    Reference: the same 13 convolutions, ReLUs and max pools in PyTorch CPU, same weights.
    Images/s = batch / time."""
    from dlmie.models import vgg16

    rng = np.random.default_rng(0)
    params = {}
    for name, _, c_in, c_out in vgg16.conv_layers():
        params[f"{name}.W"] = (rng.standard_normal((c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        params[f"{name}.b"] = np.zeros(c_out, np.float32)
    images = pt.tensor4("images")
    _, activations = vgg16.forward(L.shared_params(params), images)
    ours = pytensor.function([images], activations["conv5_3"])
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    try:
        import torch
        from torch import nn
    except ImportError:
        return lambda: ours(x), {"torch": TORCH_MISSING}
    modules = []
    for block, (_, count) in enumerate(vgg16.BLOCKS, start=1):
        for c in range(1, count + 1):
            w = params[f"conv{block}_{c}.W"]
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, 1, 1)
            conv.weight = nn.Parameter(torch.from_numpy(w))
            conv.bias = nn.Parameter(torch.from_numpy(params[f"conv{block}_{c}.b"]))
            modules += [conv, nn.ReLU()]
        if block < len(vgg16.BLOCKS):
            modules.append(nn.MaxPool2d(2))
    torch_net = nn.Sequential(*modules).eval()

    def torch_run():
        with torch.no_grad():
            return torch_net(torch.from_numpy(x)).numpy()

    assert scaled_error(ours(x), torch_run()) < AGREEMENT_TOL, "dlmie and torch VGG-16 features disagree"
    return lambda: ours(x), {"torch": torch_run}


# Show and Tell at the size the issue asks for: vocabulary 2,000, embedding 512, hidden 512, 17 steps.
CAPTION_SIZE = {"vocab_size": 2000, "feature_dim": 1280, "embed_dim": 512, "hidden_dim": 512, "steps": 17}


def torch_show_and_tell(params: dict):
    """dlmie.models.show_and_tell with the same weights in PyTorch: (image, embed, lstm, out), or None.

    Our gates are ordered i, f, o, g; torch's LSTM orders them i, f, g, o and has two biases."""
    try:
        import torch
        from torch import nn
    except ImportError:
        return None
    hidden = params["lstm.Wh"].shape[0]

    def reorder(w):  # columns (.., 4H) i f o g -> rows (4H, ..) i f g o
        i, f, o, g = np.split(w, 4, axis=-1)
        return np.ascontiguousarray(np.concatenate([i, f, g, o], axis=-1).T)

    image = nn.Linear(*params["img.W"].shape)
    embed = nn.Embedding(*params["embed.W"].shape)
    lstm = nn.LSTM(params["lstm.Wx"].shape[0], hidden, batch_first=True)
    out = nn.Linear(*params["out.W"].shape)
    with torch.no_grad():
        image.weight.copy_(torch.from_numpy(params["img.W"].T.copy()))
        image.bias.copy_(torch.from_numpy(params["img.b"]))
        embed.weight.copy_(torch.from_numpy(params["embed.W"]))
        lstm.weight_ih_l0.copy_(torch.from_numpy(reorder(params["lstm.Wx"])))
        lstm.weight_hh_l0.copy_(torch.from_numpy(reorder(params["lstm.Wh"])))
        lstm.bias_ih_l0.copy_(torch.from_numpy(reorder(params["lstm.b"][None])[:, 0]))
        lstm.bias_hh_l0.zero_()
        out.weight.copy_(torch.from_numpy(params["out.W"].T.copy()))
        out.bias.copy_(torch.from_numpy(params["out.b"]))
    return image, embed, lstm, out


def _caption_setup(batch: int):
    from dlmie.models import show_and_tell

    size = CAPTION_SIZE
    spec = show_and_tell.Spec(size["vocab_size"], size["feature_dim"], size["embed_dim"], size["hidden_dim"], dropout=0.0)
    params = show_and_tell.init_params(spec, seed=0)
    rng = np.random.default_rng(1)
    features = rng.standard_normal((batch, size["feature_dim"])).astype(np.float32)
    captions = rng.integers(4, size["vocab_size"], (batch, size["steps"] + 1))
    captions[:, 0] = 1
    captions[:, -3:] = 0  # some padding, masked out of the loss
    return show_and_tell, spec, params, features, captions


def caption_train_step(batch: int):
    """Show and Tell training step (vocabulary 2,000, embedding 512, hidden 512, T=17): forward,
    backward through the LSTM, global-norm clipping, Adam. Reference: the same model and weights
    in PyTorch CPU (nn.LSTM). Captions/s = batch / time."""
    from dlmie.train_captioner import CaptionConfig, CaptionTrainer

    module, spec, params, features, captions = _caption_setup(batch)
    config = CaptionConfig(dropout=0.0, embed_dim=spec.embed_dim, hidden_dim=spec.hidden_dim)
    trainer = CaptionTrainer(config, spec, params)
    ours = lambda: trainer.train_step(features, captions)  # noqa: E731
    torch_model = torch_show_and_tell(params)
    if torch_model is None:
        return ours, {"torch": TORCH_MISSING}
    import torch

    image, embed, lstm, out = torch_model
    modules = [image, embed, lstm, out]
    parameters = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    f, c = torch.from_numpy(features), torch.from_numpy(captions)

    def torch_loss():  # summed over time, averaged over captions; <NULL> (0) targets ignored
        h, _ = lstm(torch.cat([image(f)[:, None], embed(c[:, :-1])], dim=1))
        scores = out(h[:, 1:])
        total = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]), c[:, 1:].reshape(-1),
                                                  ignore_index=0, reduction="sum")
        return total / scores.shape[0]

    def torch_step():
        optimizer.zero_grad()
        loss = torch_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.clip)
        optimizer.step()
        return loss.item()

    value = float(trainer.val_loss(features, captions))
    with torch.no_grad():
        reference = torch_loss().item()
    assert abs(value - reference) <= AGREEMENT_TOL * abs(reference), "dlmie and torch captioning losses disagree"
    return ours, {"torch": torch_step}


def caption_beam_search(batch: int, beam_size: int = 3):
    """Show and Tell beam search (beam 3, 17 words) for a batch of images: the same NumPy search
    loop around our compiled step function and around PyTorch's (same weights)."""
    from dlmie.caption.decode import Decoder

    module, spec, params, features, _ = _caption_setup(batch)
    ours = Decoder.compile(module, spec, L.shared_params(params))
    run = lambda decoder: decoder.beam_search(features, beam_size=beam_size, max_length=CAPTION_SIZE["steps"])  # noqa: E731
    torch_model = torch_show_and_tell(params)
    if torch_model is None:
        return lambda: run(ours), {"torch": TORCH_MISSING}
    import torch

    image, embed, lstm, out = torch_model

    @torch.no_grad()
    def start(f):
        _, (h, c) = lstm(image(torch.from_numpy(f))[:, None])
        return [h[0].numpy(), c[0].numpy()]

    @torch.no_grad()
    def step(words, h, c, f):
        x = embed(torch.from_numpy(words))[:, None]
        _, (h2, c2) = lstm(x, (torch.from_numpy(h)[None], torch.from_numpy(c)[None]))
        log_probs = torch.log_softmax(out(h2[0]), dim=1)
        return [log_probs.numpy(), h2[0].numpy(), c2[0].numpy(), np.zeros((len(words), 0), np.float32)]

    reference = Decoder(start, step)
    ours_words, torch_words = run(ours).words, run(reference).words
    agree = np.mean([a == b for a, b in zip(ours_words, torch_words)])
    assert agree >= 0.9, f"dlmie and torch beam search agree on only {agree:.0%} of captions"
    return lambda: run(ours), {"torch": lambda: run(reference)}


# Show-Attend-Tell at the size the issue asks for: MobileNetV2's 7 x 7 x 1280 grid (L = 49 regions),
# vocabulary 2,500, embedding 256, hidden 512, attention MLP 128, 17 steps.
SAT_SIZE = {"vocab_size": 2500, "regions": 49, "feature_dim": 1280, "embed_dim": 256, "hidden_dim": 512,
            "attention_dim": 128, "steps": 17}


def torch_show_attend_tell(spec, params: dict):
    """dlmie.models.show_attend_tell's loss with the same weights in PyTorch, written as a PyTorch
    user would (an explicit loop over time), or None without torch.

    Returns (loss, parameters): loss maps features (N, L, D) float32 and captions (N, T + 1) int64
    tensors to the scalar of `show_attend_tell.loss` (dropout off); parameters, name -> nn.Parameter,
    are what it differentiates."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    p = {name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in params.items()}

    def loss(features, captions):
        words_in, words_out = captions[:, :-1], captions[:, 1:]
        embedded = p["embed.W"][words_in]  # (N, T, E)
        xw = embedded @ p["lstm.Wx"] + p["lstm.b"]  # (N, T, 4H)
        projected = features @ p["att.Wa"] + p["att.b"]  # (N, L, A)
        mean = features.mean(dim=1)
        h, c = torch.tanh(mean @ p["init_h.W"] + p["init_h.b"]), torch.tanh(mean @ p["init_c.W"] + p["init_c.b"])
        hs, zs, alphas = [], [], []
        for t in range(words_in.shape[1]):
            alpha = torch.softmax(torch.tanh(projected + (h @ p["att.Wh"])[:, None]) @ p["att.w"], dim=1)  # (N, L)
            z = torch.bmm(alpha[:, None], features)[:, 0]  # (N, D)
            if spec.gate:
                z = z * torch.sigmoid(h @ p["gate.w"] + p["gate.b"])[:, None]
            i, f, o, g = (xw[:, t] + z @ p["lstm.Wz"] + h @ p["lstm.Wh"]).chunk(4, dim=1)  # our order: i f o g
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        h, z, alpha = torch.stack(hs, dim=1), torch.stack(zs, dim=1), torch.stack(alphas, dim=1)
        scores = (embedded + h @ p["out.Lh"] + z @ p["out.Lz"]) @ p["out.W"] + p["out.b"]  # (N, T, V)
        total = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), words_out.reshape(-1), ignore_index=0,
                                reduction="sum") / scores.shape[0]
        coverage = (alpha * (words_out != 0).to(alpha.dtype)[..., None]).sum(dim=1)  # (N, L)
        return total + spec.doubly_stochastic * (1 - coverage).square().sum(dim=1).mean()

    return loss, p


def sat_train_step(batch: int, size: dict = SAT_SIZE):
    """Show-Attend-Tell training step (MobileNetV2 grid 49 x 1280, vocabulary 2,500, embedding 256,
    hidden 512, attention 128, T=17): forward, backward through the attention LSTM, global-norm
    clipping, Adam. Reference: the same model and weights in PyTorch CPU (a loop over time).
    Checks that the first step's loss and gradient norm agree. Captions/s = batch / time.

    `size` has SAT_SIZE's keys (the tests pass a tiny one); returns (ours, {"torch": step}), each
    step returning (loss, gradient norm before clipping)."""
    from dlmie.models import show_attend_tell
    from dlmie.train_captioner import CaptionConfig, CaptionTrainer

    spec = show_attend_tell.Spec(size["vocab_size"], size["feature_dim"], size["embed_dim"], size["hidden_dim"],
                                 dropout=0.0, attention_dim=size["attention_dim"])
    params = show_attend_tell.init_params(spec, seed=0)
    rng = np.random.default_rng(1)
    features = rng.random((batch, size["regions"], size["feature_dim"]), np.float32)  # non-negative, as after ReLU6
    captions = rng.integers(4, size["vocab_size"], (batch, size["steps"] + 1))
    captions[:, 0] = 1
    captions[:, -3:] = 0  # some padding, masked out of the loss
    config = CaptionConfig(model=show_attend_tell.KIND, dropout=0.0, embed_dim=spec.embed_dim, hidden_dim=spec.hidden_dim)
    trainer = CaptionTrainer(config, spec, params)
    ours = lambda: trainer.train_step(features, captions)  # noqa: E731
    torch_model = torch_show_attend_tell(spec, params)
    if torch_model is None:
        return ours, {"torch": TORCH_MISSING}
    import torch

    torch_loss, torch_params = torch_model
    parameters = [torch_params[name] for name in sorted(torch_params)]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    f, c = torch.from_numpy(features), torch.from_numpy(captions)

    def torch_step():
        optimizer.zero_grad()
        loss = torch_loss(f, c)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(parameters, config.clip)
        optimizer.step()
        return loss.item(), norm.item()

    # At SAT_SIZE torch's float32 gradient norm is 4e-5 (relative) from the float64 value, ours 1e-7.
    for what, value, reference in zip(("losses", "gradient norms"), ours(), torch_step()):
        assert abs(float(value) - reference) <= AGREEMENT_TOL * abs(reference), f"dlmie and torch SAT {what} disagree"
    return ours, {"torch": torch_step}


def torch_tflite_graph(graph, params: dict, names, output: int):
    """A graph of `dlmie.models.mobilenet_v2.read_tflite` in PyTorch CPU, up to tensor `output`,
    with the arrays params[f"{names[k]}.W"], params[f"{names[k]}.b"] of op k; returns
    x (N, C, H, W) float32 -> NumPy (N, ...) or None without torch. Depthwise convolutions are
    Conv2d with groups = channels; TensorFlow's asymmetric "SAME" padding is an F.pad."""
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn
    except ImportError:
        return None
    activations = {"NONE": nn.Identity(), "RELU": nn.ReLU(), "RELU6": nn.ReLU6()}
    convs = {}
    for op, name in zip(graph.ops, names):
        if op.kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = params[f"{name}.W"], params[f"{name}.b"]
            groups = w.shape[0] if op.kind == "DEPTHWISE_CONV_2D" else 1
            symmetric = len(set(op.pads)) == 1
            conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], w.shape[2:], op.stride,
                             op.pads[0] if symmetric else 0, groups=groups)
            conv.weight, conv.bias = nn.Parameter(torch.from_numpy(w)), nn.Parameter(torch.from_numpy(b))
            convs[name] = conv, None if symmetric else (op.pads[2], op.pads[3], op.pads[0], op.pads[1])

    def run(x):
        values = {graph.input: torch.from_numpy(x)}
        with torch.no_grad():
            for op, name in zip(graph.ops, names):
                h = values[op.inputs[0]]
                if name in convs:
                    conv, pad = convs[name]
                    out = conv(h if pad is None else F.pad(h, pad))
                elif op.kind == "ADD":
                    out = h + values[op.inputs[1]]
                elif op.kind == "AVERAGE_POOL_2D":
                    out = F.avg_pool2d(h, op.window, op.stride)
                else:
                    raise ValueError(f"torch_tflite_graph runs convolutions, adds and pools, not {op.kind}")
                values[op.output] = activations[op.activation](out)
                if op.output == output:
                    return values[output].flatten(1).numpy() if out.shape[2:] == (1, 1) else values[output].numpy()
        raise ValueError(f"no op writes tensor {output}")

    return run


def mobilenet_v2_features(batch: int):
    """MobileNetV2 1.0/224 pooled features (N, 1280), forward only, from uint8 images (preprocessing included).

    The real TFLite file's dequantized weights (./get_datasets.sh mobilenet-v2), random images.
    Reference: the same graph and arrays in PyTorch CPU; checks that both agree first."""
    from dlmie.data import dataset_path
    from dlmie.models import mobilenet_v2

    net = mobilenet_v2.load()
    graph = mobilenet_v2.read_tflite(dataset_path("mobilenet-v2") / mobilenet_v2.MODEL_FILE)
    names, layers = mobilenet_v2.mobilenet_v2_names(graph)
    images = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3)).astype(np.uint8)

    def ours():
        return net.features(images, "pool", batch_size=batch)

    params = {k: v.get_value() for k, v in net.params.items()}
    torch_run = torch_tflite_graph(graph, params, names, layers["pool"])
    if torch_run is None:
        return ours, {"torch": TORCH_MISSING}
    err = scaled_error(ours(), torch_run(net.preprocessing(images)))
    assert err < AGREEMENT_TOL, f"dlmie and torch MobileNetV2 features disagree (scaled error {err:.1e})"
    return ours, {"torch": lambda: torch_run(net.preprocessing(images))}


# name -> function of no arguments returning (ours, {reference name: callable or skip reason}).
BENCHMARKS = {
    "convnet_fwd_inputgrad_b1": functools.partial(convnet_fwd_inputgrad, 1),
    "convnet_fwd_inputgrad_b32": functools.partial(convnet_fwd_inputgrad, 32),
    "gemm_1024": functools.partial(gemm, 1024, 1024, 1024),
    # The second conv layer's GEMM at batch 32: (64, 32*3*3) filters @ (288, 32*32*32) columns.
    "gemm_conv2_b32": functools.partial(gemm, 64, 288, 32 * 32 * 32),
    "classifier_train_step_b128": functools.partial(classifier_train_step, 128),
    "classifier_fwd_inputgrad_b1": functools.partial(classifier_fwd_inputgrad, 1),
    "classvis_step_b1": functools.partial(classvis_step, 1),
    "vgg16_features_b16": functools.partial(vgg16_features, 16),
    "mobilenet_v2_features_b16": functools.partial(mobilenet_v2_features, 16),
    "caption_train_step_b128": functools.partial(caption_train_step, 128),
    "caption_beam_search_b100": functools.partial(caption_beam_search, 100),
    "sat_train_step_b64": functools.partial(sat_train_step, 64),
}


def describe(name: str) -> str:
    """The first docstring line of a benchmark's function, with its arguments."""
    bench = BENCHMARKS[name]
    func, args = getattr(bench, "func", bench), getattr(bench, "args", ())
    first = (func.__doc__ or "").split("\n")[0]
    bound = inspect.signature(func).bind_partial(*args).arguments
    return f"{first} ({', '.join(f'{k}={v}' for k, v in bound.items())})" if bound else first


# ---------------------------------------------------------------- harness


def median_times(fns, repeats: int, warmup: int = 2) -> list[float]:
    """Median wall times of the callables `fns`, timed alternately.

    Inputs:
    - fns: callables taking no arguments
    - repeats: timed rounds; each round calls every fn once, in order
    - warmup: untimed rounds before them
    Returns:
    - one median time in seconds per fn, in the order of `fns`

    Alternating rather than timing all calls of one fn and then all of the next: on a shared
    machine the load changes between two such windows and would bias their ratio; within a round
    it weighs on every fn alike.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, fn_times in zip(fns, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(fn_times) for fn_times in times]


def header() -> str:
    """One line naming what the timings depend on: BLAS, torch, threads, OpenBLAS settings."""
    try:
        import torch

        torch_info = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        torch_info = "torch not installed"
    threads = " ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"))
    tuning = " ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ)
    return " | ".join(
        filter(
            None,
            [f"BLAS: {dlmie.config.BLAS}", torch_info, f"numpy {np.__version__}", f"pytensor {pytensor.__version__}",
             f"{os.cpu_count()} CPUs", threads, tuning],
        )
    )


def run_benchmarks(names, repeats: int) -> None:
    """Print the header and one row per (benchmark, reference): ours and the reference timed
    alternately, `repeats` calls each (`median_times`); ours alone where the reference is skipped."""
    print(header())
    print(f"{'benchmark':<28}{'reference':<11}{'ours ms':>10}{'ref ms':>10}{'ours/ref':>10}")
    for name in names:
        ours, references = BENCHMARKS[name]()
        for ref_name, ref in references.items():
            if isinstance(ref, str):
                (ours_s,) = median_times([ours], repeats)
                print(f"{name:<28}{ref_name:<11}{1e3 * ours_s:>10.2f}  {ref}")
                continue
            ours_s, ref_s = median_times([ours, ref], repeats)
            print(f"{name:<28}{ref_name:<11}{1e3 * ours_s:>10.2f}{1e3 * ref_s:>10.2f}{ours_s / ref_s:>10.2f}")


_FIRST_GRADIENT = """
import time
start = time.perf_counter()
from dlmie.bench import compile_convnet, convnet_inputs, convnet_params
compile_convnet(convnet_params())(*convnet_inputs(1))
print(time.perf_counter() - start)
"""


def compile_times() -> None:
    """Time to the first compiled conv-net gradient in a fresh process, with a fresh PyTensor
    compile cache (cold) and again with the same cache (warm)."""
    print(header())
    with tempfile.TemporaryDirectory(prefix="dlmie-compiledir-") as cache:
        env = dict(os.environ)
        env["PYTENSOR_FLAGS"] = ",".join(filter(None, [env.get("PYTENSOR_FLAGS"), f"base_compiledir={cache}"]))
        totals = {}
        for label in ("cold", "warm"):
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", _FIRST_GRADIENT], env=env, capture_output=True, text=True, check=True
            )
            totals[label] = time.perf_counter() - start
            inside = float(result.stdout.split()[-1])
            print(
                f"first conv-net gradient, {label} cache: {totals[label]:6.1f} s "
                f"(process total; import + build + compile + call: {inside:.1f} s)"
            )
    print(f"cold / warm: {totals['cold'] / totals['warm']:.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dlmie.bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per implementation (default 20)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--compile", action="store_true", help="time the first gradient, cold vs warm cache")
    parser.add_argument("--threads", type=int, help="set OPENBLAS_NUM_THREADS and OMP_NUM_THREADS (restarts)")
    args = parser.parse_args(argv)
    thread_vars = {"OPENBLAS_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    # Both variables, not one: torch reads OMP_NUM_THREADS, so a shell that preset only OpenBLAS's
    # would otherwise time our one thread against torch on every core.
    if args.threads is not None and any(os.environ.get(k) != v for k, v in thread_vars.items()):
        env = {**os.environ, **thread_vars}
        argv = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", "dlmie.bench", *argv], env)
    if args.list:
        for name in BENCHMARKS:
            print(f"{name:<28}{describe(name)}")
        return
    if args.compile:
        compile_times()
        return
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    run_benchmarks(args.names or list(BENCHMARKS), args.repeats)


if __name__ == "__main__":
    main()

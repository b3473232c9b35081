"""The benchmark cases: each builds dlmie's side of one measurement and its references.

A case returns ``(ours, references)``: ``ours`` a callable taking no arguments, ``references`` a dict
from a reference's name to a callable taking no arguments, or to a string saying why it is skipped.
Where a reference computes the same thing, the case first checks that both agree (within
AGREEMENT_TOL), so that a timing never compares different computations.

The models' modules are imported inside the cases that use them: listing the benchmarks, or running
one, then loads only what that needs.
"""

import functools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L
from dlmie.config import keep_buffers_mode
from dlmie.benchmarks import numpy_reference, torch_reference

TORCH_MISSING = "skipped (pip install torch)"
AGREEMENT_TOL = 1e-4

# The small conv net: conv3x3-relu-maxpool2 three times, then an affine layer to 100 classes.
IMAGE_SHAPE = (3, 64, 64)  # Tiny-ImageNet
CONV_CHANNELS = (32, 64, 128)
NUM_CLASSES = 100


def scaled_error(x, y) -> float:
    """max |x - y| / max |y|: the error relative to the array's scale. Elementwise relative error
    (``rel_error``) is dominated by gradient entries that cancel to ~0 in float32."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 1e-30))


def _or_missing(reference):
    """A torch reference, or TORCH_MISSING where torch_reference returned None (torch not installed)."""
    return TORCH_MISSING if reference is None else reference


# ---------------------------------------------------------------- the small conv net


def convnet_params(seed: int = 0) -> dict:
    """He-initialized float32 weights of the small conv net: w1..w3 (F, C, 3, 3), b1..b3 (F,), w4 (D, 100), b4 (100,)."""
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

    Inputs:
    - params: from `convnet_params`
    Returns:
    - a function of x (N, 3, 64, 64) and dout (N, 100) float32 returning scores (N, 100) and
      dx (N, 3, 64, 64). With dout one-hot in class k, dx is the saliency map of class k. The batch
      size is left free, so one compiled function serves every batch size.
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


def convnet_agreement(batch: int = 2) -> dict:
    """Scaled errors of dlmie's and torch's (scores, dx) against the NumPy reference.

    Returns {"dlmie scores": err, "dlmie dx": err, "torch scores": ..., "torch dx": ...}; the
    torch entries are missing when torch is not installed.
    """
    params, (x, dout) = convnet_params(), convnet_inputs(batch)
    expected = numpy_reference.convnet(params)(x, dout)
    implementations = {"dlmie": _compiled_convnet(), "torch": torch_reference.convnet(params)}
    errors = {}
    for name, run in implementations.items():
        if run is not None:
            for what, got, want in zip(("scores", "dx"), run(x, dout), expected):
                errors[f"{name} {what}"] = scaled_error(got, want)
    return errors


def convnet_fwd_inputgrad(batch: int):
    """Small conv net: forward scores + input gradient (what a saliency map needs).

    64x64x3 -> [conv3x3-relu-maxpool2] x 3 -> affine 100, float32, the same weights in every
    implementation; checks that dlmie, torch and NumPy agree before anything is timed.
    References: PyTorch CPU, and NumPy im2col with a hand-written backward pass."""
    errors = convnet_agreement()
    bad = {k: v for k, v in errors.items() if v > AGREEMENT_TOL}
    assert not bad, f"implementations disagree (scaled error > {AGREEMENT_TOL}): {bad}"
    params, (x, dout) = convnet_params(), convnet_inputs(batch)
    ours, numpy_run = _compiled_convnet(), numpy_reference.convnet(params)
    torch_run = torch_reference.convnet(params)
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


# ---------------------------------------------------------------- the Tiny-ImageNet classifier


def _classifier_setup(batch: int):
    """The committed Tiny-ImageNet architecture with He-initialized weights, and a random batch:
    (spec, params, x (batch, 3, 64, 64) float32, y (batch,) int64)."""
    from dlmie.models import convnet
    from dlmie.models.convnet import TINY_CONVNET

    params = convnet.init_params(TINY_CONVNET, seed=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, 3, 64, 64)).astype(np.float32)
    y = rng.integers(0, TINY_CONVNET.num_classes, batch)
    return TINY_CONVNET, params, x, y


def _classifier_model(spec, params, preprocessing):
    """dlmie's classifier Network of (spec, params) with class names "0", "1", ..."""
    from dlmie.models.classifier import convnet_classifier

    names = [str(k) for k in range(spec.num_classes)]
    return convnet_classifier("bench", spec, params, names, names, preprocessing)


def classifier_train_step(batch: int):
    """Tiny-ImageNet classifier (dlmie.models.convnet.TINY_CONVNET): one SGD-momentum training step.

    Forward in training mode (batch statistics), cross-entropy + L2 on the weights, backward to every
    parameter, momentum update. Reference: the same network and weights in PyTorch CPU, with
    weight decay on the same tensors. Images/s = batch / time."""
    from dlmie.images import Preprocessing
    from dlmie.training.classifier import ClassifierConfig, ClassifierTrainer

    spec, params, x, y = _classifier_setup(batch)
    config = ClassifierConfig(batch_size=batch, spec=spec.to_dict())
    trainer = ClassifierTrainer(config, params, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    torch_step = torch_reference.classifier_train_step(spec, params, x, y, config.lr, config.momentum,
                                                       config.weight_decay)
    return lambda: trainer.train_step(x, y), {"torch": _or_missing(torch_step)}


def classifier_fwd_inputgrad(batch: int):
    """Tiny-ImageNet classifier in inference mode: one class score and its gradient w.r.t. the input
    (a saliency map). Checks that dlmie and torch agree first. Reference: PyTorch CPU, same weights."""
    from dlmie.images import Preprocessing

    spec, params, x, _ = _classifier_setup(batch)
    model = _classifier_model(spec, params, Preprocessing(mean=(0, 0, 0), std=(1, 1, 1)))
    ours = model.gradient_function(lambda scores, activations: scores[:, 7].sum())
    torch_run = torch_reference.classifier_score_gradient(spec, params, 7, x)
    if torch_run is None:
        return lambda: ours(x), {"torch": TORCH_MISSING}
    value, grad = ours(x)
    ref_value, ref_grad = torch_run()
    assert scaled_error(grad, ref_grad) < AGREEMENT_TOL, "dlmie and torch input gradients disagree"
    assert abs(value - ref_value) <= AGREEMENT_TOL * max(1.0, abs(ref_value)), "dlmie and torch class scores disagree"
    return lambda: ours(x), {"torch": torch_run}


# One class-visualization step's regularizers (Yosinski et al. 2015, all of them, blurring every step).
CLASSVIS_REGULARIZERS = {"decay": 0.01, "blur_sigma": 0.5, "norm_percentile": 10, "contribution_percentile": 10,
                         "jitter": 4}


def classvis_step(batch: int):
    """Class visualization: one regularized ascent step on a class score of the Tiny-ImageNet classifier.

    One step of dlmie.vis.ascent.ascend on TINY_CONVNET (He-initialized): jitter, forward, gradient of
    one class score w.r.t. the image, normalized update, then L2 decay, blur, clipping of small-norm
    and small-contribution pixels and of the pixel range. Reference: the same step in PyTorch CPU
    (network and regularizers in torch), same weights; checks that both steps agree first."""
    from dlmie.images import Preprocessing, random_shift
    from dlmie.vis.ascent import ascend
    from dlmie.vis.objectives import class_score
    from dlmie.vis.transforms import yosinski

    spec, params, x, _ = _classifier_setup(batch)
    preprocessing = Preprocessing(mean=(0.48, 0.45, 0.39), std=(0.28, 0.27, 0.28))
    model = _classifier_model(spec, params, preprocessing)
    x = preprocessing.clip(x)
    objective, lr = class_score(7), 0.05

    def ours(seed=0):
        transforms = yosinski(preprocessing, blur_every=1, seed=seed, **CLASSVIS_REGULARIZERS)
        return ascend(model, objective, x, 1, lr, transforms, progress=False).x

    torch_step = torch_reference.classvis_step(spec, params, 7, lr, *preprocessing.valid_range(),
                                               CLASSVIS_REGULARIZERS)
    if torch_step is None:
        return ours, {"torch": TORCH_MISSING}
    shift = random_shift(CLASSVIS_REGULARIZERS["jitter"], np.random.default_rng(0))  # the shift of ours(seed=0)
    assert scaled_error(ours(), torch_step(x, shift)) < AGREEMENT_TOL, "dlmie and torch class-visualization steps disagree"
    return ours, {"torch": lambda: torch_step(x, shift)}


# ---------------------------------------------------------------- feature extractors


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
    # Compiled as Network.features compiles it (the feature extractor's mode, arrays kept between batches).
    ours = pytensor.function([images], activations["conv5_3"], mode=keep_buffers_mode())
    x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
    torch_run = torch_reference.vgg16_features(params, vgg16.BLOCKS)
    if torch_run is None:
        return lambda: ours(x), {"torch": TORCH_MISSING}
    assert scaled_error(ours(x), torch_run(x)) < AGREEMENT_TOL, "dlmie and torch VGG-16 features disagree"
    return lambda: ours(x), {"torch": lambda: torch_run(x)}


def mobilenet_v2_features(batch: int):
    """MobileNetV2 1.0/224 pooled features (N, 1280), forward only, from uint8 images (preprocessing included).

    The real TFLite file's dequantized weights (./get_datasets.sh mobilenet-v2), random images.
    Reference: the same graph and arrays in PyTorch CPU; checks that both agree first."""
    from dlmie.data import dataset_path
    from dlmie.models import mobilenet_v2
    from dlmie.models.tflite import read_tflite

    net = mobilenet_v2.load()
    graph = read_tflite(dataset_path("mobilenet-v2") / mobilenet_v2.MODEL_FILE)
    names, layers = mobilenet_v2.mobilenet_v2_names(graph)
    images = np.random.default_rng(0).integers(0, 256, (batch, 224, 224, 3)).astype(np.uint8)

    def ours():
        return net.features(images, "pool", batch_size=batch)

    params = {k: v.get_value() for k, v in net.params.items()}
    torch_run = torch_reference.tflite_graph(graph, params, names, layers["pool"])
    if torch_run is None:
        return ours, {"torch": TORCH_MISSING}
    err = scaled_error(ours(), torch_run(net.preprocessing(images)))
    assert err < AGREEMENT_TOL, f"dlmie and torch MobileNetV2 features disagree (scaled error {err:.1e})"
    return ours, {"torch": lambda: torch_run(net.preprocessing(images))}


# ---------------------------------------------------------------- captioning

# Show and Tell at the size the issue asks for: vocabulary 2,000, embedding 512, hidden 512, 17 steps.
CAPTION_SIZE = {"vocab_size": 2000, "feature_dim": 1280, "embed_dim": 512, "hidden_dim": 512, "steps": 17}


def _caption_setup(batch: int):
    """Show and Tell at CAPTION_SIZE with initial weights, and a random batch: (module, spec, params,
    features (batch, 1280) float32, captions (batch, 18) int64 starting with <START>, ending in padding)."""
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
    from dlmie.training.captioner import CaptionerConfig, CaptionerTrainer

    module, spec, params, features, captions = _caption_setup(batch)
    config = CaptionerConfig(dropout=0.0, embed_dim=spec.embed_dim, hidden_dim=spec.hidden_dim)
    trainer = CaptionerTrainer(config, spec, params)
    ours = lambda: trainer.train_step(features, captions)  # noqa: E731
    torch_model = torch_reference.show_and_tell_train_step(params, features, captions, config.lr, config.clip)
    if torch_model is None:
        return ours, {"torch": TORCH_MISSING}
    torch_loss, torch_step = torch_model
    value, reference = float(trainer.val_loss(features, captions)), torch_loss()
    assert abs(value - reference) <= AGREEMENT_TOL * abs(reference), "dlmie and torch captioning losses disagree"
    return ours, {"torch": torch_step}


def caption_beam_search(batch: int, beam_size: int = 3):
    """Show and Tell beam search (beam 3, 17 words) for a batch of images: the same NumPy search
    loop around our compiled step function and around PyTorch's (same weights)."""
    from dlmie.captioning.decode import Decoder

    module, spec, params, features, _ = _caption_setup(batch)
    ours = Decoder.compile(module, spec, L.shared_params(params))
    run = lambda decoder: decoder.beam_search(features, beam_size=beam_size, max_length=CAPTION_SIZE["steps"])  # noqa: E731
    torch_functions = torch_reference.show_and_tell_decoder(params)
    if torch_functions is None:
        return lambda: run(ours), {"torch": TORCH_MISSING}
    reference = Decoder(*torch_functions)
    ours_words, torch_words = run(ours).words, run(reference).words
    agree = np.mean([a == b for a, b in zip(ours_words, torch_words)])
    assert agree >= 0.9, f"dlmie and torch beam search agree on only {agree:.0%} of captions"
    return lambda: run(ours), {"torch": lambda: run(reference)}


# Show-Attend-Tell at the size the issue asks for: MobileNetV2's 7 x 7 x 1280 grid (L = 49 regions),
# vocabulary 2,500, embedding 256, hidden 512, attention MLP 128, 17 steps.
SAT_SIZE = {"vocab_size": 2500, "regions": 49, "feature_dim": 1280, "embed_dim": 256, "hidden_dim": 512,
            "attention_dim": 128, "steps": 17}


def sat_train_step(batch: int, size: dict = SAT_SIZE):
    """Show-Attend-Tell training step (MobileNetV2 grid 49 x 1280, vocabulary 2,500, embedding 256,
    hidden 512, attention 128, T=17): forward, backward through the attention LSTM, global-norm
    clipping, Adam. Reference: the same model and weights in PyTorch CPU (a loop over time).
    Checks that the first step's loss and gradient norm agree. Captions/s = batch / time.

    `size` has SAT_SIZE's keys (the tests pass a tiny one); returns (ours, {"torch": step}), each
    step returning (loss, gradient norm before clipping)."""
    from dlmie.models import show_attend_tell
    from dlmie.training.captioner import CaptionerConfig, CaptionerTrainer

    spec = show_attend_tell.Spec(size["vocab_size"], size["feature_dim"], size["embed_dim"], size["hidden_dim"],
                                 dropout=0.0, attention_dim=size["attention_dim"])
    params = show_attend_tell.init_params(spec, seed=0)
    rng = np.random.default_rng(1)
    features = rng.random((batch, size["regions"], size["feature_dim"]), np.float32)  # non-negative, as after ReLU6
    captions = rng.integers(4, size["vocab_size"], (batch, size["steps"] + 1))
    captions[:, 0] = 1
    captions[:, -3:] = 0  # some padding, masked out of the loss
    config = CaptionerConfig(model=show_attend_tell.KIND, dropout=0.0, embed_dim=spec.embed_dim,
                             hidden_dim=spec.hidden_dim)
    trainer = CaptionerTrainer(config, spec, params)
    ours = lambda: trainer.train_step(features, captions)  # noqa: E731
    torch_step = torch_reference.show_attend_tell_train_step(spec, params, features, captions, config.lr, config.clip)
    if torch_step is None:
        return ours, {"torch": TORCH_MISSING}
    # At SAT_SIZE torch's float32 gradient norm is 4e-5 (relative) from the float64 value, ours 1e-7.
    for what, value, reference in zip(("losses", "gradient norms"), ours(), torch_step()):
        assert abs(float(value) - reference) <= AGREEMENT_TOL * abs(reference), f"dlmie and torch SAT {what} disagree"
    return ours, {"torch": torch_step}


# The committed Show-Attend-Tell (Flickr8k, vocabulary 1,532, 49 x 1280 MobileNetV2 grid, at most 18 words):
# self-critical training fine-tunes it, and its trained weights make the samples end where real ones do.
SCST_MODEL = Path(__file__).resolve().parents[1] / "models" / "weights" / "show_attend_tell.npz"
SCST_LR = 5e-5  # train_captioner's default with --scst (Adam's step costs the same at any rate)


def _scst_model(size: dict | None):
    """(spec, weights, idx_to_word, max_length): the committed model's, or, for a `size` with
    SAT_SIZE's keys, initial weights and made-up words at that size and max_length = size["steps"]."""
    from dlmie import checkpoint
    from dlmie.data.vocab import SPECIALS
    from dlmie.models import show_attend_tell

    if size is None:
        arrays, meta = checkpoint.load(SCST_MODEL)
        weights = {name: value.astype(np.float32) for name, value in arrays.items()}
        return (show_attend_tell.Spec(**meta["spec"]), weights, meta["vocab"]["idx_to_word"],
                meta["config"]["max_length"])
    spec = show_attend_tell.Spec(size["vocab_size"], size["feature_dim"], size["embed_dim"], size["hidden_dim"],
                                 attention_dim=size["attention_dim"])
    words = list(SPECIALS) + [f"w{i}" for i in range(size["vocab_size"] - len(SPECIALS))]
    return spec, show_attend_tell.init_params(spec, seed=0), words, size["steps"]


def scst_step_sat(images: int, samples: int, size: dict | None = None):
    """Self-critical step of Show-Attend-Tell (the committed model: V=1532, 49 x 1280 grid, 18 words):
    K captions sampled per image, CIDEr-D rewards, mean-of-others baseline, advantage-weighted training step.

    Ours: dlmie.training.scst.SelfCriticalTask.train_batch, the step `train_captioner --scst` runs
    (Decoder.sample on the compiled step function, CIDEr-D, the weighted compiled training step).
    Reference: the same step in PyTorch CPU, same weights: sampling with torch.multinomial word by
    word, the baseline in torch, the weighted loss with an explicit loop over time, clipping, Adam.
    Both score their samples with the same CIDEr-D (dlmie.captioning.cider, included in both times);
    the references are 5 captions per image sampled from the starting model, random image grids.
    Checks first that the models agree: our log-probabilities of torch's samples, and one weighted
    training step (loss, gradient norm) on the same captions. Captions/s = images x K / time.

    `size`: None for the committed model, or SAT_SIZE's keys for initial weights (the tests' tiny
    one); returns (ours, {"torch": step}), ours returning train_batch's totals, torch's step (loss, norm)."""
    import itertools

    from dlmie.captioning.decode import Decoder
    from dlmie.models import show_attend_tell
    from dlmie.training.captioner import CaptionData, CaptionerConfig, CaptionerTrainer
    from dlmie.training.scst import SCSTConfig, SelfCriticalTask, with_end, caption_rows, cider_reward

    spec, weights, words, max_length = _scst_model(size)
    spec = replace(spec, dropout=0.0)  # as train_scst trains: the samples' policy is the one differentiated
    regions = (SAT_SIZE if size is None else size)["regions"]  # MobileNetV2's 7 x 7 grid, or the tiny size's
    rng = np.random.default_rng(1)
    features = rng.random((images, regions, spec.feature_dim), np.float32)  # non-negative, as after ReLU6
    config = CaptionerConfig(model=show_attend_tell.KIND, dropout=0.0, embed_dim=spec.embed_dim,
                             hidden_dim=spec.hidden_dim, max_length=max_length, lr=SCST_LR)
    trainer = CaptionerTrainer(config, spec, weights, weighted=True)
    decoder = Decoder.compile(show_attend_tell, spec, trainer.params)
    per_image = 5  # references, as Flickr8k has
    drawn = decoder.sample(np.repeat(features, per_image, axis=0), np.random.default_rng(2), max_length)
    references = [[" ".join(words[i] for i in w) for w in drawn.words[per_image * m : per_image * (m + 1)]]
                  for m in range(images)]
    train = CaptionData(features, caption_rows(drawn.words, max_length), np.repeat(np.arange(images), per_image),
                        references, [f"{m}.jpg" for m in range(images)])
    task = SelfCriticalTask(trainer, decoder, train, None, cider_reward(references), None, words,
                            SCSTConfig(samples=samples, images=images), meta_base={})
    epochs = itertools.count()  # a batch of every image per epoch; a new epoch draws new samples
    ours = lambda: task.train_batch(next(epochs), 0)  # noqa: E731
    torch_functions = torch_reference.show_attend_tell_scst_step(
        spec, weights, features, samples, max_length, config.lr, config.clip,
        lambda ids, image_idxs: task.reward(task.tokens(ids), image_idxs))
    if torch_functions is None:
        return ours, {"torch": TORCH_MISSING}
    sample, train_step, step = torch_functions
    repeated = np.repeat(features, samples, axis=0)
    torch_words, torch_log_prob = sample()
    ours_log_prob = decoder.score(repeated, with_end(torch_words, max_length))
    err = scaled_error(ours_log_prob, torch_log_prob)
    assert err < AGREEMENT_TOL, f"dlmie and torch SAT log-probabilities of the same captions disagree ({err:.1e})"
    captions = caption_rows(torch_words, max_length)
    advantages = rng.standard_normal(len(captions)).astype(np.float32)
    for what, value, reference in zip(("losses", "gradient norms"), trainer.train_step(repeated, captions, advantages),
                                      train_step(captions, advantages)):
        assert abs(float(value) - reference) <= AGREEMENT_TOL * abs(reference), \
            f"dlmie and torch weighted SAT {what} disagree"
    return ours, {"torch": step}


# ---------------------------------------------------------------- start-up of a command

STARTUP_MODEL = Path(__file__).resolve().parents[1] / "models" / "weights" / "tiny_convnet.npz"


def _top_class(stdout: str) -> str:
    """The first class a classify run printed: "  17.3%  dining table (n03201208)" -> "dining table (n03201208)"."""
    match = re.search(r"^\s+\d+\.\d%\s+(.+)$", stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no class in the output of a classify run:\n{stdout}")
    return match.group(1)


def classify_startup(cold: bool):
    """`python -m dlmie.classify IMAGE` in a fresh process: import, build, compile, classify one image.

    The committed Tiny-ImageNet classifier on one 64 x 64 image, timed from outside the process,
    start to exit. Cold: a fresh, empty PyTensor compile dir (base_compiledir) in every run, so the
    C modules and the rewritten graphs are made anew; warm: one compile dir for every run, filled by
    the warm-up run. Reference: a process that imports only NumPy, PIL and PyTorch and runs the same
    model and weights (`python -m dlmie.benchmarks.torch_startup`). Every reference run checks that it names the
    same top class as ours did."""
    from PIL import Image

    import dlmie

    folder = tempfile.TemporaryDirectory(prefix="dlmie-startup-")  # removed with the callables
    image = Path(folder.name) / "image.png"
    rows, cols = np.mgrid[0:64, 0:64]
    Image.fromarray(np.stack([rows * 4, cols * 4, (rows + cols) * 2], axis=-1).astype(np.uint8)).save(image)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(dlmie.__file__).parents[1]),
                                                                      os.environ.get("PYTHONPATH")])))
    env.pop("DLMIE_GRAPH_CACHE", None)  # the rewritten graphs live in the compile dir, cold when it is
    top = {}

    def run(command, compiledir=None):
        flags = ",".join(filter(None, [env.get("PYTENSOR_FLAGS"), compiledir and f"base_compiledir={compiledir}"]))
        result = subprocess.run(command, env={**env, "PYTENSOR_FLAGS": flags}, cwd=folder.name,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{result.stderr}")
        return _top_class(result.stdout)

    def ours():
        # Cold: a new compile dir per run, left for the folder's removal (deleting it would be timed).
        compiledir = tempfile.mkdtemp(dir=folder.name) if cold else Path(folder.name) / "compiledir"
        top["ours"] = run([sys.executable, "-m", "dlmie.classify", "--model", str(STARTUP_MODEL), str(image)],
                          compiledir)

    if torch_reference.load_torch() is None:
        return ours, {"torch": TORCH_MISSING}

    def reference():
        name = run([sys.executable, "-m", "dlmie.benchmarks.torch_startup", str(STARTUP_MODEL), str(image)])
        assert name == top.get("ours", name), f"dlmie names {top['ours']!r}, torch {name!r}"

    return ours, {"torch": reference}

"""The benchmarks' PyTorch CPU references: dlmie's networks and steps written as a PyTorch user would,
with the same weights, so that each benchmark can first check that both agree and then time both.

PyTorch is an optional extra (``pip install dlmie[bench]``): every function here returns None when
it is not installed, and the benchmark then reports its torch row as skipped. Parameter names and
layouts are dlmie's (weights (in, out) for affine layers, LSTM gates ordered i, f, o, g); each
function converts them to torch's.
"""

import numpy as np


def load_torch():
    """The torch module, or None when PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def convnet(params: dict):
    """The small benchmark conv net of `numpy_reference.convnet` (same params) as a function
    (x, dout) -> (scores, dx), NumPy in and out, or None without torch.

    The weights do not require gradients, so backward computes only the input gradient, as ours does.
    """
    torch = load_torch()
    if torch is None:
        return None
    F = torch.nn.functional
    layers = len(params) // 2 - 1
    t = {k: torch.from_numpy(v) for k, v in params.items()}
    w_out, b_out = t[f"w{layers + 1}"].T.contiguous(), t[f"b{layers + 1}"]

    def run(x, dout):
        x = torch.from_numpy(x).requires_grad_()
        h = x
        for i in range(1, layers + 1):
            h = F.max_pool2d(F.relu(F.conv2d(h, t[f"w{i}"], t[f"b{i}"], padding=1)), 2)
        scores = F.linear(h.flatten(1), w_out, b_out)
        scores.backward(torch.from_numpy(dout))
        return scores.detach().numpy(), x.grad.numpy()

    return run


def classifier(spec, params: dict):
    """The dlmie.models.convnet network `spec` with weights `params` as a torch.nn.Sequential, or None
    without torch: conv-batchnorm-ReLU blocks, global average pooling or flattening, affine blocks."""
    torch = load_torch()
    if torch is None:
        return None
    nn = torch.nn

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


def classifier_train_step(spec, params: dict, x, y, lr: float, momentum: float, weight_decay: float):
    """One SGD-momentum training step of `classifier(spec, params)` on the batch x (N, 3, H, W) float32,
    y (N,) int64, in training mode (batch statistics), cross-entropy loss. Weight decay applies to the
    conv and affine weights only, the tensors dlmie's L2 term covers. Returns step() or None."""
    torch = load_torch()
    if torch is None:
        return None
    net = classifier(spec, params)
    decayed = [p for name, p in net.named_parameters() if name.endswith("weight") and p.dim() > 1]
    others = [p for name, p in net.named_parameters() if not (name.endswith("weight") and p.dim() > 1)]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": weight_decay},
                                 {"params": others, "weight_decay": 0.0}], lr=lr, momentum=momentum)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    net.train()

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        optimizer.step()

    return step


def classifier_score_gradient(spec, params: dict, k: int, x):
    """Class k's score of `classifier(spec, params)` in inference mode, summed over the batch
    x (N, 3, H, W) float32, and its gradient w.r.t. x. Returns run() -> (score, dx (N, 3, H, W)) or None."""
    torch = load_torch()
    if torch is None:
        return None
    net = classifier(spec, params).eval()

    def run():
        xt = torch.from_numpy(x).requires_grad_()
        score = net(xt)[:, k].sum()
        score.backward()
        return score.item(), xt.grad.numpy()

    return run


def classvis_step(spec, params: dict, k: int, lr: float, low, high, regularizers: dict):
    """The step of `dlmie.vis.ascent.ascend` on class k's score of `classifier(spec, params)`, with the
    transforms of `dlmie.vis.transforms.yosinski(**regularizers, blur_every=1)`, as a function
    (x (N, 3, H, W) float32, shift (dy, dx)) -> the next x, NumPy in and out; None without torch.

    low, high: (3,) the valid pixel range per channel. The blur pads symmetrically (scipy's "reflect",
    which torch's padding modes lack) with scipy's kernel, truncated at 4 sigma.
    """
    torch = load_torch()
    if torch is None:
        return None
    F = torch.nn.functional
    net = classifier(spec, params).eval()
    r = regularizers
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


def vgg16_features(params: dict, blocks):
    """VGG-16's convolutions, ReLUs and max pools up to conv5_3, with dlmie.models.vgg16's parameter
    names conv{block}_{c}.W (F, C, 3, 3) and .b (F,); blocks: vgg16.BLOCKS, (filters, convolutions)
    per block. Returns run(x (N, 3, H, W) float32) -> (N, 512, H / 16, W / 16), or None."""
    torch = load_torch()
    if torch is None:
        return None
    nn = torch.nn
    modules = []
    for block, (_, count) in enumerate(blocks, start=1):
        for c in range(1, count + 1):
            w = params[f"conv{block}_{c}.W"]
            conv = nn.Conv2d(w.shape[1], w.shape[0], 3, 1, 1)
            conv.weight = nn.Parameter(torch.from_numpy(w))
            conv.bias = nn.Parameter(torch.from_numpy(params[f"conv{block}_{c}.b"]))
            modules += [conv, nn.ReLU()]
        if block < len(blocks):
            modules.append(nn.MaxPool2d(2))
    net = nn.Sequential(*modules).eval()

    def run(x):
        with torch.no_grad():
            return net(torch.from_numpy(x)).numpy()

    return run


def _show_and_tell_modules(torch, params: dict):
    """dlmie.models.show_and_tell's weights in torch modules (image, embed, lstm, out).

    Our gates are ordered i, f, o, g; torch's LSTM orders them i, f, g, o and has two biases."""
    nn = torch.nn

    def reorder(w):  # columns (.., 4H) i f o g -> rows (4H, ..) i f g o
        i, f, o, g = np.split(w, 4, axis=-1)
        return np.ascontiguousarray(np.concatenate([i, f, g, o], axis=-1).T)

    image = nn.Linear(*params["img.W"].shape)
    embed = nn.Embedding(*params["embed.W"].shape)
    lstm = nn.LSTM(params["lstm.Wx"].shape[0], params["lstm.Wh"].shape[0], batch_first=True)
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


def show_and_tell_train_step(params: dict, features, captions, lr: float, clip: float):
    """dlmie.models.show_and_tell with the same weights, trained on one batch by nn.LSTM, global-norm
    clipping and Adam.

    Inputs:
    - params: show_and_tell's parameters
    - features: (N, D) float32 image features
    - captions: (N, T + 1) int64 word ids, <NULL> (0) padding ignored by the loss
    - lr, clip: Adam's learning rate and the clipping norm
    Returns None without torch, else:
    - loss(): the loss (summed over time, averaged over captions) without updating, a float
    - step(): one training step; returns the loss before it
    """
    torch = load_torch()
    if torch is None:
        return None
    image, embed, lstm, out = _show_and_tell_modules(torch, params)
    parameters = [p for m in (image, embed, lstm, out) for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    f, c = torch.from_numpy(features), torch.from_numpy(captions)

    def forward():
        h, _ = lstm(torch.cat([image(f)[:, None], embed(c[:, :-1])], dim=1))
        scores = out(h[:, 1:])
        total = torch.nn.functional.cross_entropy(scores.reshape(-1, scores.shape[-1]), c[:, 1:].reshape(-1),
                                                  ignore_index=0, reduction="sum")
        return total / scores.shape[0]

    def loss():
        with torch.no_grad():
            return forward().item()

    def step():
        optimizer.zero_grad()
        value = forward()
        value.backward()
        torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        return value.item()

    return loss, step


def show_and_tell_decoder(params: dict):
    """dlmie.models.show_and_tell's decoding functions with the same weights, for
    dlmie.captioning.decode.Decoder(start, step), or None without torch:
    - start(features (N, D)) -> [h, c], each (N, H)
    - step(words (N,), h, c, features) -> [log_probs (N, V), h, c, attention (N, 0)]
    """
    torch = load_torch()
    if torch is None:
        return None
    image, embed, lstm, out = _show_and_tell_modules(torch, params)

    @torch.no_grad()
    def start(features):
        _, (h, c) = lstm(image(torch.from_numpy(features))[:, None])
        return [h[0].numpy(), c[0].numpy()]

    @torch.no_grad()
    def step(words, h, c, features):
        x = embed(torch.from_numpy(words))[:, None]
        _, (h2, c2) = lstm(x, (torch.from_numpy(h)[None], torch.from_numpy(c)[None]))
        log_probs = torch.log_softmax(out(h2[0]), dim=1)
        return [log_probs.numpy(), h2[0].numpy(), c2[0].numpy(), np.zeros((len(words), 0), np.float32)]

    return start, step


def _sat_initial_state(torch, p: dict, features):
    """h_0, c_0 (N, H) of dlmie.models.show_attend_tell from the mean region, torch tensors."""
    mean = features.mean(dim=1)
    return torch.tanh(mean @ p["init_h.W"] + p["init_h.b"]), torch.tanh(mean @ p["init_c.W"] + p["init_c.b"])


def _sat_step(torch, spec, p: dict, features, projected, xw, h, c):
    """One step of dlmie.models.show_attend_tell's decoder: attention, gate, LSTM (our gate order i f o g).

    features (N, L, D), projected = features W_a + b_att (N, L, A), xw = E y_{t-1} W_x + b (N, 4H),
    h, c (N, H). Returns (h, c, z (N, D), alpha (N, L))."""
    alpha = torch.softmax(torch.tanh(projected + (h @ p["att.Wh"])[:, None]) @ p["att.w"], dim=1)  # (N, L)
    z = torch.bmm(alpha[:, None], features)[:, 0]  # (N, D)
    if spec.gate:
        z = z * torch.sigmoid(h @ p["gate.w"] + p["gate.b"])[:, None]
    i, f, o, g = (xw + z @ p["lstm.Wz"] + h @ p["lstm.Wh"]).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c, z, alpha


def _sat_scores(p: dict, embedded, h, z):
    """The deep output's word scores, any leading shape: (E y_{t-1} + L_h h_t + L_z z_t) W_o + b_o."""
    return (embedded + h @ p["out.Lh"] + z @ p["out.Lz"]) @ p["out.W"] + p["out.b"]


def _sat_trainer(torch, spec, params: dict, lr: float, clip: float):
    """dlmie.models.show_attend_tell's weights as torch Parameters (dict p) and its training step:
    train_step(features (N, L, D), captions (N, T + 1) int64, weights (N,) or None) -> (loss, gradient
    norm before clipping), floats, after one global-norm-clipped Adam update. The loss is the
    cross-entropy (each caption's scaled by its weight, <NULL> ignored) summed over time and averaged
    over captions, plus the unweighted doubly stochastic penalty."""
    F = torch.nn.functional
    p = {name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in params.items()}
    parameters = [p[name] for name in sorted(p)]
    optimizer = torch.optim.Adam(parameters, lr=lr)

    def loss(features, captions, weights):
        words_in, words_out = captions[:, :-1], captions[:, 1:]
        embedded = p["embed.W"][words_in]  # (N, T, E)
        xw = embedded @ p["lstm.Wx"] + p["lstm.b"]  # (N, T, 4H)
        projected = features @ p["att.Wa"] + p["att.b"]  # (N, L, A)
        h, c = _sat_initial_state(torch, p, features)
        hs, zs, alphas = [], [], []
        for t in range(words_in.shape[1]):
            h, c, z, alpha = _sat_step(torch, spec, p, features, projected, xw[:, t], h, c)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        h, z, alpha = torch.stack(hs, dim=1), torch.stack(zs, dim=1), torch.stack(alphas, dim=1)
        scores = _sat_scores(p, embedded, h, z)  # (N, T, V)
        cross_entropy = F.cross_entropy(scores.reshape(-1, scores.shape[-1]), words_out.reshape(-1), ignore_index=0,
                                        reduction="none").view(words_out.shape)
        if weights is not None:
            cross_entropy = cross_entropy * weights[:, None]
        coverage = (alpha * (words_out != 0).to(alpha.dtype)[..., None]).sum(dim=1)  # (N, L)
        penalty = spec.doubly_stochastic * (1 - coverage).square().sum(dim=1).mean()
        return cross_entropy.sum() / scores.shape[0] + penalty

    def train_step(features, captions, weights=None):
        optimizer.zero_grad()
        value = loss(features, captions, weights)
        value.backward()
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
        return value.item(), norm.item()

    return p, train_step


def show_attend_tell_train_step(spec, params: dict, features, captions, lr: float, clip: float):
    """dlmie.models.show_attend_tell's loss (dropout off) with the same weights, written with an
    explicit loop over time, trained on one batch with global-norm clipping and Adam.

    Inputs:
    - spec, params: show_attend_tell's
    - features: (N, L, D) float32 region features
    - captions: (N, T + 1) int64 word ids, <NULL> (0) padding ignored by the loss
    - lr, clip: Adam's learning rate and the clipping norm
    Returns step() -> (loss, gradient norm before clipping), floats; or None without torch.
    """
    torch = load_torch()
    if torch is None:
        return None
    _, train_step = _sat_trainer(torch, spec, params, lr, clip)
    features, captions = torch.from_numpy(features), torch.from_numpy(captions)
    return lambda: train_step(features, captions)


def show_attend_tell_scst_step(spec, params: dict, features, samples: int, max_length: int, lr: float, clip: float,
                               reward):
    """One self-critical step of dlmie.models.show_attend_tell (dropout off) as a PyTorch user would
    write it, the same weights: K captions per image drawn word by word with torch.multinomial
    (never <NULL> or <START>), their rewards, the mean of the image's other K - 1 rewards as each
    one's baseline, and a training step on the teacher-forced loss of the samples weighted by their
    advantages (reward - baseline), with global-norm clipping and Adam.

    Inputs:
    - spec, params: show_attend_tell's
    - features: (B, L, D) float32, one grid per image; caption b K + k is sample k of image b
    - samples: K >= 2
    - max_length: at most this many words before <END>; a caption reaching it is cut without <END>
    - lr, clip: Adam's learning rate and the clipping norm
    - reward: (B K lists of word ids without <START>/<END>, image indices (B K,)) -> (B K,) rewards, NumPy
    Returns None without torch, else a tuple of:
    - sample() -> (B K word-id lists, (B K,) float64 summed log-probabilities, with <END> where drawn)
    - train_step(captions (B K, max_length + 2) int64, weights (B K,) float32) -> (loss, gradient norm),
      NumPy in; one update on the sampled captions' loss weighted by `weights`
    - step() -> (loss, gradient norm) of one whole self-critical step
    """
    torch = load_torch()
    if torch is None:
        return None
    from dlmie.data.vocab import END, NULL, START

    p, train_on = _sat_trainer(torch, spec, params, lr, clip)
    images = len(features)
    repeated = torch.from_numpy(np.repeat(features, samples, axis=0))
    image_idxs = np.repeat(np.arange(images), samples)
    n = len(repeated)
    generator = torch.Generator().manual_seed(0)
    positions = torch.arange(max_length)

    @torch.no_grad()
    def draw():
        projected = repeated @ p["att.Wa"] + p["att.b"]
        h, c = _sat_initial_state(torch, p, repeated)
        words = torch.full((n,), START, dtype=torch.int64)
        out = torch.full((n, max_length), NULL, dtype=torch.int64)
        total = torch.zeros(n, dtype=torch.float64)
        finished = torch.zeros(n, dtype=torch.bool)
        length = torch.full((n,), max_length, dtype=torch.int64)
        for t in range(max_length):
            embedded = p["embed.W"][words]
            h, c, z, _ = _sat_step(torch, spec, p, repeated, projected, embedded @ p["lstm.Wx"] + p["lstm.b"], h, c)
            log_probs = torch.log_softmax(_sat_scores(p, embedded, h, z), dim=1)
            probs = log_probs.exp()
            probs[:, : START + 1] = 0.0
            words = torch.multinomial(probs, 1, generator=generator)[:, 0]
            total += torch.where(finished, 0.0, log_probs.gather(1, words[:, None])[:, 0].double())
            newly = ~finished & (words == END)
            length[newly] = t
            finished |= newly
            out[:, t] = words
            if finished.all():
                break
        return out, length, total

    def word_lists(out, length):
        return [row[:k] for row, k in zip(out.tolist(), length.tolist())]

    def sample():
        out, length, total = draw()
        return word_lists(out, length), total.numpy()

    def train_step(captions, weights):
        return train_on(repeated, torch.from_numpy(captions), torch.from_numpy(weights))

    def step():
        out, length, _ = draw()
        rewards = torch.from_numpy(reward(word_lists(out, length), image_idxs)).view(images, samples)
        baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)
        # <START> w_1 ... w_T <END> <NULL> ...: the drawn <END> sits at position length; past it, padding
        captions = torch.full((n, max_length + 2), NULL, dtype=torch.int64)
        captions[:, 0] = START
        captions[:, 1:-1] = torch.where(positions <= length[:, None], out, NULL)
        return train_on(repeated, captions, (rewards - baseline).flatten().float())

    return sample, train_step, step


def tflite_graph(graph, params: dict, names, output: int):
    """A graph of `dlmie.models.tflite.read_tflite` up to tensor `output`, with the arrays
    params[f"{names[k]}.W"], params[f"{names[k]}.b"] of op k. Depthwise convolutions are Conv2d with
    groups = channels; TensorFlow's asymmetric "SAME" padding is an F.pad.

    Returns run(x (N, C, H, W) float32) -> the output tensor as NumPy, flattened to (N, C') when it
    is 1 x 1 spatially; or None without torch.
    """
    torch = load_torch()
    if torch is None:
        return None
    F, nn = torch.nn.functional, torch.nn
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
                    raise ValueError(f"torch_reference.tflite_graph runs convolutions, adds and pools, not {op.kind}")
                values[op.output] = activations[op.activation](out)
                if op.output == output:
                    return values[output].flatten(1).numpy() if out.shape[2:] == (1, 1) else values[output].numpy()
        raise ValueError(f"no op writes tensor {output}")

    return run


def classify_file(model_path, image_path, top: int = 5) -> None:
    """`python -m dlmie.classify --model MODEL IMAGE` written as a PyTorch user would: read the
    checkpoint with NumPy, build `classifier` from its spec, read and normalize the image with PIL
    and NumPy, print the top classes in the command's format. Needs torch.

    The start-up benchmark's reference process runs it (`dlmie.benchmarks.torch_startup`).
    """
    import json
    from types import SimpleNamespace

    from PIL import Image

    torch = load_torch()
    with np.load(model_path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays.pop("__meta__").tobytes().decode("utf-8"))
    spec, pre = SimpleNamespace(**meta["spec"]), meta["preprocessing"]
    net = classifier(spec, arrays).eval()
    with Image.open(image_path) as image:
        image = image.convert("RGB").resize((spec.input_size, spec.input_size), Image.BILINEAR)
    x = np.asarray(image, np.float32) * (pre.get("scale", 1.0) / 255.0)
    if pre.get("channel_order", "RGB") == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))), 1)[0].numpy()
    print(image_path)
    for k in np.argsort(-probs)[:top]:
        print(f"  {probs[k]:6.1%}  {meta['class_names'][k]} ({meta['wnids'][k]})")


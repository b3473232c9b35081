"""Plain NumPy references, for the tests and for the benchmarks' "numpy" rows.

Two kinds:
- definitions written as loops that read like the formulas, no tricks: `conv2d`, `depthwise_conv2d`,
  `pool`, `softmax`, and TensorFlow Lite's `dequantize`, `same_padding`, `tf_conv2d` in TensorFlow's
  own layouts. The tests compare dlmie's layers and readers with them.
- the small benchmark conv net (`convnet`): forward scores and input gradient by im2col and one matmul
  per layer, with the backward pass written out by hand. It is fast enough to time against, which
  the loops are not; tests/test_bench.py checks its pieces against the loop definitions.
"""

import numpy as np


# ---------------------------------------------------------------- definitions, as loops


def conv2d(x, w, b, stride, pad):
    """Convolution (cross-correlation, as every deep-learning library) with zero padding.

    Inputs:
    - x: (N, C, H, W)
    - w: (F, C, HH, WW)
    - b: (F,)
    - stride, pad: ints, the same along both axes
    Returns:
    - out: (N, F, H', W') float64, H' = (H + 2 pad - HH) // stride + 1, W' likewise
    """
    n, c, h, width = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_h = (h + 2 * pad - kh) // stride + 1
    out_w = (width + 2 * pad - kw) // stride + 1
    out = np.zeros((n, f, out_h, out_w))
    for i in range(n):
        for k in range(f):
            for y in range(out_h):
                for z in range(out_w):
                    window = xp[i, :, y * stride : y * stride + kh, z * stride : z * stride + kw]
                    out[i, k, y, z] = np.sum(window * w[k]) + b[k]
    return out


def depthwise_conv2d(x, w, b, stride, pads):
    """Depthwise convolution: channel k convolved with its own filter w[k, 0].

    Inputs:
    - x: (N, C, H, W)
    - w: (C, 1, HH, WW)
    - b: (C,)
    - stride: int, along both axes
    - pads: (top, bottom, left, right) zeros, possibly asymmetric (TensorFlow's "SAME")
    Returns:
    - out: (N, C, H', W') float64, H' = (H + top + bottom - HH) // stride + 1, W' likewise
    """
    top, bottom, left, right = pads
    n, c, h, width = x.shape
    _, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h = (h + top + bottom - kh) // stride + 1
    out_w = (width + left + right - kw) // stride + 1
    out = np.zeros((n, c, out_h, out_w))
    for k in range(c):
        for y in range(out_h):
            for z in range(out_w):
                window = xp[:, k, y * stride : y * stride + kh, z * stride : z * stride + kw]
                out[:, k, y, z] = np.sum(window * w[k, 0], axis=(1, 2)) + b[k]
    return out


def pool(x, size, stride, pad, mode):
    """Max or average pooling over size x size windows.

    Inputs:
    - x: (N, C, H, W)
    - size, stride, pad: ints; max pooling pads with -inf, average pooling with zeros (which count)
    - mode: "max" or "avg"
    Returns:
    - out: (N, C, H', W') float64, H' = (H + 2 pad - size) // stride + 1, W' likewise
    """
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    out_h = (h + 2 * pad - size) // stride + 1
    out_w = (w + 2 * pad - size) // stride + 1
    out = np.zeros((n, c, out_h, out_w))
    reduce = np.max if mode == "max" else np.mean
    for y in range(out_h):
        for z in range(out_w):
            out[:, :, y, z] = reduce(xp[:, :, y * stride : y * stride + size, z * stride : z * stride + size], axis=(2, 3))
    return out


def softmax(x, axis=-1):
    """Softmax along `axis`: x of any shape -> probabilities of the same shape, summing to 1 along `axis`."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dequantize(q, scale, zero_point, axis=None):
    """TFLite's real value (q - zero_point) * scale; per channel along `axis` when it is given.

    Inputs:
    - q: integer array of any shape
    - scale, zero_point: scalars, or (q.shape[axis],) arrays with `axis`
    Returns:
    - float64 array of q's shape
    """
    q = np.asarray(q, np.float64)
    if axis is None:
        return (q - zero_point) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - np.reshape(zero_point, shape)) * np.reshape(scale, shape)


def same_padding(size, k, stride):
    """TensorFlow's "SAME": (before, after) zeros so that the output has ceil(size / stride) positions.

    Inputs: size, the input's length along one axis; k, the kernel's; stride. Returns two ints.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def tf_conv2d(x, w, b, stride, padding, depthwise=False):
    """TensorFlow's convolution in its own layouts: x (N, H, W, C); w (F, k, k, C) (OHWI), or
    (1, k, k, C) for a depthwise convolution; b (F,) or (C,); padding "SAME" or "VALID".
    Returns (N, H', W', F) float64 (F = C when depthwise)."""
    n, h, width, c = x.shape
    kh, kw = w.shape[1:3]
    (top, bottom), (left, right) = ((same_padding(h, kh, stride), same_padding(width, kw, stride))
                                    if padding == "SAME" else ((0, 0), (0, 0)))
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out_h = (h + top + bottom - kh) // stride + 1
    out_w = (width + left + right - kw) // stride + 1
    f = c if depthwise else w.shape[0]
    out = np.zeros((n, out_h, out_w, f))
    for y in range(out_h):
        for z in range(out_w):
            window = xp[:, y * stride : y * stride + kh, z * stride : z * stride + kw, :]  # (N, kh, kw, C)
            if depthwise:
                out[:, y, z, :] = np.sum(window * w[0], axis=(1, 2)) + b
            else:
                for k in range(f):
                    out[:, y, z, k] = np.sum(window * w[k], axis=(1, 2, 3)) + b[k]
    return out


# ---------------------------------------------------------------- the benchmark conv net, by im2col


def convnet_spec_forward(spec, p, x):
    """Inference-mode scores of a dlmie.models.convnet network (batch norm with stored statistics).

    Inputs:
    - spec: a ConvNetSpec; p: name -> float64 array (convnet.init_params' names)
    - x: (N, 3, S, S) preprocessed images
    Returns:
    - (N, num_classes) scores
    """
    def bn(h, prefix, shape):
        return (p[f"{prefix}.gamma"].reshape(shape) * (h - p[f"{prefix}.running_mean"].reshape(shape))
                / np.sqrt(p[f"{prefix}.running_var"].reshape(shape) + 1e-5) + p[f"{prefix}.beta"].reshape(shape))

    h = x
    for i, (_, _, stride, pad) in enumerate(spec.conv, start=1):
        h = conv2d(h, p[f"conv{i}.W"], p[f"conv{i}.b"], stride, pad)
        h = np.maximum(bn(h, f"conv{i}", (1, -1, 1, 1)), 0)
    h = h.mean(axis=(2, 3)) if spec.global_pool else h.reshape(len(x), -1)
    for j in range(1, len(spec.hidden) + 1):
        h = np.maximum(bn(h @ p[f"fc{j}.W"] + p[f"fc{j}.b"], f"fc{j}", (1, -1)), 0)
    return h @ p["scores.W"] + p["scores.b"]


def conv3x3_forward(x, w, b):
    """3x3 convolution, stride 1, pad 1, by im2col and one matmul.

    Inputs:
    - x: (N, C, H, W)
    - w: (F, C, 3, 3)
    - b: (F,)
    Returns:
    - out: (N, F, H, W), in x's dtype
    - cache: what `conv3x3_backward` needs
    """
    n, c, h, width = x.shape
    f = w.shape[0]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # (N, C, H, W, 3, 3)
    cols = windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * 9, n * h * width)
    out = w.reshape(f, -1) @ cols + b[:, None]  # (F, N*H*W)
    return out.reshape(f, n, h, width).transpose(1, 0, 2, 3), (x.shape, w)


def conv3x3_backward(dout, cache):
    """Input gradient of `conv3x3_forward`: one matmul back to columns, then col2im by 9 shifted adds.

    Inputs:
    - dout: (N, F, H, W) upstream gradient
    - cache: from `conv3x3_forward`
    Returns:
    - dx: (N, C, H, W)
    """
    (n, c, h, width), w = cache
    f = w.shape[0]
    dcols = w.reshape(f, -1).T @ dout.transpose(1, 0, 2, 3).reshape(f, -1)
    dcols = dcols.reshape(c, 3, 3, n, h, width)
    dxp = np.zeros((c, n, h + 2, width + 2), dtype=dout.dtype)
    for i in range(3):
        for j in range(3):
            dxp[:, :, i : i + h, j : j + width] += dcols[:, i, j]
    return dxp[:, :, 1:-1, 1:-1].transpose(1, 0, 2, 3)


def relu_max_pool2_forward(a):
    """max_pool2(relu(a)) on non-overlapping 2x2 blocks.

    Inputs:
    - a: (N, C, H, W), H and W even
    Returns:
    - out: (N, C, H / 2, W / 2)
    - cache: what `relu_max_pool2_backward` needs
    """
    n, c, h, w = a.shape
    blocks = np.maximum(a, 0).reshape(n, c, h // 2, 2, w // 2, 2)
    out = blocks.max(axis=(3, 5))
    return out, (a, blocks, out)


def relu_max_pool2_backward(dout, cache):
    """Gradient of `relu_max_pool2_forward`: to every tied maximum of its window, as PyTensor's
    max-pool gradient does, then through the ReLU.

    Inputs:
    - dout: (N, C, H / 2, W / 2) upstream gradient
    - cache: from `relu_max_pool2_forward`
    Returns:
    - da: (N, C, H, W)
    """
    a, blocks, out = cache
    mask = blocks == out[:, :, :, None, :, None]
    return (mask * dout[:, :, :, None, :, None]).reshape(a.shape) * (a > 0)


def convnet(params: dict):
    """The small benchmark conv net, [conv3x3-relu-maxpool2] x L then one affine layer, as a function
    (x, dout) -> (scores, dx), dx = d sum(scores * dout) / dx.

    Inputs:
    - params: w1..wL (F, C, 3, 3) and b1..bL (F,), the convolutions; w{L+1} (D, classes) and
      b{L+1} (classes,), the affine layer on the flattened last pooled map (D values)
    Returns:
    - run: x (N, C, H, W), dout (N, classes) -> scores (N, classes), dx (N, C, H, W); H and W
      divisible by 2^L; the arrays take the dtype of x and params
    """
    layers = len(params) // 2 - 1
    w_out, b_out = params[f"w{layers + 1}"], params[f"b{layers + 1}"]

    def run(x, dout):
        caches, h = [], x
        for i in range(1, layers + 1):
            a, conv_cache = conv3x3_forward(h, params[f"w{i}"], params[f"b{i}"])
            h, pool_cache = relu_max_pool2_forward(a)
            caches.append((conv_cache, pool_cache))
        scores = h.reshape(len(x), -1) @ w_out + b_out
        dh = (dout @ w_out.T).reshape(h.shape)
        for conv_cache, pool_cache in reversed(caches):
            dh = conv3x3_backward(relu_max_pool2_backward(dh, pool_cache), conv_cache)
        return scores, dh

    return run

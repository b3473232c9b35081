"""Plain NumPy references for the tests: loops that read like the definitions, no tricks."""

import numpy as np


def conv2d(x, w, b, stride, pad):
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
    """pads: (top, bottom, left, right); w: (C, 1, HH, WW)."""
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
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dequantize(q, scale, zero_point, axis=None):
    """TFLite's real value (q - zero_point) * scale; per channel along `axis` when it is given."""
    q = np.asarray(q, np.float64)
    if axis is None:
        return (q - zero_point) * scale
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - np.reshape(zero_point, shape)) * np.reshape(scale, shape)


def same_padding(size, k, stride):
    """TensorFlow's "SAME": (before, after) zeros so that the output has ceil(size / stride) positions."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def tf_conv2d(x, w, b, stride, padding, depthwise=False):
    """TensorFlow's convolution in its own layouts: x (N, H, W, C); w (F, k, k, C) (OHWI), or
    (1, k, k, C) for a depthwise convolution; padding "SAME" or "VALID". Returns (N, H', W', F)."""
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

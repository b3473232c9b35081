"""Reference layers in NumPy, cs231n style: a forward pass returns its output and a cache, the
backward pass takes the upstream gradient and the cache.

The engine computes the same layers symbolically (`dlmie.layers`) with compiled kernels
(`dlmie.kernels`), and differentiates them with `pytensor.grad`. Here the backward pass is written
out by hand, and notebook 00 checks it against both the engine and centered differences:

    out, cache = batchnorm_forward(x, gamma, beta)         # x: (N, D) or (N, C, H, W)
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)    # the simplified form
    dx, dgamma, dbeta = batchnorm_backward_staged(dout, cache)   # the paper's stages
"""

from __future__ import annotations

import numpy as np


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5):
    """Batch normalization in training mode (Ioffe & Szegedy 2015, section 3, Algorithm 1).

    Each feature is normalized with the statistics of the minibatch, then scaled and shifted:

        mu_j     = (1/m) sum_i x_ij
        var_j    = (1/m) sum_i (x_ij - mu_j)^2            (biased: divided by m, not m - 1)
        xhat_ij  = (x_ij - mu_j) / √(var_j + eps)
        out_ij   = gamma_j xhat_ij + beta_j

    For (N, D) input, i runs over the N rows and j over the D features (m = N). For (N, C, H, W)
    input ("spatial" batch normalization of a convolutional layer), j is the channel and i runs
    over the images and the positions (n, h, w): m = N H W values per channel.

    Inputs:
    - x: (N, D) or (N, C, H, W) float array
    - gamma, beta: (D,) or (C,), the scale and the shift
    - eps: added to the variance, so that a feature of zero variance gives xhat = 0, not NaN
    Returns a tuple of:
    - out: like x
    - cache: the tuple (xhat, gamma, std): xhat like x, the normalized input; gamma as given;
      std (D,) or (C,), √(var + eps). `batchnorm_backward` needs nothing else.
    Raises:
    - ValueError "batchnorm takes (N, D) or (N, C, H, W) input" for x of any other number of
      dimensions, and "gamma and beta must have one value per feature" when gamma or beta does
      not have shape (D,) (or (C,))
    """
    ### BEGIN SOLUTION
    x, gamma, beta = np.asarray(x), np.asarray(gamma), np.asarray(beta)
    if x.ndim not in (2, 4):
        raise ValueError(f"batchnorm takes (N, D) or (N, C, H, W) input, got shape {x.shape}")
    if gamma.shape != (x.shape[1],) or beta.shape != (x.shape[1],):
        raise ValueError(f"gamma and beta must have one value per feature: x is {x.shape}, "
                         f"gamma {gamma.shape}, beta {beta.shape}")
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (x.ndim - 2)  # a per-feature vector, broadcast against x
    mu = x.mean(axis=axes)
    var = ((x - mu.reshape(shape)) ** 2).mean(axis=axes)
    std = np.sqrt(var + eps)
    xhat = (x - mu.reshape(shape)) / std.reshape(shape)
    out = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return out, (xhat, gamma, std)
    ### END SOLUTION


def batchnorm_backward(dout: np.ndarray, cache: tuple):
    """The backward pass of `batchnorm_forward`, in the simplified form (derive it yourself).

    With L any scalar function of out and dout = dL/dout, the chain rule through the graph of
    Ioffe & Szegedy's section 3 (xhat depends on x directly and through mu and var; mu and var
    depend on every x_ij of feature j) gives dL/dgamma, dL/dbeta and dL/dx. Write dL/dx without
    the intermediate gradients of mu and var: a closed form in dout, xhat, gamma, std and m, one
    expression per feature j (see the notebook's hints for the steps). For (N, C, H, W) input,
    every sum over i runs over the images and the positions of channel j, as in the forward pass.

    Inputs:
    - dout: like x, the gradient of the loss with respect to out
    - cache: (xhat, gamma, std) as `batchnorm_forward` returns it
    Returns a tuple of:
    - dx: like x
    - dgamma, dbeta: (D,) or (C,)
    """
    ### BEGIN SOLUTION
    xhat, gamma, std = cache
    dout = np.asarray(dout)
    axes = (0,) if dout.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (dout.ndim - 2)
    m = dout.size // dout.shape[1]  # values per feature
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    # dL/dxhat = gamma dout; through mu and var it loses its mean and its component along xhat:
    # dx = gamma / std * (dout - mean(dout) - xhat * mean(dout * xhat)), means over the m values.
    scale = (gamma / std).reshape(shape)
    dx = scale * (dout - dbeta.reshape(shape) / m - xhat * dgamma.reshape(shape) / m)
    return dx, dgamma, dbeta
    ### END SOLUTION


def batchnorm_backward_staged(dout: np.ndarray, cache: tuple):
    """The backward pass of `batchnorm_forward`, stage by stage through its graph, as Ioffe &
    Szegedy write it in section 3 (derive it yourself).

    The forward pass is the graph x -> mu -> var -> xhat -> out (xhat also reads x directly; see
    `batchnorm_forward`). Going backwards, compute in turn the gradient of the loss with respect to
    xhat, then var (a sum over the m values of each feature), then mu (through xhat directly and
    through var), and finally x, which receives three contributions: through xhat directly, through
    var and through mu. dgamma and dbeta are as in `batchnorm_backward`. The result equals the
    simplified form's; it is the paper's derivation, written out.

    Inputs:
    - dout: like x, the gradient of the loss with respect to out
    - cache: (xhat, gamma, std) as `batchnorm_forward` returns it; x - mu is xhat * std
    Returns a tuple of:
    - dx: like x
    - dgamma, dbeta: (D,) or (C,)
    """
    ### BEGIN SOLUTION
    xhat, gamma, std = cache
    dout = np.asarray(dout)
    axes = (0,) if dout.ndim == 2 else (0, 2, 3)
    shape = (1, -1) + (1,) * (dout.ndim - 2)
    m = dout.size // dout.shape[1]
    centered = xhat * std.reshape(shape)  # x - mu
    dxhat = dout * gamma.reshape(shape)
    dvar = -0.5 * (dxhat * centered).sum(axis=axes) / std ** 3
    dmu = -(dxhat / std.reshape(shape)).sum(axis=axes) - 2 * dvar * centered.sum(axis=axes) / m
    dx = dxhat / std.reshape(shape) + (2 * dvar.reshape(shape) * centered + dmu.reshape(shape)) / m
    dgamma = (dout * xhat).sum(axis=axes)
    dbeta = dout.sum(axis=axes)
    return dx, dgamma, dbeta
    ### END SOLUTION

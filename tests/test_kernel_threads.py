"""The C kernels split their loops among threads (kernels.common.PARALLEL_SUPPORT_CODE) by channel
or plane: a network run on one thread and on two must agree. Each count runs in its own process,
since a kernel reads the thread count once."""

import os
import subprocess
import sys

import numpy as np

# Sizes chosen so that every threaded loop is large enough to use its threads (at least 2^20
# elements touched): Im2Col, Col2Im, MaxPool, BatchNormTrain/Grad, DepthwiseConv2d, and ConvGemm's
# window copy (64 channels, 3x3) and bias-and-activation pass (512 filters).
SCRIPT = r"""
import sys
import numpy as np
import dlmie, pytensor, pytensor.tensor as pt
from dlmie import layers as L

rng = np.random.default_rng(0)
x = pt.tensor4("x", dtype="float32")
shared = lambda v: pytensor.shared((v * 0.3).astype(np.float32), shape=v.shape)
w1, b1 = shared(rng.standard_normal((64, 8, 3, 3))), shared(rng.standard_normal(64))
gamma, beta = shared(rng.standard_normal(64)), shared(rng.standard_normal(64))
running = [shared(np.zeros(64)), shared(np.ones(64))]
w2, b2 = shared(rng.standard_normal((64, 64, 3, 3))), shared(rng.standard_normal(64))
wd, bd = shared(rng.standard_normal((64, 1, 3, 3))), shared(rng.standard_normal(64))
w3, b3 = shared(rng.standard_normal((512, 64, 1, 1))), shared(rng.standard_normal(512))
h = L.max_pool(L.relu(L.conv2d(x, w1, b1, 1, 1)), 2)
h, _ = L.batchnorm(h, gamma, beta, *running, train=True)
h = L.relu(L.conv2d(h, w2, b2, 1, 1))
h = L.depthwise_conv2d(h, wd, bd, 2, (0, 1, 0, 1))
scores = L.relu6(L.conv2d(h, w3, b3, 1, 0))
loss = (scores ** 2).sum()
forward = pytensor.function([x], scores)
backward = pytensor.function([x], pytensor.grad(loss, [x, w1, gamma, w2, wd, w3]))
xv = rng.standard_normal((8, 8, 64, 64)).astype(np.float32)
np.savez(sys.argv[1], forward=forward(xv), *backward(xv))
"""


def test_one_thread_and_two_agree(tmp_path):
    results = {}
    for threads in ("1", "2"):
        out = tmp_path / f"threads{threads}.npz"
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, check=True, timeout=600)
        with np.load(out) as arrays:
            results[threads] = {k: arrays[k] for k in arrays.files}
    assert results["1"].keys() == results["2"].keys() and len(results["1"]) == 7
    for key, value in results["1"].items():
        assert np.isfinite(value).all()
        # The GEMMs may sum in another order on two threads (OpenBLAS splits them); the kernels
        # themselves do not, so the results agree to float32 rounding, not bit for bit.
        scale = np.max(np.abs(value))
        assert np.max(np.abs(results["2"][key] - value)) <= 1e-5 * scale, key

"""The conv-net family: forward pass against NumPy, gradient check of the whole loss in float64."""

import numpy as np

import dlmie  # noqa: F401  (before pytensor: it configures PyTensor)
import pytensor
import pytensor.tensor as pt
from dlmie import layers as L
from dlmie.benchmarks import numpy_reference as reference
from dlmie.gradcheck import check_gradients, rel_error
from dlmie.models import convnet

SPEC = convnet.ConvNetSpec(conv=[(4, 3, 2, 1), (6, 3, 1, 1)], hidden=[5], num_classes=3, input_size=9,
                           global_pool=False)


def random_params(spec, seed=0):
    rng = np.random.default_rng(seed)
    params = convnet.init_params(spec, seed, dtype="float64")
    for name in params:  # non-trivial batch-norm parameters and statistics
        if name.endswith((".gamma", ".running_var")):
            params[name] = 0.5 + rng.random(params[name].shape)
        elif name.endswith((".beta", ".running_mean", ".b")):
            params[name] = rng.standard_normal(params[name].shape)
    return params


def test_spec_shapes_and_names():
    assert SPEC.conv_grid() == 5
    assert SPEC.layer_names() == ["conv1", "conv2", "fc1", "scores"]
    params = convnet.init_params(SPEC)
    assert params["fc1.W"].shape == (6 * 5 * 5, 5)
    assert convnet.ConvNetSpec.from_dict(SPEC.to_dict()) == SPEC
    assert not convnet.is_trainable("conv1.running_mean") and convnet.is_trainable("conv1.gamma")


def test_inference_forward_matches_numpy():
    for spec in (SPEC, convnet.ConvNetSpec(conv=[(4, 5, 2, 2), (3, 3, 2, 1)], num_classes=7, input_size=11)):
        params = random_params(spec)
        x = np.random.default_rng(1).standard_normal((2, 3, spec.input_size, spec.input_size))
        xv = pt.tensor4("x", dtype="float64")
        scores, activations, updates = convnet.forward(spec, L.shared_params(params), xv, train=False)
        assert updates == [] and list(activations) == spec.layer_names()
        ours = pytensor.function([xv], scores)(x)
        assert rel_error(ours, reference.convnet_spec_forward(spec, params, x)) < 1e-9


def test_training_loss_gradient():
    params = random_params(SPEC)
    checked = ["conv1.W", "conv2.gamma", "fc1.W", "scores.b"]
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((4, 3, 9, 9)), "y": rng.integers(0, 3, 4), **{n: params[n] for n in checked}}

    def loss(x, y, **given):
        scores, _, _ = convnet.forward(SPEC, {**L.shared_params(params), **given}, x, train=True)
        return L.softmax_cross_entropy(scores, y)

    errors = check_gradients(loss, inputs)
    assert set(errors) == {"x", *checked}
    # Through two training-mode batch norms some entries of dx nearly cancel, and the elementwise
    # relative error of those entries is ~1e-6; a wrong gradient is off by 1e-2 or more.
    for name, err in errors.items():
        assert err < 1e-5, f"d{name}: {err:.2e}"

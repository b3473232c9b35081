"""The benchmark harness: one row end to end, and the three conv-net implementations agree.

No timing assertions: timings depend on the machine.
"""

import re

import numpy as np
import pytest

from dlmie import bench


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def test_one_benchmark_end_to_end(capsys):
    bench.main(["convnet_fwd_inputgrad_b1", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("BLAS: ")
    rows = {line.split()[1]: line for line in lines if line.startswith("convnet_fwd_inputgrad_b1")}
    assert set(rows) == {"torch", "numpy"}
    # name, reference, ours ms, reference ms, ours / reference
    assert re.fullmatch(r"convnet_fwd_inputgrad_b1\s+numpy(\s+\d+\.\d+){3}", rows["numpy"]), rows["numpy"]
    torch_row = r"(\s+\d+\.\d+){3}" if _has_torch() else r"\s+\d+\.\d+\s+" + re.escape(bench.TORCH_MISSING)
    assert re.fullmatch(r"convnet_fwd_inputgrad_b1\s+torch" + torch_row, rows["torch"]), rows["torch"]


def test_list_names_every_benchmark(capsys):
    bench.main(["--list"])
    out = capsys.readouterr().out
    assert all(name in out for name in bench.BENCHMARKS)


def test_unknown_benchmark_is_an_error():
    with pytest.raises(SystemExit):
        bench.main(["no_such_benchmark"])


@pytest.mark.parametrize("implementation", ["dlmie", "torch"])
def test_convnet_implementations_agree(implementation):
    if implementation == "torch":
        pytest.importorskip("torch")
    errors = bench.convnet_agreement(batch=2)
    for what in ("scores", "dx"):
        err = errors[f"{implementation} {what}"]
        assert err < 1e-4, f"{implementation} {what}: scaled error {err:.2e} against NumPy"


def test_numpy_reference_matches_float64():
    """The NumPy reference itself, in float32, against its own float64 run."""
    params, (x, dout) = bench.convnet_params(), bench.convnet_inputs(2)
    got = bench.numpy_convnet(params)(x, dout)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    want = bench.numpy_convnet(params64)(x.astype(np.float64), dout.astype(np.float64))
    for g, w in zip(got, want):
        assert bench.scaled_error(g, w) < 1e-5


def test_torch_row_is_skipped_without_torch(monkeypatch):
    monkeypatch.setattr(bench, "torch_convnet", lambda params: None)
    _, references = bench.convnet_fwd_inputgrad(1)
    assert references["torch"] == bench.TORCH_MISSING


# Show-Attend-Tell at a size that compiles and runs in seconds: 5 regions of 12, 6 steps.
SAT_TINY = {"vocab_size": 30, "regions": 5, "feature_dim": 12, "embed_dim": 8, "hidden_dim": 10, "attention_dim": 6,
            "steps": 6}


def test_sat_train_step_agrees_with_torch():
    """Building the row checks the first step's loss and gradient norm; the next steps check that
    clipping and Adam moved both models' weights alike."""
    pytest.importorskip("torch")
    ours, references = bench.sat_train_step(3, SAT_TINY)
    for _ in range(2):
        (loss, norm), (ref_loss, ref_norm) = ours(), references["torch"]()
        assert abs(float(loss) - ref_loss) <= bench.AGREEMENT_TOL * ref_loss
        assert abs(float(norm) - ref_norm) <= bench.AGREEMENT_TOL * ref_norm

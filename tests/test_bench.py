"""The benchmark command and harness: one row end to end, alternating timing, skipped references,
and the references themselves (the three conv-net implementations agree).

No timing assertions: timings depend on the machine.
"""

import re
from pathlib import Path

import numpy as np
import pytest

from dlmie import bench
from dlmie.benchmarks import cases, harness, numpy_reference, torch_reference


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
    torch_row = r"(\s+\d+\.\d+){3}" if _has_torch() else r"\s+\d+\.\d+\s+" + re.escape(cases.TORCH_MISSING)
    assert re.fullmatch(r"convnet_fwd_inputgrad_b1\s+torch" + torch_row, rows["torch"]), rows["torch"]


def test_list_names_every_benchmark(capsys):
    bench.main(["--list"])
    out = capsys.readouterr().out
    assert all(name in out for name in harness.BENCHMARKS)


def test_unknown_benchmark_is_an_error():
    with pytest.raises(SystemExit):
        bench.main(["no_such_benchmark"])


@pytest.mark.parametrize("implementation", ["dlmie", "torch"])
def test_convnet_implementations_agree(implementation):
    if implementation == "torch":
        pytest.importorskip("torch")
    errors = cases.convnet_agreement(batch=2)
    for what in ("scores", "dx"):
        err = errors[f"{implementation} {what}"]
        assert err < 1e-4, f"{implementation} {what}: scaled error {err:.2e} against NumPy"


def test_numpy_reference_matches_float64():
    """The NumPy reference itself, in float32, against its own float64 run."""
    params, (x, dout) = cases.convnet_params(), cases.convnet_inputs(2)
    got = numpy_reference.convnet(params)(x, dout)
    params64 = {k: v.astype(np.float64) for k, v in params.items()}
    want = numpy_reference.convnet(params64)(x.astype(np.float64), dout.astype(np.float64))
    for g, w in zip(got, want):
        assert cases.scaled_error(g, w) < 1e-5


def test_numpy_im2col_layers_match_the_loop_definitions():
    """The benchmark's im2col convolution and fused ReLU-pool against the loops the layer tests use."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 6, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    out, _ = numpy_reference.conv3x3_forward(x, w, b)
    np.testing.assert_allclose(out, numpy_reference.conv2d(x, w, b, 1, 1), rtol=1e-12, atol=1e-12)
    pooled, _ = numpy_reference.relu_max_pool2_forward(out)
    np.testing.assert_allclose(pooled, numpy_reference.pool(np.maximum(out, 0), 2, 2, 0, "max"), rtol=0, atol=0)


def test_numpy_convnet_input_gradient_matches_finite_differences():
    """dx of the NumPy reference, in float64, against central differences of sum(scores * dout)."""
    rng = np.random.default_rng(2)
    params = {"w1": rng.standard_normal((3, 2, 3, 3)), "b1": rng.standard_normal(3),
              "w2": rng.standard_normal((3 * 2 * 2, 5)), "b2": rng.standard_normal(5)}
    x, dout = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 5))
    run = numpy_reference.convnet(params)
    _, dx = run(x, dout)
    numeric, h = np.zeros_like(x), 1e-6
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        numeric[i] = (np.sum(run(plus, dout)[0] * dout) - np.sum(run(minus, dout)[0] * dout)) / (2 * h)
    np.testing.assert_allclose(dx, numeric, rtol=1e-5, atol=1e-7)


def test_torch_rows_are_skipped_without_torch(monkeypatch):
    monkeypatch.setattr(torch_reference, "load_torch", lambda: None)
    assert "torch not installed" in harness.header()
    _, references = cases.convnet_fwd_inputgrad(1)
    assert references["torch"] == cases.TORCH_MISSING


def test_median_times_alternates_after_warmup():
    calls = []
    medians = harness.median_times([lambda: calls.append("a"), lambda: calls.append("b")], repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4
    assert len(medians) == 2 and all(m >= 0 for m in medians)


def test_rows_time_each_reference_and_report_skipped_ones(monkeypatch, capsys):
    def case():
        return (lambda: sum(range(1000))), {"slow": lambda: sum(range(100000)), "absent": "skipped (reason)"}

    monkeypatch.setitem(harness.BENCHMARKS, "fake", case)
    slow, absent = harness.rows("fake", repeats=3)
    assert (slow.reference, slow.skipped) == ("slow", None)
    assert 0 < slow.ratio < 1  # the reference does 100 times the work
    assert (absent.reference, absent.reference_s, absent.ratio, absent.skipped) == ("absent", None, None, "skipped (reason)")
    bench.main(["fake", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"fake\s+slow(\s+\d+\.\d+){3}", lines[2]), lines[2]
    assert re.fullmatch(r"fake\s+absent\s+\d+\.\d+  skipped \(reason\)", lines[3]), lines[3]


# Show-Attend-Tell at a size that compiles and runs in seconds: 5 regions of 12, 6 steps.
SAT_TINY = {"vocab_size": 30, "regions": 5, "feature_dim": 12, "embed_dim": 8, "hidden_dim": 10, "attention_dim": 6,
            "steps": 6}


def test_sat_train_step_agrees_with_torch():
    """Building the row checks the first step's loss and gradient norm; the next steps check that
    clipping and Adam moved both models' weights alike."""
    pytest.importorskip("torch")
    ours, references = cases.sat_train_step(3, SAT_TINY)
    for _ in range(2):
        (loss, norm), (ref_loss, ref_norm) = ours(), references["torch"]()
        assert abs(float(loss) - ref_loss) <= cases.AGREEMENT_TOL * ref_loss
        assert abs(float(norm) - ref_norm) <= cases.AGREEMENT_TOL * ref_norm


def test_process_benchmarks_take_their_own_rounds(monkeypatch):
    """A start-up benchmark runs whole processes: the cold one once and without warm-up, the warm
    one after one warm-up run and at most PROCESS_ROUNDS' number of times."""
    for name, (warmup, most) in harness.PROCESS_ROUNDS.items():
        calls = []
        monkeypatch.setitem(harness.BENCHMARKS, name, lambda: (lambda: calls.append(1), {"torch": "skipped"}))
        (row,) = harness.rows(name, repeats=20)
        assert len(calls) == warmup + min(20, most) and row.skipped == "skipped"
    assert harness.PROCESS_ROUNDS["classify_startup_cold"] == (0, 1)


def test_startup_reference_names_what_classify_prints(tmp_path, capsys):
    """The row compares the top class of `python -m dlmie.classify` with the torch process's; both
    print the command's format, which `_top_class` reads."""
    from PIL import Image

    from dlmie import classify
    from dlmie.checkpoint import load

    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    assert classify.main(["--model", str(cases.STARTUP_MODEL), str(image)]) == 0
    ours = cases._top_class(capsys.readouterr().out)
    assert ours in [f"{name} ({wnid})" for name, wnid in zip(*(load(cases.STARTUP_MODEL)[1][k]
                                                                for k in ("class_names", "wnids")))]
    if not _has_torch():
        _, references = cases.classify_startup(cold=False)
        assert references == {"torch": cases.TORCH_MISSING}
        return
    torch_reference.classify_file(cases.STARTUP_MODEL, image)
    assert cases._top_class(capsys.readouterr().out) == ours


def test_startup_reference_process_is_its_own_entry(capsys):
    """The benchmark's reference process is `python -m dlmie.benchmarks.torch_startup MODEL IMAGE`;
    importing it brings neither PyTensor nor torch along before it runs."""
    import subprocess
    import sys

    from dlmie.benchmarks import torch_startup

    assert torch_startup.main([]) == 2 and "usage" in capsys.readouterr().err
    if not _has_torch():
        assert torch_startup.main([str(cases.STARTUP_MODEL), "image.png"]) == 1
        assert "PyTorch is not installed" in capsys.readouterr().err
    check = ("import sys, dlmie.benchmarks.torch_startup; "
             "assert not {'pytensor', 'torch'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", check], check=True, cwd=Path(__file__).resolve().parents[1])
    assert not hasattr(torch_reference, "main"), "torch_reference is a library module, not a script"
    assert "__main__" not in Path(torch_reference.__file__).read_text()


def test_scst_step_agrees_with_torch():
    """Building the row checks our log-probabilities of torch's samples and one weighted training
    step; then one whole self-critical step of each runs on every image's K samples."""
    pytest.importorskip("torch")
    ours, references = cases.scst_step_sat(4, 3, SAT_TINY)
    assert ours()["samples"] == 4 * 3
    loss, norm = references["torch"]()
    assert np.isfinite(loss) and norm > 0


def test_scst_step_skips_torch_without_it(monkeypatch):
    monkeypatch.setattr(torch_reference, "load_torch", lambda: None)
    ours, references = cases.scst_step_sat(2, 2, SAT_TINY)
    assert references == {"torch": cases.TORCH_MISSING}
    assert ours()["samples"] == 2 * 2

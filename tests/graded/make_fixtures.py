"""Write tests/graded/fixtures/<part>.npz for every part of the assignment, from the solution.

Run by the teacher on the solution tree (`make fixtures`), never at grading time. Every input is
small, float64 (integers where they are indices) and drawn from fixed seeds, so the files change
only when a case below or the solution changes; the outputs are what `dlmie.checks.run_case`
returns for the solution. A case named "gradient" keeps inputs only: its check is a numeric
gradient check at grading time.

    python tests/graded/make_fixtures.py            # every part
    python tests/graded/make_fixtures.py conv2d     # some parts
"""

from __future__ import annotations

import sys

import numpy as np

from dlmie import checks


def rng(seed):
    return np.random.default_rng(seed)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv2d():
    r = rng(0)
    return {
        "stride1_pad1": {"x": r.standard_normal((2, 3, 7, 6)), "w": r.standard_normal((4, 3, 3, 3)),
                         "b": r.standard_normal(4), "stride": 1, "pad": 1},
        "stride2_pad2": {"x": r.standard_normal((1, 2, 9, 7)), "w": r.standard_normal((3, 2, 5, 5)),
                         "b": r.standard_normal(3), "stride": 2, "pad": 2},
        checks.GRADIENT: {"x": r.standard_normal((2, 2, 5, 6)), "w": r.standard_normal((3, 2, 3, 3)),
                          "b": r.standard_normal(3), "stride": 2, "pad": 1},
    }


def input_gradient():
    r = rng(1)
    weights = {"W1": r.standard_normal((48, 10)), "W2": r.standard_normal((10, 8)), "W3": r.standard_normal((8, 5))}
    common = {**weights, "x": r.standard_normal((5, 3, 4, 4)), "labels": np.array([4, 0, 2, 2, 1]), "batch_size": 2}
    return {"vanilla": {**common, "guided": False}, "guided": {**common, "guided": True}}


def fooling_step():
    r = rng(2)
    low, high = -np.linspace(1.0, 1.4, 3)[None, :, None, None], np.linspace(1.1, 1.5, 3)[None, :, None, None]
    low, high = np.broadcast_to(low, (1, 3, 4, 4)).copy(), np.broadcast_to(high, (1, 3, 4, 4)).copy()
    x = np.clip(1.3 * r.standard_normal((3, 3, 4, 4)), low, high)  # some pixels at a bound
    g = r.standard_normal((3, 3, 4, 4))
    g[2] = np.where(x[2] >= high[0], np.abs(g[2]), 0.0)  # image 2 only pushes outwards: no step
    return {"bounded": {"x": x, "g": g, "low": low, "high": high, "step": 0.7}}


def ascent_step():
    r = rng(3)
    common = {"x": r.standard_normal((2, 3, 6, 6)), "velocity": 0.1 * r.standard_normal((2, 3, 6, 6)),
              "W": r.standard_normal((2, 3, 6, 6)), "step": 3, "lr": 0.1}
    return {
        "regularized": {**common, "jitter": 2, "seed": 1, "decay": 0.05, "blur_sigma": 0.6, "blur_every": 2,
                        "normalize": True, "momentum": 0.5},
        "plain": {**common, "jitter": 0, "seed": 0, "decay": 0.0, "blur_sigma": 0.0, "blur_every": 1,
                  "normalize": False, "momentum": 0.0},
    }


def zero_below_percentile():
    r = rng(4)
    x = r.standard_normal((2, 3, 5, 5))
    return {"norm": {"x": x, "score": np.sqrt((x ** 2).sum(axis=1)), "percentile": 30.0},
            "contribution": {"x": x, "grad": r.standard_normal((2, 3, 5, 5)), "percentile": 55.0}}


def alpha_norm_value():
    x = rng(5).standard_normal((2, 3, 4, 5))
    return {"numpy": {"x": x, "alpha": 6.0, "B": 1.3, "symbolic": False},
            "symbolic": {"x": x, "alpha": 3.0, "B": 0.8, "symbolic": True}}


def total_variation_value():
    x = rng(6).standard_normal((2, 3, 4, 5))
    return {"numpy": {"x": x, "beta": 1.5, "V": 0.7, "symbolic": False},
            "symbolic": {"x": x, "beta": 2.0, "V": 1.2, "symbolic": True}}


def relative_feature_distance():
    r = rng(7)
    return {"spatial_numpy": {"phi": r.standard_normal((3, 4, 2, 2)), "phi0": r.standard_normal((4, 2, 2)),
                              "symbolic": False},
            "vector_symbolic": {"phi": r.standard_normal((3, 6)), "phi0": r.standard_normal(6), "symbolic": True}}


def channel_objective():
    r = rng(8)
    a = r.standard_normal((3, 4, 2, 3))
    return {"one_channel": {"a": a, "c": np.array(2)},
            "channel_per_image": {"a": a, "c": np.array([3, 0, 3])},
            "vector_layer": {"a": r.standard_normal((3, 5)), "c": np.array([4, 1, 0])}}


def lstm_step_forward():
    r = rng(9)
    return {"random": {"a": r.standard_normal((3, 20)) * 2, "c_prev": r.standard_normal((3, 5))}}


def lstm_step_backward():
    from dlmie.kernels.lstm import lstm_step_forward as forward

    r = rng(10)
    a, c_prev, dh, dc = r.standard_normal((3, 20)) * 2, r.standard_normal((3, 5)), *r.standard_normal((2, 3, 5))
    _, c, act = forward(a, c_prev)
    return {"random": {"act": act, "c_prev": c_prev, "c": c, "dh": dh, "dc": dc},
            checks.GRADIENT: {"a": r.standard_normal((2, 16)), "c_prev": r.standard_normal((2, 4)),
                              "dh": r.standard_normal((2, 4)), "dc": r.standard_normal((2, 4))}}


def temporal_softmax_loss():
    r = rng(11)
    mask = (r.random((3, 4)) > 0.3) * 1.0
    mask[0] = [1, 1, 0, 0]
    return {"random": {"scores": r.standard_normal((3, 4, 6)), "y": r.integers(0, 6, (3, 4)), "mask": mask},
            checks.GRADIENT: {"scores": r.standard_normal((2, 3, 5)), "y": r.integers(0, 5, (2, 3)),
                              "mask": np.array([[1.0, 1, 0], [1, 0, 0]])}}


def show_and_tell_loss():
    from dlmie.models import show_and_tell

    def case(seed, n, captions):
        spec = show_and_tell.Spec(vocab_size=9, feature_dim=7, embed_dim=5, hidden_dim=6, dropout=0.0)
        r = rng(seed)
        params = {k: r.standard_normal(v.shape) * 0.5 for k, v in show_and_tell.init_params(spec, seed=seed).items()}
        return {"features": r.standard_normal((n, 7)), "captions": np.array(captions), **params,
                **{f"spec.{k}": getattr(spec, k) for k in ("vocab_size", "feature_dim", "embed_dim", "hidden_dim")}}

    # <START> = 1, <END> = 2, <NULL> = 0
    return {"padded": case(12, 3, [[1, 4, 5, 6, 2, 0], [1, 7, 2, 0, 0, 0], [1, 8, 8, 4, 5, 2]]),
            "short": case(13, 2, [[1, 3, 2], [1, 2, 0]])}


def beam_step():
    r = rng(14)
    n, k, v = 2, 3, 7
    first = {"score": np.array([[0.0, -np.inf, -np.inf]] * n), "log_probs": np.log(softmax(r.standard_normal((n, k, v)))),
             "finished": np.zeros((n, k))}
    later = {"score": np.array([[-1.2, -2.5, -2.9], [-0.4, -3.1, -3.3]]),
             "log_probs": np.log(softmax(2 * r.standard_normal((n, k, v)))),
             "finished": np.array([[0.0, 1, 0], [1, 0, 1]])}
    return {"first_step": first, "with_finished": later}


def attend():
    r = rng(15)
    n, l, d, h, a = 2, 5, 4, 3, 6
    common = {"annotations": r.standard_normal((n, l, d)), "projected": r.standard_normal((n, l, a)),
              "h_prev": r.standard_normal((n, h)), "att.Wh": r.standard_normal((h, a)), "att.w": r.standard_normal(a),
              "gate.w": r.standard_normal(h), "gate.b": np.array(0.3)}
    return {"gate": {**common, "gate": True}, "no_gate": {**common, "gate": False}}


def doubly_stochastic_penalty():
    r = rng(16)
    mask = np.array([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    return {"random": {"alpha": softmax(r.standard_normal((3, 4, 5))), "mask": mask, "weight": 0.7},
            checks.GRADIENT: {"alpha": softmax(r.standard_normal((2, 3, 4))), "mask": mask[:2, :3], "weight": 1.5}}


def attention_maps():
    r = rng(17)
    return {"wide_grid": {"alpha": softmax(r.standard_normal((2, 6))), "grid": np.array([2, 3]), "size": np.array([5, 7])}}


CASES = {name: globals()[name] for name in checks.PARTS}


def main(parts) -> None:
    unknown = [p for p in parts if p not in CASES]
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; the parts are {', '.join(CASES)}")
    for part in parts or CASES:
        cases = {}
        for case, inputs in CASES[part]().items():
            inputs = {k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind in "fb" else np.asarray(v)
                      for k, v in inputs.items()}
            outputs = {} if case == checks.GRADIENT else checks.run_case(part, inputs)
            outputs = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in outputs.items()}
            cases[case] = {"in": inputs, "out": outputs}
        path = checks.save_fixture(part, cases)
        print(f"{part}: {', '.join(cases)} -> {path.relative_to(checks.REPO_ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])

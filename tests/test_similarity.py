"""The similarity report (python -m dlmie.grade --similarity) on a synthetic class written in this
repository's handout: four students who wrote attention_maps, doubly_stochastic_penalty and
beam_step independently and differently, one who copied bob's with renamed variables and helper
lines reordered, and two who handed the handout in untouched."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from dlmie.grade import main as grade_main
from dlmie.teacher import similarity

import toy_assignment

handout = toy_assignment.load_builder()
REPO = Path(__file__).resolve().parents[1]

# Each student's body of each part, as written under the part's docstring (indented by 4 there).
WRITTEN = {
    "alice": {
        "attention_maps": '''
if alpha.ndim != 2 or alpha.shape[1] != grid[0] * grid[1]:
    raise ValueError(f"alpha has shape {alpha.shape}, not (K, {grid[0]} * {grid[1]})")
maps = alpha.reshape(alpha.shape[0], grid[0], grid[1])
return resize_bilinear(maps, size)
''',
        "doubly_stochastic_penalty": '''
masked = alpha * mask[:, :, None]
per_region = masked.sum(axis=1)
penalty = ((1.0 - per_region) ** 2).sum(axis=1)
return L.scalar(weight, alpha.dtype) * penalty.mean()
''',
        "beam_step": '''
scores = log_probs.copy()
scores[finished] = -np.inf
scores[finished, END] = 0.0
total = score[:, :, None] + scores
flat = total.reshape(n, k * vocab_size)
order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
new_score = np.take_along_axis(flat, order, axis=1)
return new_score, order // vocab_size, order % vocab_size
''',
    },
    "bob": {
        "attention_maps": '''
h, w = grid
k = alpha.shape[0]
if alpha.ndim != 2 or alpha.shape[1] != h * w:
    raise ValueError("alpha " + str(alpha.shape) + " does not match grid " + str(grid))
small = np.reshape(alpha, (k, h, w))
out = resize_bilinear(small, size)
return out.astype(np.float32)
''',
        "doubly_stochastic_penalty": '''
lam = L.scalar(weight, alpha.dtype)
weighted = alpha * mask.dimshuffle(0, 1, "x")
total = pt.sum(weighted, axis=1)
gap = pt.sqr(1 - total)
return lam * pt.mean(pt.sum(gap, axis=1))
''',
        "beam_step": '''
new_score = np.empty((n, k))
beam = np.empty((n, k), dtype=np.int64)
words = np.empty((n, k), dtype=np.int64)
for i in range(n):
    cand = []
    for b in range(k):
        if finished[i, b]:
            cand.append(np.where(np.arange(vocab_size) == END, score[i, b], -np.inf))
        else:
            cand.append(score[i, b] + log_probs[i, b])
    flat = np.concatenate(cand)
    top = np.argsort(-flat, kind="stable")[:k]
    new_score[i] = flat[top]
    beam[i], words[i] = np.divmod(top, vocab_size)
return new_score, beam, words
''',
    },
    "carol": {
        "attention_maps": '''
rows, cols = int(grid[0]), int(grid[1])
if alpha.ndim == 2 and alpha.shape[-1] == rows * cols:
    stacked = np.stack([a.reshape(rows, cols) for a in alpha])
    return resize_bilinear(stacked, size)
raise ValueError(f"expected alpha of shape (K, {rows * cols}), got {alpha.shape}")
''',
        "doubly_stochastic_penalty": '''
cover = pt.batched_dot(mask, alpha)  # (N, L): mask_n^T alpha_n
per_image = pt.sum((cover - 1) ** 2, axis=-1)
return per_image.mean() * L.scalar(weight, alpha.dtype)
''',
        "beam_step": '''
lp = log_probs.astype(np.float64, copy=True)
done = finished.astype(bool)
lp[done] = -np.inf
lp[..., END] = np.where(done, 0.0, log_probs[..., END])
cand = score.reshape(n, k, 1) + lp
cand = cand.reshape(n, -1)
idx = np.argsort(-cand, axis=-1, kind="mergesort")[:, :k]
return np.take_along_axis(cand, idx, -1), idx // vocab_size, idx - (idx // vocab_size) * vocab_size
''',
    },
    "dave": {
        "attention_maps": '''
num_regions = np.prod(grid)
if len(alpha.shape) != 2:
    raise ValueError(f"alpha must be 2-D, got shape {alpha.shape} for grid {grid}")
if alpha.shape[1] != num_regions:
    raise ValueError(f"alpha has {alpha.shape[1]} regions, grid {grid} has {num_regions}")
heat = alpha.reshape((-1,) + tuple(grid))
return resize_bilinear(heat, tuple(size)).astype(np.float32)
''',
        "doubly_stochastic_penalty": '''
n_images = alpha.shape[0]
expanded_mask = pt.shape_padright(mask)
attention_sum = (expanded_mask * alpha).sum(axis=1)
squared = (pt.ones_like(attention_sum) - attention_sum) ** 2
return L.scalar(weight, alpha.dtype) * squared.sum() / n_images
''',
        "beam_step": '''
result_score = np.zeros((n, k))
result_beam = np.zeros((n, k), int)
result_word = np.zeros((n, k), int)
for img in range(n):
    options = []
    for b in range(k):
        for w in range(vocab_size):
            if finished[img, b]:
                s = score[img, b] if w == END else -np.inf
            else:
                s = score[img, b] + log_probs[img, b, w]
            options.append((-s, b * vocab_size + w))
    options.sort()
    for slot, (neg, flat_index) in enumerate(options[:k]):
        result_score[img, slot] = -neg
        result_beam[img, slot], result_word[img, slot] = divmod(flat_index, vocab_size)
return result_score, result_beam, result_word
''',
    },
    # bob's, with every variable renamed and the helper lines above each loop or return reordered
    "eve": {
        "attention_maps": '''
k = alpha.shape[0]
h, w = grid
if alpha.ndim != 2 or alpha.shape[1] != h * w:
    raise ValueError("weights " + str(alpha.shape) + " do not fit the grid " + str(grid))
coarse = np.reshape(alpha, (k, h, w))
maps = resize_bilinear(coarse, size)
return maps.astype(np.float32)
''',
        "doubly_stochastic_penalty": '''
weighted_alpha = alpha * mask.dimshuffle(0, 1, "x")
coef = L.scalar(weight, alpha.dtype)
covered = pt.sum(weighted_alpha, axis=1)
shortfall = pt.sqr(1 - covered)
return coef * pt.mean(pt.sum(shortfall, axis=1))
''',
        "beam_step": '''
out_beams = np.empty((n, k), dtype=np.int64)
out_words = np.empty((n, k), dtype=np.int64)
out_scores = np.empty((n, k))
for img in range(n):
    options = []
    for j in range(k):
        if finished[img, j]:
            options.append(np.where(np.arange(vocab_size) == END, score[img, j], -np.inf))
        else:
            options.append(score[img, j] + log_probs[img, j])
    merged = np.concatenate(options)
    best = np.argsort(-merged, kind="stable")[:k]
    out_scores[img] = merged[best]
    out_beams[img], out_words[img] = np.divmod(best, vocab_size)
return out_scores, out_beams, out_words
''',
    },
}
UNTOUCHED = ("frank", "gina")


def written(handout_files: dict[str, str], manifest: dict, parts: dict[str, str]) -> dict[str, str]:
    """The handout's files with each part's stub line replaced by the student's body."""
    files = dict(handout_files)
    for p in manifest["parts"]:
        if p["name"] in parts:
            text = files[p["file"]]
            stub = next(line for line in text.splitlines() if f'NotImplementedError("{p["name"]}:' in line)
            indent = stub[: len(stub) - len(stub.lstrip())]
            body = "\n".join(indent + line if line else "" for line in parts[p["name"]].strip("\n").splitlines())
            files[p["file"]] = text.replace(stub, body)
    return files


@pytest.fixture(scope="module")
def synthetic_class(tmp_path_factory):
    """(folder of submissions, handout zip, report stem, pairs)."""
    root = tmp_path_factory.mktemp("similarity")
    built = root / "dlmie-student.zip"
    handout.build(REPO, built)
    with zipfile.ZipFile(built) as zf:
        manifest = json.loads(zf.read("dlmie-student/assignment.json"))
        handout_files = {f: zf.read(f"dlmie-student/{f}").decode() for f in manifest["files"]}
    folder = root / "submissions"
    folder.mkdir()
    for student, parts in [*WRITTEN.items(), *((s, {}) for s in UNTOUCHED)]:
        with zipfile.ZipFile(folder / f"{student}.zip", "w") as zf:
            for name, text in written(handout_files, manifest, parts).items():
                zf.writestr(name, text)
    out = root / "report"
    # A figure left open with constrained layout (as dlmie.plots makes them) must not break the report.
    plt.subplots(layout="constrained")[1].plot([1, 2])
    pairs = similarity.compare(folder, built, out)
    return folder, built, out, pairs


def test_the_copied_pair_is_the_top_pair(synthetic_class):
    *_, pairs = synthetic_class
    top = pairs[0]
    assert (top.first, top.second) == ("bob", "eve")
    assert top.similarity > similarity.THRESHOLD
    assert {line.split(":")[0] for line in top.lines} == {"attention_maps", "doubly_stochastic_penalty", "beam_step"}


def test_independent_solutions_are_not_flagged(synthetic_class):
    *_, pairs = synthetic_class
    for p in pairs[1:]:
        assert p.similarity <= similarity.THRESHOLD, p


def test_the_handouts_own_text_is_left_out(synthetic_class):
    *_, pairs = synthetic_class
    untouched = next(p for p in pairs if (p.first, p.second) == UNTOUCHED)
    assert untouched.similarity == 0 and untouched.lines == ()


def test_the_report_and_csv(synthetic_class):
    folder, _, out, pairs = synthetic_class
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(pairs) == 21
    assert (rows[0]["first"], rows[0]["second"], rows[0]["flagged"]) == ("bob", "eve", "yes")
    assert [r["flagged"] for r in rows[1:]] == [""] * 20
    assert "beam_step: out_scores[img] = merged[best]" not in rows[0]["shared_lines"]  # the first's lines: bob's
    assert "beam_step: new_score[i] = flat[top]" in rows[0]["shared_lines"]
    html = out.with_suffix(".html").read_text()
    assert "bob.py" in html and "eve.py" in html and "dlmie-similarity-" not in html


def test_similarity_command(synthetic_class, tmp_path, capsys):
    folder, built, *_ = synthetic_class
    assert grade_main(["--similarity", str(folder), "--handout", str(built), "--out", str(tmp_path / "sim")]) == 0
    assert "bob" in capsys.readouterr().out
    assert (tmp_path / "sim.html").exists() and (tmp_path / "sim.csv").exists()
    assert grade_main(["--similarity", str(tmp_path / "absent"), "--handout", str(built)]) == 2

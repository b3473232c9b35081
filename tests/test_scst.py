"""Self-critical sequence training: sampled log-probabilities are what the weighted training step
differentiates, the baseline leaves the expected gradient unbiased and cancels a constant reward,
a reward for one word makes it more probable, the reward is pycocoevalcap's CIDEr-D, and
`train_captioner --scst` runs, resumes exactly and refuses mismatched runs."""

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, layers as L, train_captioner
from dlmie.captioning.decode import Decoder
from dlmie.data import dataset_path, flickr8k, is_present
from dlmie.data.vocab import END, tokenize
from dlmie.models import show_and_tell as st
from dlmie.models import show_attend_tell as sat
from dlmie.models.captioners import load_captioner
from dlmie.training.captioner import CaptionData, CaptionerConfig, CaptionerTrainer
from dlmie.training.loop import LoopConfig, fit
from dlmie.gradcheck import numerical_gradient, rel_error
from dlmie.training.scst import (SCSTConfig, SelfCriticalTask, caption_rows, cider_reward, policy_gradient_loss,
                                 self_critical_advantages)

from test_captions_data import write_fake_flickr8k
from test_train_captioner import write_features

MODELS = {
    "show_and_tell": (st, st.Spec(vocab_size=9, feature_dim=5, embed_dim=4, hidden_dim=6, dropout=0.0),
                      (5,)),
    "show_attend_tell": (sat, sat.Spec(vocab_size=9, feature_dim=5, embed_dim=4, hidden_dim=6, attention_dim=3,
                                       dropout=0.0, doubly_stochastic=0.0), (3, 5)),
}


def noisy_params(module, spec, seed):
    """Random weights far enough from the initialization that the word distributions are not flat."""
    rng = np.random.default_rng(seed)
    return {k: (v + rng.standard_normal(v.shape)).astype(np.float32) for k, v in module.init_params(spec, seed).items()}


@pytest.mark.parametrize("model", list(MODELS))
def test_sampled_log_prob_equals_teacher_forced(model):
    module, spec, feature_shape = MODELS[model]
    params = L.shared_params(noisy_params(module, spec, seed=3))
    features = np.random.default_rng(0).standard_normal((12, *feature_shape)).astype(np.float32)
    max_length = 4
    drawn = Decoder.compile(module, spec, params).sample(features, np.random.default_rng(1), max_length)
    lengths = [len(w) for w in drawn.words]
    assert min(lengths) < max_length and max(lengths) == max_length  # ended and cut captions both
    f = pt.tensor3("f") if module.INPUT == "grid" else pt.matrix("f")
    c, w = pt.lmatrix("c"), pt.vector("w")
    weighted = pytensor.function([f, c, w], module.loss(spec, params, f, c, train=False, weights=w)[0])
    plain = pytensor.function([f, c], module.loss(spec, params, f, c, train=False)[0])
    rows = caption_rows(drawn.words, max_length)
    n = len(rows)
    teacher_forced = [-weighted(features, rows, (np.eye(n)[i] * n).astype(np.float32)) for i in range(n)]
    np.testing.assert_allclose(teacher_forced, drawn.log_prob, rtol=1e-5, atol=1e-5)
    weights = np.random.default_rng(2).standard_normal(n).astype(np.float32)
    np.testing.assert_allclose(weighted(features, rows, weights), -(weights * drawn.log_prob).sum() / n, rtol=1e-4)
    assert plain(features, rows) == pytest.approx(weighted(features, rows, np.ones(n, np.float32)), rel=1e-6)
    ended = [w + [END] if len(w) < max_length else w for w in drawn.words]
    np.testing.assert_allclose(Decoder.compile(module, spec, params).score(features, ended), drawn.log_prob,
                               rtol=1e-5, atol=1e-5)


def test_sampling_follows_the_distribution():
    """Word frequencies of many first-word draws match the model's probabilities."""
    module, spec, shape = MODELS["show_attend_tell"]
    params = L.shared_params(noisy_params(module, spec, seed=4))
    decoder = Decoder.compile(module, spec, params)
    features = np.repeat(np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32), 20000, axis=0)
    first = np.array([w[0] if w else END for w in decoder.sample(features, np.random.default_rng(5), 1).words])
    log_probs, *_ = decoder.step(np.full(1, 1, np.int64), *decoder.start(features[:1]), features[:1])
    probs = np.exp(log_probs[0].astype(np.float64))
    probs[:2] = 0  # <NULL> and <START> are never drawn
    probs /= probs.sum()
    frequencies = np.bincount(first, minlength=spec.vocab_size) / len(first)
    assert np.all(np.abs(frequencies - probs) <= 4 * np.sqrt(probs * (1 - probs) / len(first)) + 1e-3)


def test_mean_baseline_is_unbiased():
    """A one-word policy softmax(theta) over 4 words, K = 3 samples, every K-tuple enumerated: the
    expected estimate sum_k (r_k - b_k) grad log p(y_k) is K times the gradient of the expected
    reward, and zero for a constant reward."""
    theta = np.array([0.3, -1.0, 0.5, 0.1])
    p = np.exp(theta) / np.exp(theta).sum()
    k = 3

    def expected_estimate(r):
        total = np.zeros(4)
        for ys in itertools.product(range(4), repeat=k):
            ys = np.array(ys)
            rewards = r[ys][None]
            advantage = self_critical_advantages(rewards, "mean")[0]
            grad_log_p = np.eye(4)[ys] - p  # d log p(y) / d theta for a softmax
            total += np.prod(p[ys]) * (advantage[:, None] * grad_log_p).sum(axis=0)
        return total

    r = np.array([1.0, 0.2, -0.5, 2.0])
    grad_expected_reward = p * (r - p @ r)
    np.testing.assert_allclose(expected_estimate(r), k * grad_expected_reward, atol=1e-12)
    np.testing.assert_allclose(expected_estimate(np.full(4, 0.7)), 0.0, atol=1e-12)



def test_advantages_against_a_loop():
    rng = np.random.default_rng(7)
    rewards, greedy = rng.uniform(0, 2, (3, 4)), rng.uniform(0, 2, 3)
    mean = np.array([[rewards[i, k] - np.mean([rewards[i, j] for j in range(4) if j != k]) for k in range(4)]
                     for i in range(3)])
    np.testing.assert_allclose(self_critical_advantages(rewards, "mean"), mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(self_critical_advantages(rewards, "greedy", greedy), rewards - greedy[:, None])
    assert self_critical_advantages(np.array([[0.5]]), "greedy", np.array([0.25])).tolist() == [[0.25]]
    # equal rewards: exactly zero (0.1 * 3 is not 0.3 in floating point)
    assert np.all(self_critical_advantages(np.full((2, 3), 0.1), "mean") == 0.0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        self_critical_advantages(rewards[:, :1], "mean")
    with pytest.raises(ValueError, match="one per image"):
        self_critical_advantages(rewards, "greedy")
    with pytest.raises(ValueError, match="one per image"):
        self_critical_advantages(rewards, "greedy", greedy[:2])
    with pytest.raises(ValueError, match="unknown baseline"):
        self_critical_advantages(rewards, "median")


def policy_gradient_case(seed, n=3, t=4, v=5):
    rng = np.random.default_rng(seed)
    mask = (np.arange(t)[None] < rng.integers(1, t + 1, n)[:, None]) * 1.0
    mask[-1] = 0.0  # a caption of no step
    advantages = rng.standard_normal(n)
    advantages[0] = 0.0
    return rng.standard_normal((n, t, v)), rng.integers(0, v, (n, t)), mask, advantages


def test_policy_gradient_loss_against_a_loop_and_finite_differences():
    scores, words, mask, advantages = policy_gradient_case(0)
    n, t, v = scores.shape
    expected = 0.0
    for i in range(n):
        for j in range(t):
            log_p = scores[i, j] - np.log(np.sum(np.exp(scores[i, j])))
            expected -= advantages[i] * mask[i, j] * log_p[words[i, j]] / n
    loss, dscores = policy_gradient_loss(scores, words, mask, advantages)
    assert loss == pytest.approx(expected, rel=1e-12)
    numeric = numerical_gradient(lambda: policy_gradient_loss(scores, words, mask, advantages)[0], scores)
    assert rel_error(dscores, numeric) < 1e-7
    assert np.all(dscores[0] == 0) and np.all(dscores[-1] == 0)  # zero advantage, all masked
    big, big_d = policy_gradient_loss(1000 * scores, words, mask, advantages)
    assert np.isfinite(big) and np.all(np.isfinite(big_d))
    with pytest.raises(ValueError, match="do not fit"):
        policy_gradient_loss(scores, words, mask, advantages[:2])


def test_policy_gradient_loss_is_the_weighted_training_loss():
    """The NumPy loss and gradient equal the engine's weighted temporal_softmax_loss and its autodiff,
    the loss the trainer's compiled step uses."""
    scores, words, mask, advantages = policy_gradient_case(1)
    s, y, m, w = pt.tensor3("s", dtype="float64"), pt.lmatrix("y"), pt.matrix("m", dtype="float64"), pt.vector("w", dtype="float64")
    engine = L.temporal_softmax_loss(s, y, m, weights=w)
    f = pytensor.function([s, y, m, w], [engine, pytensor.grad(engine, s)])
    want_loss, want_d = f(scores, words, mask, advantages)
    loss, dscores = policy_gradient_loss(scores, words, mask, advantages)
    assert loss == pytest.approx(float(want_loss), rel=1e-10)
    assert rel_error(dscores, want_d) < 1e-9


def toy_task(reward, lr=0.05, baseline="mean", samples=4, seed=0, entropy=0.0, favour=None):
    """A small Show and Tell on 6 random images with SCST around it; no dev set. `favour`: a word
    the output bias makes far more probable than the others."""
    module, spec, shape = MODELS["show_and_tell"]
    config = CaptionerConfig(model="show_and_tell", lr=lr, max_length=3, seed=seed)
    weights = module.init_params(spec, seed)
    if favour is not None:
        weights["out.b"][favour] = 4.0
    trainer = CaptionerTrainer(config, spec, weights, weighted=True)
    features = np.random.default_rng(seed).standard_normal((6, *shape)).astype(np.float32)
    captions = np.array([[1, 4, 5, 2, 0]] * 6)
    data = CaptionData(features, captions, np.arange(6), [["x"]] * 6, [f"{i}.jpg" for i in range(6)])
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(4, 9)]
    task = SelfCriticalTask(trainer, Decoder.compile(module, spec, trainer.params), data, None, reward, None, words,
                            SCSTConfig(samples=samples, baseline=baseline, images=3, entropy=entropy), {})
    return task, features


def first_word_probability(task, features, word):
    decoder = task.decoder
    log_probs, *_ = decoder.step(np.full(len(features), 1, np.int64), *decoder.start(features), features)
    return float(np.exp(log_probs[:, word]).mean())


def test_scst_raises_the_rewarded_word():
    task, features = toy_task(lambda tokens, images: np.array([float(bool(t) and t[0] == "w6") for t in tokens]))
    before = first_word_probability(task, features, 6)
    fit(task, None, LoopConfig(epochs=15, checkpoint_minutes=None))
    after = first_word_probability(task, features, 6)
    assert before < 0.2 and after > 2 * before + 0.2, (before, after)


def test_entropy_bonus_spreads_a_peaked_distribution():
    """With nothing to gain from the reward, the entropy bonus alone flattens the first word's distribution."""
    task, features = toy_task(lambda tokens, images: np.zeros(len(tokens)), entropy=0.5, favour=6)

    def first_word_entropy():
        log_probs, *_ = task.decoder.step(np.full(len(features), 1, np.int64), *task.decoder.start(features), features)
        return float(-(np.exp(log_probs) * log_probs).sum(axis=1).mean())

    before = first_word_entropy()
    fit(task, None, LoopConfig(epochs=10, checkpoint_minutes=None))
    assert first_word_entropy() > before + 0.3, (before, first_word_entropy())


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_baseline_cancels_a_constant_reward(baseline):
    task, features = toy_task(lambda tokens, images: np.full(len(tokens), 0.8), baseline=baseline)
    before = task.trainer.weights()
    task.train_batch(0, 0)
    assert all(np.array_equal(before[k], v) for k, v in task.trainer.weights().items())
    # without a baseline the same reward moves the weights: each sample's log-probability is pushed up
    rows = caption_rows([[4, 5], [6]], 3)
    task.trainer.train_step(features[:2], rows, np.full(2, 0.8, np.float32))
    assert any(not np.array_equal(before[k], v) for k, v in task.trainer.weights().items())


def test_reward_equals_pycocoevalcap():
    """Rewards of Flickr8k training images against their references, document frequencies from all
    of them: pycocoevalcap's Cider given exactly those images computes the same."""
    from pycocoevalcap.cider.cider import Cider

    if not is_present("flickr8k"):
        pytest.skip("Flickr8k not fetched (./get_datasets.sh flickr8k)")
    split = flickr8k.load_split(dataset_path("flickr8k"), "train")
    references = split.references()
    reward = cider_reward(references)
    rng = np.random.default_rng(0)
    tokens = split.tokens
    for trial in range(2):
        candidates = [list(tokens[j][: rng.integers(1, 15)]) for j in rng.integers(0, len(tokens), len(references))]
        for m in range(0, len(references), 5):  # a part of one of the image's own references
            candidates[m] = tokenize(references[m][trial])[: rng.integers(3, 12)]
        candidates[1] = candidates[1] + ["<UNK>"]
        ours = reward(candidates, np.arange(len(references)))
        gts = {m: [" ".join(tokenize(c)) for c in refs] for m, refs in enumerate(references)}
        res = {m: [" ".join(c)] for m, c in enumerate(candidates)}
        _, theirs = Cider().compute_score(gts, res)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert ours.max() > 1.0 and np.median(ours) < 0.2  # own references score high, other images' low


@pytest.fixture
def scst_setup(tmp_path):
    root = write_fake_flickr8k(tmp_path / "flickr8k", present=("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"))
    features = write_features(tmp_path / "feats.h5", ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"])
    common = ["--data", str(root), "--features", str(features)]
    assert train_captioner.main(["--model", "show_and_tell", "--epochs", "2", "--out", str(tmp_path / "xe"),
                                 "--lr", "0.01", *common]) == 0
    return tmp_path, common


def test_scst_command_resumes_exactly(scst_setup, capsys):
    tmp_path, common = scst_setup
    init = str(tmp_path / "xe" / "best.npz")
    scst = ["--model", "show_and_tell", "--scst", "--init", init, "--epochs", "2", "--scst-samples", "3",
            "--scst-images", "2", "--scst-lambda", "0.3", "--scst-kl", "0.1", "--lr", "0.01", *common]
    assert train_captioner.main([*scst, "--out", str(tmp_path / "straight")]) == 0
    assert train_captioner.main([*scst, "--out", str(tmp_path / "stopped"), "--max-minutes", "0"]) == 0
    assert train_captioner.main(["--model", "show_and_tell", "--scst", "--resume", "--out", str(tmp_path / "stopped"),
                                 *common]) == 0
    a, _ = checkpoint.load(tmp_path / "straight" / "last.npz")
    b, meta = checkpoint.load(tmp_path / "stopped" / "last.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert meta["scst"]["xe_weight"] == 0.3 and meta["scst"]["init"] == init and "val_cider" in meta["start"]
    log = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(0 <= r["val_cider"] <= 10 for r in log)
    captioner = load_captioner(tmp_path / "straight" / "best.npz")
    assert captioner.kind == "show_and_tell"
    capsys.readouterr()
    # a self-critical run resumes only as one, and a new one needs its starting weights
    assert train_captioner.main(["--model", "show_and_tell", "--resume", "--out", str(tmp_path / "stopped"),
                                 *common]) == 2
    assert "resume it with --scst" in capsys.readouterr().err
    assert train_captioner.main(["--model", "show_and_tell", "--scst", "--out", str(tmp_path / "new"), *common]) == 2
    assert "--init" in capsys.readouterr().err


def test_scst_config_checks():
    with pytest.raises(ValueError, match="at least 2"):
        SCSTConfig(samples=1).check()
    SCSTConfig(samples=1, baseline="greedy").check()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SCSTConfig(xe_weight=1.5).check()
    assert replace(SCSTConfig(), baseline="greedy").baseline == "greedy"

"""Show, Attend and Tell with hard attention: locations are drawn from alpha, the gradient is the
paper's estimator (backpropagation through the sampled context, REINFORCE for the attention),
the baseline is a moving average that --resume continues, and the model can memorize two captions."""

import numpy as np

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import checkpoint, layers as L
from dlmie.captioning.decode import Decoder
from dlmie.data.vocab import END, START, Vocabulary
from dlmie.gradcheck import check_gradients, numerical_gradient, rel_error
from dlmie.models import show_attend_tell_hard as hard
from dlmie.training.captioner import CaptionerConfig, CaptionerTrainer, train

from test_captions_data import write_fake_flickr8k
from test_train_captioner import write_features

GRAD_TOL = 1e-6
rng = np.random.default_rng(11)
CAPTIONS = np.array([[START, 4, 5, 6, END, 0], [START, 7, END, 0, 0, 0]])
UNIFORMS = rng.random((2, 5))  # one per caption and step: fixed samples
ATTENTION_MLP = ("att.Wa", "att.b", "att.Wh", "att.w")


def spec(**kw):
    fields = dict(vocab_size=9, feature_dim=5, embed_dim=4, hidden_dim=6, attention_dim=3, dropout=0.0)
    return hard.Spec(**{**fields, **kw})


def big_params(seed):
    """O(1) random float64 weights (as in test_show_attend_tell): small ones leave gradients near round-off."""
    return {k: rng.standard_normal(v.shape) * 0.5 for k, v in hard.init_params(spec(), seed=seed).items()}


def test_sampled_locations_follow_alpha():
    alpha = np.array([0.05, 0.4, 0.0, 0.25, 0.3])
    m = 20000
    a, u = pt.matrix("a", dtype="float64"), pt.vector("u", dtype="float64")
    sample = pytensor.function([a, u], hard.sample_locations(a, u))
    s = sample(np.tile(alpha, (m, 1)), np.random.default_rng(0).random(m))
    freq = np.bincount(s, minlength=len(alpha)) / m
    assert freq[2] == 0  # a region of probability 0 is never looked at
    assert np.all(np.abs(freq - alpha) <= 4 * np.sqrt(alpha * (1 - alpha) / m)), freq  # 4 binomial sd


def test_log_likelihood_gradient_through_sampled_and_expected_context():
    """Caption 0 reads sampled regions, caption 1 the expected context. Without REINFORCE and the
    entropy, the gradient is plain backpropagation: through a_{s_t} and the gate for caption 0 (its
    samples have no gradient, so the attention MLP learns only from caption 1) and through alpha
    for caption 1. Finite differences move alpha by ~1e-4, too little to change a sample here (a
    changed sample would show as a wildly wrong numerical gradient)."""
    s = spec(reinforce=0.0, entropy=0.0)
    mixed = pt.as_tensor(np.array([1.0, 0.0]))

    def build(features, **p):
        path, _ = hard.sampled_path(s, p, features, pt.as_tensor(CAPTIONS), pt.as_tensor(UNIFORMS), mixed)
        return hard.estimator_loss(s, path, mixed, pt.as_tensor(np.float64(-3.0)))

    errors = check_gradients(build, {"features": rng.standard_normal((2, 4, 5)), **big_params(2)}, h=1e-4)
    assert set(errors) >= {"features", "gate.w", "gate.b", "lstm.Wz", "out.Lz", "init_c.W", *ATTENTION_MLP}
    for name, err in errors.items():
        assert err < GRAD_TOL, f"d{name}: {err:.2e}"


def test_reinforce_gradient_is_advantage_times_score():
    """With every caption on samples, d loss / d att.w = -lambda_r / N sum_n (r_n - b) d log p(s_n|a) / d att.w:
    the reward is a constant to the gradient, and log p(y|s,a) does not depend on att.w for fixed s."""
    s, baseline = spec(reinforce=0.7, entropy=0.0), -3.0
    params = {k: pt.as_tensor(v) for k, v in big_params(3).items()}
    params["att.w"] = w = pt.vector("w", dtype="float64")
    ones = pt.as_tensor(np.ones(2))
    path, _ = hard.sampled_path(s, params, pt.as_tensor(rng.standard_normal((2, 4, 5))), pt.as_tensor(CAPTIONS),
                                pt.as_tensor(UNIFORMS), ones)
    total = hard.estimator_loss(s, path, ones, pt.as_tensor(np.float64(baseline)))
    f = pytensor.function([w], [pytensor.grad(total, w), path.log_likelihood, path.log_p_locations])
    w0 = rng.standard_normal(3)
    symbolic, reward, _ = f(w0)
    weights = -0.7 / 2 * (reward - baseline)
    numeric = numerical_gradient(lambda: float(weights @ f(w0)[2]), w0)
    assert rel_error(symbolic, numeric) < GRAD_TOL


def test_baseline_is_a_moving_average_and_loss_is_the_sampled_nll():
    s = spec(dropout=0.3)
    f, c = pt.tensor3("f"), pt.lmatrix("c")
    generator = pt.random.shared_rng(seed=0)
    total, updates = hard.loss(s, L.shared_params(hard.init_params(s, seed=1)), f, c, train=True, rng=generator)
    assert [var for var, _ in updates][0] is generator
    baseline = updates[1][0]
    assert baseline.name == "reinforce.baseline" and baseline.get_value() == 0
    step = pytensor.function([f, c], total, updates=updates)
    features = rng.standard_normal((2, 4, 5)).astype(np.float32)
    baseline.set_value(np.float32(-2.5))
    losses = []
    for _ in range(3):
        before = float(baseline.get_value())
        losses.append(float(step(features, CAPTIONS)))
        # The loss is worth -mean_n log p(y|s,a) (no coverage penalty by default), the baseline's input.
        assert np.isclose(baseline.get_value(), 0.9 * before + 0.1 * -losses[-1], rtol=1e-6)
    assert len(set(losses)) == 3  # the generator moves: new locations, coins and dropout masks


def test_memorize_two_captions():
    vocab = Vocabulary(["<NULL>", "<START>", "<END>", "<UNK>", "a", "dog", "runs", "cat", "sleeps"])
    s = hard.Spec(vocab_size=len(vocab), feature_dim=6, embed_dim=16, hidden_dim=32, attention_dim=16, dropout=0.0)
    features = rng.standard_normal((2, 4, 6)).astype(np.float32)
    captions = np.array([[START, 4, 5, 6, END], [START, 4, 7, 8, END]])
    config = CaptionerConfig(model="show_attend_tell_hard", lr=1e-2, dropout=0.0)
    trainer = CaptionerTrainer(config, s, hard.init_params(s, seed=0))
    first = float(trainer.val_loss(features, captions))
    for _ in range(250):
        trainer.train_step(features, captions)
    assert float(trainer.val_loss(features, captions)) < 0.05 * first
    assert "reinforce.baseline" in trainer.state()[0]  # --resume continues the baseline too
    decoded = Decoder.compile(hard, s, trainer.params).greedy(features, max_length=8)
    assert decoded.captions(vocab) == ["a dog runs", "a cat sleeps"]


def test_resume_continues_the_baseline(tmp_path):
    names = ("a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
    root = write_fake_flickr8k(tmp_path / "flickr8k", present=names)
    features = write_features(tmp_path / "feats.h5", list(names))
    config = CaptionerConfig(model="show_attend_tell_hard", embed_dim=8, hidden_dim=8, batch_size=2, epochs=2,
                           min_count=1, max_length=8, lr=1e-2, dropout=0.3)
    train(tmp_path / "straight", config, False, root, features_path=features)
    train(tmp_path / "stopped", config, False, root, max_minutes=0, features_path=features)
    train(tmp_path / "stopped", config, True, root, features_path=features)
    a, _ = checkpoint.load(tmp_path / "straight" / "last.npz")
    b, _ = checkpoint.load(tmp_path / "stopped" / "last.npz")
    assert a["reinforce.baseline"] < 0  # it followed log p(y|s,a)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

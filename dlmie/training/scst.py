"""Self-critical sequence training (Rennie et al. 2017; Luo 2020): fine-tuning a captioner on the
metric it is judged by, CIDEr-D, instead of on the likelihood of the reference captions.

For every image of a minibatch, K captions are drawn from the model (`Decoder.sample`, the same
compiled step function the decoders use). Each gets a reward r, its CIDEr-D against the image's
references with document frequencies from the training captions (`dlmie.captioning.cider`), and
a baseline b that does not depend on it:

- "mean" (Luo 2020): the mean reward of the image's other K - 1 samples;
- "greedy" (Rennie et al. 2017): the reward of the image's greedy caption.

The policy gradient -sum_k (r_k - b_k) grad log p(sample_k) is the gradient of the teacher-forced
cross-entropy of the samples weighted by their advantages r - b, so it runs through the trainer's
compiled training step with a per-caption weight (CaptionerTrainer(weighted=True)). Since b does
not depend on the sample, E[b grad log p] = b grad sum_y p(y) = 0: the baseline changes the
variance, not the expected gradient, and a constant reward gives exactly zero.

Options that help with little data (Flickr8k's 753 present training images overfit fast):
- xe_weight lambda: the loss lambda XE + (1 - lambda) RL, XE on one reference caption per image;
- entropy beta: the reward gets -beta log p(sample), a score-function estimate of beta times the
  gradient of the captions' entropy (keeps sampling from collapsing onto one caption);
- kl beta: the reward gets -beta (log p(sample) - log p_XE(sample)), the same estimate for
  -beta KL(p || p_XE) to the cross-entropy model it started from.
Both are folded into the reward before the baseline is taken. The step runs without dropout, so
that the log-probabilities it differentiates are those of the policy that drew the samples.

After every epoch the dev images are captioned by beam search and scored with CIDEr-D (document
frequencies from the dev references, as pycocoevalcap computes it, on our tokenization); the best
epoch by that `val_cider` goes to best.npz, and training stops once it has not improved for
`patience` epochs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from dlmie import checkpoint, layers as L
from dlmie.captioning.cider import CiderD
from dlmie.captioning.decode import Decoder
from dlmie.data.vocab import END, NULL, START, tokenize
from dlmie.training.captioner import CaptionData, CaptionerConfig, CaptionerTrainer, prepare
from dlmie.training.loop import EpochOrder, LoopConfig, RunDir, fit

MODELS = ("show_and_tell", "show_attend_tell")
BASELINES = ("mean", "greedy")


@dataclass
class SCSTConfig:
    """Self-critical training's settings (the rest, such as lr, epochs and patience, are the
    CaptionerConfig's); stored in the run's checkpoints.

    - samples: K captions drawn per image
    - baseline: "mean" (the other samples' mean reward) or "greedy" (the greedy caption's reward)
    - xe_weight: lambda of lambda XE + (1 - lambda) RL
    - entropy, kl: beta of the entropy bonus and of the KL penalty to the starting model (0: off)
    - images: images per minibatch (K samples each)
    - dev_beam: beam size of the dev captions that val_cider scores
    - init: the cross-entropy checkpoint the run starts from (the KL penalty's reference)
    """

    samples: int = 5
    baseline: str = "mean"
    xe_weight: float = 0.0
    entropy: float = 0.0
    kl: float = 0.0
    images: int = 16
    dev_beam: int = 3
    init: str | None = None

    def check(self):
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r}: use one of {', '.join(BASELINES)}")
        if self.samples < (2 if self.baseline == "mean" else 1):
            raise ValueError(f"the {self.baseline} baseline needs at least {2 if self.baseline == 'mean' else 1} "
                             f"samples per image, got {self.samples}")
        if not 0 <= self.xe_weight <= 1:
            raise ValueError(f"xe_weight is lambda of lambda XE + (1 - lambda) RL, in [0, 1]; got {self.xe_weight}")
        if self.entropy < 0 or self.kl < 0:
            raise ValueError("the entropy and KL weights must not be negative")


def self_critical_advantages(rewards: np.ndarray, baseline: str, greedy_rewards: np.ndarray | None = None) -> np.ndarray:
    """The advantages A = r - b that weight each sampled caption's log-probability in the policy
    gradient (Rennie et al. 2017, section 5, the greedy baseline; Luo 2020, *A Better Variant of
    Self-Critical Sequence Training*, the mean of the others).

    For image i and its sample k, with reward r_ik:
    - "mean" (Luo 2020): b_ik = (1 / (K - 1)) Σ_{j ≠ k} r_ij, the mean reward of the image's
      other K - 1 samples;
    - "greedy" (Rennie et al. 2017): b_ik = g_i, the reward of image i's greedy caption.
    Rewards that are all equal within an image must give advantages of exactly 0 with the mean
    baseline (not 1e-16: Adam divides by the gradient's scale, so rounding noise would be a step).

    Inputs:
    - rewards: (B, K) float rewards of K samples for each of B images
    - baseline: "mean" or "greedy"
    - greedy_rewards: (B,) float rewards of the greedy captions; needed for "greedy", ignored for "mean"
    Returns:
    - advantages: (B, K) float64
    Raises:
    - ValueError "the mean baseline needs at least 2 samples per image" when K < 2 with "mean";
    - ValueError "the greedy baseline needs greedy_rewards, one per image" when they are missing or
      not (B,) with "greedy";
    - ValueError "unknown baseline" for any other baseline.
    """
    rewards = np.asarray(rewards, np.float64)
    ### BEGIN SOLUTION
    b, k = rewards.shape
    if baseline == "mean":
        if k < 2:
            raise ValueError(f"the mean baseline needs at least 2 samples per image, got K = {k}")
        # relative to each image's first reward: equal rewards give exactly zero
        shifted = rewards - rewards[:, :1]
        # r_k - (S - r_k) / (K - 1) = K / (K - 1) (r_k - S / K)
        return k / (k - 1) * (shifted - shifted.mean(axis=1, keepdims=True))
    if baseline == "greedy":
        if greedy_rewards is None or np.shape(greedy_rewards) != (b,):
            got = None if greedy_rewards is None else np.shape(greedy_rewards)
            raise ValueError(f"the greedy baseline needs greedy_rewards, one per image: ({b},), got {got}")
        return rewards - np.asarray(greedy_rewards, np.float64)[:, None]
    raise ValueError(f"unknown baseline {baseline!r}: use one of {', '.join(BASELINES)}")
    ### END SOLUTION


def policy_gradient_loss(scores: np.ndarray, words: np.ndarray, mask: np.ndarray,
                         advantages: np.ndarray) -> tuple[float, np.ndarray]:
    """The self-critical loss of N sampled captions and its gradient with respect to the scores,
    in NumPy: the REINFORCE estimate with a baseline (Williams 1992; Rennie et al. 2017, section 4)
    written as a teacher-forced cross-entropy weighted per caption by its advantage.

        loss = -(1/N) Σ_n A_n Σ_t m_nt log p_nt[w_nt],   p_nt = softmax(s_nt) over the V words

    s_nt is the (V,) score vector at step t of caption n, w_nt the word sampled there and m_nt its
    mask (1 for a word of the caption or its <END>, 0 at padding). A caption whose mask is all 0,
    or whose advantage is 0, adds nothing to the loss and nothing to the gradient. The loss must
    be computed stably for scores of any size (no overflow for scores of 1000).

    Inputs:
    - scores: (N, T, V) float64 scores s
    - words: (N, T) int sampled words w, in [0, V)
    - mask: (N, T) float 0/1 mask m
    - advantages: (N,) float advantages A (constants: no gradient flows into them)
    Returns:
    - loss: float
    - dscores: (N, T, V) float64, the gradient of the loss with respect to the scores
    Raises:
    - ValueError "do not fit" when words or mask is not (N, T) or advantages not (N,)
    """
    scores = np.asarray(scores, np.float64)
    ### BEGIN SOLUTION
    n, t, v = scores.shape
    if np.shape(words) != (n, t) or np.shape(mask) != (n, t) or np.shape(advantages) != (n,):
        raise ValueError(f"words {np.shape(words)}, mask {np.shape(mask)} and advantages {np.shape(advantages)} "
                         f"do not fit scores {scores.shape}: need (N, T), (N, T) and (N,)")
    shifted = scores - scores.max(axis=2, keepdims=True)  # the softmax does not change; exp cannot overflow
    log_normalizer = np.log(np.exp(shifted).sum(axis=2, keepdims=True))  # (N, T, 1)
    log_probs = shifted - log_normalizer
    picked = np.take_along_axis(log_probs, np.asarray(words)[..., None], axis=2)[..., 0]  # (N, T)
    weights = np.asarray(advantages, np.float64)[:, None] * np.asarray(mask, np.float64)  # (N, T)
    loss = -(weights * picked).sum() / n
    # d(-log p[w]) / ds = p - onehot(w), scaled by each step's weight A_n m_nt / N
    dscores = np.exp(log_probs)
    dscores[np.arange(n)[:, None], np.arange(t)[None, :], words] -= 1.0
    dscores *= weights[..., None] / n
    return float(loss), dscores
    ### END SOLUTION


def caption_rows(words: list, max_length: int) -> np.ndarray:
    """Sampled captions as the training step reads them.

    Inputs:
    - words: N lists of word ids without <START>/<END>, as Decoder.sample returns them; a caption
      of max_length words was cut there and has no <END>
    - max_length: the sampler's limit
    Returns:
    - (N, max_length + 2) int64 rows <START> w_1 ... w_T [<END>] <NULL> ...: the teacher-forced loss
      of a row sums exactly the log-probabilities the sampler drew
    """
    rows = np.full((len(words), max_length + 2), NULL, dtype=np.int64)
    rows[:, 0] = START
    for i, w in enumerate(words):
        if len(w) > max_length:
            raise ValueError(f"caption {i} has {len(w)} words, more than max_length {max_length}")
        rows[i, 1 : len(w) + 1] = w
        if len(w) < max_length:
            rows[i, len(w) + 1] = END
    return rows


class SelfCriticalTask:
    """Self-critical training's side of `dlmie.training.loop.fit`: one minibatch of images per step.

    - trainer: a CaptionerTrainer built with weighted=True (and its spec's dropout at 0)
    - decoder: a Decoder compiled on trainer.params (it samples from the weights being trained)
    - train, dev: CaptionData; dev None skips validation
    - reward: (token lists (C,), image indices (C,) into train) -> (C,) rewards
    - dev_score: (token lists (M,)) -> (M,) scores of the dev captions (CIDEr-D)
    - words: the vocabulary's idx_to_word
    - scst: SCSTConfig; meta_base: what every checkpoint carries besides the configuration
    - reference: a Decoder of the starting model (needed when scst.kl > 0)
    """

    def __init__(self, trainer: CaptionerTrainer, decoder: Decoder, train: CaptionData, dev: CaptionData | None,
                 reward, dev_score, words: list, scst: SCSTConfig, meta_base: dict, reference: Decoder | None = None):
        scst.check()
        if scst.kl > 0 and reference is None:
            raise ValueError("the KL penalty needs the starting model's decoder (reference)")
        self.trainer, self.config, self.scst = trainer, trainer.config, scst
        self.decoder, self.reference = decoder, reference
        self.train, self.dev, self.reward, self.dev_score = train, dev, reward, dev_score
        self.words, self.meta_base = words, meta_base
        images = len(train.features)
        self.steps_per_epoch = -(-images // scst.images)
        self.order = EpochOrder(self.config.seed, images)
        self.captions_of = [np.flatnonzero(train.image_idxs == m) for m in range(images)]
        self.grad_norm = float("nan")

    def tokens(self, words: list) -> list:
        return [[self.words[i] for i in w] for w in words]

    def train_batch(self, epoch: int, step: int) -> dict:
        scst, k = self.scst, self.scst.samples
        images = self.order.batch(epoch, step, scst.images)
        b = len(images)
        rng = np.random.default_rng([self.config.seed, epoch, step])
        features = self.train.features[images]
        repeated = np.repeat(features, k, axis=0)
        drawn = self.decoder.sample(repeated, rng, self.config.max_length)
        rewards = self.reward(self.tokens(drawn.words), np.repeat(images, k))
        shaped = rewards - scst.entropy * drawn.log_prob
        if scst.kl:
            shaped = shaped - scst.kl * (drawn.log_prob - self.reference.score(repeated, with_end(drawn.words,
                                                                                                   self.config.max_length)))
        greedy_rewards = None
        if scst.baseline == "greedy":
            greedy = self.decoder.greedy(features, self.config.max_length)
            greedy_rewards = self.reward(self.tokens(greedy.words), images)
        advantages = self_critical_advantages(shaped.reshape(b, k), scst.baseline, greedy_rewards).ravel()
        rows = caption_rows(drawn.words, self.config.max_length)
        total = b * k + (b if scst.xe_weight else 0)
        # the step divides by the number of rows: weights scale each part to its mean
        weights = (1 - scst.xe_weight) * advantages * total / (b * k)
        if scst.xe_weight:
            references = np.array([rng.choice(self.captions_of[m]) for m in images])
            rows = np.concatenate([rows, self.train.captions[references]])
            features = np.concatenate([repeated, features])
            weights = np.concatenate([weights, np.full(b, scst.xe_weight * total / b)])
        else:
            features = repeated
        _, norm = self.trainer.train_step(features, rows, weights.astype(np.float32))
        self.grad_norm = float(norm)
        return {"reward": float(rewards.sum()), "log_prob": float(drawn.log_prob.sum()), "samples": b * k}

    def postfix(self, totals: dict) -> dict:
        return {"reward": f"{totals['reward'] / max(totals['samples'], 1):.3f}", "grad_norm": f"{self.grad_norm:.2f}"}

    def evaluate_dev(self) -> dict:
        """val_cider (mean CIDEr-D of the beam-searched dev captions), val_distinct (how many of
        them differ) and val_loss (the teacher-forced loss of the dev references)."""
        decoded = self.decoder.beam_search(self.dev.features, self.scst.dev_beam, self.config.max_length)
        tokens = self.tokens(decoded.words)
        return {"val_cider": round(float(self.dev_score(tokens).mean()), 4),
                "val_distinct": len(set(map(tuple, tokens))),
                "val_loss": round(self.trainer.mean_loss(self.dev, self.config.batch_size), 4)}

    def end_epoch(self, epoch: int, totals: dict) -> dict:
        seen = max(totals.get("samples", 0), 1)
        record = {"train_reward": round(totals.get("reward", 0.0) / seen, 4),
                  "train_log_prob": round(totals.get("log_prob", 0.0) / seen, 3)}
        if self.dev is not None:
            record.update(self.evaluate_dev())
        return record

    def arrays(self) -> dict:
        return self.trainer.state()[0]

    def meta(self) -> dict:
        return {**self.meta_base, "config": asdict(self.config), "scst": asdict(self.scst),
                "rng": self.trainer.state()[1]}

    def restore(self, arrays: dict, meta: dict):
        self.trainer.restore(arrays, meta["rng"])

    def best_weights(self) -> dict:
        return {name: w.astype(np.float16) for name, w in self.trainer.weights().items()}


def with_end(words: list, max_length: int) -> list:
    """Sampled captions with their <END> where they have one (Decoder.score counts it then)."""
    return [w + [END] if len(w) < max_length else w for w in words]


def cider_reward(references: list):
    """CIDEr-D against each image's references, document frequencies from all of them.

    Inputs:
    - references: M lists of raw reference captions (CaptionData.references)
    Returns (token lists (C,), image indices (C,)) -> (C,) rewards.
    """
    tokens = [[tokenize(c) for c in refs] for refs in references]
    cider = CiderD(tokens)
    cooked = cider.cook(tokens)
    return lambda candidates, image_idxs: cider.score(candidates, cooked, image_idxs)


def train_scst(out_dir: Path, config: CaptionerConfig, scst: SCSTConfig, resume: bool, data_root: Path,
               max_minutes: float | None = None, features_path: Path | None = None, init: Path | None = None,
               epochs: int | None = None):
    """Self-critical training of a cross-entropy captioner (or continuing such a run) in out_dir.

    Inputs: as dlmie.training.captioner.train's (epochs: with resume, a new length for the run); scst: SCSTConfig (when resuming, the stored one is
    used); init is required for a new run: the cross-entropy checkpoint to start from.
    """
    run = RunDir(out_dir)
    if not resume and init is None:
        raise ValueError("self-critical training starts from a cross-entropy captioner: pass --init CKPT.npz "
                         "(e.g. dlmie/models/weights/show_attend_tell.npz)")
    if config.model not in MODELS:
        raise ValueError(f"self-critical training is implemented for {', '.join(MODELS)}, not {config.model}")
    if not resume:
        scst = replace(scst, init=str(init))
    scst.check()
    prepared = prepare(run, config, resume, data_root, features_path, init, self_critical=True, epochs=epochs)
    if prepared.resume:
        scst = SCSTConfig(**prepared.resume[1]["scst"])
    config, module, vocab_words = prepared.config, prepared.module, prepared.meta_base["vocab"]["idx_to_word"]
    print("compiling the training step...", flush=True)
    trainer = CaptionerTrainer(config, replace(prepared.spec, dropout=0.0), prepared.weights, weighted=True)
    decoder = Decoder.compile(module, prepared.spec, trainer.params)
    reference = None
    if scst.kl:
        arrays, _ = checkpoint.load(scst.init)
        start = L.shared_params({name: arrays[name].astype(np.float32) for name in prepared.weights})
        reference = Decoder.compile(module, prepared.spec, start)
    dev_tokens = [[tokenize(c) for c in refs] for refs in prepared.dev.references]
    dev_cider = CiderD(dev_tokens)
    dev_cooked = dev_cider.cook(dev_tokens)
    task = SelfCriticalTask(trainer, decoder, prepared.train, prepared.dev, cider_reward(prepared.train.references),
                            lambda tokens: dev_cider.score(tokens, dev_cooked), vocab_words, scst,
                            prepared.meta_base, reference)
    if prepared.resume:
        task.restore(*prepared.resume)
        task.meta_base = {**task.meta_base, "start": prepared.resume[1]["start"]}
    else:
        start = task.evaluate_dev()
        print(f"starting point ({init}): {start}")
        task.meta_base = {**task.meta_base, "start": start}
    position = fit(task, run, LoopConfig(epochs=config.epochs, monitor="val_cider", mode="max",
                                         patience=config.patience, checkpoint_minutes=5.0, max_minutes=max_minutes),
                   resume_meta=prepared.resume[1] if prepared.resume else None)
    if position.step == 0 and position.history:
        best = max(position.history, key=lambda r: r["val_cider"])
        print(f"training finished after {len(position.history)} epochs; best: epoch {best['epoch']}, "
              f"val_cider {best['val_cider']} (start {task.meta_base['start']['val_cider']}) -> {run.best}")

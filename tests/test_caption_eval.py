"""Caption metrics against hand-computed BLEU, and the eval_captions / caption commands end to end."""

import re

import numpy as np
import pytest
from PIL import Image

from dlmie import eval_captions
from dlmie.captioning import splits
from dlmie.data.features import extract
from dlmie.training import captioner as captioner_training
from dlmie import caption as caption_command
from dlmie.captioning.metrics import METRICS, evaluate, format_scores
from dlmie.images import Preprocessing
from dlmie.models import convnet
from dlmie.models.classifier import convnet_classifier

from test_convnet import random_params


def test_bleu_worked_out_by_hand():
    """Reference "the cat sat on the mat", candidate "the cat sat on a mat" (same length: no
    brevity penalty). Clipped n-gram precisions: 5/6, 3/5, 2/4, 1/3, so
    BLEU-n = (p1 * ... * pn) ** (1 / n): 0.8333, 0.7071, 0.6300, 0.5373."""
    scores = evaluate({"img": ["The cat sat on the mat."]}, {"img": "the cat sat on a mat"})
    p = [5 / 6, 3 / 5, 2 / 4, 1 / 3]
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(np.prod(p[:n]) ** (1 / n), abs=1e-6)
    assert list(scores) == list(METRICS)
    perfect = evaluate({"a": ["a dog runs", "the dog is running"]}, {"a": "A dog runs."})
    assert perfect["BLEU-1"] == pytest.approx(1.0) and perfect["METEOR"] > 0.5 and perfect["ROUGE_L"] == pytest.approx(1.0)
    assert re.fullmatch(r"BLEU-1=\d\.\d{3} BLEU-2=\S+ BLEU-3=\S+ BLEU-4=\S+ METEOR=\S+ ROUGE_L=\S+ CIDEr=\S+",
                        format_scores(scores))


def test_evaluate_rejects_mismatched_ids():
    with pytest.raises(ValueError, match="same images"):
        evaluate({"a": ["x"]}, {"b": "x"})


SPEC = convnet.ConvNetSpec(conv=[(4, 3, 4, 1), (6, 3, 2, 1)], num_classes=2, input_size=32)


@pytest.fixture
def tiny_setup(tmp_path, monkeypatch):
    """A fake Flickr8k folder with real (random) images, a tiny encoder standing in for
    MobileNetV2, and a captioner trained briefly on its features."""
    from test_captions_data import write_fake_flickr8k

    root = write_fake_flickr8k(tmp_path / "flickr8k", present=())
    rng = np.random.default_rng(0)
    for name in "abcde":
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / "Flicker8k_Dataset" / f"{name}.jpg")
    net = convnet_classifier("mobilenet_v2", SPEC, random_params(SPEC, seed=1), ["a", "b"], ["a", "b"],
                             Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    features = tmp_path / "feats.h5"
    extract(net, "conv2", root / "Flicker8k_Dataset", features, progress=False)
    config = captioner_training.CaptionerConfig(embed_dim=8, hidden_dim=8, batch_size=4, epochs=2, min_count=1, max_length=8)
    captioner_training.train(tmp_path / "run", config, False, root, features_path=features)
    for module in (splits, caption_command):  # the encoder is loaded where the features are made
        monkeypatch.setattr(module, "load_encoder", lambda name: net)
    return root, tmp_path / "run" / "best.npz"


def test_eval_captions_command(tiny_setup, tmp_path, capsys):
    root, ckpt = tiny_setup
    assert eval_captions.main(["--checkpoint", str(ckpt), "--data", str(root), "--split", "dev", "--beam", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"BLEU-1=\S+ BLEU-2=\S+ BLEU-3=\S+ BLEU-4=\S+ METEOR=\S+ ROUGE_L=\S+ CIDEr=\S+", lines[-1])
    assert any(line.startswith("diversity on the 2 dev images") for line in lines)
    assert any(re.search(r"BLEU-4 \d\.\d{3} \[\S+, \S+\]  CIDEr \d\.\d{3} \[", line) for line in lines)
    # the same weights under another name: a paired difference of exactly 0, within noise
    twin = tmp_path / "twin.npz"
    twin.write_bytes(ckpt.read_bytes())
    assert eval_captions.main(["--checkpoint", str(ckpt), "--data", str(root), "--split", "dev", "--beam", "2",
                               "--compare", str(twin), "--resamples", "50"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "  CIDEr  +0.000 [+0.000, +0.000]  includes 0: within noise" in lines
    assert lines[-3].startswith(f"show_and_tell {twin}: BLEU-1=")
    assert re.fullmatch(r"BLEU-1=\S+ BLEU-2=\S+ BLEU-3=\S+ BLEU-4=\S+ METEOR=\S+ ROUGE_L=\S+ CIDEr=\S+", lines[-1])
    (root / "Flicker8k_Dataset" / "e.jpg").unlink()  # the test split is {e}
    assert eval_captions.main(["--checkpoint", str(ckpt), "--data", str(root), "--split", "test"]) == 2
    assert "none of the 1 images of the test list" in capsys.readouterr().err


def test_caption_command(tiny_setup, tmp_path, capsys):
    root, ckpt = tiny_setup
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"no image")
    status = caption_command.main(["--checkpoint", str(ckpt), str(root / "Flicker8k_Dataset" / "a.jpg"), str(broken)])
    out, err = capsys.readouterr()
    assert status == 1 and out.startswith(str(root / "Flicker8k_Dataset" / "a.jpg") + ": ")
    assert "broken.png" in err
    assert caption_command.main(["--checkpoint", str(tmp_path / "nothing.npz"), str(broken)]) == 2


def test_score_table_one_row_per_captioner_in_metrics_order():
    from dlmie.captioning.evaluation import Judged, score_table

    judged = {"greedy": Judged({m: 0.1 * k for k, m in enumerate(METRICS)}, None, {}, []),
              "beam 3": Judged({m: 0.5 for m in METRICS}, None, {}, [])}
    header, greedy, beam = score_table(judged).splitlines()
    assert header.split() == list(METRICS)
    assert greedy.split() == ["greedy", *(f"{0.1 * k:.3f}" for k in range(len(METRICS)))]
    assert beam.split()[:2] == ["beam", "3"] and beam.split()[2:] == ["0.500"] * len(METRICS)

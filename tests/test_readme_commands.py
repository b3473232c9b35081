"""Every `python -m dlmie.…` command that README.md shows is run here, as a user would run it (a new
process, `python -m`), on small real inputs where the real run is long. A command added to the
README without a run here fails `test_every_readme_command_is_run`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlmie.data import REPO_ROOT, dataset_path

README = REPO_ROOT / "README.md"


def readme_commands() -> set:
    """The `python -m dlmie.X` lines of README.md's code blocks, comments stripped."""
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    lines = [re.sub(r"\s+", " ", line).removeprefix(".venv/bin/") for line in lines]
    return {line for line in lines if line.startswith("python -m dlmie.")}


def run(*args, timeout=600) -> str:
    """Run `python -m ARGS` in the repository; its output, after checking the exit status is 0."""
    done = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, f"python -m {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def flickr_subset(tmp_path_factory):
    """The mirrored Flickr8k text files with only four present images: two train, two dev."""
    source = dataset_path("flickr8k")
    root = tmp_path_factory.mktemp("flickr8k")
    (root / "Flicker8k_Dataset").mkdir()
    for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt",
                 "Flickr_8k.testImages.txt"):
        (root / name).symlink_to(source / name)
    present = set(os.listdir(source / "Flicker8k_Dataset"))
    for split in ("trainImages", "devImages"):
        listed = (source / f"Flickr_8k.{split}.txt").read_text().split()
        for name in [n for n in listed if n in present][:2]:
            (root / "Flicker8k_Dataset" / name).symlink_to(source / "Flicker8k_Dataset" / name)
    return root


@pytest.fixture(scope="module")
def tiny_subset(tmp_path_factory):
    """Tiny-ImageNet-100-A with its 100 classes but 2 training images per class and 20 val images."""
    source = dataset_path("tiny-imagenet-100-A")
    root = tmp_path_factory.mktemp("tiny")
    for name in ("wnids.txt", "words.txt"):
        (root / name).symlink_to(source / name)
    for wnid in (source / "wnids.txt").read_text().split():
        (root / "train" / wnid / "images").mkdir(parents=True)
        boxes = (source / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()[:2]
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("\n".join(boxes) + "\n")
        for line in boxes:
            name = line.split("\t")[0]
            (root / "train" / wnid / "images" / name).symlink_to(source / "train" / wnid / "images" / name)
    (root / "val" / "images").mkdir(parents=True)
    val = (source / "val" / "val_annotations.txt").read_text().splitlines()[:20]
    (root / "val" / "val_annotations.txt").write_text("\n".join(val) + "\n")
    for line in val:
        name = line.split("\t")[0]
        (root / "val" / "images" / name).symlink_to(source / "val" / "images" / name)
    return root


@pytest.fixture(scope="module")
def photo(flickr_subset):
    return next((flickr_subset / "Flicker8k_Dataset").iterdir())


# README line -> the test that runs it. Placeholders (IMAGE, DIR, CKPT) and long runs are replaced
# by small real inputs; the command, its options and its output format are the README's.
RUNS = {}


def runs(*lines):
    def register(fn):
        for line in lines:
            RUNS[line] = fn
        return fn
    return register


def test_every_readme_command_is_run():
    missing = sorted(c for c in readme_commands() if c not in RUNS and not c.startswith("python -m dlmie.bench "))
    assert not missing, "README.md shows commands no test runs; add them to RUNS in this file:\n" + "\n".join(missing)


@runs("python -m dlmie.classify [--model NAME] IMAGE...")
def test_classify(photo):
    out = run("dlmie.classify", photo)
    assert out.count("%") == 5
    out = run("dlmie.classify", "--model", "mobilenet_v2", photo)
    assert out.count("%") == 5


@runs("python -m dlmie.eval_classifier [--model NAME] --data DIR",
      "python -m dlmie.eval_classifier --data datasets/tiny-imagenet-100-A")
def test_eval_classifier(tiny_subset):
    last = run("dlmie.eval_classifier", "--data", tiny_subset).strip().splitlines()[-1]
    assert re.fullmatch(r"top1=\d\.\d{3} top5=\d\.\d{3} n=20", last), last


@runs("python -m dlmie.train_classifier [--resume] [--max-minutes M]",
      "python -m dlmie.train_classifier --export dlmie/models/weights/tiny_convnet.npz")
def test_train_classifier_resume_and_export(tiny_subset, tmp_path):
    out = tmp_path / "run"
    run("dlmie.train_classifier", "--data", tiny_subset, "--out", out, "--batch-size", 8, "--max-steps", 1)
    run("dlmie.train_classifier", "--data", tiny_subset, "--out", out, "--resume", "--max-steps", 1)
    run("dlmie.train_classifier", "--data", tiny_subset, "--out", out, "--export", tmp_path / "model.npz")
    last = run("dlmie.eval_classifier", "--model", tmp_path / "model.npz", "--data", tiny_subset).splitlines()[-1]
    assert last.startswith("top1=")


@runs("python -m dlmie.extract_features --encoder mobilenet_v2 --data flickr8k --out build/features/flickr8k_mobilenet_v2_conv_last.h5",
      "python -m dlmie.train_captioner --model show_and_tell [--resume]",
      "python -m dlmie.train_captioner --model show_attend_tell --scst --init dlmie/models/weights/show_attend_tell.npz")
def test_extract_features_and_train_captioner(flickr_subset, tmp_path):
    import h5py

    features = tmp_path / "features.h5"
    run("dlmie.extract_features", "--encoder", "mobilenet_v2", "--data", flickr_subset / "Flicker8k_Dataset",
        "--out", features)
    with h5py.File(features) as f:
        assert f["features"].shape == (4, 49, 1280)
    out = tmp_path / "run"
    common = ["--data", flickr_subset, "--features", features, "--out", out, "--batch-size", 8]
    run("dlmie.train_captioner", "--model", "show_and_tell", *common, "--epochs", 1)
    run("dlmie.train_captioner", "--model", "show_and_tell", *common, "--resume", "--epochs", 2)
    assert (out / "best.npz").exists() and len((out / "log.jsonl").read_text().splitlines()) == 2
    scst = tmp_path / "scst"
    run("dlmie.train_captioner", "--model", "show_attend_tell", "--scst", "--init",
        "dlmie/models/weights/show_attend_tell.npz", "--data", flickr_subset, "--features", features, "--out", scst,
        "--epochs", 1, "--scst-images", 2)
    assert (scst / "best.npz").exists() and len((scst / "log.jsonl").read_text().splitlines()) == 1


@runs("python -m dlmie.eval_captions --checkpoint CKPT --data datasets/flickr8k --split dev --beam 3",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_and_tell.npz --data datasets/flickr8k --split dev --beam 3",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_attend_tell.npz --data datasets/flickr8k --split dev --beam 3",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_attend_tell_hard.npz --data datasets/flickr8k --split dev --beam 3")
def test_eval_captions(flickr_subset):
    last = run("dlmie.eval_captions", "--checkpoint", "dlmie/models/weights/show_attend_tell.npz",
               "--data", flickr_subset, "--split", "dev", "--beam", 3).strip().splitlines()[-1]
    assert re.fullmatch(r"BLEU-1=\S+ BLEU-2=\S+ BLEU-3=\S+ BLEU-4=\S+ METEOR=\S+ ROUGE_L=\S+ CIDEr=\S+", last), last


@runs("python -m dlmie.eval_captions --checkpoint CKPT --data datasets/flickr8k --split dev --beam 3 [--compare CKPT2]",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_attend_tell_scst.npz --data datasets/flickr8k --split dev --beam 3 --compare dlmie/models/weights/show_attend_tell.npz",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_attend_tell.npz --data datasets/flickr8k --split dev --beam 3 --compare dlmie/models/weights/show_and_tell.npz",
      "python -m dlmie.eval_captions --checkpoint dlmie/models/weights/show_attend_tell_vgg16.npz --data datasets/flickr8k --split dev --beam 3 --compare dlmie/models/weights/show_attend_tell.npz")
def test_eval_captions_compare(flickr_subset):
    # two encoders: each checkpoint reads its own features of the same images
    out = run("dlmie.eval_captions", "--checkpoint", "dlmie/models/weights/show_attend_tell_vgg16.npz", "--data",
              flickr_subset, "--split", "dev", "--beam", 3, "--compare", "dlmie/models/weights/show_attend_tell.npz")
    lines = out.strip().splitlines()
    assert re.fullmatch(r"BLEU-1=\S+ BLEU-2=\S+ BLEU-3=\S+ BLEU-4=\S+ METEOR=\S+ ROUGE_L=\S+ CIDEr=\S+", lines[-1])
    assert any("distinct" in line for line in lines) and any("paired" in line for line in lines), out


@runs("python -m dlmie.caption [--checkpoint CKPT] [--attention OUT.png] IMAGE...")
def test_caption_with_attention(photo, tmp_path):
    figure = tmp_path / "attention.png"
    out = run("dlmie.caption", "--attention", figure, photo)  # the default captioner attends
    assert out.startswith(f"{photo}: ") and len(out.splitlines()[0].split(": ", 1)[1].split()) >= 3
    from PIL import Image

    assert np.asarray(Image.open(figure)).std() > 0
    assert run("dlmie.caption", photo).startswith(f"{photo}: ")


def test_bench_has_every_row_the_readme_runs():
    """The README's bench commands (the measurements take minutes each): every row they name exists."""
    listed = run("dlmie.bench", "--list")
    named = {word for c in readme_commands() if c.startswith("python -m dlmie.bench ")
             for word in c.split()[3:] if re.fullmatch(r"[a-z0-9_]+", word) and not word.isdigit()}
    assert named and not {n for n in named if n not in listed}


@runs("python -m dlmie.grade --submissions DIR --handout build/dlmie-student.zip --out gradebook.csv")
def test_grade_submissions(tmp_path):
    """A teacher's round: build the handout, a student solves it and packs, the teacher grades DIR."""
    import csv
    import shutil
    import zipfile

    handout_zip = tmp_path / "dlmie-student.zip"
    done = subprocess.run([sys.executable, "tools/handout.py", "--out", handout_zip], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with zipfile.ZipFile(handout_zip) as zf:
        zf.extractall(tmp_path / "student")
    student = tmp_path / "student" / "dlmie-student"
    for part in __import__("json").loads((student / "assignment.json").read_text())["parts"]:
        shutil.copy(REPO_ROOT / part["file"], student / part["file"])  # the student solves every part
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    packed = subprocess.run([sys.executable, "-m", "dlmie.grade", "--pack", "--out", submissions / "ada.zip"],
                            cwd=student, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(student)})
    assert packed.returncode == 0, packed.stderr[-3000:]
    gradebook = tmp_path / "gradebook.csv"
    run("dlmie.grade", "--submissions", submissions, "--handout", handout_zip, "--out", gradebook)
    (row,) = list(csv.DictReader(gradebook.open()))
    assert row["student"] == "ada" and row["score"] == row["possible"] and int(row["possible"]) > 0, row

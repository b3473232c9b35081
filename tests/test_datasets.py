"""get_datasets.sh and dlmie.data, against a tiny fake mirror in tmp_path (no network).

The fake mirror holds tiny files with the real file names, so the real catalog drives the script.
Upstream is simulated with file:// URLs in a copy of the repository layout (script + catalog).
"""

import contextlib
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlmie import data

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "get_datasets.sh"
SHARED_MIRROR = REPO.parent / "shared" / "datasets"

H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# --- fixtures --------------------------------------------------------------------------------

def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)


def write_sums(mirror, skip=()):
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
             for p in sorted(mirror.iterdir()) if p.name != "SHA256SUMS" and p.name not in skip]
    (mirror / "SHA256SUMS").write_text("".join(lines))


def make_mirror(mirror):
    """Tiny stand-ins for every mirrored file (the real names), plus a SHA256SUMS."""
    mirror.mkdir(parents=True)
    write_zip(mirror / "tiny-imagenet-100-A.zip", {"tiny-imagenet-100-A/wnids.txt": "n01443537\n",
                                                   "tiny-imagenet-100-A/words.txt": "n01443537\tgoldfish\n"})
    write_zip(mirror / "Flickr8k_Dataset.zip", {"Flicker8k_Dataset/1000268201_693b08cb0e.jpg": "jpeg"})
    write_zip(mirror / "Flickr8k_text.zip", {"Flickr8k.token.txt": "1000268201_693b08cb0e.jpg#0\tA child .\r\n"})
    np.savez(mirror / "imagenet_val_25.npz", X=np.zeros((1, 2, 2, 3), np.uint8), y=np.zeros(1, np.int64))
    (mirror / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(H5_SIGNATURE + bytes(56))
    (mirror / "mobilenet_v2_1.0_224_quant.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(24))
    (mirror / "imagenet_labels.txt").write_text("background\ntench\n")
    (mirror / "coco2014_vocab.json").write_text(json.dumps({"idx_to_word": ["<NULL>"], "word_to_idx": {"<NULL>": 0}}))
    (mirror / "coco2014_val_captions_5k.json").write_text(json.dumps({"images": [], "annotations": []}))
    write_zip(mirror / "annotations_trainval2014.zip", {"annotations/captions_val2014.json": "{}",
                                                        "annotations/instances_val2014.json": "{}"})
    write_sums(mirror)
    return mirror


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "mirror")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """DLMIE_DATA for this test, for both the script and dlmie.data."""
    d = tmp_path / "data"
    monkeypatch.setenv("DLMIE_DATA", str(d))
    return d


def run(*args, mirror=None, data_dir=None, script=SCRIPT, timeout=60):
    """Run get_datasets.sh; returns (returncode, stdout + stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLMIE_")}
    if mirror is not None:
        env["DLMIE_MIRROR"] = str(mirror)
    if data_dir is not None:
        env["DLMIE_DATA"] = str(data_dir)
    p = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


@contextlib.contextmanager
def sigint_handler(handler):
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def popen_foreground(args, **kwargs):
    """Popen a command with SIGINT at its default action, as a shell starts a foreground job.

    A child inherits an ignored SIGINT, and a non-interactive bash cannot trap or reset one that
    was ignored when it started, so Ctrl-C would do nothing to the script or its curl. pytest runs
    with SIGINT ignored when a script started it in the background (`make test &`). exec resets a
    caught signal to the default, so catching SIGINT here while forking is enough."""
    with sigint_handler(signal.default_int_handler):
        return subprocess.Popen(args, **kwargs)


def leftovers(data_dir):
    """Anything half-done: .part files or work folders."""
    if not data_dir.exists():
        return []
    return [p for p in data_dir.rglob("*") if p.name.endswith(".part") or p.name.startswith(".get_datasets.")]


def list_status(out):
    """{name: status} from --list output."""
    return {f[0]: f[-1] for f in (line.split() for line in out.splitlines()[2:]) if f}


# --- fetching --------------------------------------------------------------------------------

def test_script_is_executable():
    assert os.access(SCRIPT, os.X_OK)
    rc, out = run("--help")
    assert rc == 0 and "DLMIE_MIRROR" in out and "DLMIE_DATA" in out


def test_default_fetch_places_files_where_dataset_path_says(mirror, data_dir):
    rc, out = run(mirror=mirror, data_dir=data_dir)
    assert rc == 0, out
    assert f"Source: mirror folder {mirror}" in out
    defaults = [n for n, rows in data.list_datasets().items() if rows[0]["default"] == "yes"]
    for name in defaults:
        assert data.dataset_path(name).exists()
        assert f"{name}: done" in out
    assert (data.dataset_path("tiny-imagenet-100-A") / "wnids.txt").read_text() == "n01443537\n"
    flickr = data.dataset_path("flickr8k")
    assert (flickr / "Flicker8k_Dataset" / "1000268201_693b08cb0e.jpg").exists()
    assert (flickr / "Flickr8k.token.txt").exists()
    assert (data.dataset_path("mobilenet-v2") / "mobilenet_v2_1.0_224_quant.tflite").exists()
    assert data.dataset_path("vgg16-notop").read_bytes().startswith(H5_SIGNATURE)
    assert json.loads(data.dataset_path("coco2014-vocab").read_text())["word_to_idx"] == {"<NULL>": 0}
    assert not list(data_dir.glob("*.zip")), "archives are not kept"
    assert not leftovers(data_dir)
    assert not data.is_present("vgg16-full")


def test_rerun_does_not_fetch_again(mirror, data_dir):
    assert run("tiny-imagenet-100-A", "vgg16-notop", mirror=mirror, data_dir=data_dir)[0] == 0
    files = [data_dir / "tiny-imagenet-100-A" / "wnids.txt", data_dir / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"]
    before = [p.stat().st_mtime_ns for p in files]
    rc, out = run("tiny-imagenet-100-A", "vgg16-notop", mirror=mirror, data_dir=data_dir)
    assert rc == 0, out
    assert "tiny-imagenet-100-A: present" in out and "vgg16-notop: present" in out
    assert "copying" not in out and "unpacking" not in out
    assert [p.stat().st_mtime_ns for p in files] == before


def test_list_shows_present_and_missing(mirror, data_dir):
    rc, out = run("--list", data_dir=data_dir)
    assert rc == 0, out
    status = list_status(out)
    assert list(status) == list(data.list_datasets()), "--list and dlmie.data read the same catalog"
    assert set(status.values()) == {"missing"}
    assert "~120 MB" in out and "yes" in out and "no" in out
    assert run("imagenet-val-25", mirror=mirror, data_dir=data_dir)[0] == 0
    status = list_status(run("--list", data_dir=data_dir)[1])
    assert status["imagenet-val-25"] == "present" and status["flickr8k"] == "missing"


def test_member_glob_keeps_only_matching_members(mirror, data_dir):
    rc, out = run("coco2014-captions", mirror=mirror, data_dir=data_dir)
    assert rc == 0, out
    ann = data.dataset_path("coco2014-captions")
    assert [p.name for p in ann.iterdir()] == ["captions_val2014.json"]


def test_checksum_mismatch_fails_and_leaves_nothing(mirror, data_dir):
    sums = (mirror / "SHA256SUMS").read_text().splitlines()
    bad = [("0" * 64 + "  " + line.split()[1]) if line.split()[1] in
           ("tiny-imagenet-100-A.zip", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") else line for line in sums]
    (mirror / "SHA256SUMS").write_text("\n".join(bad) + "\n")
    rc, out = run("tiny-imagenet-100-A", "vgg16-notop", "imagenet-val-25", mirror=mirror, data_dir=data_dir)
    assert rc != 0
    assert "checksum mismatch for tiny-imagenet-100-A.zip" in out
    assert "checksum mismatch for vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in out
    assert not (data_dir / "tiny-imagenet-100-A").exists()
    assert not (data_dir / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").exists()
    assert not leftovers(data_dir)
    assert data.is_present("imagenet-val-25"), "one failing data set does not stop the others"


def test_corrupt_zip_fails_cleanly_and_rerun_finishes(mirror, data_dir):
    good = (mirror / "Flickr8k_text.zip").read_bytes()
    (mirror / "Flickr8k_text.zip").write_bytes(good[: len(good) // 2])
    write_sums(mirror, skip={"Flickr8k_text.zip"})  # so that only the zip test can catch it
    rc, out = run("flickr8k", mirror=mirror, data_dir=data_dir)
    assert rc != 0
    assert "Flickr8k_text.zip" in out and "damaged or incomplete" in out and "unverified" in out
    assert not leftovers(data_dir)
    # the first zip of flickr8k is in place, but the data set is not complete
    assert list_status(run("--list", data_dir=data_dir)[1])["flickr8k"] == "missing"
    with pytest.raises(data.DatasetNotFoundError, match="incomplete"):
        data.dataset_path("flickr8k")
    (mirror / "Flickr8k_text.zip").write_bytes(good)
    rc, out = run("flickr8k", mirror=mirror, data_dir=data_dir)
    assert rc == 0, out
    assert "Flickr8k_Dataset.zip: present" in out and "unpacking Flickr8k_text.zip" in out
    assert (data.dataset_path("flickr8k") / "Flickr8k.token.txt").exists()


def test_half_unpacked_folder_is_not_present(mirror, data_dir):
    stale = data_dir / "tiny-imagenet-100-A"
    stale.mkdir(parents=True)
    (stale / "stale.txt").write_text("left by an interrupted unzip")
    assert not data.is_present("tiny-imagenet-100-A")
    rc, out = run("tiny-imagenet-100-A", mirror=mirror, data_dir=data_dir)
    assert rc == 0, out
    assert "replacing unfinished" in out
    assert sorted(p.name for p in stale.iterdir()) == ["wnids.txt", "words.txt"]


def test_unknown_name_fails_clearly(mirror, data_dir):
    rc, out = run("tiny-imagenet-100-A", "no-such-set", mirror=mirror, data_dir=data_dir)
    assert rc != 0
    assert "unknown data set 'no-such-set'" in out
    assert all(name in out for name in data.list_datasets())
    assert not data_dir.exists(), "nothing is fetched when a name is wrong"


# --- sources: URL mirrors, upstream fallback, the default mirror ------------------------------

class StallingMirror:
    """An HTTP mirror on 127.0.0.1 serving a folder; files named in `stall` send half, then hang."""

    def __init__(self, root, stall=()):
        self.release = threading.Event()
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(root), **k)

            def log_message(self, *a):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                if name not in stall:
                    return super().do_GET()
                body = (root / name).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                outer.release.wait(20)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("kind", ["http", "file"])
def test_url_mirror_with_checksums(mirror, data_dir, kind):
    server = StallingMirror(mirror) if kind == "http" else None
    try:
        url = server.url if server else mirror.as_uri()
        rc, out = run("vgg16-notop", "flickr8k", mirror=url, data_dir=data_dir)
        assert rc == 0, out
        assert f"Source: mirror {url}" in out and "sha256 OK" in out
        assert data.is_present("vgg16-notop") and data.is_present("flickr8k")
        (mirror / "SHA256SUMS").write_text("0" * 64 + "  mobilenet_v2_1.0_224_quant.tflite\n")
        rc, out = run("mobilenet-v2", mirror=url, data_dir=data_dir)
        assert rc != 0 and "checksum mismatch for mobilenet_v2_1.0_224_quant.tflite" in out
        assert not leftovers(data_dir)
    finally:
        if server:
            server.close()


# "ignored": how pytest runs when started in the background by a script (see popen_foreground)
@pytest.mark.parametrize("pytest_sigint", [signal.default_int_handler, signal.SIG_IGN], ids=["caught", "ignored"])
def test_ctrl_c_during_download_leaves_nothing(mirror, data_dir, pytest_sigint):
    # big enough that curl writes part of it to the .part file before the server stalls
    write_zip(mirror / "tiny-imagenet-100-A.zip", {"tiny-imagenet-100-A/wnids.txt": "n01443537\n",
                                                   "tiny-imagenet-100-A/noise.bin": os.urandom(1 << 18)})
    write_sums(mirror)
    server = StallingMirror(mirror, stall={"tiny-imagenet-100-A.zip"})
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DLMIE_")}
        env.update(DLMIE_MIRROR=server.url, DLMIE_DATA=str(data_dir))
        with sigint_handler(pytest_sigint):
            proc = popen_foreground([str(SCRIPT), "tiny-imagenet-100-A"], env=env, start_new_session=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 15
        while not any(p.stat().st_size for p in data_dir.glob(".get_datasets.*/*.part")):
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 130, out
        assert "interrupted" in out
        assert not leftovers(data_dir) and not (data_dir / "tiny-imagenet-100-A").exists()
    finally:
        server.close()
    rc, out = run("tiny-imagenet-100-A", mirror=mirror, data_dir=data_dir)  # simply rerun
    assert rc == 0, out
    assert data.is_present("tiny-imagenet-100-A")


@pytest.fixture
def fake_repo(tmp_path):
    """tmp/work/repo (script + catalog whose upstream URLs are file:// URLs into tmp/upstream), and
    tmp/work/shared/datasets (a mirror) beside it, laid out like a checkout."""
    repo, upstream = tmp_path / "work" / "repo", tmp_path / "upstream"
    (repo / "dlmie" / "data").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "get_datasets.sh")
    upstream.mkdir()
    lines = []
    for line in data.CATALOG.read_text().splitlines():
        f = line.split("\t")
        if not line.startswith("#") and len(f) > 7 and "://" in f[7]:
            f[7] = (upstream / f[7].rsplit("/", 1)[1]).as_uri()
        lines.append("\t".join(f))
    (repo / "dlmie" / "data" / "catalog.tsv").write_text("\n".join(lines) + "\n")
    make_mirror(tmp_path / "work" / "shared" / "datasets")
    return repo, upstream


def test_default_mirror_is_shared_datasets_beside_the_repo(fake_repo, data_dir):
    repo, _ = fake_repo
    rc, out = run("imagenet-val-25", data_dir=data_dir, script=repo / "get_datasets.sh")
    assert rc == 0, out
    assert "(DLMIE_MIRROR unset: ../shared/datasets)" in out
    assert data.is_present("imagenet-val-25")


@pytest.mark.parametrize("kind", ["dir", "http"])
def test_files_not_in_mirror_fall_back_to_upstream(fake_repo, mirror, data_dir, kind):
    repo, upstream = fake_repo
    script = repo / "get_datasets.sh"
    server = StallingMirror(mirror) if kind == "http" else None
    try:
        check_fallback(upstream, script, mirror, server.url if server else mirror, data_dir)
    finally:
        if server:
            server.close()


def check_fallback(upstream, script, mirror_dir, mirror, data_dir):
    (upstream / "vgg16_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(H5_SIGNATURE + bytes(8))
    write_zip(upstream / "coco_captioning.zip", {"coco_captioning/coco2014_vocab.json": '{"idx_to_word": []}',
                                                 "coco_captioning/other.h5": "x"})
    (mirror_dir / "coco2014_vocab.json").unlink()
    rc, out = run("vgg16-full", "coco2014-vocab", mirror=mirror, data_dir=data_dir, script=script)
    assert rc == 0, out
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5 is not in the mirror: falling back to upstream" in out
    assert data.dataset_path("vgg16-full").read_bytes().startswith(H5_SIGNATURE)
    assert json.loads(data.dataset_path("coco2014-vocab").read_text()) == {"idx_to_word": []}
    assert not leftovers(data_dir) and not list(data_dir.glob("*.zip"))
    # a broken upstream download fails with the URL and the way out
    (upstream / "pretrained_model.h5").write_bytes(b"<html>not found</html>")
    rc, out = run("cs231n-pretrained", "karpathy-splits", mirror=mirror, data_dir=data_dir, script=script)
    assert rc != 0
    assert (upstream / "pretrained_model.h5").as_uri() in out and "damaged or incomplete" in out
    assert (upstream / "caption_datasets.zip").as_uri() in out and "DLMIE_MIRROR=" in out
    assert not leftovers(data_dir)


def test_mirror_only_row_fails_with_its_note(data_dir):
    rc, out = run("coco2014-val-captions-5k", mirror="", data_dir=data_dir)  # empty: upstream only
    assert rc != 0
    assert "Source: upstream" in out
    assert "./get_datasets.sh coco2014-captions instead" in out  # the row's note
    assert not data_dir.exists() or not leftovers(data_dir)


# --- dlmie.data ------------------------------------------------------------------------------

def test_data_root_honours_dlmie_data(tmp_path, monkeypatch):
    monkeypatch.delenv("DLMIE_DATA", raising=False)
    assert data.data_root() == REPO / "datasets"
    monkeypatch.setenv("DLMIE_DATA", str(tmp_path / "elsewhere"))
    assert data.data_root() == tmp_path / "elsewhere"


def test_dataset_path_errors(data_dir):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.dataset_path("flickr8k")
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert f"Data set 'flickr8k' not found at {data_dir / 'flickr8k'}" in msg
    assert "./get_datasets.sh flickr8k" in msg
    with pytest.raises(ValueError, match="Valid names: tiny-imagenet-100-A, flickr8k"):
        data.dataset_path("flicker8k")


def test_catalog_is_well_formed():
    rows = data.read_catalog()
    assert rows and all(r["install"] in {"unzip", "file", "extract"} for r in rows)
    for name, rs in data.list_datasets().items():
        assert len({(r["default"], r["size"], r["path"]) for r in rs}) == 1, f"{name}: rows disagree"
        assert all(r["url"] or r["note"] for r in rs), f"{name}: a mirror-only row needs a note"
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "file names are unique (mirror names, zip markers)"


@pytest.mark.skipif(not SHARED_MIRROR.is_dir(), reason="no ../shared/datasets mirror beside the repository")
def test_real_mirror_covers_every_default_row():
    for row in data.read_catalog():
        if row["default"] == "yes":
            assert (SHARED_MIRROR / row["file"]).is_file() or row["url"], row["name"]

"""The cache of rewritten graphs (dlmie.compile_cache): a hit skips the rewrites and computes the
same bits as pytensor.function; a corrupt, stale or foreign entry is rebuilt, never used; the key
follows the graph and the configuration; concurrent writers leave one whole entry."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import compile_cache, layers as L
from pytensor.compile.maker import FunctionMaker
from pytensor.compile.mode import get_mode
from pytensor.compile.rebuild import construct_function_ins_and_outs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder; yields a counter of the rewrite passes run since."""
    monkeypatch.setenv("DLMIE_GRAPH_CACHE", str(tmp_path))
    rewrites = []
    original = FunctionMaker.prepare_fgraph

    def counting(*args, **kwargs):
        rewrites.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(FunctionMaker, "prepare_fgraph", staticmethod(counting))
    yield tmp_path, rewrites


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.pkl"))


def entry_data(path: Path) -> dict:
    """An entry's contents (its inputs as None)."""
    payload = path.read_bytes()[len(compile_cache._MAGIC) + 32:]
    return compile_cache._GraphUnpickler(io.BytesIO(payload), [None] * 8).load()


def conv_graph(scale=0.5):
    """A conv layer, ReLU and pooling with its input gradient; the constant `scale` is in the graph."""
    rng = np.random.default_rng(0)
    x = pt.tensor4("x")
    w = pytensor.shared(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), shape=(4, 3, 3, 3))
    b = pytensor.shared(rng.standard_normal(4).astype(np.float32))
    out = L.max_pool(L.relu(L.conv2d(x, w, b, stride=1, pad=1)), 2) * np.float32(scale)
    return x, [out, pytensor.grad(out.sum(), x)]


def images(n=2):
    return np.random.default_rng(1).standard_normal((n, 3, 8, 8)).astype(np.float32)


def test_second_compile_skips_the_rewrites_and_computes_the_same_bits(cache):
    folder, rewrites = cache
    x, outputs = conv_graph()
    reference = pytensor.function([x], outputs)(images())
    assert len(rewrites) == 1
    first = compile_cache.function([x], outputs)
    assert len(rewrites) == 2 and len(entries(folder)) == 1
    x, outputs = conv_graph()  # the same graph, built anew
    second = compile_cache.function([x], outputs)
    assert len(rewrites) == 2, "the cached graph was rewritten again"
    for f in (first, second):
        for got, want in zip(f(images()), reference):
            assert np.array_equal(got, want)


def test_updates_and_a_single_output_as_pytensor_function(cache):
    folder, rewrites = cache

    def sgd_step():
        p = pytensor.shared(np.arange(6, dtype=np.float32).reshape(2, 3), name="p")
        v = pytensor.shared(np.zeros((2, 3), np.float32), name="v")
        x = pt.matrix("x")
        loss = pt.sum((pt.dot(x, p.T) - 1) ** 2)
        g = pytensor.grad(loss, p)
        return p, v, x, loss, [(v, 0.9 * v - 0.01 * g), (p, p + 0.9 * v - 0.01 * g)]

    batch = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    runs = []
    for compile_ in (pytensor.function, compile_cache.function, compile_cache.function):
        p, v, x, loss, updates = sgd_step()
        step = compile_(inputs=[x], outputs=loss, updates=updates)
        losses = [step(batch) for _ in range(3)]
        runs.append((losses, p.get_value(), v.get_value()))
    assert len(rewrites) == 2 and len(entries(folder)) == 1
    for losses, p, v in runs[1:]:
        assert all(np.ndim(l) == 0 for l in losses)
        assert np.array_equal(losses, runs[0][0])
        assert np.array_equal(p, runs[0][1]) and np.array_equal(v, runs[0][2])


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "empty"])
def test_a_corrupt_entry_is_rebuilt_not_used(cache, damage):
    folder, rewrites = cache
    x, outputs = conv_graph()
    compile_cache.function([x], outputs)
    (entry,) = entries(folder)
    data = bytearray(entry.read_bytes())
    if damage == "flip a byte":
        data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data[: len(data) // 3] if damage == "truncate" else b"" if damage == "empty" else data))
    x, outputs = conv_graph()
    f = compile_cache.function([x], outputs)
    assert len(rewrites) == 2, "a corrupt entry was used"
    x, outputs = conv_graph()
    compile_cache.function([x], outputs)
    assert len(rewrites) == 2, "the rebuilt entry was not written back"
    assert np.array_equal(f(images())[0], pytensor.function([x], outputs)(images())[0])


def test_an_entry_of_another_graph_under_this_name_is_rebuilt_not_used(cache):
    """A stale entry: whole and readable, but written for another key (another graph, another
    PyTensor, another configuration). Its stored key does not match, so it is not used."""
    folder, rewrites = cache
    x, outputs = conv_graph(scale=0.5)
    compile_cache.function([x], outputs)
    (other,) = entries(folder)
    x, outputs = conv_graph(scale=2.0)
    f = compile_cache.function([x], outputs)
    (this,) = [e for e in entries(folder) if e != other]
    this.write_bytes(other.read_bytes())
    x, outputs = conv_graph(scale=2.0)
    f = compile_cache.function([x], outputs)
    assert len(rewrites) == 3, "an entry of another graph was used"
    x1, outputs1 = conv_graph(scale=2.0)
    assert np.array_equal(f(images())[0], pytensor.function([x1], outputs1)(images())[0])
    assert this.read_bytes() != other.read_bytes(), "the stale entry was not replaced"


def test_the_key_follows_constants_types_flags_and_configuration(cache):
    def key(build, mode=None, **kw):
        inputs, outputs = build()
        ins, cloned = construct_function_ins_and_outs(inputs, outputs)
        return compile_cache.graph_key(ins, cloned, get_mode(mode), kw.get("on_unused_input"))

    def matrix_graph(dtype="float32", value=2.0):
        x = pt.matrix("x", dtype=dtype)
        return [x], x * np.asarray(value, dtype)

    base = key(matrix_graph)
    assert key(matrix_graph) == base
    assert key(lambda: matrix_graph(value=3.0)) != base
    assert key(lambda: matrix_graph(dtype="float64")) != base
    assert key(matrix_graph, on_unused_input="ignore") != base
    assert key(matrix_graph, mode=get_mode(None).excluding("fusion")) != base
    with pytensor.config.change_flags(on_opt_error="raise"):
        assert key(matrix_graph) != base


def test_the_key_is_the_same_in_another_process(cache):
    """Keys must not depend on what else a process built (PyTensor numbers its variables in
    creation order and records tracebacks); the word embedding brings an OpFromGraph along, whose
    gradient leaves an unpicklable cache on it."""
    folder, rewrites = cache
    script = """
import dlmie
import numpy as np, pytensor, pytensor.tensor as pt
from dlmie import compile_cache, layers as L
for _ in range(3):
    pt.matrix() + 1  # other variables first: different automatic names
words = pt.lmatrix("words")
table = pytensor.shared(np.ones((5, 3), np.float32), name="table")
out = L.word_embedding(words, table).sum(axis=1)
compile_cache.function([words], [out, pytensor.grad(out.sum(), table)])
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), DLMIE_GRAPH_CACHE=str(folder))
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=REPO)
    assert len(entries(folder)) == 1
    words = pt.lmatrix("words")
    table = pytensor.shared(np.ones((5, 3), np.float32), name="table")
    out = L.word_embedding(words, table).sum(axis=1)
    f = compile_cache.function([words], [out, pytensor.grad(out.sum(), table)])
    assert rewrites == [], "the entry written by another process was not used"
    value, grad = f(np.array([[0, 4]]))
    assert np.array_equal(value, np.full((1, 3), 2, np.float32))
    assert np.array_equal(grad, np.array([[1] * 3, [0] * 3, [0] * 3, [0] * 3, [1] * 3], np.float32))


def test_concurrent_writers_leave_one_whole_entry(cache):
    folder, _ = cache
    script = """
import dlmie
import numpy as np, pytensor, pytensor.tensor as pt
from dlmie import compile_cache, layers as L
x = pt.tensor4("x")
w = pytensor.shared(np.ones((4, 3, 3, 3), np.float32), shape=(4, 3, 3, 3))
f = compile_cache.function([x], L.conv2d(x, w, pytensor.shared(np.zeros(4, np.float32)), 1, 1))
assert f(np.ones((1, 3, 5, 5), np.float32))[0, 0, 2, 2] == 27
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), DLMIE_GRAPH_CACHE=str(folder))
    writers = [subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO) for _ in range(3)]
    assert [p.wait(timeout=300) for p in writers] == [0, 0, 0]
    (entry,) = entries(folder)
    assert not any(p.name.startswith(".tmp-") for p in folder.iterdir()), "a temporary file was left"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=REPO)
    assert entries(folder) == [entry]


def test_a_graph_that_cannot_be_keyed_compiles_without_the_cache(cache):
    from pytensor.compile.builders import OpFromGraph

    folder, _ = cache
    a = pt.vector("a")
    op = OpFromGraph([a], [2 * a], pullback=lambda inputs, outputs, cotangents: [2 * cotangents[0]])
    x = pt.vector("x")
    f = compile_cache.function([x], op(x))
    assert np.array_equal(f(np.ones(3, np.float32)), np.full(3, 2, np.float32))
    # The one entry is the Op's inner function (2 * a), which is keyed like any graph.
    (entry,) = entries(folder)
    (output,) = entry_data(entry)["outputs"]
    assert not isinstance(output.owner.op, OpFromGraph)


def test_cache_off(cache, monkeypatch):
    folder, rewrites = cache
    monkeypatch.setenv("DLMIE_GRAPH_CACHE", "off")
    x, outputs = conv_graph()
    compile_cache.function([x], outputs)
    compile_cache.function([x], outputs)
    assert len(rewrites) == 2 and entries(folder) == []


def test_every_library_function_compiles_through_the_cache():
    """pytensor.function appears in the library only inside compile_cache (and in the benchmarks,
    which time PyTensor itself)."""
    calls = [f"{path.relative_to(REPO)}:{n}" for path in sorted((REPO / "dlmie").rglob("*.py"))
             if path.name != "compile_cache.py" and "benchmarks" not in path.parts
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"(?<![`\w.])pytensor\.function\(", line.split("#")[0])]
    assert calls == []


def test_the_march_flags_found_once_are_reused(cache):
    """The first process's PyTensor finds the -march=native flags and they are written down; the
    next process hands them to PyTensor, which then never runs its test program; a corrupt file
    is found anew and rewritten."""
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("the flags are kept only where /proc/cpuinfo names the CPU")
    folder, _ = cache
    script = """
import sys
import dlmie, numpy as np, pytensor, pytensor.tensor as pt
from pytensor.link.c import cmodule
from dlmie import compile_cache
if sys.argv[1] == "reuse":
    def refuse(flags):
        raise AssertionError("PyTensor tested the -march flags again")
    cmodule.try_march_flag = refuse
x = pt.vector("x")
assert compile_cache.function([x], pt.exp(x))(np.zeros(2, np.float32)).tolist() == [1, 1]
print(cmodule.GCC_compiler.march_flags)
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), DLMIE_GRAPH_CACHE=str(folder))

    def run(mode):
        return subprocess.run([sys.executable, "-c", script, mode], env=env, check=True, cwd=REPO,
                              capture_output=True, text=True).stdout

    found = run("find")
    (kept,) = folder.glob("march-*.json")
    assert found.strip() == str(json.loads(kept.read_text()))
    assert run("reuse") == found
    kept.write_text("[not json")
    assert run("find") == found
    assert str(json.loads(kept.read_text())) == found.strip() and run("reuse") == found




def rewrite_entry(path: Path, old: str, new: str) -> None:
    """Replaces text of an entry's payload by text of the same length, keeping the entry whole."""
    assert len(old) == len(new)
    payload = path.read_bytes()[len(compile_cache._MAGIC) + 32:].replace(old.encode(), new.encode())
    path.write_bytes(compile_cache._MAGIC + hashlib.sha256(payload).digest() + payload)


def test_a_cached_graph_reads_only_its_c_modules_keys(cache):
    """A process that links a cached graph reads the keys of the C modules its entry names, not
    PyTensor's whole index of compiled modules, also for the inner function of an OpFromGraph
    left in the graph (PyTensor's Softmax), which is compiled through the cache too and not stored
    in the outer entry; where a named module folder is gone, linking reads the whole index as
    PyTensor does, and the entry is written again with the folders used."""
    folder, _ = cache
    script = """
import dlmie, numpy as np, pytensor, pytensor.tensor as pt
from pytensor.link.c import cmodule
from dlmie import compile_cache
x = pt.vector("x")
f = compile_cache.function([x], [pt.exp(x) * 3, pt.special.softmax(x)])
assert [y.tolist() for y in f(np.zeros(2, np.float32))] == [[3, 3], [0.5, 0.5]]
print("whole index read:", cmodule._module_cache.indexed)
"""
    env = dict(os.environ, PYTHONPATH=str(REPO), DLMIE_GRAPH_CACHE=str(folder))

    def run():
        return subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd=REPO,
                              capture_output=True, text=True).stdout.strip()

    run()
    entry = max(entries(folder), key=lambda path: path.stat().st_size)  # the outer function's
    assert len(entries(folder)) == 2 and b"_constructor_Function" not in entry.read_bytes()
    modules = entry_data(entry)["modules"]
    compiledir = Path(pytensor.config.compiledir)
    assert modules and all((compiledir / name / "key.pkl").is_file() for name in modules)
    assert run() == "whole index read: False"
    # a module only this entry names (the Softmax's entry names the modules its inner function links)
    others = {name for other in entries(folder) if other != entry for name in entry_data(other)["modules"]}
    own = next(name for name in modules if name not in others)
    gone = "z" * len(own)
    rewrite_entry(entry, own, gone)
    assert gone in entry_data(entry)["modules"] and not (compiledir / gone).exists()
    assert run() == "whole index read: True"
    assert entry_data(entry)["modules"] == modules
    assert run() == "whole index read: False"

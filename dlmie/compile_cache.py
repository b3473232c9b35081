"""Compiled PyTensor functions that start in a fraction of the time: a persistent cache of
rewritten graphs.

`pytensor.function` spends most of its time rewriting the graph (canonicalization, GEMM, fusion
and in-place rewrites), in every process: PyTensor caches the compiled C code, not the rewritten
graph. `function` below compiles exactly as `pytensor.function` does the first time and stores
the rewritten graph on disk; a later call with the same graph, in any process, loads it and only
links it (the C modules come from PyTensor's cache). Either way the function runs the same
rewritten graph, so its results are bit-for-bit those of a fresh compile.

    f = compile_cache.function([x], outputs, updates=updates, mode=mode)   # as pytensor.function

Every compiled function of the library goes through here.

An entry's file name is the SHA-256 of its key, which holds
- the graph's structure: each variable as the Op, inputs and output index that compute it (an
  Op by its class and pickled state, inner graphs included; an OpFromGraph by its graph and
  options), each constant by value, each input by position, type and flags (mutable, borrow, has
  an update). The values of shared variables are not in it: they are inputs of the compiled
  function, read at every call;
- the mode (rewrite query, linker and its options) and `on_unused_input`;
- the versions of Python, NumPy and PyTensor, every PyTensor configuration value, the names of
  all rewrites registered with PyTensor, the source of the module of every Op class in the graph
  and of `dlmie.kernels` (which registers dlmie's rewrites).
An entry is never used for another graph or setting: any change makes another key. An entry
also holds its full key and the SHA-256 of its payload; an entry that is corrupt, belongs to
another key, does not unpickle with the current code or does not link is ignored: the function
is compiled afresh and the entry replaced.

Several processes may compile at once: an entry is written to a temporary file in the cache
folder and renamed over its final name (atomic on POSIX), so a reader sees a whole entry or none,
and two writers of one key write equivalent entries. A graph that cannot be keyed (an Op whose
state does not pickle) is compiled without the cache.

An entry also names the folders of PyTensor's C-module cache that linking its graph used. PyTensor
reads the key of every module in that cache (about a thousand after the notebooks have run) when a
process links its first function, and again at exit; the cache of C modules installed here
(`pytensor_compat.ModuleIndex`) reads only the keys of the modules an entry names, and the whole
index only when a module is not among them (a graph compiled afresh, a module deleted since),
before compiling anything, exactly as PyTensor does. An entry whose list differs from what linking used is written again.
The inner function of an OpFromGraph left in a rewritten graph (PyTensor's Softmax is one), which
PyTensor compiles with all its rewrites at the Op's first call, is compiled through this cache when
the graph is linked; an entry holds no compiled function.

The same folder keeps the `-march=native` flags PyTensor finds for this CPU and compiler, so that
later processes skip finding them again (see `_MarchFlags`).

The cache lives in `<PyTensor compiledir>/dlmie_graphs`, so `PYTENSOR_FLAGS=base_compiledir=DIR`
moves it with the C modules; entries unused for `cmodule__age_thresh_use` (24 days) are deleted
when a new one is written, and deleting the folder is always safe. `DLMIE_GRAPH_CACHE=off` turns
the cache off, `DLMIE_GRAPH_CACHE=DIR` moves it.

What this needs of PyTensor beyond its public API (its C-module cache, the -march flags, an
OpFromGraph's compiled inner function, the rewrite registry, the configuration's option names) is
reached only through `dlmie.pytensor_compat`, whose test fails on a PyTensor version nobody has
checked. `tools/startup_pieces.py` measures what each piece saves (docs/engine.md).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
from pytensor.compile.builders import OpFromGraph
from pytensor.compile.mode import get_mode
from pytensor.compile.rebuild import construct_function_ins_and_outs
from pytensor.compile.sharedvalue import SharedVariable
from pytensor.graph.basic import Apply, Constant, NominalVariable, Variable
from pytensor.graph.fg import AbstractFunctionGraph, FunctionGraph
from pytensor.graph.traversal import toposort

from dlmie import pytensor_compat as compat

_logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the entry layout changes
_MAGIC = b"dlmie-graph\n"
_source_digests: dict[str, str] = {}
_environment: str | None = None


class _Uncacheable(Exception):
    """The graph cannot be keyed or stored; it is compiled without the cache."""


def cache_dir() -> Path | None:
    """The folder of rewritten graphs, or None when DLMIE_GRAPH_CACHE=off."""
    setting = os.environ.get("DLMIE_GRAPH_CACHE", "")
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    return Path(setting) if setting else Path(pytensor.config.compiledir) / "dlmie_graphs"


def function(inputs, outputs, updates=None, mode=None, on_unused_input=None, name=None):
    """`pytensor.function(inputs, outputs, updates=..., mode=..., on_unused_input=...)`, with
    the rewritten graph taken from (or stored in) the cache.

    Inputs:
    - inputs: list of symbolic variables (or `pytensor.In`)
    - outputs: a symbolic variable or a list of them
    - updates: list of (shared variable, new value) pairs or a dict, as for pytensor.function
    - mode, on_unused_input, name: as for pytensor.function
    Returns a compiled PyTensor Function.
    """
    ins, cloned = construct_function_ins_and_outs(inputs, outputs, updates=updates)
    mode = get_mode(mode)
    folder = cache_dir()
    if folder is None:
        return mode.function_maker(ins, cloned, mode, on_unused_input=on_unused_input, name=name).create()
    march = _MarchFlags(folder)
    modules = compat.ModuleIndex.installed()
    try:
        key = graph_key(ins, cloned, mode, on_unused_input)
    except _Uncacheable as why:
        _logger.debug("compiling without the graph cache: %s", why)
        key = None
    if key is not None:
        path = folder / f"{hashlib.sha256(key.encode()).hexdigest()}.pkl"
        loaded = _load(path, key, ins, cloned, mode, name, modules)
        if loaded is not None:
            march.keep()
            fn, fgraph, named, used = loaded
            if modules is not None and used != named:
                _store(folder, key, fgraph, used)
            return fn
        _logger.debug("compiling %s afresh for %s", name or "a function", path)
    maker = mode.function_maker(ins, cloned, mode, on_unused_input=on_unused_input, name=name)
    with _recording(modules) as used:
        fn = maker.create()
        _compile_inner_functions(maker.fgraph)
    march.keep()
    if key is not None:
        _store(folder, key, maker.fgraph, used)
    return fn


class _MarchFlags:
    """This machine's `-march=native` flags as PyTensor found them, kept next to the graphs.

    Before the first C module of a process, PyTensor asks g++ which flags `-march=native` stands
    for and compiles and runs a test program with them, close to half a second in every process.
    The answer depends only on the CPU, the compiler and PyTensor, so it is kept in a file named
    after those (the CPU's model and feature flags from /proc/cpuinfo) and handed to PyTensor as
    its own result in the next processes: the C modules' keys, hence the cached modules, are the
    same. Where /proc/cpuinfo is not readable PyTensor detects the flags as usual.
    """

    def __init__(self, folder: Path):
        self.path, self._read = None, False
        if compat.march_flags() is not None:  # found or set already in this process
            return
        try:
            cpu = sorted({line for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith(("model name", "flags", "Features", "CPU part"))})
        except OSError:
            return
        config = pytensor.config
        machine = repr((cpu, config.cxx, config.gcc_version_str, config.gcc__cxxflags, pytensor.__version__))
        self.path = folder / f"march-{_digest(machine.encode())[:32]}.json"
        try:
            flags = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if isinstance(flags, list) and all(isinstance(f, str) for f in flags):
            compat.set_march_flags(flags)
            self._read = True

    def keep(self) -> None:
        """Write the flags PyTensor found while linking, if it had to find them."""
        flags = compat.march_flags()
        if self.path is None or self._read or flags is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".tmp-", suffix=".json",
                                             delete=False) as tmp:
                json.dump(flags, tmp)
            os.replace(tmp.name, self.path)
        except OSError as err:
            _logger.warning("could not write %s: %s", self.path, err)


def _compile_inner_functions(fgraph: FunctionGraph) -> None:
    """Compile, through `function`, the inner function of every OpFromGraph left in a rewritten
    graph (PyTensor's Softmax is one), as `OpFromGraph.fn` does at the Op's first call with
    `pytensor.function`: rewrites and all, in every process. An Op with compile options that
    `function` does not take is left to PyTensor."""
    for node in fgraph.apply_nodes:
        op = node.op
        if not isinstance(op, OpFromGraph) or compat.inner_function(op) is not None:
            continue
        options = dict(op.kwargs)
        mode = get_mode(options.pop("mode", None)).excluding("symbolic_op_recognition")
        if options:
            continue
        fn = function(op.inner_inputs, op.inner_outputs, mode=mode)
        fn.trust_input = True
        compat.set_inner_function(op, fn)


@contextlib.contextmanager
def _recording(index: "compat.ModuleIndex | None"):
    """Gives the set of C-module folders (names in PyTensor's cache folder) linked while the block
    runs; an empty set when `index` is None."""
    if index is None:
        yield set()
        return
    with index.recording() as used:
        yield used


# -- the key --------------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _value_digest(value) -> str:
    """SHA-256 of a constant's value. Arrays go by dtype, shape and bytes: equal arrays can pickle
    to different bytes (the pickle of a 0-d array depends on how it was made)."""
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        return _digest(repr((value.dtype.str, value.shape)).encode() + np.ascontiguousarray(value).tobytes())
    try:
        return _digest(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise _Uncacheable(f"the constant {value!r} does not pickle ({err})") from err


def _source_digest(module_name: str) -> str:
    """SHA-256 of a module's source file ('' for a module without one), once per process."""
    if module_name not in _source_digests:
        path = getattr(sys.modules.get(module_name), "__file__", None)
        _source_digests[module_name] = _digest(Path(path).read_bytes()) if path else ""
    return _source_digests[module_name]


def _environment_key() -> str:
    """Versions, configuration, registered rewrites and dlmie's kernels: what every entry depends
    on besides its graph."""
    global _environment
    if _environment is None:
        kernels = Path(dlmie.__file__).with_name("kernels")
        sources = [(p.name, _digest(p.read_bytes())) for p in sorted(kernels.glob("*.py"))]
        _environment = repr((FORMAT, sys.version, np.__version__, pytensor.__version__, sources))
    # The configuration and the rewrite registry can change while a process runs.
    rewrites = compat.registered_rewrite_names(pytensor.compile.optdb)
    return repr((_environment, compat.configuration_values(), rewrites))


def _mode_key(mode) -> tuple:
    from pytensor.graph.rewriting.db import RewriteDatabaseQuery

    query = mode.provided_optimizer
    if isinstance(query, str):
        rewrites = query
    elif isinstance(query, RewriteDatabaseQuery) and not query.subquery and not query.extra_rewrites:
        rewrites = (sorted(query.include), sorted(query.exclude), sorted(query.require), query.position_cutoff)
    else:
        raise _Uncacheable(f"mode with a custom rewriter {query!r}")
    linker = {k: v for k, v in vars(mode.linker).items() if isinstance(v, bool | int | float | str | type(None))}
    return type(mode).__qualname__, rewrites, type(mode.linker).__qualname__, sorted(linker.items())


class _StructurePickler(pickle.Pickler):
    """Pickles an Op's state, or a graph, with every variable replaced by a token of its structure.

    A variable's token is the op, inputs and output index that compute it (a Merkle hash), a
    constant's is its type and value, a root's its type and order of appearance, so the bytes
    do not depend on what PyTensor records per object (automatic names, creation tracebacks) and
    identical graphs built in different processes pickle identically. Graphs held by Ops (Scan's
    and OpFromGraph's inner graphs) are pickled as their inputs and outputs.
    """

    def __init__(self, file, key: "_StructureKey"):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._key = key
        self._roots: dict[int, str] = {}

    def persistent_id(self, obj):
        if isinstance(obj, Variable):
            return ("variable", self._variable(obj))
        if isinstance(obj, Apply):
            return ("apply", self._node(obj))
        return None

    def reducer_override(self, obj):
        if isinstance(obj, AbstractFunctionGraph | _Graph):
            inputs, outputs = tuple(obj.inputs), tuple(obj.outputs)
            for var in inputs:
                self._variable(var)
            for node in toposort(outputs, blockers=inputs):  # in order: no deep recursion
                self._node(node)
            return _Graph, (inputs, outputs)
        if isinstance(obj, OpFromGraph):
            # Its state also caches the gradient Ops built from it on demand (local functions,
            # which do not pickle); it is defined, as PyTensor's equality has it, by its graph
            # and options.
            return _Op, (type(obj), compat.opfromgraph_identity(obj))
        return NotImplemented

    def _variable(self, var) -> str:
        if isinstance(var, Constant):
            return self._key.constant(var)
        if isinstance(var, NominalVariable):
            return f"nominal:{var.id}:{self._key.type(var.type)}"
        if var.owner is None:
            return self._roots.setdefault(id(var), f"root:{len(self._roots)}:{self._key.type(var.type)}")
        return f"{self._node(var.owner)}:{var.index}"

    def _node(self, node) -> str:
        return self._key.node(node, lambda: [self._variable(v) for v in node.inputs])


class _Graph(NamedTuple):
    """A graph as `_StructurePickler` writes it: its inputs, in order, and its outputs."""

    inputs: tuple
    outputs: tuple


class _Op(NamedTuple):
    """An Op as `_StructurePickler` writes one whose whole state does not define it."""

    cls: type
    fields: tuple


class _StructureKey:
    """Digests of the Ops, types, constants and nodes of one graph, each computed once."""

    def __init__(self):
        self.modules: set[str] = set()
        self._memo: dict[tuple, str] = {}
        self._keep: list = []  # what the memo's ids refer to stays alive while it is in use

    def _once(self, kind, obj, compute) -> str:
        if (kind, id(obj)) not in self._memo:
            self._keep.append(obj)
            self._memo[kind, id(obj)] = compute()
        return self._memo[kind, id(obj)]

    def pickled(self, obj) -> str:
        buffer = io.BytesIO()
        try:
            _StructurePickler(buffer, self).dump(obj)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as err:
            raise _Uncacheable(f"{obj!r} does not pickle ({err})") from err
        return _digest(buffer.getvalue())

    def type(self, t) -> str:
        return self._once("type", t, lambda: f"{type(t).__qualname__}:{self.pickled(t)}")

    def op(self, op) -> str:
        def compute():
            self.modules.add(type(op).__module__)
            return f"{type(op).__module__}.{type(op).__qualname__}:{self.pickled(op)}"
        return self._once("op", op, compute)

    def constant(self, var) -> str:
        return self._once("constant", var, lambda: f"constant:{self.type(var.type)}:{_value_digest(var.data)}")

    def node(self, node, inputs) -> str:
        """inputs: a function returning the tokens of the node's inputs (called once)."""
        return self._once("node", node, lambda: _digest(repr((self.op(node.op), inputs())).encode()))


def graph_key(ins, outputs, mode, on_unused_input) -> str:
    """The text whose SHA-256 names a graph's cache entry (see the module docstring).

    Inputs:
    - ins: the `In` specifications from `construct_function_ins_and_outs`
    - outputs: the cloned output variable or list of variables
    - mode: a `Mode`; on_unused_input: as for pytensor.function
    Raises _Uncacheable for a graph that cannot be keyed.
    """
    single = not isinstance(outputs, list | tuple)
    outs = [outputs] if single else list(outputs)
    key = _StructureKey()
    flags = [(spec.update is not None, spec.mutable, spec.borrow, spec.strict, spec.allow_downcast,
              spec.implicit, spec.shared) for spec in ins]
    roots = outs + [spec.update for spec in ins if spec.update is not None]
    graph = key.pickled(_Graph(tuple(spec.variable for spec in ins), tuple(roots)))
    sources = sorted((m, _source_digest(m)) for m in key.modules)
    return "\n".join(repr(part) for part in (_environment_key(), _mode_key(mode), on_unused_input, single,
                                              flags, graph, sources))


# -- entries --------------------------------------------------------------------------------------


class _GraphPickler(pickle.Pickler):
    """Pickles a rewritten graph with its inputs (the shared variables among them) by position."""

    def __init__(self, file, inputs):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._position = {id(v): k for k, v in enumerate(inputs)}

    def persistent_id(self, obj):
        if isinstance(obj, Variable):
            if id(obj) in self._position:
                return ("input", self._position[id(obj)])
            if isinstance(obj, SharedVariable):  # its value would be frozen into the entry
                raise _Uncacheable(f"the rewritten graph holds the shared variable {obj}, which is not an input")
        return None

    def reducer_override(self, obj):
        # An OpFromGraph without its compiled inner function, which a later process links anew.
        if isinstance(obj, OpFromGraph) and compat.inner_function(obj) is not None:
            return compat.reduce_without_inner_function(obj)
        return NotImplemented


class _GraphUnpickler(pickle.Unpickler):
    def __init__(self, file, inputs):
        super().__init__(file)
        self._inputs = inputs

    def persistent_load(self, pid):
        kind, position = pid
        if kind != "input":
            raise pickle.UnpicklingError(f"unknown reference {pid!r}")
        return self._inputs[position]


def _store(folder: Path, key: str, fgraph: FunctionGraph, modules: set[str]) -> None:
    """Write a rewritten graph's entry, with the C-module folders that linking it used, atomically
    (a graph that does not pickle is skipped), then delete the entries nobody used for
    `cmodule__age_thresh_use` seconds."""
    buffer = io.BytesIO()
    try:
        _GraphPickler(buffer, fgraph.inputs).dump(
            {"key": key, "outputs": list(fgraph.outputs), "update_mapping": dict(fgraph.update_mapping),
             "modules": sorted(modules)})
    except (_Uncacheable, pickle.PicklingError, TypeError, AttributeError, RecursionError) as why:
        _logger.debug("not caching a rewritten graph: %s", why)
        return
    payload = buffer.getvalue()
    target = folder / f"{hashlib.sha256(key.encode()).hexdigest()}.pkl"
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-", suffix=".pkl", delete=False) as tmp:
            tmp.write(_MAGIC + hashlib.sha256(payload).digest() + payload)
        os.replace(tmp.name, target)
    except OSError as err:  # a read-only or full disk costs speed, never a result
        _logger.warning("could not write the compiled-graph cache entry %s: %s", target, err)
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        return
    oldest = time.time() - pytensor.config.cmodule__age_thresh_use
    for path in folder.glob("*.pkl"):  # temporary files too: those of a writer that was killed
        try:
            if path.stat().st_mtime < oldest:
                path.unlink()
        except OSError:  # deleted by another process meanwhile
            pass


def _read_entry(path: Path, key: str, ins) -> dict | None:
    """The entry at `path` if it is whole and belongs to `key`, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC)
    payload = data[head + 32 :]
    if data[:head] != _MAGIC or hashlib.sha256(payload).digest() != data[head : head + 32]:
        _logger.info("ignoring a corrupt compiled-graph cache entry %s", path)
        return None
    try:
        entry = _GraphUnpickler(io.BytesIO(payload), [spec.variable for spec in ins]).load()
    except compat.UNPICKLING_ERRORS as err:  # an entry written by other code (a class that moved or changed)
        _logger.info("ignoring an unreadable compiled-graph cache entry %s: %s", path, err)
        return None
    if not isinstance(entry, dict) or entry.get("key") != key:
        _logger.info("ignoring a compiled-graph cache entry of another graph %s", path)
        return None
    try:
        os.utime(path)  # in use: not to be pruned
    except OSError:
        pass
    return entry


def _load(path: Path, key: str, ins, outputs, mode, name, modules: "compat.ModuleIndex | None"):
    """Link the cached rewritten graph as `pytensor.function` links a fresh one.

    Returns (function, its graph, the set of C-module folders the entry names, the set linking
    used), or None when there is no usable entry.
    """
    entry = _read_entry(path, key, ins)
    if entry is None:
        return None
    named = entry.get("modules", [])
    if not (isinstance(named, list) and all(isinstance(m, str) and Path(m).name == m for m in named)):
        named = []
    single = not isinstance(outputs, list | tuple)
    outs = [outputs] if single else list(outputs)
    graph_outputs, update_mapping = entry["outputs"], entry["update_mapping"]
    expected = outs + [spec.update for spec in ins if spec.update is not None]
    updated = {position for position, spec in enumerate(ins) if spec.update is not None}
    if (len(graph_outputs) != len(expected) or set(update_mapping.values()) != updated
            or not all(e.type.is_super(g.type) for e, g in zip(expected, graph_outputs))):
        _logger.info("ignoring a compiled-graph cache entry with other outputs %s", path)
        return None
    # The updates are attached through the inputs, as FunctionMaker does for a fresh graph.
    update_of = {position: graph_outputs[out] for out, position in update_mapping.items()}
    specs = []
    for position, spec in enumerate(ins):
        spec = copy.copy(spec)
        if spec.update is not None:
            spec.update = update_of[position]
        specs.append(spec)
    try:
        fgraph = FunctionGraph([spec.variable for spec in ins], graph_outputs[: len(outs)], clone=False)
        maker = mode.function_maker(specs, graph_outputs[0] if single else graph_outputs[: len(outs)], mode,
                                    accept_inplace=True, on_unused_input="ignore", fgraph=fgraph,
                                    no_fgraph_prep=True, name=name)
        if modules is not None:
            modules.add(named)
        with _recording(modules) as used:
            fn = maker.create()
            _compile_inner_functions(fgraph)
        return fn, fgraph, set(named), used
    except Exception as err:  # noqa: BLE001  (see _warn_once)
        _warn_once(type(err), "ignoring a compiled-graph cache entry that does not link (%s): %s: %s; "
                   "compiling afresh", path, type(err).__name__, err)
        return None


_warned: set[type] = set()


def _warn_once(kind: type, message: str, *args) -> None:
    """Log a warning once per process and kind of exception.

    Linking a stored graph runs PyTensor's linker and C compiler on an entry whose key matched,
    so it should not fail; when it does (an entry that the current code cannot link, a changed
    internal of PyTensor's that `dlmie.pytensor_compat` missed), the function is compiled afresh
    and the failure is reported at the warning level rather than hidden: a silent fallback would
    cost the whole rewrite on every call."""
    if kind not in _warned:
        _warned.add(kind)
        _logger.warning(message, *args)

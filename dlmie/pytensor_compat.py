"""Every use dlmie makes of PyTensor's internals, in one place.

`dlmie.compile_cache` makes a command start in about a second by doing less than PyTensor does at
start-up; for that it reaches under PyTensor's public API. Each such reach is a small named function
or class here, and the rest of dlmie calls only these. `tests/test_pytensor_compat.py` fails on a
PyTensor version not in `CHECKED_VERSIONS` and when one of the internals below is gone or has
changed shape: after upgrading PyTensor, run that test, read PyTensor's source for each item, and
add the version.

CHECKED_VERSIONS: the PyTensor versions whose source was read for every item below (3.0.7; the
project pins ``pytensor>=3.0,<3.1``).

The internals, why each is needed, and what happens if it changes:

1. `pytensor.link.c.cmodule._module_cache` (module global, read and written). PyTensor creates its
   cache of compiled C modules on first use (`get_module_cache`) and reads the key of every module
   in it (0.7-2 s for the ~1000 modules the notebooks leave) and again at exit. `ModuleIndex` is
   installed in that global before PyTensor creates its own, so that a process reads only the keys
   its cached graphs name. PyTensor's `get_module_cache` takes no cache class: there is no public
   way in.
2. `cmodule.ModuleCache`, subclassed by `ModuleIndex`: its constructor's `do_refresh` argument; the
   methods overridden, `refresh(...)`, `module_from_key(key, lnk)` and `_on_atexit()` (private,
   registered with atexit by PyTensor for its own cache); its tables `dirname`,
   `loaded_key_pkl`, `module_hash_to_key_data`, `entry_from_key`, `similar_keys`,
   `age_thresh_use`, and `clear_unversioned()`. `ModuleIndex.add` fills the tables as PyTensor's
   `refresh` does for one module folder, with the module-level helpers `KeyData` (its `keys`,
   `module_hash`, `entry`, `key_pkl`, `get_entry()`), `module_name_from_dir`, `last_access_time`,
   `is_same_entry` and `get_safe_part`. These are imported by name when this module is imported,
   so a renamed helper fails at import, not inside a handler.
3. `cmodule.GCC_compiler.march_flags` (class attribute, read and written): the flags g++'s
   `-march=native` stands for, which PyTensor finds (about half a second, a g++ run and a test
   program) before the first C module of every process. compile_cache keeps them in a file and
   hands them back to PyTensor in later processes (`march_flags`, `set_march_flags`).

   The public setting `gcc__cxxflags` was considered instead, and is not equivalent.
   `GCC_compiler.compile_args` returns the words of `gcc__cxxflags`, then the detected flags, then
   fixed ones; when `gcc__cxxflags` holds a `-march=` word PyTensor detects nothing and adds no flags
   of its own. So a process that sets `gcc__cxxflags` to "the user's flags + the kept flags" before
   its first C module compiles with the same arguments, and gets the same module keys
   (`gcc__cxxflags` is not in the C key, `in_c_key=False`; the key holds the sorted compile
   arguments). But (a) the first process on a machine must let PyTensor detect the flags, and
   setting `gcc__cxxflags` after that makes PyTensor add the detected flags a second time
   (`compile_args` extends the user's words by `march_flags` whenever that is not empty): other
   compile arguments, other module keys, every module compiled again; (b) the same happens in any
   process where a C module was compiled before the setting (a `pytensor.function` call outside
   compile_cache, in the benchmarks and the tests); (c) every configuration value is part of the
   graph cache's key, so the entries written by the first process would never be found by the
   next ones. Avoiding (a) would need the flags detected in a child process, and (b) cannot be
   detected through the public API. The private attribute is set only when PyTensor has not set it.
4. `OpFromGraph._fn` (instance attribute, read and written): the compiled inner function that the
   public property `OpFromGraph.fn` compiles with `pytensor.function` at the Op's first call.
   compile_cache compiles it through its own cache instead (`inner_function`,
   `set_inner_function`), and leaves it out of a stored graph (`reduce_without_inner_function`).
   `OPFROMGRAPH_FIELDS`: the public attributes that, with the class, define an OpFromGraph as
   PyTensor's equality has it; they key an OpFromGraph in a graph.
5. `RewriteDatabase._names` and `RewriteDatabase.__db__` (tag -> entries): the names of every
   registered rewrite, part of the graph cache's key (`registered_rewrite_names`). The public
   `print_summary` writes object ids, which differ between processes.

6. `config._config_var_dict` (the names of all configuration options): every option's value is
   part of the graph cache's key (`configuration_values`). The public `config.config_print` lists
   them too, but with object ids and sets in its lines (`print_global_stats (<bound method ... at
   0x7f...>)`, `linker ({'cvm', 'py', ...})`), which differ between processes: no key can be made
   of it. `get_config_hash` covers only the options in the C key.

Public but unusual API the cache relies on, checked by the same test: `FunctionMaker`'s arguments
`fgraph`, `no_fgraph_prep`, `accept_inplace` (linking a stored graph without rewriting it) and
`pytensor.compile.rebuild.construct_function_ins_and_outs` (what `pytensor.function` does to its
arguments).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import time
from pathlib import Path

import dlmie  # noqa: F401  (configures PyTensor before it is imported)
import pytensor
from pytensor.compile.builders import OpFromGraph
from pytensor.link.c import cmodule
from pytensor.link.c.cmodule import (
    GCC_compiler,
    KeyData,
    ModuleCache,
    get_safe_part,
    is_same_entry,
    last_access_time,
    module_name_from_dir,
)

_logger = logging.getLogger(__name__)

CHECKED_VERSIONS = ("3.0.7",)

OPFROMGRAPH_FIELDS = ("fgraph", "is_inline", "destroy_map", "shared_inputs", "kwargs", "name",
                      "pullback_overrides", "pushforward_overrides")

# What unpickling a file written by other code raises: a truncated or half-written file
# (EOFError, UnpicklingError, ValueError), a class that moved or was renamed since (AttributeError,
# ImportError), a state its class no longer takes (TypeError, KeyError, IndexError).
UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, AttributeError, ImportError,
                     TypeError, KeyError, IndexError)


# -- 3. the -march flags --------------------------------------------------------------------------


def march_flags() -> list[str] | None:
    """The flags PyTensor found (or was given) for `-march=native` in this process; None before
    its first C module."""
    return GCC_compiler.march_flags


def set_march_flags(flags: list[str]) -> None:
    """Hand PyTensor the flags it would find for this CPU and compiler, before it looks for them."""
    if GCC_compiler.march_flags is not None:
        raise RuntimeError("PyTensor has found its -march flags already in this process")
    GCC_compiler.march_flags = list(flags)


# -- 4. OpFromGraph's inner function ----------------------------------------------------------------


def opfromgraph_identity(op: OpFromGraph) -> tuple:
    """The fields that define an OpFromGraph (`OPFROMGRAPH_FIELDS`), as (name, value) pairs."""
    return tuple((field, getattr(op, field)) for field in OPFROMGRAPH_FIELDS)


def inner_function(op: OpFromGraph):
    """The compiled inner function of an OpFromGraph, or None before its first call."""
    return vars(op).get("_fn")


def set_inner_function(op: OpFromGraph, fn) -> None:
    """Give an OpFromGraph its compiled inner function, which `op.fn` then returns."""
    op._fn = fn


def reduce_without_inner_function(op: OpFromGraph):
    """`op.__reduce_ex__` for pickling, without the compiled inner function (a later process
    compiles it anew)."""
    reduced = op.__reduce_ex__(pickle.HIGHEST_PROTOCOL)
    state = {name: value for name, value in reduced[2].items() if name != "_fn"}
    return (*reduced[:2], state, *reduced[3:])


# -- 5. the rewrite registry ------------------------------------------------------------------------


def registered_rewrite_names(db, seen=None) -> list[str]:
    """The names registered in a rewrite database and in the databases under it, depth first."""
    from pytensor.graph.rewriting.db import RewriteDatabase

    seen = set() if seen is None else seen
    names = sorted(db._names)
    for tag in sorted(db.__db__):
        for entry in db.__db__[tag]:
            if isinstance(entry, RewriteDatabase) and id(entry) not in seen:
                seen.add(id(entry))
                names.extend(registered_rewrite_names(entry, seen))
    return names


# -- 6. the configuration -------------------------------------------------------------------------

_unreadable: set[str] = set()


def configuration_values() -> list[tuple[str, str]]:
    """(name, repr of its value) for every PyTensor configuration option, by name.

    An option whose value cannot be read here (a default computed from something missing in this
    environment) is listed as "<unreadable>", and said once per process: PyTensor reads it only
    where it is used."""
    config = pytensor.config
    values = []
    for option in sorted(config._config_var_dict):
        try:
            values.append((option, repr(getattr(config, option))))
        except Exception as err:  # noqa: BLE001  (any error of a default's computation; said once)
            if option not in _unreadable:
                _unreadable.add(option)
                _logger.info("PyTensor option %s cannot be read: %s: %s", option, type(err).__name__, err)
            values.append((option, "<unreadable>"))
    return values


# -- 1, 2. the C-module cache -----------------------------------------------------------------------


class ModuleIndex(ModuleCache):
    """PyTensor's cache of compiled C modules, reading the index of its entries on demand.

    PyTensor's `ModuleCache` unpickles the key of every module in its folder when a process links
    its first function (0.7-2 s for about a thousand) and again at exit, to delete the old ones.
    This one starts empty: `add` reads the keys of the module folders a cache entry names, with
    the checks PyTensor's full read applies to each, so that linking finds those modules by key. A
    key not among them goes PyTensor's own way: the module's source hash, then the whole index,
    then a compile. The exit's clean-up of old modules runs in a process that read the whole index;
    the modules this process compiled without a version are deleted at its exit in any case.
    """

    def __init__(self, dirname):
        super().__init__(dirname, do_refresh=False)
        self.indexed = False
        self._recorders: list[set[str]] = []

    @classmethod
    def installed(cls) -> "ModuleIndex | None":
        """The process's C-module cache, installed as PyTensor's if PyTensor has none yet; None
        when PyTensor's own is in use."""
        if cmodule._module_cache is None:
            cmodule._module_cache = cls(pytensor.config.compiledir)
            atexit.register(cmodule._module_cache._on_atexit)
        return cmodule._module_cache if isinstance(cmodule._module_cache, cls) else None

    def refresh(self, *args, **kwargs):
        self.indexed = True
        return super().refresh(*args, **kwargs)

    def module_from_key(self, key, lnk):
        module = super().module_from_key(key, lnk)
        for used in self._recorders:
            used.add(Path(module.__file__).parent.name)
        return module

    @contextlib.contextmanager
    def recording(self):
        """Gives the set of C-module folders (names in PyTensor's cache folder) linked while the
        block runs."""
        used: set[str] = set()
        self._recorders.append(used)
        try:
            yield used
        finally:
            self._recorders.remove(used)

    def add(self, names) -> None:
        """Read the keys of the module folders `names` (names in the cache folder) into the index;
        a folder that PyTensor's full read would skip (missing, broken, unused for longer than
        `cmodule__age_thresh_use`) is skipped.

        PyTensor reads and writes key files under its compile lock, which a process compiling
        elsewhere holds for seconds. Here they are read without it: a file caught half written
        does not unpickle and is skipped, and one read before another process added a key to it
        still names its module's source hash, which PyTensor's lookup tries before the index."""
        for name in names:
            self._add(self.dirname / name)

    def _add(self, folder: Path) -> None:
        key_pkl = str(folder / "key.pkl")
        if key_pkl in self.loaded_key_pkl:
            return
        try:  # a folder deleted meanwhile, or holding no module or several: the full index decides
            files = os.listdir(folder)
            if "delete.me" in files or "key.pkl" not in files:
                return
            entry = module_name_from_dir(str(folder), files=files)
            if time.time() - last_access_time(entry) >= self.age_thresh_use:
                return
            with open(key_pkl, "rb") as f:
                key_data = pickle.load(f)
        except (OSError, *UNPICKLING_ERRORS) as err:  # ValueError: not one module in the folder
            _logger.debug("not reading the C module %s: %r", folder, err)
            return
        if (not isinstance(key_data, KeyData) or not is_same_entry(entry, key_data.get_entry())
                or not key_data.keys or not all(key[0] for key in key_data.keys)
                or key_data.module_hash in self.module_hash_to_key_data
                or any(key in self.entry_from_key for key in key_data.keys)):
            return
        key_data.entry, key_data.key_pkl = entry, key_pkl
        self.module_hash_to_key_data[key_data.module_hash] = key_data
        for key in key_data.keys:
            self.entry_from_key[key] = entry
            self.similar_keys.setdefault(get_safe_part(key), []).append(key)
        self.loaded_key_pkl.add(key_pkl)

    def _on_atexit(self):
        if self.indexed:
            super()._on_atexit()
        else:
            self.clear_unversioned()

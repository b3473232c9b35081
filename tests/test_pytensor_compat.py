"""dlmie.pytensor_compat: the PyTensor internals dlmie uses are still there, with the shape it
relies on, and the installed PyTensor is a version whose source someone has checked for them.

A failure here means: read the item of `dlmie/pytensor_compat.py`'s docstring that the message
names in the new PyTensor's source, adapt the compat module, and add the version to
`CHECKED_VERSIONS`. Each item fails loudly here rather than as a silent recompile on every call."""

import inspect
import re
from pathlib import Path

import dlmie  # noqa: F401
import pytensor
import pytensor.tensor as pt
from dlmie import pytensor_compat as compat
from pytensor.compile.builders import OpFromGraph
from pytensor.link.c import cmodule


def test_the_installed_pytensor_is_a_checked_version():
    assert pytensor.__version__ in compat.CHECKED_VERSIONS, (
        f"PyTensor {pytensor.__version__} is installed, but dlmie.pytensor_compat was checked against "
        f"{', '.join(compat.CHECKED_VERSIONS)} only. Read each internal its docstring lists in this "
        f"version's source, run tests/test_pytensor_compat.py and tests/test_compile_cache.py, then add "
        f"{pytensor.__version__!r} to CHECKED_VERSIONS.")


def test_no_other_module_of_dlmie_reaches_into_pytensor():
    """Private PyTensor names appear only in the compat module."""
    root = Path(compat.__file__).parent
    private = re.compile(r"\bcmodule\b(?!__)|_module_cache|GCC_compiler|(?<!compat)\.march_flags\b|\._fn\b|_config_var_dict|__db__"
                         r"|\bdb\._names|pytensor[\w.]*\._[a-z]")
    hits = [f"{path.relative_to(root)}:{n}: {line.strip()}"
            for path in sorted(root.rglob("*.py")) if path != Path(compat.__file__)
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if private.search(line.split("#")[0]) and not line.lstrip().startswith(("-", "`"))]
    assert hits == [], "PyTensor internals used outside dlmie/pytensor_compat.py:\n" + "\n".join(hits)


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_module_cache_global_and_its_factory():
    """1. PyTensor keeps its C-module cache in `cmodule._module_cache` and creates it only when that
    is None."""
    assert hasattr(cmodule, "_module_cache"), "cmodule._module_cache is gone: ModuleIndex cannot be installed"
    source = inspect.getsource(cmodule.get_module_cache)
    assert "_module_cache is None" in source and "_module_cache = ModuleCache(" in source, (
        "cmodule.get_module_cache no longer creates its cache only when _module_cache is None")
    # (installing one is tested in a fresh process: tests/test_compile_cache.py, the last test)
    assert cmodule._module_cache is None or isinstance(cmodule._module_cache, cmodule.ModuleCache)


def test_the_module_cache_methods_and_tables_module_index_uses():
    """2. The constructor's do_refresh, the methods ModuleIndex overrides, its tables and the
    module-level helpers `add` calls."""
    assert "do_refresh" in _parameters(cmodule.ModuleCache.__init__)
    assert _parameters(cmodule.ModuleCache.module_from_key) == ["self", "key", "lnk"]
    assert _parameters(cmodule.ModuleCache._on_atexit) == ["self"]
    assert _parameters(cmodule.ModuleCache.clear_unversioned)[0] == "self"
    assert "age_thresh_use" in _parameters(cmodule.ModuleCache.refresh)
    assert isinstance(cmodule.ModuleCache.age_thresh_use, int | float)
    assert _parameters(cmodule.module_name_from_dir) == ["dirname", "err", "files"]
    assert _parameters(cmodule.last_access_time) == ["path"]
    assert _parameters(cmodule.is_same_entry) == ["entry_1", "entry_2"]
    assert _parameters(cmodule.get_safe_part) == ["key"]
    assert _parameters(cmodule.KeyData.__init__) == ["self", "keys", "module_hash", "key_pkl", "entry"]
    assert callable(cmodule.KeyData.get_entry)
    # The tables, on a cache that reads nothing.
    cache = cmodule.ModuleCache(pytensor.config.compiledir, do_refresh=False)
    for table in ("module_hash_to_key_data", "entry_from_key", "similar_keys"):
        assert isinstance(getattr(cache, table), dict), f"ModuleCache.{table} is gone or not a dict"
    assert isinstance(cache.loaded_key_pkl, set)
    assert str(cache.dirname) == str(pytensor.config.compiledir)


def test_a_module_index_reads_a_modules_key_as_the_full_read_does():
    """The key PyTensor's full read loads for a module folder is the one `add` loads."""
    x = pt.vector("x")
    pytensor.function([x], pt.exp(x) * 7)  # a C module in the compile dir
    full = cmodule.ModuleCache(pytensor.config.compiledir, do_refresh=False)
    full.refresh()
    name = next(iter(full.module_hash_to_key_data.values())).key_pkl
    folder = Path(name).parent
    index = compat.ModuleIndex(pytensor.config.compiledir)
    index.add([folder.name])
    assert str(folder / "key.pkl") in index.loaded_key_pkl
    assert set(index.entry_from_key) <= set(full.entry_from_key) and index.entry_from_key
    assert not index.indexed


def test_the_march_flags_attribute():
    """3. PyTensor keeps the flags in GCC_compiler.march_flags, uses them while not None and
    detects them otherwise."""
    assert "march_flags" in vars(cmodule.GCC_compiler)
    source = inspect.getsource(cmodule.GCC_compiler.compile_args)
    assert "GCC_compiler.march_flags is None" in source and "cxxflags.extend(GCC_compiler.march_flags)" in source
    flags = compat.march_flags()
    assert flags is None or (isinstance(flags, list) and all(isinstance(f, str) for f in flags))


def test_the_inner_function_of_an_opfromgraph():
    """4. `op.fn` compiles into `op._fn` once and returns what is there; the identity fields exist."""
    a = pt.vector("a")
    op = OpFromGraph([a], [2 * a])
    for field in compat.OPFROMGRAPH_FIELDS:
        assert hasattr(op, field), f"OpFromGraph.{field} is gone: an OpFromGraph would be keyed without it"
    assert compat.inner_function(op) is None
    fn = op.fn
    assert compat.inner_function(op) is fn, "OpFromGraph.fn no longer keeps its function in op._fn"
    other = pytensor.function([a], 3 * a)
    compat.set_inner_function(op, other)
    assert op.fn is other, "OpFromGraph.fn does not return the function set in op._fn"
    reduced = compat.reduce_without_inner_function(op)
    assert "_fn" not in reduced[2] and "fgraph" in reduced[2]


def test_the_rewrite_registry():
    """5. RewriteDatabase keeps its names in `_names` and its entries by tag in `__db__`."""
    from pytensor.graph.rewriting.db import RewriteDatabase

    db = pytensor.compile.optdb
    assert isinstance(db, RewriteDatabase)
    assert isinstance(db._names, set) and isinstance(db.__db__, dict)
    names = compat.registered_rewrite_names(db)
    assert "local_dot22_to_dot22scalar" in names and "BlasOpt" in names and len(names) > 300


def test_the_configuration_options():
    """6. The configuration keeps its options by name in `_config_var_dict`; all are listed."""
    assert isinstance(pytensor.config._config_var_dict, dict)
    values = dict(compat.configuration_values())
    assert values["floatX"] == "'float32'" and len(values) == len(pytensor.config._config_var_dict)
    assert "<unreadable>" not in values.values()


def test_the_public_api_the_cache_relies_on():
    """FunctionMaker's arguments for linking a stored graph."""
    from pytensor.compile.maker import FunctionMaker
    from pytensor.compile.rebuild import construct_function_ins_and_outs

    assert {"fgraph", "no_fgraph_prep", "accept_inplace", "on_unused_input", "name"} <= set(
        _parameters(FunctionMaker.__init__))
    assert _parameters(construct_function_ins_and_outs)[:2] == ["params", "outputs"]

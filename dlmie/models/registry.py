"""Modules by name, for the model families that the commands and notebooks choose at run time."""

from __future__ import annotations

import importlib


def module_by_name(kind: str, name: str, table: dict):
    """The module that `table` names for `name`, imported only now: choosing one model does not
    import the others and their weight-file readers.

    Inputs:
    - kind: what the names are ("encoder", "captioner"), for the error message
    - name: the name asked for
    - table: name -> dotted module path
    Returns the module.
    Raises ValueError listing the known names when `name` is not one of them.
    """
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}: use one of {', '.join(table)}")
    return importlib.import_module(table[name])

"""Assignment mode on the student's side: the stub of an unfinished part, the handout's manifest,
and one-line errors in notebooks.

In the student handout (built by ``make student`` in the solution repository), the body of every
exercise function is replaced by one line

    raise NotImplementedError("<part>: implement this part (see the docstring of <module>.<function>)")

and ``assignment.json`` at the handout's root lists the parts (see ``read_manifest``).

A notebook cell that calls an unfinished part, directly or through a later part that needs it,
would end in a traceback through PyTensor and dlmie. Under IPython, ``import dlmie`` installs
``ipython_handler`` (see ``install``), which shows such an error as one line instead:

    lstm_step_forward is not implemented yet: write it in dlmie/kernels/lstm.py (notebook 05_lstm_and_scan)

The cell still fails (running all cells stops there); every other exception keeps its traceback.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository or handout holding this dlmie/
MANIFEST = "assignment.json"

_STUB = re.compile(r"(?P<part>\w+): implement this part \(see the docstring of (?P<where>[\w.]+)\)")


def stub_message(part: str, where: str) -> str:
    """The NotImplementedError message a stubbed part raises.

    Inputs:
    - part: the part's name (the name of the function holding the region)
    - where: the function's dotted path, e.g. "dlmie.kernels.lstm.lstm_step_forward"
    Returns:
    - the message; ``unfinished_part`` recognizes it
    """
    return f"{part}: implement this part (see the docstring of {where})"


def unfinished_part(message: str) -> str | None:
    """The part named by a stub's message (anywhere in `message`), or None.

    PyTensor adds its own lines to errors raised while a graph runs, and pytest puts the exception's
    type in front, so the stub's message is searched for rather than matched whole.
    """
    match = _STUB.search(message)
    return match["part"] if match else None


def read_manifest(root: Path = ROOT) -> dict:
    """The handout's manifest.

    Inputs:
    - root: the handout's folder
    Returns:
    - dict with "parts": a list (in notebook order) of dicts with "name" (the part), "file" (path of
      the module relative to root, e.g. "dlmie/kernels/lstm.py"), "function" (dotted path), "notebook" (the
      notebook's name without .ipynb, or "" when unknown) and "points"; "files": the sorted files
      holding parts; "total": the sum of the points; "questions": the inline questions (dlmie.questions),
      dicts with "id", "notebook" and "points", graded by hand; "manual_total": the sum of their points
    Raises:
    - FileNotFoundError (with what to do) when root has no manifest, e.g. in the solution repository
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: it is written into the student handout by `make student`; "
            "run this command inside the unzipped handout"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def unfinished_message(part: str, tb=None, root: Path = ROOT) -> str:
    """The one line shown for an unfinished part.

    Inputs:
    - part: the part's name
    - tb: the error's traceback (its innermost frame locates the file when root has no manifest)
    - root: the folder holding the manifest
    Returns:
    - e.g. "lstm_step_forward is not implemented yet: write it in dlmie/kernels/lstm.py (notebook 05_lstm_and_scan)"
    """
    try:
        entry = next((p for p in read_manifest(root)["parts"] if p["name"] == part), None)
    except (FileNotFoundError, ValueError, KeyError):
        entry = None
    if entry is not None:
        where = entry["file"] + (f" (notebook {entry['notebook']})" if entry.get("notebook") else "")
    elif tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        file = Path(tb.tb_frame.f_code.co_filename)
        where = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
    else:
        where = "dlmie/"
    return f"{part} is not implemented yet: write it in {where}"


def ipython_handler(shell, etype, value, tb, tb_offset=None):
    """IPython custom exception handler (see InteractiveShell.set_custom_exc) for NotImplementedError.

    Shows one line for a stub's error and the usual traceback for any other NotImplementedError.
    Returns the structured traceback it showed (a list of strings), as IPython expects.
    """
    part = unfinished_part(str(value)) if isinstance(value, NotImplementedError) else None
    if part is None:
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    else:
        stb = [unfinished_message(part, tb)]
    # _showtraceback is the display hook IPython kernels override: in a notebook it sends the cell's
    # error message, so the cell still counts as failed.
    shell._showtraceback(etype, value, stb)
    return stb


def install(shell=None) -> bool:
    """Show stub errors as one line in IPython (notebooks, the IPython console).

    Inputs:
    - shell: an IPython InteractiveShell; default: the running one, if IPython is running
    Returns:
    - whether the handler was installed (False outside IPython; IPython is never imported here)
    """
    if shell is None:
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    shell.set_custom_exc((NotImplementedError,), ipython_handler)
    return True

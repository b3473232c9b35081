"""dlmie.assignment: a stub's NotImplementedError is one line in IPython, other errors keep their traceback."""

import json
import subprocess
import sys

import pytest

from dlmie import assignment

STUB = assignment.stub_message("lstm_step_forward", "dlmie.kernels.lstm.lstm_step_forward")


@pytest.fixture
def shell(tmp_path, monkeypatch):
    interactiveshell = pytest.importorskip("IPython.core.interactiveshell")
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path))  # no profile or history in the home folder
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = interactiveshell.InteractiveShell.instance(config=config)
    assert assignment.install(shell)
    yield shell
    interactiveshell.InteractiveShell.clear_instance()


def test_stub_error_is_one_line(shell, capsys):
    result = shell.run_cell(f"def step():\n    raise NotImplementedError({STUB!r})\n\nstep()\n")
    assert isinstance(result.error_in_exec, NotImplementedError)  # the cell still fails
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm_step_forward is not implemented yet: write it in "), lines


def test_other_not_implemented_errors_keep_their_traceback(shell, capsys):
    result = shell.run_cell("def f():\n    raise NotImplementedError('abstract')\n\nf()\n")
    assert isinstance(result.error_in_exec, NotImplementedError)
    out = capsys.readouterr().out
    assert "NotImplementedError" in out and "abstract" in out and len(out.strip().splitlines()) > 1


def test_message_names_the_file_and_notebook_from_the_manifest(tmp_path):
    manifest = {"parts": [{"name": "lstm_step_forward", "file": "dlmie/kernels/lstm.py", "function": "dlmie.kernels.lstm.lstm_step_forward",
                           "notebook": "05_lstm_and_scan", "points": 4}], "files": ["dlmie/kernels/lstm.py"], "total": 4}
    (tmp_path / assignment.MANIFEST).write_text(json.dumps(manifest))
    assert assignment.unfinished_message("lstm_step_forward", root=tmp_path) == (
        "lstm_step_forward is not implemented yet: write it in dlmie/kernels/lstm.py (notebook 05_lstm_and_scan)"
    )


def test_without_a_manifest_the_traceback_names_the_file(tmp_path):
    try:
        raise NotImplementedError(STUB)
    except NotImplementedError as err:
        tb = err.__traceback__
    assert assignment.unfinished_message("lstm_step_forward", tb, root=tmp_path) == (
        "lstm_step_forward is not implemented yet: write it in test_unfinished_parts.py"
    )


def test_unfinished_part_is_found_in_longer_messages():
    assert assignment.unfinished_part(f"NotImplementedError: {STUB}\nApply node that caused the error: ...") == "lstm_step_forward"
    assert assignment.unfinished_part("NotImplementedError: abstract") is None


@pytest.mark.parametrize(
    "code, expected",
    [
        ("from IPython.core.interactiveshell import InteractiveShell\ns = InteractiveShell.instance()\n"
         "import dlmie\nprint(s.custom_exceptions)", "(<class 'NotImplementedError'>,)"),
        ("import sys\nimport dlmie\nprint('IPython' in sys.modules)", "False"),
    ],
    ids=["under-ipython", "plain-python"],
)
def test_import_dlmie_installs_the_handler_only_under_ipython(code, expected):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == expected, proc.stderr


def test_in_a_notebook_kernel_the_cell_fails_with_one_line():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import dlmie\n\ndef step():\n    raise NotImplementedError({STUB!r})"),
                nbformat.v4.new_code_cell("step()"),
                nbformat.v4.new_code_cell("print('not reached')")]
    with pytest.raises(nbclient.exceptions.CellExecutionError):
        nbclient.NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    [error] = nb.cells[1].outputs
    assert error.output_type == "error" and len(error.traceback) == 1
    assert error.traceback[0].startswith("lstm_step_forward is not implemented yet: write it in ")
    assert nb.cells[2].outputs == []

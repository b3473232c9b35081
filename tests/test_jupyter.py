"""Stepping through the notebooks as a person does: `make lab` serves notebooks/ in JupyterLab on this
environment's kernel, and notebook 08's slider is a live widget there."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# What `make lab` passes to `jupyter lab` (plus, here, a free port, a token and no browser).
LAB_ARGS = ["--ServerApp.root_dir=notebooks"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server started as `make lab` starts it, on 127.0.0.1, spoken to over its REST API."""

    def __init__(self, tmp_path: Path):
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / "lab.log", "w+")
        # Its own runtime, config and settings folders: nothing of the user's Jupyter set-up is read or written.
        env = {**os.environ, "DLMIE_QUICK": "1", **{name: str(tmp_path / name.lower()) for name in
               ("JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR")}}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", *LAB_ARGS, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI runs as root; Jupyter refuses root unless told
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def request(self, method: str, path: str, body=None, timeout: float = 30):
        request = urllib.request.Request(self.base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return response.status, (json.loads(text) if "json" in response.headers.get("Content-Type", "") else text)

    def wait_until_ready(self, timeout: float = 90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter lab exited with status {self.process.returncode}:\n{self.output()}")
            try:
                return self.request("GET", "/api/status", timeout=5)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise AssertionError(f"jupyter lab did not answer within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-4000:]

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def run_on_kernel(socket_, code: str, timeout: float = 300) -> tuple[str, str]:
    """Send code over a kernel's websocket as JupyterLab does; wait for the kernel to go idle.

    Returns (the execute_reply's status, everything the code printed or displayed as text)."""
    msg_id = uuid.uuid4().hex
    socket_.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test", "session": uuid.uuid4().hex,
                   "date": "", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    status, text, idle, deadline = None, [], False, time.monotonic() + timeout
    while status is None or not idle:
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel did not finish {code[:60]!r} within {timeout:.0f} s")
        message = json.loads(socket_.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "execute_reply":
            status = content["status"]
        elif kind == "status":
            idle = content["execution_state"] == "idle"
        elif kind == "stream":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            text.append("\n".join(content["traceback"]))
    return status, "".join(text)


def test_lab_runs_the_first_cells_of_a_notebook_on_the_project_kernel(tmp_path):
    import websocket

    lab = Lab(tmp_path)
    try:
        lab.wait_until_ready()
        status, page = lab.request("GET", "/lab")
        assert status == 200 and "JupyterLab" in page
        _, model = lab.request("GET", "/api/contents/00_engine_and_layers.ipynb?content=1")
        notebook = model["content"]
        code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
        # Opening a notebook starts a session: the notebook's kernel, as the notebook names it.
        status, session = lab.request("POST", "/api/sessions", {
            "path": "00_engine_and_layers.ipynb", "type": "notebook", "name": "",
            "kernel": {"name": notebook["metadata"]["kernelspec"]["name"]}})
        assert status == 201
        kernel = session["kernel"]["id"]
        channels = websocket.create_connection(
            f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel}/channels?session_id={uuid.uuid4().hex}",
            header=[f"Authorization: token {lab.token}"], timeout=300, suppress_origin=True)
        try:
            status, printed = run_on_kernel(channels, code[0])
            assert status == "ok" and "PyTensor" in printed, printed
            # The demonstration of a graph, its gradient and its compiled function (after the exercise's check).
            status, printed = run_on_kernel(channels, next(c for c in code if "pytensor.grad(" in c))
            assert status == "ok" and "gradient (1, 3, 16, 16) float32" in printed, printed
            status, printed = run_on_kernel(channels, "import sys; print(sys.executable); print(dlmie.__file__)")
            assert status == "ok", printed
            executable, package = printed.split()
            assert Path(executable).resolve() == Path(sys.executable).resolve()  # this environment's Python
            assert Path(package).is_relative_to(ROOT)  # and this repository's dlmie
        finally:
            channels.close()
        status, _ = lab.request("DELETE", f"/api/sessions/{session['id']}")
        assert status == 204
        assert lab.request("GET", "/api/kernels")[1] == []
        lab.request("POST", "/api/shutdown")
        assert lab.process.wait(timeout=30) == 0
    except BaseException:
        print(lab.output())
        raise
    finally:
        lab.stop()


def test_notebook_08_slider_is_a_widget_over_the_words():
    """The notebook up to its slider, run as Jupyter runs it: the cell's output is a widget view of an
    IntSlider over the caption's words, and the figure it draws is in the widget's output."""
    import nbclient
    import nbformat

    nb = nbformat.read(ROOT / "notebooks" / "08_attention_maps.ipynb", as_version=4)
    slider = next(i for i, cell in enumerate(nb.cells) if "IntSlider" in cell.source)
    nb.cells = nb.cells[:slider + 1]
    # nbclient's stand-in for the Output widget sends on the shell socket while the reply's poll waits
    # on that socket, and the wake-up can be lost; zmq's poll looks at the socket again when it times
    # out, so the slider cell (a second of plotting) gets a short timeout that bounds such a stall.
    client = nbclient.NotebookClient(nb, kernel_name="python3",
                                     timeout_func=lambda cell: 60 if "IntSlider" in cell.source else 600,
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute(env={**os.environ, "DLMIE_QUICK": "1"})
    views = [out["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for out in nb.cells[slider].outputs
             if "application/vnd.jupyter.widget-view+json" in out.get("data", {})]
    assert len(views) == 1
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    children = [state[ref.removeprefix("IPY_MODEL_")] for ref in state[views[0]]["state"]["children"]]
    sliders = [c["state"] for c in children if c["model_name"] == "IntSliderModel"]
    outputs = [c["state"] for c in children if c["model_name"] == "OutputModel"]
    # The caption the notebook printed for its first image: the slider has one stop per word and <END>.
    printed = "".join(out.get("text", "") for cell in nb.cells[:slider] for out in cell.get("outputs", []))
    caption = next(line for line in printed.splitlines() if line.strip().startswith("model:")).split(":", 1)[1]
    assert len(sliders) == 1 and sliders[0]["description"] == "word"
    assert (sliders[0]["min"], sliders[0]["max"], sliders[0]["value"]) == (0, len(caption.split()), 0)
    assert any("image/png" in out.get("data", {}) for out in outputs[0]["outputs"])

"""Running untrusted code: a Linux sandbox per run, with resource limits, and nothing left behind.

Three levels, the best this machine allows (`detect` finds it once per grading run):

- BWRAP_NOBODY: as root, bubblewrap (Debian's `bubblewrap`) builds a new mount, PID, network, IPC and
  UTS namespace, and the command runs as user nobody (setpriv) without capabilities or new
  privileges. It sees the system's programs and libraries, the Python environment and the paths
  it is given, read-only unless said otherwise, and a private /tmp; nothing else of the machine.
- BWRAP: the same as an ordinary user, through an unprivileged user namespace; the command keeps
  the user's identity, but sees only what it is given.
- LIMITS: no namespaces (no bubblewrap, macOS, a container that forbids them): only the resource
  limits. The command sees the whole machine with the user's permissions.

At every level: limits on address space (memory), CPU time, file size, core dumps and processes
(setrlimit); standard output and error go to a file, never a pipe, so no leftover process can hold
the run open; at the run's end or time limit the whole process tree is killed (with namespaces,
ending the sandbox's first process ends every process in it, daemons included).
"""

from __future__ import annotations

import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BWRAP_NOBODY, BWRAP, LIMITS = "bubblewrap, user nobody", "bubblewrap", "resource limits only"
NOBODY = 65534
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run.

    - memory: bytes of address space (RLIMIT_AS)
    - cpu_seconds: CPU time (RLIMIT_CPU; the kernel ends the run past it)
    - file_size: largest file the run may write, its output included (RLIMIT_FSIZE)
    - processes: processes and threads at once (RLIMIT_NPROC)
    """

    memory: int = 4 * GiB
    cpu_seconds: int = 600
    file_size: int = 64 << 20
    processes: int = 256


@dataclass(frozen=True)
class Isolation:
    """The level a machine gives (one of BWRAP_NOBODY, BWRAP, LIMITS) and why not better."""

    level: str
    why: str = ""

    @property
    def namespaces(self) -> bool:
        return self.level != LIMITS


@dataclass
class Mounts:
    """What a sandboxed command sees besides the system: (outside path, inside path) pairs."""

    read_only: list[tuple[Path, Path]] = field(default_factory=list)
    writable: list[tuple[Path, Path]] = field(default_factory=list)


def _system_paths() -> list[Path]:
    """What every Python run needs: programs and libraries, /etc, the interpreter and its environment."""
    paths = [Path(p) for p in ("/usr", "/etc", "/opt") if Path(p).exists()]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        if not any(Path(prefix).is_relative_to(p) for p in paths):
            paths.append(Path(prefix))
    # The interpreter a venv links to may live elsewhere (pyenv, a conda base, /usr/local).
    real = Path(os.path.realpath(sys.executable)).parent.parent
    if not any(real.is_relative_to(p) for p in paths):
        paths.append(real)
    return paths


def _bwrap_command(argv: list[str], mounts: Mounts, chdir: Path, level: str) -> list[str]:
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try"]
    if level == BWRAP:
        cmd += ["--unshare-user"]
    made = {Path("/")}

    def parents(target: Path):
        # Mount points are created on the sandbox's own root; as root bubblewrap makes them 0700,
        # which user nobody could not cross.
        for parent in reversed(target.parents):
            if parent not in made:
                made.add(parent)
                cmd.extend(["--perms", "0755", "--dir", str(parent)])

    for path in _system_paths():
        parents(path)
        cmd += ["--ro-bind", str(path), str(path)]
    for top in ("lib", "lib64", "bin", "sbin"):
        if Path(f"/{top}").is_symlink():
            cmd += ["--symlink", os.readlink(f"/{top}"), f"/{top}"]
        elif Path(f"/{top}").is_dir():
            cmd += ["--ro-bind", f"/{top}", f"/{top}"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    made.add(Path("/tmp"))
    for flag, pairs in (("--ro-bind", mounts.read_only), ("--bind", mounts.writable)):
        for outside, inside in pairs:
            parents(Path(inside))
            cmd += [flag, str(outside), str(inside)]
    cmd += ["--chdir", str(chdir), "--"]
    if level == BWRAP_NOBODY:
        cmd += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
                "--bounding-set=-all", "--no-new-privs"]
    return cmd + argv


def _own_processes() -> int:
    """How many processes this user runs now (RLIMIT_NPROC counts them all, not only the sandbox's)."""
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                count += entry.stat().st_uid == uid
            except OSError:
                pass
    return count


def _limiter(limits: Limits, level: str):
    # Under BWRAP_NOBODY the process limit counts user nobody's processes; otherwise this user's,
    # so the sandbox gets its allowance on top of what already runs.
    processes = limits.processes + (0 if level == BWRAP_NOBODY else _own_processes())

    # Runs in the child between fork and exec, also when the grader runs several workers from
    # threads: it only calls setrlimit, which takes no lock another thread could hold.
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory, limits.memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))

    return apply


class Run:
    """One sandboxed command, started at once; `wait`, `poll` and `kill` it.

    Inputs:
    - argv: the command (inside the sandbox)
    - mounts: what it sees besides the system (ignored under LIMITS, where it sees everything)
    - chdir: its working folder
    - env: its whole environment
    - output: the file its standard output and error go to
    - limits, isolation: see Limits, detect
    """

    def __init__(self, argv, mounts: Mounts, chdir: Path, env: dict, output: Path, limits: Limits, isolation: Isolation):
        cmd = _bwrap_command(argv, mounts, chdir, isolation.level) if isolation.namespaces else argv
        self.isolation = isolation
        # Without a PID namespace, a process that left the process group (a daemon) is still
        # found by this mark in its environment, which its children inherit.
        self.mark = f"DLMIE_SANDBOX_RUN={secrets.token_hex(8)}".encode()
        env = {**env, "DLMIE_SANDBOX_RUN": self.mark.split(b"=")[1].decode()}
        self.started = time.monotonic()
        with open(output, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=chdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_limiter(limits, isolation.level))

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        """End the run and everything it started: with namespaces, its PID namespace ends with it;
        without, its process group and every process that carries its mark."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        if not self.isolation.namespaces:
            for pid in self._marked():
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass

    def _marked(self) -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.mark in (entry / "environ").read_bytes().split(b"\0"):
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids


def describe_exit(status: int | None, limits: Limits) -> str:
    """A teacher's words for how a sandboxed run ended (status as Popen.returncode)."""
    if status is None:
        return "was stopped"
    if 0 <= status <= 128:
        return f"ended the grading process (exit status {status})"
    # bubblewrap reports a command ended by signal N as exit status 128 + N
    sig = status - 128 if status > 128 else -status
    reasons = {
        signal.SIGXCPU: f"used more than {limits.cpu_seconds} s of CPU time",
        signal.SIGXFSZ: f"wrote a file or output over {limits.file_size >> 20} MB",
        signal.SIGKILL: "was killed (SIGKILL)",
        signal.SIGSEGV: "crashed (segmentation fault)",
    }
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    return reasons.get(sig, f"was ended by signal {name}")


def detect(probe_env: dict | None = None) -> Isolation:
    """The best isolation this machine gives, tried with a real sandboxed Python that imports NumPy.

    Inputs:
    - probe_env: the environment of the trial run (default: PATH only)
    Returns:
    - Isolation
    """
    if not sys.platform.startswith("linux"):
        return Isolation(LIMITS, f"namespaces need Linux (this is {sys.platform})")
    if shutil.which("bwrap") is None:
        return Isolation(LIMITS, "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    level = BWRAP_NOBODY if os.geteuid() == 0 else BWRAP
    if level == BWRAP_NOBODY and shutil.which("setpriv") is None:
        return Isolation(LIMITS, "setpriv (util-linux) is missing, so the sandbox cannot drop to user nobody")
    env = probe_env or {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    cmd = _bwrap_command([sys.executable, "-c", "import numpy"], Mounts(), Path("/tmp"), level)
    try:
        proc = subprocess.run(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Isolation(LIMITS, f"bubblewrap did not start: {err}")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        return Isolation(LIMITS, f"bubblewrap cannot run Python here: {lines[-1] if lines else proc.returncode}"
                                 + (" (is the environment readable by user nobody?)" if level == BWRAP_NOBODY else ""))
    return Isolation(level)

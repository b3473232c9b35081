"""What every command shares: errors a user can fix are printed as one line, with exit status 2;
a command that answers in seconds exits without a garbage-collector pass over PyTensor's caches."""

from __future__ import annotations

import gc
import sys

# A missing file, a run that exists already, a bad value or a file of the wrong kind: the message
# says what to do, so a traceback would only hide it.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError)


def report(err: BaseException) -> int:
    """Print `error: <message>` to stderr; returns the exit status of a user error, 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2


def finish(status: int):
    """sys.exit(status), skipping the garbage collector's passes at interpreter shutdown.

    A process that linked a compiled function holds PyTensor's C-module cache index (thousands of
    unpickled keys) and the graphs: the full collections Python runs while it shuts down cost about
    a second, as long as a one-image command's work. Frozen objects are still freed when their
    modules are torn down; only cycles among them are left to the operating system.
    """
    gc.freeze()
    sys.exit(status)

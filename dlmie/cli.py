"""What every command shares: errors a user can fix are printed as one line, with exit status 2."""

from __future__ import annotations

import sys

# A missing file, a run that exists already, a bad value or a file of the wrong kind: the message
# says what to do, so a traceback would only hide it.
USER_ERRORS = (FileNotFoundError, FileExistsError, ValueError)


def report(err: BaseException) -> int:
    """Print `error: <message>` to stderr; returns the exit status of a user error, 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2

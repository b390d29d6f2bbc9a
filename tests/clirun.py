"""Drive hierfl's console entry point in this process (no interpreter start per call)."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from hierfl.cli import main


@dataclass(frozen=True)
class Done:
    """What a command left: exit status, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def one_error_line(self) -> bool:
        """Exit 2 with exactly one line on stderr, an ``error:`` line, and no traceback."""
        lines = self.err.strip().splitlines()
        return (
            self.code == 2
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "Traceback" not in self.err
        )


def invoke(*args: str) -> Done:
    """``hierfl ARGS...`` as the console script runs it: its exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["hierfl", *args]
    code: object = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as done:
        code = done.code
    finally:
        sys.argv = argv
    return Done(code if isinstance(code, int) else 0 if code is None else 1, out.getvalue(),
                err.getvalue())

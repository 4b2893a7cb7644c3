"""A worker started by `yarigai serve` never outlives it. Imports nothing heavy: it runs first,
before the command line loads the app (seconds of imports a killed server's worker must not
spend starting up beside the next server's workers)."""

from __future__ import annotations

import os
import signal
import sys


def die_with_parent(parent: int) -> None:
    """Make the kernel stop this process when its parent dies, and stop now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    # Checked after the request: a parent gone before it was made leaves us with another one.
    if os.getppid() != parent:
        sys.stderr.write(f"`yarigai serve` (pid {parent}) is gone; the worker does not start\n")
        sys.exit(0)


def parent_in(argv: list[str]) -> int | None:
    """The `--parent-pid N` (or `--parent-pid=N`) of a `worker` command line, if any."""
    if "worker" not in argv:
        return None
    for index, arg in enumerate(argv):
        if arg == "--parent-pid" and index + 1 < len(argv) and argv[index + 1].isdigit():
            return int(argv[index + 1])
        if arg.startswith("--parent-pid=") and arg.split("=", 1)[1].isdigit():
            return int(arg.split("=", 1)[1])
    return None

"""Where this code is running: the facts about the current process that routing needs.

A process worker marks itself at start-up, so laneway calls made *inside* a task that
runs in a worker never start another process pool (they run on threads or serially),
which keeps nested parallelism from multiplying processes.
"""

from __future__ import annotations

import sys

_in_process_worker = False
_in_fork_server_preload = False


def mark_process_worker() -> None:
    """Record that this process is a laneway process worker."""
    global _in_process_worker
    _in_process_worker = True


def in_process_worker() -> bool:
    """True inside a laneway process worker."""
    return _in_process_worker


def mark_fork_server_preload(running: bool) -> None:
    """Record that the fork server is running the main module (``preload_main``)."""
    global _in_fork_server_preload
    _in_fork_server_preload = running


def refuse_in_fork_server(entry: str) -> None:
    """Refuse laneway work started while the fork server runs the main module: that is
    a script's top level outside its ``if __name__ == "__main__":`` guard, and the
    server must neither run the work nor start threads or processes."""
    if _in_fork_server_preload:
        raise RuntimeError(
            f"{entry}() was called while laneway's fork server imported the main module: "
            f"start laneway work under `if __name__ == \"__main__\":`")


def gil_enabled() -> bool:
    """Whether the GIL is on right now (an import can turn it back on: ask every time)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())

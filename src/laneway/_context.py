"""Where this code is running: the facts about the current process that routing needs.

A process worker marks itself at start-up, so laneway calls made *inside* a task that
runs in a worker never start another process pool (they run on threads or serially),
which keeps nested parallelism from multiplying processes.
"""

from __future__ import annotations

import sys

_in_process_worker = False


def mark_process_worker() -> None:
    """Record that this process is a laneway process worker."""
    global _in_process_worker
    _in_process_worker = True


def in_process_worker() -> bool:
    """True inside a laneway process worker."""
    return _in_process_worker


def gil_enabled() -> bool:
    """Whether the GIL is on right now (an import can turn it back on: ask every time)."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())

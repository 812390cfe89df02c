"""How worker processes are started: the start method, and an early start of the fork
server.

This module is light (only ``multiprocessing``) so a run can start the fork server
*before* importing the rest of the pool: the server boots (a new interpreter, plus the
preloaded worker module) while the caller imports cloudpickle and pickles the function,
instead of after.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading

__all__ = ["WORKER_MODULE", "start_early", "start_method"]

WORKER_MODULE = "laneway._backends.process.worker"

_started = False


def start_method() -> str:
    """The start method laneway uses: forkserver on Linux, spawn elsewhere (never plain
    fork of a threaded parent)."""
    if sys.platform.startswith("linux") and "forkserver" in multiprocessing.get_all_start_methods():
        return "forkserver"
    return "spawn"


def start_early() -> None:
    """Start the fork server now (if it is the start method), preloading the worker.

    The worker module is added to whatever the program already asked the fork server to
    preload, so every worker forked from it starts in a few milliseconds.  Returns at
    once; the server finishes booting in the background.
    """
    global _started
    if _started or start_method() != "forkserver":
        return
    _started = True  # ensure_running() probes two processes: once per process is enough
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    current = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if WORKER_MODULE not in current:
        forkserver.set_forkserver_preload([*current, WORKER_MODULE])
    forkserver.ensure_running()
    # (if the fork server dies later, multiprocessing restarts it at the next start)


def _forget_after_fork() -> None:
    """A child forked from this process (``os.fork``) cannot use the parent's fork
    server: multiprocessing would wait for a process that is not its child
    (``ChildProcessError``).  It forgets it, and starts its own when it needs one; the
    parent's server lives on (only the child's copy of its "alive" pipe is closed)."""
    global _started
    _started = False
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return  # (no fork server here: this may be one of its own workers)
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)
    server._forkserver_pid = server._forkserver_address = None
    server._forkserver_alive_fd = server._inherited_fds = None
    server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

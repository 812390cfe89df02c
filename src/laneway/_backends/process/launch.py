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
import select
import sys
import threading

__all__ = ["WORKER_MODULE", "await_server_exit", "start_early", "start_method"]

WORKER_MODULE = "laneway._backends.process.worker"
PRELOAD_MAIN_MODULE = "laneway._backends.process.preload_main"
MAIN_ENV = "LANEWAY_FORK_SERVER_MAIN"  # (what preload_main reads in the fork server)
MAIN_KEYS = ("sys_argv", "sys_path", "start_method", "init_main_from_path",
             "init_main_from_name")
"""What of ``spawn.get_preparation_data()`` the fork server needs to run the main module."""
MAX_MAIN_NOTE = 32 * 1024
"""Larger main-module details (a huge ``sys.argv``) are not passed to the fork server,
which then leaves each worker to run the main module itself."""

_started = False
_start_lock = threading.Lock()  # (two threads' first process runs: one starts the server)


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
    with _start_lock:
        if _started:
            return
        _started = True  # ensure_running() probes two processes: once per process is enough
        from multiprocessing import forkserver, resource_tracker

        server = getattr(forkserver, "_forkserver", None)
        current = list(getattr(server, "_preload_modules", None) or ["__main__"])
        wanted = [PRELOAD_MAIN_MODULE, WORKER_MODULE] if "__main__" in current \
            else [WORKER_MODULE]
        if any(name not in current for name in wanted):
            forkserver.set_forkserver_preload(
                [*current, *(name for name in wanted if name not in current)])
        note = _main_note() if "__main__" in current else None
        resource_tracker.ensure_running()  # (before the note is set: not its business)
        if note is not None:
            os.putenv(MAIN_ENV, note)  # (C environment only: the server inherits it)
        try:
            forkserver.ensure_running()
        finally:
            if note is not None:
                os.unsetenv(MAIN_ENV)
    # (if the fork server dies later, multiprocessing restarts it at the next start, and
    # its workers run the main module themselves)


def await_server_exit(timeout: float) -> None:
    """After the fork server failed a request: wait, at most ``timeout`` seconds, until
    its process has ended (without reaping it), so that multiprocessing's next start
    sees it dead and starts a new one.  (Its pipes close a moment before the kernel
    reports it ended; a start in that moment would still take it for alive.)"""
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    pidfd_open = getattr(os, "pidfd_open", None)
    if pid is None or pidfd_open is None:
        return
    try:
        fd = pidfd_open(pid)
    except OSError:
        return  # (already reaped, or no pidfd here)
    try:
        select.select([fd], [], [], timeout)  # (readable once the process has ended)
    finally:
        os.close(fd)


def _main_note() -> str | None:
    """What the fork server needs to run the main module as a worker would (its path or
    name, ``sys.argv``, ``sys.path``, the start method), and this process's pid (the
    server's parent: any other process that inherited the note ignores it), for
    ``preload_main``; None if there is nothing to run or it is too large for the
    environment."""
    import marshal
    from multiprocessing import spawn

    data = spawn.get_preparation_data("ignore")
    note: dict[str, object] = {key: data[key] for key in MAIN_KEYS if key in data}
    note["parent_pid"] = os.getpid()
    if "init_main_from_path" not in note and "init_main_from_name" not in note:
        return None
    try:
        text = marshal.dumps(note).hex()
    except ValueError:  # (an unmarshallable object someone put in sys.argv or sys.path)
        return None
    return text if len(text) <= MAX_MAIN_NOTE else None


def _forget_after_fork() -> None:
    """A child forked from this process (``os.fork``) cannot use the parent's fork
    server: multiprocessing would wait for a process that is not its child
    (``ChildProcessError``).  It forgets it, and starts its own when it needs one; the
    parent's server lives on (only the child's copy of its "alive" pipe is closed)."""
    global _started, _start_lock
    _started = False
    _start_lock = threading.Lock()
    server = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    if server is None or getattr(server, "_forkserver_pid", None) is None:
        return  # (no fork server here: this may be one of its own workers)
    with contextlib.suppress(OSError, TypeError):
        os.close(server._forkserver_alive_fd)
    server._forkserver_pid = server._forkserver_address = None
    server._forkserver_alive_fd = server._inherited_fds = None
    server._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

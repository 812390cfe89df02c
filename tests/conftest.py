"""Shared fixtures: every test must leave no stray thread or process behind.

laneway's own warm pools (threads named ``laneway-*``, the process pool's workers, the
multiprocessing fork server and resource tracker) are expected to outlive a test;
anything else that a test started and did not stop fails it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest

from _support import DEADLOCK_TIMEOUT


def _descendants() -> dict[int, str]:
    """pid -> command line of every live descendant of this process (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z":  # a zombie is reaped by its parent soon; count live ones only
            continue
        parents[int(entry)] = int(fields[1])
    found: dict[int, str] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        found[pid] = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    found[pid] = "?"
                frontier.append(pid)
    return found


def _laneway_processes() -> set[int]:
    from laneway._backends.process import pool

    current = pool._default.current()
    return set(current.worker_pids()) if current is not None else set()


def _is_dask_infrastructure(thread: threading.Thread) -> bool:
    """Threads the distributed package keeps for the whole process once used (its
    offload and callback executors, a worker's task threads, the IO loop of a client,
    which it leaves running even when the client failed to connect)."""
    name = thread.name
    return name.startswith("Dask-") or name == "IO loop" or "-Dask-Default-Threads-" in name


def _is_infrastructure(cmdline: str) -> bool:
    return "multiprocessing.forkserver" in cmdline or "multiprocessing.resource_tracker" in cmdline


@pytest.fixture(autouse=True)
def fresh_cpu_reading() -> Iterator[None]:
    """The router reuses its reading of available_cpus() for 2 s: a test that changed
    what it reads (LANEWAY_MAX_WORKERS=1, say) must not leave the next tests 1 CPU."""
    yield
    from laneway import _router

    _router._cpus_reading = (-_router.CPUS_TTL_S, 1)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread or a child process running."""
    threads_before = set(threading.enumerate())
    processes_before = set(_descendants())
    yield
    stray_threads = [t for t in threading.enumerate()
                     if t not in threads_before and t.is_alive()
                     and not t.name.startswith("laneway-")
                     and not _is_dask_infrastructure(t)]
    for thread in stray_threads:
        thread.join(DEADLOCK_TIMEOUT / 10)
    stray_threads = [t for t in stray_threads if t.is_alive()]
    allowed = _laneway_processes() | processes_before
    stray = {pid: cmd for pid, cmd in _descendants().items()
             if pid not in allowed and not _is_infrastructure(cmd)}
    assert not stray_threads, f"test leaked threads: {stray_threads}"
    assert not stray, f"test leaked processes: {stray}"

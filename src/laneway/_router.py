"""The router: from what is known about a task to a Plan (backend, workers, chunk size, why).

What is known, in order of authority: a forced ``backend`` (argument, then the
``LANEWAY_BACKEND`` environment variable), a ``kind`` argument, a hint decorator, and
whether the function is a coroutine function.  Rules:

* ``cpu`` -> processes while the GIL is on (checked at every plan: an import can turn it
  back on), threads on a free-threaded build with the GIL off;
* ``native`` (releases the GIL) and ``io`` -> threads;
* unhinted work -> threads for now (profiling will decide once it lands), and the
  reason says so;
* inside a laneway process worker, never another process pool: threads instead.

Worker counts: process pools and CPU-bound thread pools get ``available_cpus()``;
I/O and unknown work get ``min(32, available_cpus() + 4)`` threads (the standard
library's default); never more workers than items when the count is known.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _context
from ._cpus import available_cpus
from ._hints import Kind, hinted_kind, is_coroutine_function
from ._options import BackendName, RunOptions, env_backend

__all__ = ["Plan", "plan_run"]

IO_THREADS_CAP = 32
"""Most threads an unknown or I/O-bound run gets without ``workers=``."""

CPUS_TTL_S = 2.0
"""How long a reading of :func:`available_cpus` is reused by the router.  Reading the
cgroup files costs ~0.2 ms, too much to pay on every small call; a changed quota is
seen within this long."""

_cpus_reading: tuple[float, int] = (-CPUS_TTL_S, 1)


def _cpus() -> int:
    global _cpus_reading
    now = time.monotonic()
    if now - _cpus_reading[0] >= CPUS_TTL_S:
        _cpus_reading = (now, available_cpus())
    return _cpus_reading[1]


@dataclass(frozen=True, slots=True)
class Plan:
    """Where and how one run executes, and why.

    ``backend`` is one of ``"serial"``, ``"thread"``, ``"process"``; ``workers`` the
    most items that run at once; ``chunksize`` the fixed chunk size, or None for
    automatic batching; ``kind`` what the task is taken to be (None: unknown);
    ``reason`` one sentence a person can read.
    """

    backend: BackendName
    workers: int
    chunksize: int | None
    kind: Kind | None
    reason: str


def task_kind(fn: Callable[..., Any], options: RunOptions) -> tuple[Kind | None, str]:
    """The kind of ``fn`` and where that knowledge came from."""
    if options.kind is not None:
        return options.kind, f"kind={options.kind!r} was given"
    hinted = hinted_kind(fn)
    if hinted is not None:
        return hinted, f"it is hinted {hinted!r}"
    if is_coroutine_function(fn):
        return "async", "it is a coroutine function"
    return None, "it has no hint"


def plan_run(fn: Callable[..., Any], options: RunOptions, total: int | None) -> Plan:
    """Choose the backend and pool size for one run of ``fn`` over ``total`` items."""
    kind, known = task_kind(fn, options)
    forced = options.backend or env_backend()
    cpus = _cpus()
    if forced is not None:
        source = "backend=" if options.backend else "LANEWAY_BACKEND="
        backend, reason = forced, f"{source}{forced!r} was asked for"
    elif kind == "cpu" and _context.gil_enabled():
        backend, reason = "process", f"{known}: CPU-bound work holds the GIL, so processes"
    elif kind == "cpu":
        backend, reason = "thread", f"{known}: the GIL is off, so CPU-bound work uses threads"
    elif kind == "native":
        backend, reason = "thread", f"{known}: native code releases the GIL, so threads"
    elif kind in ("io", "async"):
        backend, reason = "thread", f"{known}: waiting work overlaps best on threads"
    else:
        backend, reason = "thread", (f"{known} and profiling is not available yet, so "
                                     f"unhinted work runs on threads")
    if backend == "process" and _context.in_process_worker():
        backend, reason = "thread", (f"{reason}; but this is already a laneway process "
                                     f"worker, so threads (no nested process pools)")
    if backend in ("async", "dask"):
        from ._errors import LanewayError

        msg = f"backend {backend!r} is not available in this version of laneway yet"
        raise LanewayError(msg)
    if backend == "serial" and options.task_timeout is not None:
        msg = (f"task_timeout needs the 'thread' or 'process' backend (a serial item runs "
               f"in the caller and cannot be interrupted), but {reason[0].lower()}"
               f"{reason[1:]}")
        raise ValueError(msg)
    workers = _workers(backend, kind, options.workers, cpus, total)
    return Plan(backend, workers, options.chunksize, kind, reason + ".")


def _workers(backend: str, kind: Kind | None, asked: int | None, cpus: int,
             total: int | None) -> int:
    if backend == "serial":
        return 1
    if asked is not None:
        workers = asked
    elif backend == "process" or kind in ("cpu", "native"):
        workers = cpus
    else:
        workers = min(IO_THREADS_CAP, cpus + 4)
    if total is not None:
        workers = min(workers, max(1, total))
    return workers

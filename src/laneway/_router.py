"""The router: from what is known about a task to a Plan (backend, workers, chunk size, why).

What is known, in order of authority: a forced ``backend`` (argument, then the
``LANEWAY_BACKEND`` environment variable), a ``kind`` argument, a hint decorator, and
whether the function is a coroutine function.  Rules:

* ``cpu`` -> processes while the GIL is on (checked at every plan: an import can turn it
  back on), threads on a free-threaded build with the GIL off;
* ``native`` (releases the GIL) and ``io`` -> threads;
* unhinted work is *measured* (see ``_profile``: its first item runs on a pool thread,
  the next few in the caller, their results kept) and a small cost model picks the
  fastest of serial, threads and processes from the seconds per item, the CPU/wall
  ratio, the GIL probe, the pickled sizes, the number of items and whether the process
  pool is warm (:func:`estimate`);
* inside a laneway process worker, never another process pool: threads instead.

Worker counts: process pools and CPU-bound thread pools get ``available_cpus()``;
I/O gets ``cpus x (1 + wait/compute)`` threads from a measurement, capped at
``IO_THREADS_MAX`` (hinted I/O is measured too, for its size: the hint fixes the backend,
not the wait ratio); I/O with nothing measured (``task_timeout=``) gets
``IO_THREADS_HINTED``; never more workers than items when the count is known.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _context
from ._cpus import available_cpus
from ._hints import Kind, coroutine_of, hinted_kind
from ._options import BackendName, RunOptions, env_backend
from ._profile import Measurement

__all__ = ["Estimate", "Plan", "estimate", "io_threads", "measured_kind", "plan_run"]

ASYNC_CONCURRENCY = 1024
"""Calls of a coroutine function in flight at once on the async backend (and in
``amap``), without ``workers=``: they are cheap, and waiting is what they do."""

IO_THREADS_HINTED = 64
"""Threads for work hinted I/O-bound when nothing was measured (without ``workers=``)."""

UNKNOWN_THREADS_CAP = 32
"""Threads for forced-thread work of unknown kind: ``min(32, cpus + 4)``, as the
standard library's ThreadPoolExecutor."""

IO_THREADS_MAX = 512
"""Most threads measured I/O-bound work gets without ``workers=``."""

UNKNOWN_ITEMS = 1000
"""How many items the cost model assumes are left when the input has no length."""

THREAD_ITEM_S = 4e-6
"""Cost of one item on the thread backend (queueing, batching), measured on 2 cores."""

THREAD_START_S = 6e-5
"""Cost of starting one more pool thread."""

PROCESS_ITEM_S = 2e-6
"""Cost of one small item's round trip on a warm process pool, with automatic chunks."""

PROCESS_RUN_S = 1e-3
"""Fixed cost of one run on a warm process pool (the function sent, the first chunks'
round trips, the collector's wake-ups): 0.2-1 ms here, whatever the items."""

PICKLED_BYTE_S = 1.5e-9
"""Cost per pickled byte of an item or result on its way to or from a process (pickle,
pipe, unpickle; ~10 ms for 16 MB round trip here)."""

PROCESS_COLD_START_S = 0.15
"""Starting the process pool: fork server plus the first workers (measured 0.1-0.2 s)."""

CHILD_CPU_SHARE = 0.5
"""Work that spends at least this share of its CPU in child processes (it runs programs
and waits for them: ``subprocess.run``)..."""

CHILD_EXTRA_THREADS = 4
"""...gets this many threads more than CPUs (the standard library's default pool size,
``cpus + 4``): its threads only wait, while the programs compute on the cores, and the
extra ones cover the gaps of starting and reaping them.  600 ``subprocess.run(["true"])``
on 2 cores: 2 threads 0.325 s, 3 0.30, 4 0.30, 6 0.29 (2 processes 0.30).  Kept small:
each extra thread is one more program at once, and heavy programs only share the cores."""

WORTHWHILE = 0.9
"""A pool is used only if its estimate beats serial by 10% or more."""

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

    ``backend`` is one of ``"serial"``, ``"thread"``, ``"process"``, ``"async"``,
    ``"dask"``; ``workers`` the most items that run at once (for Dask: the cluster's
    threads); ``chunksize`` the fixed chunk size, or None for
    automatic batching; ``kind`` what the task is taken to be (None: unknown);
    ``reason`` one sentence a person can read.
    """

    backend: BackendName
    workers: int
    chunksize: int | None
    kind: Kind | None
    reason: str


def forced_backend(fn: Callable[..., Any], options: RunOptions) -> BackendName | None:
    """The backend ``backend=`` or ``LANEWAY_BACKEND`` forces for ``fn``, if any.

    ``LANEWAY_BACKEND=async`` forces coroutine functions only: a plain function cannot
    run on an event loop, and a program-wide switch must not break every other call."""
    if options.backend is not None:
        return options.backend
    env = env_backend()
    if env == "async" and coroutine_of(fn) is None:
        return None
    return env


def task_kind(fn: Callable[..., Any], options: RunOptions) -> tuple[Kind | None, str]:
    """The kind of ``fn`` and where that knowledge came from."""
    if options.kind is not None:
        return options.kind, f"kind={options.kind!r} was given"
    hinted = hinted_kind(fn)
    if hinted is not None:
        return hinted, f"it is hinted {hinted!r}"
    if coroutine_of(fn) is not None:
        return "async", "it is a coroutine function"
    return None, "it has no hint"


def plan_run(fn: Callable[..., Any], options: RunOptions, total: int | None,
             measurement: Measurement | None = None, *, earlier: bool = False) -> Plan:
    """Choose the backend and pool size for one run of ``fn`` over ``total`` items.

    ``measurement`` (of the run's first items) is used only when neither a backend nor a
    kind is given or hinted; ``total`` then counts the items still to run.
    """
    kind, known = task_kind(fn, options)
    given_kind = kind  # (a measurement may set ``kind`` below)
    forced = forced_backend(fn, options)
    is_coroutine = coroutine_of(fn) is not None
    cpus = _cpus()
    workers: int | None = None
    if forced is not None:
        source = "backend=" if options.backend else "LANEWAY_BACKEND="
        backend, reason = forced, f"{source}{forced!r} was asked for"
    elif kind == "cpu" and _context.gil_enabled():
        backend, reason = "process", f"{known}: CPU-bound work holds the GIL, so processes"
    elif kind == "cpu":
        backend, reason = "thread", f"{known}: the GIL is off, so CPU-bound work uses threads"
    elif kind == "native":
        backend, reason = "thread", f"{known}: native code releases the GIL, so threads"
    elif kind in ("io", "async") and is_coroutine:
        backend, reason = "async", (f"{known}: coroutines overlap on one event loop, so "
                                    f"the async backend")
    elif kind in ("io", "async"):
        backend, reason = "thread", f"{known}: waiting work overlaps best on threads"
    elif measurement is not None:
        estimate_ = estimate(measurement, total, cpus, earlier=earlier)
        backend, workers, kind, reason = (estimate_.backend, estimate_.workers,
                                          estimate_.kind, estimate_.reason)
    elif options.task_timeout is not None:
        backend, reason = "thread", (f"{known}, and with task_timeout its items are not "
                                     f"measured in the caller (they could not be "
                                     f"interrupted there), so threads")
    else:
        backend, reason = "thread", f"{known} and nothing was measured, so threads"
    if backend == "thread" and given_kind == "io" and measurement is not None \
            and options.workers is None:
        # known I/O on threads, forced there or not: the measurement sizes the pool
        workers = io_threads(measurement, UNKNOWN_ITEMS if total is None else total, cpus)
        reason += (f"; {'an earlier run ' if earlier else ''}{_measured_words(measurement)}, "
                   f"so {workers} thread{'s' if workers != 1 else ''}")
    if backend == "process" and _context.in_process_worker():
        backend, reason = "thread", (f"{reason}; but this is already a laneway process "
                                     f"worker, so threads (no nested process pools)")
    if backend == "async" and not is_coroutine:
        name = getattr(fn, "__qualname__", None) or repr(fn)
        msg = (f"the async backend runs coroutine functions, but {name} is not one "
               f"({reason}); use backend='thread' for blocking I/O")
        raise ValueError(msg)
    if backend == "dask" and options.task_timeout is not None:
        msg = (f"task_timeout is not supported on the dask backend (Dask cannot stop a "
               f"task that is running), but {reason}; use the 'process' backend for "
               f"per-item timeouts")
        raise ValueError(msg)
    if backend == "serial" and options.task_timeout is not None:
        if forced is not None:
            msg = (f"task_timeout needs the 'thread' or 'process' backend (a serial item "
                   f"runs in the caller and cannot be interrupted), but {reason}")
            raise ValueError(msg)
        backend, reason = "thread", f"{reason}; but task_timeout needs a pool, so threads"
    if backend == "dask":  # the cluster's size, not this machine's
        from ._backends.dask_run import cluster_threads, current_client

        workers = options.workers or cluster_threads(current_client())
    elif options.workers is not None or workers is None or backend != "thread":
        workers = _workers(backend, kind, options.workers, cpus, total)
    if options.workers is None and backend not in ("async", "dask"):  # (not our pools)
        workers = min(workers, _env_max_workers() or workers)
    return Plan(backend, workers, options.chunksize, kind, reason + ".")


def _env_max_workers() -> int | None:
    """``LANEWAY_MAX_WORKERS`` also caps every default pool size (threads included)."""
    from ._cpus import _env_limit

    return _env_limit(os.environ)


def _workers(backend: str, kind: Kind | None, asked: int | None, cpus: int,
             total: int | None) -> int:
    if backend == "serial":
        return 1
    if asked is not None:
        workers = asked
    elif backend == "async":
        workers = ASYNC_CONCURRENCY
    elif backend == "process" or kind in ("cpu", "native"):
        workers = cpus
    elif kind in ("io", "async"):
        workers = IO_THREADS_HINTED
    else:
        workers = min(UNKNOWN_THREADS_CAP, cpus + 4)  # the standard library's default
    if total is not None:
        workers = min(workers, max(1, total))
    return workers


@dataclass(frozen=True, slots=True)
class Estimate:
    """The cost model's verdict: the fastest backend, its workers, and why."""

    backend: BackendName
    workers: int
    kind: Kind
    reason: str
    seconds: dict[str, float]


def measured_kind(m: Measurement) -> Kind:
    """The kind a measurement shows: waiting, GIL-free computing, or GIL-bound computing."""
    if m.cpu_ratio < 0.5:
        return "io"
    return "native" if m.releases_gil else "cpu"


def estimate(m: Measurement, total: int | None, cpus: int, *,
             pool_warm: bool | None = None, earlier: bool = False) -> Estimate:
    """Estimate each backend's time for ``total`` more items like the measured ones."""
    n = UNKNOWN_ITEMS if total is None else total
    kind = measured_kind(m)
    w = m.wall_s
    gil = _context.gil_enabled()
    seconds: dict[str, float] = {"serial": n * w}
    # threads: waiting overlaps freely; computing overlaps only without the GIL
    if kind == "io":
        threads = io_threads(m, n, cpus)
        waves = -(-n // threads)
        seconds["thread"] = waves * w + n * THREAD_ITEM_S + threads * THREAD_START_S
    else:
        threads = max(1, min(cpus, max(n, 1)))
        parallel = threads if (kind == "native" or not gil) else 1
        seconds["thread"] = n * w / parallel + n * THREAD_ITEM_S
    runs_programs = kind == "native" and _in_children(m)
    if runs_programs:  # (more threads than CPUs: the programs share the cores)
        threads = max(1, min(UNKNOWN_THREADS_CAP, cpus + CHILD_EXTRA_THREADS, max(n, 1)))
    # processes: computing overlaps; every item and result crosses a pipe
    if m.arg_bytes is not None and m.result_bytes is not None and gil \
            and not _context.in_process_worker():
        if pool_warm is None:
            pool_warm = _process_pool_warm()
        transfer = PROCESS_ITEM_S + (m.arg_bytes + m.result_bytes) * PICKLED_BYTE_S
        procs = max(1, min(cpus, max(n, 1)))
        start = PROCESS_RUN_S if pool_warm else PROCESS_COLD_START_S
        seconds["process"] = n * (w + transfer) / procs + n * transfer / 2 + start
    best = min(seconds, key=seconds.__getitem__)
    if best == "process" and seconds["thread"] * WORTHWHILE <= seconds["process"]:
        best = "thread"  # a near tie goes to threads: no pickling, no extra processes
    if best != "serial" and seconds[best] > WORTHWHILE * seconds["serial"]:
        best = "serial"
    backend: BackendName = "serial" if best == "serial" else (
        "thread" if best == "thread" else "process")
    workers = 1 if backend == "serial" else (threads if backend == "thread"
                                             else max(1, min(cpus, max(n, 1))))
    reason = (f"{'an earlier run ' if earlier else ''}{_measured_words(m)}, {_gil_words(m)}"
              f"{_bytes_words(m)}; {_kind_words(kind)}, so {_backend_words(backend)}"
              f"{_children_words(m) if backend == 'thread' and runs_programs else ''} "
              f"(estimated {_duration(seconds[best])} vs {_duration(seconds['serial'])} "
              f"serial for {'~' if total is None else ''}{n} items)")
    return Estimate(backend, workers, kind, reason, seconds)


def _in_children(m: Measurement) -> bool:
    """Whether the measured calls computed mostly in child processes they waited for."""
    return m.cpu_s > 0 and m.child_cpu_s >= CHILD_CPU_SHARE * m.cpu_s


def io_threads(m: Measurement, items: int, cpus: int) -> int:
    """Threads for I/O-bound work: ``cpus x (1 + wait/compute)`` from the measurement,
    at most ``IO_THREADS_MAX``, never more than ``items``."""
    wanted = cpus * (1 + (m.wall_s - m.cpu_s) / max(m.cpu_s, 1e-6))
    return max(1, min(IO_THREADS_MAX, int(wanted), max(items, 1)))


def _measured_words(m: Measurement) -> str:
    return (f"measured {m.calls} call{'s' if m.calls != 1 else ''}: "
            f"{_duration(m.wall_s)} each, {m.cpu_ratio:.0%} CPU")


def _process_pool_warm() -> bool:
    from ._backends.process import pool

    current = pool._default.current()
    return current is not None and current.size() > 0


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} us"


def _gil_words(m: Measurement) -> str:
    return {True: "releases the GIL", False: "holds the GIL",
            None: "GIL use unknown (too short to tell)"}[m.releases_gil]


def _bytes_words(m: Measurement) -> str:
    if m.arg_bytes is None or m.result_bytes is None:
        return ", cannot be pickled"
    return f", {m.arg_bytes + m.result_bytes} pickled bytes per item"


def _children_words(m: Measurement) -> str:
    return (f", {CHILD_EXTRA_THREADS} more than CPUs: {m.child_cpu_s / m.cpu_s:.0%} of its "
            f"CPU is in child processes, which the threads only wait for")


def _kind_words(kind: Kind) -> str:
    return {"io": "mostly waiting", "native": "computing without the GIL",
            "cpu": "computing under the GIL", "async": "a coroutine"}[kind]


def _backend_words(backend: str) -> str:
    return {"serial": "serial (no pool pays off)", "thread": "threads",
            "process": "processes"}[backend]

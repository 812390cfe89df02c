"""The loop a process worker runs: receive a chunk, run its items, send the outcomes.

The worker talks only through its own pipe (``conn``), never through stdout, so a
task's ``print`` reaches the user's terminal untouched.  It exits when the pipe
closes (the pool shut it down) or when the parent dies (``alive`` reaches EOF: a
watcher thread ends the process at once, even in the middle of a task).

The fork server preloads this module, so what it imports is paid before a program's
first process run can start: it and the laneway modules it uses leave ``typing`` out
(``TYPE_CHECKING = False``, which type checkers read as typing's own) and functions of
scripts arrive through :mod:`byvalue`, not cloudpickle.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from multiprocessing.connection import Connection
from time import perf_counter

from ... import _context
from ..._chunks import Emit, ItemRunner, capture, encode_outcomes, item_error
from ..._errors import Failure, RemoteTaskError
from . import byvalue  # noqa: F401  (functions of scripts arrive through it: preloaded)
from . import messages as m
from .shared_slots import SharedSlots

TYPE_CHECKING = False  # (no typing at run time: see process.worker)
if TYPE_CHECKING:
    from typing import Any

WORKER_STEP_TARGET_S = 0.002
"""Tiny items run in steps of about this long in a worker, each step's outcomes sent as
one message: a message per ~2 ms keeps tiny-item throughput, and a crash can only put
the items of one such step in doubt."""

_NATIVE_THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)


def main(conn: Connection, alive: Connection, progress: SharedSlots,
         native_threads: int) -> None:
    """Entry point of a worker process (the target of ``Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _context.mark_process_worker()
    for var in _NATIVE_THREAD_VARS:  # no oversubscription by BLAS/OpenMP pools
        os.environ.setdefault(var, str(native_threads))
    threading.Thread(target=_exit_with_parent, args=(alive,), daemon=True,
                     name="laneway-parent-watch").start()
    functions: OrderedDict[bytes, Callable[[Any], Any]] = OrderedDict()
    paces: dict[bytes, float] = {}  # seconds per item of each cached function, last chunk
    while True:
        try:
            frame = conn.recv_bytes()
        except (EOFError, OSError):
            return
        view = memoryview(frame)
        if view[0] == m.FUNCTION:
            _, key = m.FUNCTION_HEADER.unpack_from(view)
            functions[key] = _load_function(view[m.FUNCTION_HEADER.size:])
            functions.move_to_end(key)
            while len(functions) > m.FUNCTION_CACHE_SIZE:
                paces.pop(functions.popitem(last=False)[0], None)
        else:
            _, seq, flags, key = m.CHUNK_HEADER.unpack_from(view)
            functions.move_to_end(key)
            if seq in (progress[m.PROGRESS_SKIP[0]], progress[m.PROGRESS_SKIP[1]]):
                # its run was cancelled after the job was sent: hand it back unrun
                conn.send_bytes(m.RESULT_HEADER.pack(m.RESULTS, 1, 0, 0, 0.0))
                continue
            pace = _run_chunk(conn, functions[key], seq, flags, view[m.CHUNK_HEADER.size:],
                              progress, paces.get(key))
            if pace is not None:
                paces[key] = pace


def _exit_with_parent(alive: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        alive.recv_bytes()
    os._exit(0)


def _load_function(body: memoryview) -> Callable[[Any], Any]:
    try:
        fn: Callable[[Any], Any] = pickle.loads(body)
    except Exception as exc:
        error = RemoteTaskError(
            f"the function could not be unpickled in the worker process: "
            f"{type(exc).__name__}: {exc}. Is it defined in a module the worker can "
            f"import? Run it with backend='thread' to avoid pickling altogether."
        )

        def unloadable(item: object) -> object:
            raise error

        return unloadable
    return fn


def _run_chunk(conn: Connection, fn: Callable[[Any], Any], seq: int, flags: int,
               body: memoryview, progress: SharedSlots,
               pace: float | None) -> float | None:
    """Run one chunk; its seconds per item (None: not run).  ``pace`` is the function's
    seconds per item in its previous chunk here: the first step takes as many items as
    fit in a step (a chunk of tiny items goes back as one message, not one per item)."""
    try:
        items: list[Any] = pickle.loads(body)
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".encode()
        conn.send_bytes(m.RESULT_HEADER.pack(m.UNREADABLE, 1, 0, 0, 0.0) + text)
        return None
    if flags & m.ISOLATED:
        items = [_IsolatedItem(blob) for blob in items]
        fn = _isolated_caller(fn)
    progress[m.PROGRESS_STARTED] = 0
    progress[m.PROGRESS_STOP] = 0
    progress[m.PROGRESS_SEQ] = seq
    total = len(items)

    def emit(offset: int, values: list[Any], failures: dict[int, Failure] | None,
             busy_s: float) -> None:
        done = offset + len(values) == total
        conn.send_bytes(m.RESULT_HEADER.pack(m.RESULTS, done, offset, len(values), busy_s)
                        + encode_outcomes(values, failures))

    if flags & m.TIMED:
        return _run_timed(fn, items, emit, progress)

    def started(end: int) -> None:
        progress[m.PROGRESS_STARTED] = end

    # Every finished step is handed in before the next one starts (flush_interval=0), so
    # if the worker dies only the step it was in (one item, unless items take well under
    # WORKER_STEP_TARGET_S) can be in doubt.
    runner = ItemRunner(fn, items, emit, catch=BaseException, started=started, remote=True,
                        flush_interval=0.0, step_target=WORKER_STEP_TARGET_S,
                        first_step=int(WORKER_STEP_TARGET_S / pace) if pace else 1)
    runner.run()
    return runner.pace


def _run_timed(fn: Callable[[Any], Any], items: list[Any], emit: Emit,
               progress: SharedSlots) -> float | None:
    """A chunk under ``task_timeout``: one item at a time, each stamped with its start so
    the parent can tell which item overran and when; outcomes handed in every
    ``WORKER_STEP_TARGET_S``.  A worker stopped for a timeout (SIGTERM) hands in what
    finished and exits -- unless the overrunning item finished meanwhile.

    A plain loop, not an ItemRunner: the per-item cost is what ``task_timeout`` costs, so
    it writes the shared slots directly (a method call per write would double it)."""
    slots = progress.view
    started_ns, started_at, stop_at = m.PROGRESS_STARTED_NS, m.PROGRESS_STARTED, m.PROGRESS_STOP
    values: list[Any] = []
    failures: dict[int, Failure] | None = None
    offset = 0
    running = 0  # position + 1 of the item running now (0: between items)
    sending = False
    flushed = 0.0
    monotonic_ns = time.monotonic_ns

    def flush(now: float) -> None:
        nonlocal values, failures, offset, flushed, sending
        if values:
            sending = True
            emit(offset, values, failures, now - flushed)
            sending = False
            offset += len(values)
            values, failures = [], None
        flushed = now

    def stop(signum: int, frame: object) -> None:
        overran = slots[stop_at]
        if overran and overran != running:
            return  # that item finished in time after all: carry on
        if not sending:
            flush(perf_counter())
        os._exit(m.STOPPED_EXIT_CODE)

    previous = signal.signal(signal.SIGTERM, stop)
    began = flushed = perf_counter()
    try:
        for position, item in enumerate(items):
            slots[started_ns] = monotonic_ns()
            slots[started_at] = running = position + 1
            try:
                value = fn(item)
            except BaseException as exc:
                value = None
                if failures is None:
                    failures = {}
                failures[len(values)] = capture(item_error(fn, exc), remote=True)
            values.append(value)
            running = 0
            now = perf_counter()
            if now - flushed >= WORKER_STEP_TARGET_S:
                flush(now)
        flush(perf_counter())
    finally:
        signal.signal(signal.SIGTERM, previous)
    return (perf_counter() - began) / len(items) if items else None


class _IsolatedItem:
    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob


def _isolated_caller(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def call(wrapped: _IsolatedItem) -> Any:
        try:
            item = pickle.loads(wrapped.blob)
        except Exception as exc:
            msg = (f"this item could not be unpickled in the worker process: "
                   f"{type(exc).__name__}: {exc}")
            raise RemoteTaskError(msg) from None
        return fn(item)

    return call

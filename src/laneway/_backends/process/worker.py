"""The loop a process worker runs: receive a chunk, run its items, send the outcomes.

The worker talks only through its own pipe (``conn``), never through stdout, so a
task's ``print`` reaches the user's terminal untouched.  It exits when the pipe
closes (the pool shut it down) or when the parent dies (``alive`` reaches EOF: a
watcher thread ends the process at once, even in the middle of a task).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, MutableSequence
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle  # functions arrive cloudpickled: the fork server preloads it once

from ... import _context
from ..._chunks import ItemRunner, encode_failure
from ..._errors import Failure, RemoteTaskError
from . import messages as m

WORKER_STEP_TARGET_S = 0.002
"""Tiny items run in steps of about this long in a worker, each step's outcomes sent as
one message: a message per ~2 ms keeps tiny-item throughput, and a crash can only put
the items of one such step in doubt."""

_NATIVE_THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
)


def main(conn: Connection, alive: Connection, progress: MutableSequence[int],
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
               body: memoryview, progress: MutableSequence[int],
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
    timed = bool(flags & m.TIMED)
    progress[m.PROGRESS_STARTED] = 0
    progress[m.PROGRESS_STOP] = 0
    progress[m.PROGRESS_SEQ] = seq
    total = len(items)
    sending = False
    running = 0  # timed: position + 1 of the item running now (0: between items)

    def started(end: int) -> None:
        nonlocal running
        if timed:
            progress[m.PROGRESS_STARTED_NS] = time.monotonic_ns()
            running = end
        progress[m.PROGRESS_STARTED] = end

    def finished(end: int) -> bool:
        nonlocal running
        running = 0
        return True

    def emit(offset: int, values: list[Any], failures: dict[int, Failure] | None,
             busy_s: float) -> None:
        nonlocal sending
        done = offset + len(values) == total
        body = _encode_outcomes(values, failures)
        sending = True
        conn.send_bytes(m.RESULT_HEADER.pack(m.RESULTS, done, offset, len(values), busy_s)
                        + body)
        sending = False

    # Untimed: flush_interval=0, every finished step is handed in before the next one
    # starts, so if the worker dies only the step it was in (one item, unless items take
    # well under WORKER_STEP_TARGET_S) can be in doubt.  Timed: steps are single items
    # (each stamped with its start), flushed every WORKER_STEP_TARGET_S, and a worker
    # stopped for a timeout hands in what it holds from its SIGTERM handler.
    runner = ItemRunner(fn, items, emit, catch=BaseException, started=started,
                        finished=finished if timed else None, remote=True,
                        max_step=1 if timed else 1 << 16,
                        flush_interval=WORKER_STEP_TARGET_S if timed else 0.0,
                        step_target=WORKER_STEP_TARGET_S,
                        first_step=int(WORKER_STEP_TARGET_S / pace) if pace else 1)
    if not timed:
        runner.run()
        return runner.pace

    def stop(signum: int, frame: object) -> None:
        # The parent stops a worker whose item overran: hand in what finished, then go;
        # unless that item finished meanwhile (the parent sees its result and relents).
        overran = progress[m.PROGRESS_STOP]
        if overran and overran != running:
            return
        if not sending:
            runner.flush()
        os._exit(m.STOPPED_EXIT_CODE)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        runner.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return runner.pace


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


def _encode_outcomes(values: list[Any], failures: dict[int, Failure] | None) -> bytes:
    blobs = {k: encode_failure(f) for k, f in failures.items()} if failures else None
    try:
        return pickle.dumps((values, blobs), pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    # Some result cannot travel with pickle: try cloudpickle for it, else fail that item.
    blobs = dict(blobs or {})
    kept: list[Any] = []
    dumps: Callable[[Any], bytes] = _pickle_dumps
    for k, value in enumerate(values):
        if k in blobs:
            kept.append(None)
            continue
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            try:
                cloudpickle.dumps(value)
                dumps = cloudpickle.dumps
            except Exception:
                error = RemoteTaskError(
                    f"the result, a {type(value).__module__}.{type(value).__qualname__}, "
                    f"cannot be pickled to return it from the worker process "
                    f"({type(exc).__name__}: {exc}); return plain data, or run the work "
                    f"with backend='thread'"
                )
                kept.append(None)
                blobs[k] = encode_failure(Failure(error))
                continue
        kept.append(value)
    return dumps((kept, blobs or None))


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)

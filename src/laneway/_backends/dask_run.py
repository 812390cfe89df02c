"""The dask backend: a run's chunks become tasks on a Dask cluster (the ``dask`` extra).

The client is the ``distributed`` client that is current (inside ``with
distributed.Client(...)``, or the default one a program made), else one connected to the
scheduler at ``LANEWAY_DASK_ADDRESS`` (made once per process and address, kept for later
runs).  Each chunk is one task, ``run_chunk``: the items run in ``call_each``'s loop on a
Dask worker, and their results and per-item failures (tracebacks as text) come back as
the chunk's batch.  A task lost with its worker (Dask retries it elsewhere first, as it
does for any task) fails its items with :class:`WorkerCrashedError`.  Closing the run
cancels the tasks not yet done; Dask cannot stop a task that is running, so
``task_timeout`` is refused on this backend.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .._chunks import Batch, Chunk, call_each, capture, encode_outcomes
from .._errors import Failure, LanewayError, WorkerCrashedError

__all__ = ["DaskRun", "cluster_threads", "current_client", "run_chunk"]

ADDRESS_VARIABLE = "LANEWAY_DASK_ADDRESS"

_connected: dict[str, Any] = {}  # scheduler address -> the client laneway made for it
_connected_lock = threading.Lock()


def _distributed() -> Any:
    """The ``distributed`` module (untyped to us: the extra may be missing where laneway
    is type-checked); ImportError without the extra."""
    return importlib.import_module("distributed")


def current_client() -> Any:
    """The Dask client runs use (see the module docstring); a :class:`LanewayError` that
    says what to do when there is none or the extra is missing."""
    try:
        distributed = _distributed()
    except ImportError:
        msg = ("backend='dask' needs the dask extra (the distributed package): "
               "pip install 'laneway[dask]'")
        raise LanewayError(msg) from None
    try:
        return distributed.default_client()
    except ValueError:
        pass
    try:
        distributed.get_worker()
    except ValueError:
        pass
    else:  # inside a Dask task on a worker process: no default client there
        return distributed.get_client()
    address = os.environ.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        msg = ("backend='dask' needs a Dask client: run the call inside "
               "`with distributed.Client(...):`, or set LANEWAY_DASK_ADDRESS to a "
               "scheduler address (e.g. tcp://127.0.0.1:8786)")
        raise LanewayError(msg)
    with _connected_lock:
        client = _connected.get(address)
        if client is None or client.status != "running":  # (closed, or lost its scheduler)
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
            try:
                client = distributed.Client(address, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                msg = (f"backend='dask': cannot connect to the Dask scheduler at "
                       f"LANEWAY_DASK_ADDRESS={address!r}: {exc}")
                raise LanewayError(msg) from exc
            _connected[address] = client
        return client


def cluster_threads(client: Any) -> int:
    """Threads of every worker of the cluster (at least 1)."""
    return max(1, int(sum(client.nthreads().values())))


def run_chunk(fn: Callable[[Any], Any], items: list[Any]) -> tuple[bytes, float]:
    """What a Dask worker runs for one chunk: every item, failures kept per item (any
    exception, ``SystemExit`` too: it must not take the worker down), encoded as a
    process worker's are (a result or an exception that cannot be pickled fails only its
    own item), and the seconds the items took there (the chunk sizer's figure, without
    the scheduler's trip)."""
    began = perf_counter()
    values: list[Any] = []
    failures = call_each(fn, items, values, catch=BaseException,
                         capture=lambda exc: capture(exc, True))
    return encode_outcomes(values, failures), perf_counter() - began


_run_names = itertools.count()


def _secede_if_in_a_task() -> threading.Thread | None:
    """If this thread runs a Dask task, take it out of its worker's thread pool (the
    thread, to rejoin from), else None."""
    distributed = _distributed()
    try:
        distributed.get_worker()
    except ValueError:  # not in a task
        return None
    distributed.secede()
    return threading.current_thread()


class DaskRun:
    """One run's chunks as Dask tasks, at most ``workers`` of them on the cluster at
    once (the others wait here); each done task's outcomes go to the run's queue."""

    def __init__(self, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any],
                 client: Any, name: str, workers: int) -> None:
        self._fn = fn
        self._sink = sink
        self._client = client
        self._workers = workers
        self._prefix = f"laneway-{name}-{uuid.uuid4().hex[:8]}-{next(_run_names)}"
        self._lock = threading.Lock()
        self._pending: dict[int, Any] = {}  # chunk id -> its future, until it is done
        self._waiting: deque[Chunk] = deque()  # chunks not sent yet: workers are busy
        self._closed = False
        # A run made inside a Dask task would hold that task's worker thread while it
        # waits for its own tasks, which may need that very thread (nested calls on a
        # small cluster deadlock): the thread leaves the worker's pool until the run
        # closes, as distributed's own worker_client() does.
        self._seceded_thread = _secede_if_in_a_task()

    def submit(self, chunk: Chunk) -> None:
        """Send the chunk to the cluster as one task (or keep it until a task ends)."""
        with self._lock:
            if self._closed:
                return
            self._waiting.append(chunk)  # (in order: after any chunk already waiting)
        self._next()

    def _send(self, chunk: Chunk) -> None:
        try:
            future = self._client.submit(run_chunk, self._fn, chunk.items, pure=False,
                                         key=f"{self._prefix}-{chunk.id}")
        except Exception as exc:  # the items could not be sent (pickling, say)
            self._fail_chunk(chunk, LanewayError,
                             f"could not be sent to the Dask cluster "
                             f"({type(exc).__name__}: {exc})")
            return  # (its slot is free again: the caller's loop sends the next chunk)
        with self._lock:
            if self._closed or chunk.id not in self._pending:
                future.cancel()
                return
            self._pending[chunk.id] = future
        future.add_done_callback(lambda done: self._done(chunk, done))

    def close(self) -> None:
        """Cancel the tasks of this run that are not done (running ones finish on their
        own; their results are dropped), and forget the chunks not sent."""
        with self._lock:
            self._closed = True
            futures = [f for f in self._pending.values() if f is not None]
            self._pending.clear()
            self._waiting.clear()
        if futures:
            self._client.cancel(futures)
        if self._seceded_thread is not None and self._seceded_thread is threading.current_thread():
            self._seceded_thread = None
            _distributed().rejoin()

    def check_deadlines(self) -> None:
        """No per-item deadlines: ``task_timeout`` is refused for Dask."""

    def _done(self, chunk: Chunk, future: Any) -> None:
        with self._lock:
            if self._pending.pop(chunk.id, None) is None:  # closed meanwhile
                return
        try:
            payload, busy = future.result()
        except Exception as exc:  # the task itself was lost (not an item's error)
            self._fail_chunk(chunk, WorkerCrashedError,
                             f"was in a Dask task that was lost ({type(exc).__name__}: "
                             f"{exc}); Dask may have run it more than once first")
        else:
            self._sink.put(Batch(chunk.id, chunk.start, len(chunk.items), busy,
                                 payload=payload))
        self._next()

    def _next(self) -> None:
        """Send waiting chunks while fewer than ``workers`` tasks are on the cluster."""
        while True:
            with self._lock:
                if self._closed or not self._waiting or len(self._pending) >= self._workers:
                    return
                chunk = self._waiting.popleft()
                self._pending[chunk.id] = None  # (its slot, taken before the send)
            self._send(chunk)

    def _fail_chunk(self, chunk: Chunk, kind: type[LanewayError], what: str) -> None:
        """Every item of ``chunk`` fails with its own ``kind`` error."""
        with self._lock:
            self._pending.pop(chunk.id, None)
        count = len(chunk.items)
        failures = {k: Failure(kind(f"item #{chunk.start + k} {what}"))
                    for k in range(count)}
        self._sink.put(Batch(chunk.id, chunk.start, count, 0.0, [None] * count, failures))

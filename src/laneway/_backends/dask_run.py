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

import importlib
import itertools
import os
import queue
import threading
import uuid
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .._chunks import Batch, Chunk, call_each, capture
from .._errors import Failure, LanewayError, WorkerCrashedError

__all__ = ["DaskRun", "cluster_threads", "current_client", "run_chunk"]

ADDRESS_VARIABLE = "LANEWAY_DASK_ADDRESS"

_connected: dict[str, Any] = {}  # scheduler address -> the client laneway made for it
_connected_lock = threading.Lock()


def current_client() -> Any:
    """The Dask client runs use (see the module docstring); a :class:`LanewayError` that
    says what to do when there is none or the extra is missing."""
    try:  # (untyped to us: the extra may be missing where laneway is type-checked)
        distributed: Any = importlib.import_module("distributed")
    except ImportError:
        msg = ("backend='dask' needs the dask extra (the distributed package): "
               "pip install 'laneway[dask]'")
        raise LanewayError(msg) from None
    try:
        return distributed.default_client()
    except ValueError:
        pass
    address = os.environ.get(ADDRESS_VARIABLE, "").strip()
    if not address:
        msg = ("backend='dask' needs a Dask client: run the call inside "
               "`with distributed.Client(...):`, or set LANEWAY_DASK_ADDRESS to a "
               "scheduler address (e.g. tcp://127.0.0.1:8786)")
        raise LanewayError(msg)
    with _connected_lock:
        client = _connected.get(address)
        if client is None or client.status in ("closing", "closed"):
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


def run_chunk(fn: Callable[[Any], Any], items: list[Any],
              ) -> tuple[list[Any], dict[int, Failure] | None]:
    """What a Dask worker runs for one chunk: every item, failures kept per item."""
    values: list[Any] = []
    failures = call_each(fn, items, values, capture=lambda exc: capture(exc, True))
    return values, failures


_run_names = itertools.count()


class DaskRun:
    """One run's chunks as Dask tasks; each done task's outcomes go to the run's queue."""

    def __init__(self, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any],
                 client: Any, name: str) -> None:
        self._fn = fn
        self._sink = sink
        self._client = client
        self._prefix = f"laneway-{name}-{uuid.uuid4().hex[:8]}-{next(_run_names)}"
        self._lock = threading.Lock()
        self._pending: dict[int, Any] = {}  # chunk id -> its future, until it is done
        self._closed = False

    def submit(self, chunk: Chunk) -> None:
        """Send the chunk to the cluster as one task."""
        began = perf_counter()
        future = self._client.submit(run_chunk, self._fn, chunk.items, pure=False,
                                     key=f"{self._prefix}-{chunk.id}")
        with self._lock:
            if self._closed:
                future.cancel()
                return
            self._pending[chunk.id] = future
        future.add_done_callback(lambda done: self._done(chunk, done, began))

    def close(self) -> None:
        """Cancel the tasks of this run that are not done (running ones finish on their
        own; their results are dropped)."""
        with self._lock:
            self._closed = True
            futures = list(self._pending.values())
            self._pending.clear()
        if futures:
            self._client.cancel(futures)

    def check_deadlines(self) -> None:
        """No per-item deadlines: ``task_timeout`` is refused for Dask."""

    def _done(self, chunk: Chunk, future: Any, began: float) -> None:
        with self._lock:
            if self._pending.pop(chunk.id, None) is None:  # closed meanwhile
                return
        count = len(chunk.items)
        try:
            values, failures = future.result()
        except Exception as exc:  # the task itself was lost (not an item's error)
            lost = WorkerCrashedError(
                f"the Dask task running items #{chunk.start}-#{chunk.start + count - 1} "
                f"was lost ({type(exc).__name__}: {exc})")
            values, failures = [None] * count, {k: Failure(lost) for k in range(count)}
        self._sink.put(Batch(chunk.id, chunk.start, len(values), perf_counter() - began,
                             values, failures))

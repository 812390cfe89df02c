"""The run pipeline every entry point shares.

    validate -> plan -> dispatch chunks through a bounded window -> ONE result queue
    -> reorder (if ordered) -> deliver (error policy, progress) -> yield

The dispatcher runs in the caller's thread and pulls items from the user's iterable
only when the window has room, so an infinite generator works and memory stays
bounded.  Backends put :class:`~laneway._chunks.Batch` objects on the run's queue;
nothing else crosses between threads.  The window counts chunks that are not yet
finished (unordered) or not yet delivered (ordered), so a slow item at the head of an
ordered run holds back dispatch instead of piling up results behind it.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from ._chunks import Batch, Chunk, ChunkSizer
from ._options import RunOptions
from ._progress import make_reporter
from ._router import Plan

__all__ = ["Run"]

CHUNK_TARGET_S = 0.01
"""Automatic chunks aim at this much work each: long enough that the per-chunk cost
(~50-100 us on a process pool) is noise, short enough to balance the end of a run."""

WINDOW_PER_WORKER = 2
"""Chunks in the window per worker: one running and one ready to start."""


class BackendRun(Protocol):
    """What the pipeline needs from a backend for one run."""

    def submit(self, chunk: Chunk) -> None:
        """Start (or queue) a chunk; its outcomes arrive on the run's queue."""

    def close(self) -> None:
        """Stop: drop what has not started, ignore what is still running."""

    def check_deadlines(self) -> float | None:
        """Enforce per-item deadlines kept in the caller; seconds until the next one."""


def total_of(iterable: Iterable[Any]) -> int | None:
    """The number of items, when the iterable knows it without being consumed."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


class Run:
    """One call's journey through the pipeline; iterate :meth:`segments` once."""

    def __init__(self, fn: Callable[[Any], Any], iterable: Iterable[Any], options: RunOptions,
                 plan: Plan, total: int | None, *, fail_fast: bool) -> None:
        self.fn = fn
        self.fn_name = getattr(fn, "__qualname__", None) or repr(fn)
        self.plan = plan
        self.options = options
        self.total = total
        self._iterable = iterable
        self._fail_fast = fail_fast
        self._sink: queue.SimpleQueue[Batch] = queue.SimpleQueue()

    def _open_backend(self) -> BackendRun:
        backend, workers = self.plan.backend, self.plan.workers
        if backend == "process":
            from ._backends.process.pool import default_pool

            return default_pool().open_run(self.fn, self._sink, workers,
                                           self.options.task_timeout)
        if backend == "thread":
            from ._backends.threads import ThreadRun, default_thread_pool

            return ThreadRun(default_thread_pool(), self.fn, self._sink, workers,
                             self.options.task_timeout)
        from ._backends.serial import SerialRun

        return SerialRun(self.fn, self._sink)

    def segments(self) -> Iterator[list[Any]]:
        """Yield the results in delivery order, a list of consecutive results at a time.

        With ``errors="raise"`` the first failure is raised (at once with ``fail_fast``,
        else when its turn comes); with ``errors="return"`` exceptions take their items'
        places.  Leaving the generator early (break, exception, garbage collection)
        cancels what is left.
        """
        options, plan = self.options, self.plan
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        sizer = ChunkSizer(fixed=plan.chunksize, workers=plan.workers, total=self.total,
                           target_s=CHUNK_TARGET_S)
        window = WINDOW_PER_WORKER * plan.workers
        report = make_reporter(options.progress, self.total)
        items = iter(self._iterable)
        chunk_ids = itertools.count()
        remaining: dict[int, int] = {}   # chunk id -> outcomes still to come
        chunk_ends: deque[int] = deque()  # ordered: end index of each undelivered chunk
        reorder: dict[int, Batch] = {}    # ordered: batches waiting for their turn
        next_index = 0                    # ordered: the next index to deliver
        dispatched = 0
        done = 0
        exhausted = False
        backend = self._open_backend()
        try:
            while True:
                while not exhausted and (len(chunk_ends) if options.ordered
                                         else len(remaining)) < window:
                    chunk_items = list(itertools.islice(items, sizer.next_size()))
                    if not chunk_items:
                        exhausted = True
                        break
                    chunk = Chunk(next(chunk_ids), dispatched, chunk_items)
                    dispatched += len(chunk_items)
                    remaining[chunk.id] = len(chunk_items)
                    chunk_ends.append(dispatched)
                    backend.submit(chunk)
                if not remaining and not reorder:
                    return
                batch = self._next_batch(backend, deadline, dispatched, done)
                batch.decode()
                sizer.observe(batch.count, batch.busy_s)
                left = remaining[batch.chunk_id] - batch.count
                if left:
                    remaining[batch.chunk_id] = left
                else:
                    del remaining[batch.chunk_id]
                if self._fail_fast and batch.failures and options.errors == "raise":
                    raise self._first_failure(batch)
                if not options.ordered:
                    done += batch.count
                    yield from self._deliver(batch)
                    report(done)
                    continue
                reorder[batch.start] = batch
                while next_index in reorder:
                    batch = reorder.pop(next_index)
                    next_index += batch.count
                    while chunk_ends and chunk_ends[0] <= next_index:
                        chunk_ends.popleft()
                    done += batch.count
                    yield from self._deliver(batch)
                    report(done)
        finally:
            backend.close()
            report(None)

    def _next_batch(self, backend: BackendRun, deadline: float | None, dispatched: int,
                    done: int) -> Batch:
        while True:
            waits = [backend.check_deadlines()]
            if deadline is not None:
                waits.append(max(0.0, deadline - time.monotonic()))
            wait = min((w for w in waits if w is not None), default=None)
            try:
                return self._sink.get(timeout=wait) if wait is not None else self._sink.get()
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    msg = (f"{self.fn_name} did not finish within "
                           f"timeout={self.options.timeout}s: {done} of {dispatched} items "
                           f"started so far were delivered; the rest were cancelled")
                    raise TimeoutError(msg) from None

    def _first_failure(self, batch: Batch) -> BaseException:
        assert batch.failures is not None
        position = min(batch.failures)
        return batch.failures[position].materialize(batch.start + position, self.fn_name)

    def _deliver(self, batch: Batch) -> Iterator[list[Any]]:
        """Yield the batch's values; with errors="raise", those before its first
        failure, then raise it."""
        values = batch.values
        assert values is not None
        if not batch.failures:
            yield values
            return
        if self.options.errors == "raise":
            position = min(batch.failures)
            if position:
                yield values[:position]
            raise self._first_failure(batch)
        for position, failure in batch.failures.items():
            values[position] = failure.materialize(batch.start + position, self.fn_name)
        yield values

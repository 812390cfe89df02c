"""The run pipeline every entry point shares.

    validate -> plan -> dispatch chunks through a bounded window -> ONE result queue
    -> reorder (if ordered) -> deliver (error policy, progress) -> yield

The dispatcher runs in the caller's thread and pulls items from the user's iterable
only when the window has room, so an infinite generator works and memory stays
bounded.  Backends put :class:`~laneway._chunks.Batch` objects on the run's queue;
nothing else crosses between threads.  The window counts chunks that are not yet
finished; an ordered ``imap`` also caps the chunks finished but waiting behind a slower
one (``REORDER_SLACK`` windows), so memory stays bounded even when the head item is slow.
"""

from __future__ import annotations

import itertools
import logging
import operator
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from time import perf_counter
from typing import Any, Protocol, cast

from ._chunks import Batch, Chunk, ChunkSizer, call_each
from ._errors import Failure
from ._options import RunOptions, bounded_wait
from ._profile import (
    FirstCall,
    Measurement,
    cached_measurement,
    check_drift,
    measure_calls,
    needs_measuring,
    pickled_size,
    recent_pace,
    remember_measurement,
    remember_pace,
)
from ._progress import make_reporter
from ._router import Plan, _env_max_workers, plan_run, task_kind

__all__ = ["Run", "last_plan"]

logger = logging.getLogger("laneway")

INLINE_CHUNK_MAX = 4096
"""Most items a serial run takes from the input at a time (see ``Run._inline``): a list
of 4,096 items is 32 KiB, reused by the allocator chunk after chunk, while larger ones
are fresh memory from the OS each time (page faults that cost more than the loop)."""

_CANCEL = Batch(-2, -1, 0, 0.0)
"""Put on a run's queue by :meth:`Run.cancel`."""
_last = threading.local()


def last_plan() -> Plan | None:
    """The plan of the most recent run started in this thread (None before any).

    ``parallel_map`` returns plain results; this is how code reads where they ran and
    why.  For ``imap`` the plan exists once the first result was asked for (an
    unhinted run measures its first items before it plans).

    Example:
        >>> import laneway
        >>> _ = laneway.parallel_map(abs, [-1, 2], backend="thread")
        >>> laneway.last_plan().backend
        'thread'
    """
    plan: Plan | None = getattr(_last, "plan", None)
    return plan

READ_WITHIN_S = 0.01
"""Building one chunk reads the input for at most about this long (see :func:`take`)."""

CHUNK_TARGET_S = 0.01
"""Automatic chunks aim at this much work each: long enough that the per-chunk cost
(~50-100 us on a process pool) is noise, short enough to balance the end of a run."""

WINDOW_PER_WORKER = 2
"""Chunks in the window per worker: one running and one ready to start."""

ASYNC_ITEMS_AHEAD = 4096
"""Items an async run may have on its loop beyond ``2 x workers`` (see ``_segments``)."""

REORDER_SLACK = 4
"""An ordered imap holds at most this many windows of chunks that are done but wait for
an earlier, slower one: memory stays bounded, and one slow item does not idle the other
workers at once.  (parallel_map keeps every result anyway, so it has no such limit.)"""


class BackendRun(Protocol):
    """What the pipeline needs from a backend for one run."""

    def submit(self, chunk: Chunk) -> None:
        """Start (or queue) a chunk; its outcomes arrive on the run's queue."""

    def close(self) -> None:
        """Stop: drop what has not started, ignore what is still running."""

    def check_deadlines(self) -> float | None:
        """Enforce per-item deadlines kept in the caller; seconds until the next one."""


class SlotHolder(Protocol):
    """A backend run that can count an item running elsewhere as one of its workers
    (the thread and process backends: a run's first item, measured on a pool thread,
    may still run when the rest starts)."""

    def hold_slot(self) -> None: ...

    def release_slot(self) -> None: ...


def take(items: Iterator[Any], count: int, within_s: float = READ_WITHIN_S) -> list[Any]:
    """Up to ``count`` items of ``items``, fewer if reading them takes longer than
    ``within_s``: a slow input (a generator that waits for each item) is sent on in
    small chunks, and its first results come back while it is still being read."""
    began = perf_counter()
    taken = list(itertools.islice(items, min(count, 8)))
    step = len(taken)
    while step and len(taken) < count and perf_counter() - began < within_s:
        step = min(2 * step, count - len(taken))
        more = list(itertools.islice(items, step))
        taken += more
        if len(more) < step:
            break
    return taken


def total_of(iterable: Iterable[Any]) -> int | None:
    """The number of items, when the iterable knows it without being consumed."""
    try:
        return len(iterable)  # type: ignore[arg-type]
    except (TypeError, OverflowError):  # (no len(), or one too large: range(10**20))
        return None


class Run:
    """One call's journey through the pipeline; iterate :meth:`segments` once.

    When the backend is forced or the kind known (argument or hint), the plan is made
    and the backend opened at once, so a function that cannot be pickled for a process
    is refused when the call is made.  Otherwise the plan waits for the first
    :meth:`segments` step, which measures the first items (the first on a pool thread,
    the next few in the caller; results kept, delivered first) unless this function was
    measured before in this process.
    """

    def __init__(self, fn: Callable[[Any], Any], iterable: Iterable[Any], options: RunOptions,
                 total: int | None, *, fail_fast: bool, entry: str,
                 bounded: bool = True) -> None:
        self.fn = fn
        self.fn_name = getattr(fn, "__qualname__", None) or repr(fn)
        self.options = options
        self.total = total
        self.entry = entry
        self._items = iter(iterable)
        # (a plain list, tuple or range of known length: its chunks can be sliced out,
        # see _inline)
        self._sequence = cast("Sequence[Any]", iterable) if total is not None and type(
            iterable) in (list, tuple, range) else None
        self._fail_fast = fail_fast
        self._bounded = bounded
        self._sink: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self.plan: Plan | None = None
        self._backend: BackendRun | None = None
        self._measurement: Measurement | None = None
        # the first, measured item still running when the rest starts holds one of the
        # backend's worker slots until it ends (workers=N: at most N items at once)
        self._first_lock = threading.Lock()
        self._first_ended = False
        self._slot_holder: SlotHolder | None = None
        _env_max_workers()  # a bad LANEWAY_MAX_WORKERS is refused before anything runs
        if not needs_measuring(fn, options):
            plan = plan_run(fn, options, total)
            self._set_plan(plan)
            self._backend = self._open_backend(plan)

    def cancel(self) -> None:
        """Stop the run from another thread: its ``segments()`` ends and cancels the rest."""
        self._sink.put(_CANCEL)

    def _set_plan(self, plan: Plan) -> None:
        self.plan = plan
        _last.plan = plan
        if logger.isEnabledFor(logging.INFO):
            logger.info("%s(%s): %s backend, %d workers, chunksize %s; %s", self.entry,
                        self.fn_name, plan.backend, plan.workers, plan.chunksize or "auto",
                        plan.reason)

    def _measure(self) -> tuple[Batch | None, bool]:
        """Plan from a cached or fresh measurement.

        Returns the measured items' outcomes (a batch already done), and whether the
        first item is still running (found waiting early): its batch, chunk ``-1``
        with one item, reaches the run's queue when it ends.
        """
        cached = cached_measurement(self.fn)
        sample = None
        if cached is None:
            from ._backends.threads import default_thread_pool

            deadline = None if self.options.timeout is None else \
                time.monotonic() + self.options.timeout
            try:
                sample = measure_calls(self.fn, self._items,
                                       submit=default_thread_pool().submit,
                                       total=self.total, deadline=deadline,
                                       probe_gil=task_kind(self.fn, self.options)[0] is None)
            except TimeoutError:
                msg = (f"{self.fn_name} did not finish within timeout={self.options.timeout}s: "
                       f"its first item was still running (it was being measured; it runs "
                       f"on in the background and its result is dropped)")
                raise TimeoutError(msg) from None
            measurement = sample.measurement
            if sample.pending is not None:
                sample.pending.when_done(self._first_call_done)
            elif measurement.calls:
                remember_measurement(self.fn, measurement)
        else:
            measurement = cached
        self._measurement = measurement
        earlier = cached is not None
        sampled = sample.measurement.calls if sample is not None else 0
        left = None if self.total is None else self.total - sampled
        if sample is not None and sample.exhausted:
            left = 0
        if left is not None and sample is not None and sample.pending is not None:
            left += 1  # (the first item, still running, holds one of the run's workers)
        plan = plan_run(self.fn, self.options, left, measurement, earlier=earlier)
        if left == 0 and sample is not None:
            plan = replace(plan, backend="serial", workers=1, reason=(
                f"every item ({sampled}) already ran while it was being measured: "
                f"{plan.reason}"))
        elif plan.backend == "process":
            try:
                self._backend = self._open_backend(plan)  # (pickles the function, once)
            except TypeError as exc:
                plan = replace(plan, backend="thread", reason=(
                    f"{plan.reason[:-1]}; but it cannot be pickled ({exc}), so threads."))
        if plan.backend == "serial" and left != 0 and sample is not None \
                and sample.pending is not None and sample.pending.computing:
            # not in the caller: it must stay free to deliver the first item when it
            # ends, and to keep timeout=; the first item holds the one worker slot, so
            # the rest runs after it, serially as planned
            plan = replace(plan, backend="thread", workers=1, reason=(
                f"{plan.reason[:-1]}; but the first item is still running, so the rest "
                f"runs on one pool thread after it."))
        self._set_plan(plan)
        if sample is None or not sample.values:
            return None, sample is not None and sample.pending is not None
        return Batch(-1, 0, len(sample.values), measurement.wall_s * len(sample.values),
                     sample.values, sample.failures), False

    def _first_call_done(self, call: FirstCall) -> None:
        """The first item, left running while the rest was planned (found waiting, or
        computing past the budget), has ended: deliver it, and keep its real
        measurement for later runs."""
        failures = None if call.failure is None else {0: call.failure}
        self._sink.put(Batch(-1, 0, 1, call.wall_s, [call.value], failures))
        with self._first_lock:
            self._first_ended = True
            holder, self._slot_holder = self._slot_holder, None
        if holder is not None:
            holder.release_slot()
        if call.failure is None:
            remember_measurement(self.fn, Measurement(
                calls=1, wall_s=call.wall_s, cpu_s=call.cpu_s,
                releases_gil=self._measurement.releases_gil if self._measurement else None,
                arg_bytes=pickled_size(call.item), result_bytes=pickled_size(call.value),
                child_cpu_s=call.child_cpu_s))

    def _open_backend(self, plan: Plan) -> BackendRun:
        backend, workers = plan.backend, plan.workers
        if backend == "process":
            from ._backends.process.launch import start_early

            start_early()  # the fork server boots while the pool module imports
            from ._backends.process.pool import default_pool

            return default_pool().open_run(self.fn, self._sink, workers,
                                           self.options.task_timeout)
        if backend == "dask":
            from ._backends.dask_run import DaskRun, current_client

            return DaskRun(self.fn, self._sink, current_client(), self.fn_name, workers)
        if backend == "async":
            from ._backends.aio import AsyncRun
            from ._hints import coroutine_of

            coroutine_function = coroutine_of(self.fn)
            assert coroutine_function is not None  # (the router made sure)
            return AsyncRun(coroutine_function, self._sink, workers, self.options.task_timeout,
                            self.fn_name)
        if backend == "thread":
            from ._backends.threads import ThreadRun, default_thread_pool

            return ThreadRun(default_thread_pool(), self.fn, self._sink, workers,
                             self.options.task_timeout)
        from ._backends.serial import SerialRun

        return SerialRun(self.fn, self._sink)

    def collect(self) -> list[Any]:
        """Every result, in delivery order, as one list (what ``parallel_map`` returns).

        A run planned serial runs its items straight into that list (see ``_inline``)."""
        into: list[Any] = []
        results: list[Any] | None = None
        for segment in self.segments(into=into):
            if results is None:
                results = segment  # (a fresh list the run hands over: no copy)
            else:
                results.extend(segment)
        return into if results is None else results

    def segments(self, into: list[Any] | None = None) -> Iterator[list[Any]]:
        """Yield the results in delivery order, a list of consecutive results at a time
        (see ``_segments``).

        A run made from a coroutine on laneway's shared event loop blocks that loop until
        it ends: it says so, so that async runs started meanwhile, on any thread, get a
        loop of their own (``hold_shared_loop``)."""
        aio = sys.modules.get("laneway._backends.aio")  # (no loop exists if not imported)
        release = aio.hold_shared_loop() if aio is not None and getattr(
            aio, "IMPORTED", False) else None  # (not while another thread imports it)
        try:
            yield from self._segments(into)
        finally:
            if release is not None:
                release()

    def _segments(self, into: list[Any] | None = None) -> Iterator[list[Any]]:
        """Yield the results in delivery order, a list of consecutive results at a time.

        With ``errors="raise"`` the first failure is raised (at once with ``fail_fast``,
        else when its turn comes); with ``errors="return"`` exceptions take their items'
        places.  Leaving the generator early (break, exception, garbage collection)
        cancels what is left.  ``into``, the list the caller gathers the yielded results
        in: a serial run appends the rest of its results to it directly, after yielding
        the measured ones.
        """
        options = self.options
        deadline = None if options.timeout is None else time.monotonic() + options.timeout
        report = make_reporter(options.progress, self.total)
        remaining: dict[int, int] = {}   # chunk id -> outcomes still to come
        chunk_ends: deque[int] = deque()  # ordered: end index of each undelivered chunk
        dispatched = 0
        sampled, first_pending = None, False
        if self.plan is None:
            sampled, first_pending = self._measure()
            if sampled is not None and sampled.failures and self._fail_fast \
                    and options.errors == "raise":
                if self._backend is not None:  # (a process run opened while planning)
                    self._backend.close()
                raise self._first_failure(sampled)  # before any other item is sent
        assert self.plan is not None
        if into is not None and self.plan.backend == "serial" and not first_pending:
            if sampled is not None:  # the measured items come first
                assert sampled.values is not None
                into.extend(sampled.values)
                self._settle(into, sampled.failures)
                report(len(into))
            self._inline(into, deadline, report)
            return
        if sampled is not None:  # the measured items: a chunk that is already done
            self._sink.put(sampled)
            remaining[sampled.chunk_id] = sampled.count
            dispatched = sampled.count
            chunk_ends.append(dispatched)
        elif first_pending:  # the first item, still running: chunk -1 of one item
            remaining[-1] = dispatched = 1
            chunk_ends.append(dispatched)
        if self._backend is None:  # (planned just now, after measuring)
            self._backend = self._open_backend(self.plan)
        plan, backend = self.plan, self._backend
        if first_pending and plan.backend in ("thread", "process"):
            with self._first_lock:
                if not self._first_ended:
                    self._slot_holder = cast("SlotHolder", backend)
                    self._slot_holder.hold_slot()
        # The async backend's workers are items in flight, not chunk runners: its items
        # all run at once, whatever chunks they came in (its chunks are sized, not spread
        # over workers for balance), and its window counts items too (else 2 x 1,024
        # chunks of up to 4,096 items each: an imap over an endless input put 300,000
        # coroutines on the loop, whose cancellation then took minutes), with room for
        # chunks of a useful size beyond 2 x workers (a chunk frees its room only when all
        # its items have ended: a tight room made one-item chunks, 7x slower on tiny
        # coroutines, and waves behind slow items).
        items_in_flight = plan.backend == "async"
        sizer = self._sizer(1 if items_in_flight else plan.workers, dispatched)
        window = WINDOW_PER_WORKER * plan.workers
        item_room = window + ASYNC_ITEMS_AHEAD if items_in_flight else None
        in_flight = 0  # items of submitted chunks not yet back
        items = self._items
        chunk_ids = itertools.count()
        reorder: dict[int, Batch] = {}    # ordered: batches waiting for their turn
        next_index = 0                    # ordered: the next index to deliver
        done = 0
        exhausted = False
        try:
            while True:
                sent = 0  # (at least one chunk a turn; then only while no result waits)
                while not exhausted and len(remaining) < window and (
                        item_room is None or in_flight < item_room) and (
                        not (options.ordered and self._bounded)
                        or len(chunk_ends) < REORDER_SLACK * window) and (
                        sent == 0 or self._sink.empty()):
                    size = sizer.next_size()
                    if item_room is not None:
                        size = min(size, item_room - in_flight)
                    chunk_items = take(items, size)
                    sent += 1
                    if not chunk_items:
                        exhausted = True
                        break
                    chunk = Chunk(next(chunk_ids), dispatched, chunk_items)
                    in_flight += len(chunk_items)
                    dispatched += len(chunk_items)
                    remaining[chunk.id] = len(chunk_items)
                    chunk_ends.append(dispatched)
                    backend.submit(chunk)
                if not remaining and not reorder:
                    return
                batch = self._next_batch(backend, deadline, dispatched, done)
                if batch is _CANCEL:
                    return
                batch.decode()
                if batch.chunk_id >= 0:  # (a submitted chunk's: not the measured items)
                    in_flight -= batch.count
                    if batch.busy_s > 0:  # not a crash report
                        # (an async chunk's items shared the loop with every item in
                        # flight: its wall time over them is the loop's time per item;
                        # taken as is, the queueing made every chunk one item, 10x
                        # slower on tiny coroutines)
                        sharing = in_flight + batch.count if item_room is not None else 1
                        sizer.observe(batch.count, batch.busy_s / max(1, sharing))
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
            if self._measurement is not None:
                check_drift(self.fn, self._measurement, sizer.per_item_s)
            if plan.backend not in ("serial", "dask"):  # (a cluster's pace is not ours)
                remember_pace(self.fn, sizer.per_item_s)

    def _inline(self, into: list[Any], deadline: float | None,
                report: Callable[[int | None], None]) -> None:
        """Run the items left on the serial backend straight into ``into`` (which holds
        every result delivered so far), a chunk at a time, each in ``call_each``'s C loop.

        The chunked pipeline's run without its copies: no list of results per chunk to
        be appended to the caller's list later.  That memory churn (page faults, not
        Python code) made tiny serial runs ~30 % slower than ``list(map(...))``."""
        options = self.options
        start = len(into)
        sizer = self._sizer(1, start)
        sequence = self._sequence
        # where its iterator is (measuring took items through it); its length hint is
        # exact for these types, even if a task changed the list
        position = 0 if sequence is None else \
            len(sequence) - operator.length_hint(self._items)
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    msg = (f"{self.fn_name} did not finish within "
                           f"timeout={options.timeout}s: {len(into)} items had run "
                           f"(serially); the rest were not started")
                    raise TimeoutError(msg)
                # (taken out first: the input's own errors are not an item's, and a
                # task may change the list it is mapped over; a slice is the same
                # copy at half its cost: 0.2 vs 0.5 ms per 100,000 items)
                size = min(sizer.next_size(), INLINE_CHUNK_MAX)
                chunk_items: Sequence[Any]
                if sequence is None:
                    chunk_items = list(itertools.islice(self._items, size))
                else:
                    chunk_items = sequence[position:position + size]
                    position += len(chunk_items)
                if not chunk_items:
                    return
                began = perf_counter()
                self._settle(into, call_each(self.fn, chunk_items, into))
                sizer.observe(len(chunk_items), perf_counter() - began)
                report(len(into))
        finally:
            report(None)
            if self._measurement is not None and len(into) > start:
                check_drift(self.fn, self._measurement, sizer.per_item_s)

    def _sizer(self, workers: int, done: int) -> ChunkSizer:
        """Chunk sizes for the items left after ``done``, from the measured or the
        remembered time per item."""
        assert self.plan is not None
        pace = self._measurement.wall_s if self._measurement else recent_pace(self.fn)
        return ChunkSizer(fixed=self.plan.chunksize, workers=workers,
                          total=None if self.total is None else self.total - done,
                          target_s=CHUNK_TARGET_S, per_item_s=pace)

    def _settle(self, into: list[Any], failures: dict[int, Failure] | None) -> None:
        """Put the failures (keyed by their positions in ``into``) in their places, or
        with ``errors="raise"`` raise the first (``into`` is then of no more use)."""
        for position in sorted(failures or ()):
            assert failures is not None
            error = failures[position].materialize(position, self.fn_name)
            if self.options.errors == "raise":
                raise error
            into[position] = error

    def _next_batch(self, backend: BackendRun, deadline: float | None, dispatched: int,
                    done: int) -> Batch:
        while True:
            waits = [backend.check_deadlines()]
            if deadline is not None:
                waits.append(max(0.0, deadline - time.monotonic()))
            wait = min((w for w in waits if w is not None), default=None)
            try:
                wait = bounded_wait(wait)
                batch = self._sink.get(timeout=wait) if wait is not None else self._sink.get()
                if deadline is None or time.monotonic() < deadline:
                    return batch
                raise queue.Empty  # a serial run computes its batches before they arrive
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    msg = (f"{self.fn_name} did not finish within "
                           f"timeout={self.options.timeout}s: {done} of the {dispatched} "
                           f"items started so far were delivered in time; the others were "
                           f"cancelled, or dropped if they ended too late")
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

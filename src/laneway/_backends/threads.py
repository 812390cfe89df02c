"""The thread backend: chunks run on a shared, self-sizing set of daemon threads.

Threads are cheap to keep and slow-ish to start (~50-100 us each), so one process-wide
:class:`ThreadPool` keeps idle threads for ``IDLE_TIMEOUT_S`` and starts a new one only
when every thread is busy.  Each run limits its own concurrency (``workers``): it keeps
at most that many chunks on threads and holds the rest in its own queue, so a run asking
for 4 threads never uses 64 just because another run warmed them up.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .._chunks import FLUSH_INTERVAL_S, Batch, Chunk, ItemRunner
from .._errors import Failure, TaskTimeoutError
from .._lazy import ProcessWide

__all__ = ["ThreadPool", "ThreadRun", "default_thread_pool"]

IDLE_TIMEOUT_S = 30.0
"""An idle pool thread exits after this long without work."""

_names = itertools.count(1)


class ThreadPool:
    """Daemon threads that run submitted jobs; grows on demand, shrinks when idle.

    ``_idle`` counts threads waiting for a job, as a semaphore: ``submit`` takes one
    permit (that thread will get the job) or, if there is none, starts a thread; a
    thread gives its permit back each time it starts waiting, and takes one to exit.
    """

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self._idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on an idle thread, or on a new one if none is idle."""
        self._jobs.put(job)
        if self._idle.acquire(blocking=False):
            return
        with self._lock:
            self._threads += 1
        threading.Thread(target=self._serve, daemon=True,
                         name=f"laneway-thread-{next(_names)}").start()

    def thread_count(self) -> int:
        """Threads alive in the pool (idle or busy)."""
        with self._lock:
            return self._threads

    def _serve(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                if self._idle.acquire(blocking=False):  # nobody is counting on this thread
                    with self._lock:
                        self._threads -= 1
                    return
                continue  # a submit took this thread's permit: its job is on the way
            job()
            del job
            self._idle.release()


class _Active:
    """A chunk running on a thread, and (timed runs) the item it is on."""

    __slots__ = ("abandoned", "chunk", "position", "since")

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.position = -1
        self.since: float | None = None
        self.abandoned = False


class ThreadRun:
    """One run on the thread pool: at most ``workers`` of its chunks run at once.

    With ``task_timeout``, each item's start is recorded; :meth:`check_deadlines` (called
    by the pipeline) fails an item that overran with :class:`TaskTimeoutError`, abandons
    its thread (a thread cannot be stopped: it finishes the item and its result is
    dropped), gives the run its thread slot back and re-submits the chunk's other items.
    """

    def __init__(self, pool: ThreadPool, fn: Callable[[Any], Any],
                 sink: queue.SimpleQueue[Any], workers: int,
                 task_timeout: float | None = None) -> None:
        self._pool = pool
        self._fn = fn
        self._fn_name = getattr(fn, "__qualname__", None) or repr(fn)
        self._sink = sink
        self._workers = workers
        self._task_timeout = task_timeout
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: deque[Chunk] = deque()
        self._active: set[_Active] = set()
        self._closed = False

    def submit(self, chunk: Chunk) -> None:
        """Run ``chunk`` now if the run has a free thread, else when one frees up."""
        with self._lock:
            if self._running >= self._workers:
                self._waiting.append(chunk)
                return
            self._running += 1
        self._pool.submit(lambda: self._run(chunk))

    def hold_slot(self) -> None:
        """Count one item running elsewhere (the run's first, measured call, still on
        its own pool thread) as one of the run's ``workers`` until :meth:`release_slot`:
        ``workers=N`` means at most N items at once, that one included."""
        with self._lock:
            self._running += 1

    def release_slot(self) -> None:
        """The item counted by :meth:`hold_slot` has ended: its slot takes the next
        waiting chunk, or is free."""
        with self._lock:
            if self._closed or not self._waiting:
                self._running -= 1
                return
            chunk = self._waiting.popleft()
        self._pool.submit(lambda: self._run(chunk))

    def close(self) -> None:
        """Drop chunks that have not started; running ones finish and are ignored."""
        with self._lock:
            self._closed = True
            self._waiting.clear()

    def check_deadlines(self) -> float | None:
        """Fail items past ``task_timeout``; seconds until the next deadline (or None)."""
        timeout = self._task_timeout
        if timeout is None:
            return None
        now = time.monotonic()
        expired: list[_Active] = []
        with self._lock:
            for active in list(self._active):
                if active.since is not None and now - active.since >= timeout:
                    active.abandoned = True  # its runner drops the item when it returns
                    self._active.discard(active)
                    self._running -= 1
                    expired.append(active)
            upcoming = [a.since + timeout for a in self._active if a.since is not None]
            if self._running:  # an item that starts from now on overruns no sooner than this
                upcoming.append(now + timeout)
        for active in expired:
            chunk, position = active.chunk, active.position
            index = chunk.start + position
            error = TaskTimeoutError(
                f"{self._fn_name}(item #{index}) ran longer than task_timeout={timeout}s; "
                f"it was abandoned (a thread cannot be stopped: it finishes in the "
                f"background and its result is dropped). Other items were not affected.",
                index=index, seconds=timeout,
            )
            if not self._closed:
                self._sink.put(Batch(chunk.id, index, 1, now - (active.since or now), [None],
                                     {0: Failure(error)}))
            rest = chunk.items[position + 1:]
            if rest and not self._closed:
                self.submit(Chunk(chunk.id, index + 1, rest))
        return max(0.0, min(upcoming) - now) if upcoming else None

    def _run(self, chunk: Chunk) -> None:
        timed = self._task_timeout is not None
        while True:
            active = _Active(chunk)

            def emit(offset: int, values: list[Any], failures: dict[int, Failure] | None,
                     busy_s: float, chunk: Chunk = chunk) -> None:
                if not self._closed:
                    self._sink.put(Batch(chunk.id, chunk.start + offset, len(values), busy_s,
                                         values, failures))

            def started(end: int, active: _Active = active) -> None:
                with self._lock:
                    active.position = end - 1
                    active.since = time.monotonic()

            def finished(end: int, active: _Active = active) -> bool:
                # Keep the step's outcomes and go on?  Not for a closed run; not for an
                # item check_deadlines already reported as timed out (decided under the
                # same lock: an item is either finished in time or timed out, never both).
                if self._closed:
                    return False
                if not timed:
                    return True
                with self._lock:
                    if active.abandoned:
                        return False
                    active.since = None
                    return True

            # (the runner is not kept on ``active``: its ``finished`` holds ``active``, and
            # that cycle kept every finished chunk's items alive until the cyclic garbage
            # collector ran, which large bytes items never trigger: an endless imap of
            # 100 KB items grew by 1 GB per 25,000 results)
            runner = ItemRunner(self._fn, chunk.items, emit, catch=BaseException,
                                started=started if timed else None, finished=finished,
                                max_step=1 if timed else 1 << 16,
                                flush_interval=0.0 if timed else FLUSH_INTERVAL_S)
            with self._lock:
                self._active.add(active)
            if not self._closed:
                runner.run()
            del runner
            with self._lock:
                self._active.discard(active)
                if active.abandoned:
                    return  # check_deadlines gave this thread's slot back already
                if self._closed or not self._waiting:
                    self._running -= 1
                    return
                chunk = self._waiting.popleft()


_default: ProcessWide[ThreadPool] = ProcessWide(ThreadPool)


def default_thread_pool() -> ThreadPool:
    """The process-wide thread pool."""
    return _default.get()

"""The thread backend: chunks run on a shared, self-sizing set of daemon threads.

Threads are cheap to keep and slow-ish to start (~50-100 us each), so one process-wide
:class:`ThreadPool` keeps idle threads for ``IDLE_TIMEOUT_S`` and starts a new one only
when every thread is busy.  Each run limits its own concurrency (``workers``): it keeps
at most that many chunks on threads and holds the rest in its own queue, so a run asking
for 4 threads never uses 64 just because another run warmed them up.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .._chunks import Batch, Chunk, run_items
from .._errors import Failure

__all__ = ["ThreadPool", "ThreadRun", "default_thread_pool"]

IDLE_TIMEOUT_S = 30.0
"""An idle pool thread exits after this long without work."""

_names = itertools.count(1)


class ThreadPool:
    """Daemon threads that run submitted jobs; grows on demand, shrinks when idle."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self._idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` on an idle thread, or on a new one if none is idle."""
        with self._lock:
            self._jobs.put(job)
            if self._idle < self._jobs.qsize():
                self._threads += 1
                threading.Thread(target=self._serve, daemon=True,
                                 name=f"laneway-thread-{next(_names)}").start()

    def thread_count(self) -> int:
        """Threads alive in the pool (idle or busy)."""
        with self._lock:
            return self._threads

    def _serve(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                job: Callable[[], None] | None = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                job = None
            with self._lock:
                self._idle -= 1
                if job is None:
                    if self._jobs.qsize():
                        continue  # a job arrived as the wait timed out
                    self._threads -= 1
                    return
            job()
            del job


class ThreadRun:
    """One run on the thread pool: at most ``workers`` of its chunks run at once."""

    def __init__(self, pool: ThreadPool, fn: Callable[[Any], Any],
                 sink: queue.SimpleQueue[Any], workers: int) -> None:
        self._pool = pool
        self._fn = fn
        self._sink = sink
        self._workers = workers
        self._lock = threading.Lock()
        self._running = 0
        self._waiting: deque[Chunk] = deque()
        self._closed = False

    def submit(self, chunk: Chunk) -> None:
        """Run ``chunk`` now if the run has a free thread, else when one frees up."""
        with self._lock:
            if self._running >= self._workers:
                self._waiting.append(chunk)
                return
            self._running += 1
        self._pool.submit(lambda: self._run(chunk))

    def close(self) -> None:
        """Drop chunks that have not started; running ones finish and are ignored."""
        with self._lock:
            self._closed = True
            self._waiting.clear()

    def _run(self, chunk: Chunk) -> None:
        while True:
            def emit(offset: int, values: list[Any], failures: dict[int, Failure] | None,
                     busy_s: float, chunk: Chunk = chunk) -> None:
                if not self._closed:
                    self._sink.put(Batch(chunk.id, chunk.start + offset, len(values), busy_s,
                                         values, failures))

            if not self._closed:
                run_items(self._fn, chunk.items, emit)
            with self._lock:
                if self._closed or not self._waiting:
                    self._running -= 1
                    return
                chunk = self._waiting.popleft()


_default: ThreadPool | None = None
_default_lock = threading.Lock()


def default_thread_pool() -> ThreadPool:
    """The process-wide thread pool."""
    global _default
    with _default_lock:
        if _default is None:
            _default = ThreadPool()
        return _default


def _forget_after_fork() -> None:
    global _default, _default_lock
    _default = None
    _default_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

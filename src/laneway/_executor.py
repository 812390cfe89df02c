"""``laneway.Executor``: a ``concurrent.futures.Executor`` that routes every submission.

Each ``submit`` is routed on its own, like a task of ``run_concurrently``: a hint, a
coroutine function, or a measurement of the function (made by its first call here, or
cached from an earlier laneway run) decides; CPU-bound work goes to the process pool,
the rest to threads.  Unknown functions run on threads and are measured as they run,
so the next submission of the same function is routed by what was seen.

Behaviour follows the standard library wherever it specifies it: ``submit`` after
``shutdown`` raises ``RuntimeError``; ``shutdown(wait, cancel_futures)``; the futures are
``concurrent.futures.Future`` objects that work with ``wait`` and ``as_completed``;
``map`` yields in order and its ``timeout`` counts from the call.  Two differences, both
documented: ``map`` is lazy and bounded (it keeps ``2 x max_workers`` calls in flight
and never consumes an infinite iterable up front), and ``Future.cancel()`` on a call
*running* in a worker process stops it (the worker is killed and replaced).
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from concurrent.futures._base import (  # the states Future itself uses
    CANCELLED_AND_NOTIFIED,
    FINISHED,
)
from typing import Any, ParamSpec, TypeVar

from . import _context
from ._chunks import Batch, Chunk
from ._errors import describe_value
from ._hints import Kind, hinted_kind, is_coroutine_function
from ._options import MAX_WAIT_S, bounded_wait
from ._profile import Measurement, cached_measurement, remember_measurement
from ._router import UNKNOWN_THREADS_CAP, _cpus, estimate, measured_kind

__all__ = ["Executor"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_STOP = Batch(-1, -1, 0, 0.0)


class _Future(futures.Future[Any]):
    """A Future whose cancel() also stops a call queued or running in a worker process.

    A process call stays PENDING until its result arrives (the pool does not report
    when a worker starts it); ``cancel()`` then drops it from the pool's queue, or kills
    and replaces the worker running it.
    """

    _stop_process: Callable[[], None] | None = None

    def cancel(self) -> bool:
        stop = self._stop_process
        with self._condition:
            if stop is None or self._state in (CANCELLED_AND_NOTIFIED, FINISHED):
                return super().cancel()
            stop()
            self._state = CANCELLED_AND_NOTIFIED
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True


def _result_by(future: futures.Future[T], deadline: float | None) -> T:
    """``future.result()`` by ``deadline`` (monotonic; None: no limit)."""
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise futures.TimeoutError()
        try:
            return future.result(bounded_wait(left))
        except futures.TimeoutError:
            if left is None or left <= MAX_WAIT_S:
                raise


def _dispatch(executor_ref: weakref.ref[Executor], sink: queue.SimpleQueue[Batch]) -> None:
    """The thread that settles an executor's process futures as their outcomes arrive."""
    while True:
        batch = sink.get()
        executor = executor_ref()
        if batch is _STOP or executor is None or executor._deliver(batch):
            return
        del executor


def _check_map_numbers(timeout: object, chunksize: object) -> None:
    """``Executor.map``'s ``timeout`` (any number, as the standard library's: 0 or less
    means only results already there) and ``chunksize`` (accepted and ignored)."""
    if timeout is not None:
        msg = (f"map() argument timeout must be a number of seconds or None, got "
               f"{describe_value(timeout)}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(msg)
        if math.isnan(timeout):
            raise ValueError(msg)
    msg = (f"map() argument chunksize must be a positive int (it is accepted for "
           f"compatibility and ignored), got {describe_value(chunksize)}")
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(msg)
    if chunksize < 1:
        raise ValueError(msg)


class Executor(futures.Executor):
    """A ``concurrent.futures.Executor`` that routes each call where it runs best.

    Args:
        max_workers: caps the workers of every backend it uses (threads running at
            once; processes used); None: ``available_cpus()`` processes and
            ``min(32, cpus + 4)`` threads.

    Example:
        >>> import laneway
        >>> with laneway.Executor() as pool:
        ...     future = pool.submit(pow, 2, 10)
        ...     print(future.result(), list(pool.map(abs, [-1, -2])))
        1024 [1, 2]
    """

    def __init__(self, max_workers: int | None = None) -> None:
        _context.refuse_in_fork_server("Executor")
        if max_workers is not None and (isinstance(max_workers, bool)
                                        or not isinstance(max_workers, int)):
            msg = f"max_workers must be a positive int or None, got {describe_value(max_workers)}"
            raise TypeError(msg)
        if max_workers is not None and max_workers < 1:
            msg = f"max_workers must be a positive int or None, got {max_workers}"
            raise ValueError(msg)
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._shutdown = False
        self._ids = itertools.count()
        self._threads_running = 0
        self._thread_waiting: deque[tuple[_Future, Callable[[], Any], Callable[..., Any]]] = \
            deque()
        self._process_futures: dict[int, tuple[_Future, Any, str]] = {}  # id -> (f, run, name)
        self._sink: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._all: set[_Future] = set()

    # -- submission -----------------------------------------------------------------------

    def submit(self, fn: Callable[P, R], /, *args: P.args,
               **kwargs: P.kwargs) -> futures.Future[R]:
        """Schedule ``fn(*args, **kwargs)`` on the backend that suits it."""
        if not callable(fn):
            msg = f"submit() argument fn must be callable, got {describe_value(fn)}"
            raise TypeError(msg)
        return self._submit(fn, args, kwargs, after_shutdown=False)

    def _submit(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any],
                *, after_shutdown: bool) -> futures.Future[R]:
        future = _Future()
        with self._lock:
            if self._shutdown and not after_shutdown:
                msg = "cannot schedule new futures after shutdown"
                raise RuntimeError(msg)
            self._all.add(future)
        future.add_done_callback(self._forget)
        kind = self._kind(fn)
        if kind == "cpu" and _context.gil_enabled() and not _context.in_process_worker() \
                and self._submit_to_process(future, fn, args, kwargs):
            return future
        self._submit_to_thread(future, fn, args, kwargs, measure=kind is None)
        return future

    def _forget(self, future: futures.Future[Any]) -> None:
        with self._lock:
            self._all.discard(future)

    @staticmethod
    def _kind(fn: Callable[..., Any]) -> Kind | None:
        hinted = hinted_kind(fn)
        if hinted is not None:
            return hinted
        if is_coroutine_function(fn):
            return "async"
        cached = cached_measurement(fn)
        if cached is None:
            return None
        if measured_kind(cached) == "cpu" and \
                estimate(cached, None, _cpus()).backend != "process":
            return "io"  # too small to pay for a process: a thread runs it (no gain, no cost)
        return measured_kind(cached)

    def _thread_limit(self) -> int:
        return self._max_workers or min(UNKNOWN_THREADS_CAP, _cpus() + 4)

    def _submit_to_thread(self, future: _Future, fn: Callable[..., Any],
                          args: tuple[Any, ...], kwargs: dict[str, Any], *,
                          measure: bool) -> None:
        def call() -> Any:
            if is_coroutine_function(fn):
                import asyncio

                return asyncio.run(fn(*args, **kwargs))
            if not measure:
                return fn(*args, **kwargs)
            began, cpu_began = time.perf_counter(), time.thread_time()
            result = fn(*args, **kwargs)
            remember_measurement(fn, Measurement(1, time.perf_counter() - began,
                                                 time.thread_time() - cpu_began, None,
                                                 0, 0))
            return result

        with self._lock:
            if self._threads_running >= self._thread_limit():
                self._thread_waiting.append((future, call, fn))
                return
            self._threads_running += 1
        self._start_thread(future, call)

    def _start_thread(self, future: _Future, call: Callable[[], Any]) -> None:
        from ._backends.threads import default_thread_pool

        def job() -> None:
            nonlocal future, call
            while True:
                if future.set_running_or_notify_cancel():
                    try:
                        result = call()
                    except BaseException as exc:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
                with self._lock:
                    if not self._thread_waiting:
                        self._threads_running -= 1
                        return
                    future, call, _ = self._thread_waiting.popleft()

        default_thread_pool().submit(job)

    def _submit_to_process(self, future: _Future, fn: Callable[..., Any],
                           args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        from ._backends.process.launch import start_early

        start_early()
        from ._backends.process.pool import default_pool
        from ._concurrent import _CallWith

        workers = min(self._max_workers or _cpus(), _cpus())
        try:
            run = default_pool().open_run(_CallWith(fn), self._sink, workers, group=self,
                                          unit="call")
        except TypeError:
            return False  # cannot be pickled: threads instead
        ident = next(self._ids)
        name = getattr(fn, "__qualname__", None) or repr(fn)
        with self._lock:
            self._process_futures[ident] = (future, run, name)
            if self._dispatcher is None:
                # (the thread holds the executor weakly: dropping an executor that was
                # never shut down ends its thread too, as the stdlib's do)
                weakref.finalize(self, self._sink.put, _STOP)
                self._dispatcher = threading.Thread(target=_dispatch,
                                                    args=(weakref.ref(self), self._sink),
                                                    daemon=True,
                                                    name="laneway-executor")
                self._dispatcher.start()
        def stop() -> None:
            with self._lock:
                self._process_futures.pop(ident, None)
            run.close()

        future._stop_process = stop
        run.submit(Chunk(ident, ident, [(args, kwargs)]))
        return True

    def _idle_after_shutdown(self) -> bool:
        """Shut down with no process call left: the dispatcher thread can end."""
        with self._lock:
            if self._shutdown and not self._process_futures:
                self._dispatcher = None
                return True
            return False

    def _deliver(self, batch: Batch) -> bool:
        """Settle the future of a process call's outcome; True: the thread can end."""
        with self._lock:
            entry = self._process_futures.pop(batch.start, None)
        if entry is None:
            return False
        future, run, name = entry
        run.close()
        if future.done():  # cancelled meanwhile
            return self._idle_after_shutdown()
        batch.decode()
        assert batch.values is not None
        try:
            if batch.failures:
                future.set_exception(batch.failures[0].materialize(batch.start, name,
                                                                   unit="call"))
            else:
                future.set_result(batch.values[0])
        except futures.InvalidStateError:
            pass  # cancelled while its result was being decoded: the cancel wins
        return self._idle_after_shutdown()

    # -- map and shutdown -----------------------------------------------------------------

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """Lazy, bounded ``map``: results in order, at most ``2 x max_workers`` calls in
        flight; ``timeout`` counts from this call (``TimeoutError`` when exceeded)."""
        if not callable(fn):
            msg = f"map() argument fn must be callable, got {describe_value(fn)}"
            raise TypeError(msg)
        for position, iterable in enumerate(iterables, 1):
            if not isinstance(iterable, Iterable):
                msg = (f"map() argument #{position} after fn must be iterable, got "
                       f"{describe_value(iterable)}")
                raise TypeError(msg)
        _check_map_numbers(timeout, chunksize)
        deadline = None if timeout is None else time.monotonic() + timeout
        window = 2 * (self._max_workers or max(_cpus(), 1))
        calls = zip(*iterables, strict=False)
        pending: deque[futures.Future[T]] = deque()
        for arguments in itertools.islice(calls, window):  # the first window: now
            pending.append(self.submit(fn, *arguments))

        def more() -> None:
            # (the stdlib submits every call up front, so they run even if the executor
            # is shut down before the results are read: so do the calls of this map)
            for arguments in itertools.islice(calls, 1):
                pending.append(self._submit(fn, arguments, {}, after_shutdown=True))

        def results() -> Iterator[T]:
            try:
                while pending:
                    future = pending.popleft()
                    try:
                        value = _result_by(future, deadline)
                    except BaseException:
                        future.cancel()  # timed out on it (or interrupted): as the stdlib
                        raise
                    more()  # the window refills as soon as a result is taken
                    yield value
            finally:
                for future in pending:
                    future.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; optionally cancel what has not started; optionally wait."""
        with self._lock:
            self._shutdown = True
            waiting = list(self._thread_waiting) if cancel_futures else []
            if cancel_futures:
                self._thread_waiting.clear()
            outstanding = list(self._all)
        for future, _, _ in waiting:
            # (no thread will take it now: notify its waiters here, as a thread would
            # have, or futures.wait and as_completed never count it as done)
            if future.cancel():
                future.set_running_or_notify_cancel()
        if cancel_futures:
            with self._lock:
                queued = [f for f, run, _ in self._process_futures.values()
                          if not run.is_running()]
            for future in queued:
                future.cancel()
        if wait:
            futures.wait(outstanding)
        with self._lock:
            if self._dispatcher is not None and (wait or not self._process_futures):
                self._sink.put(_STOP)
                self._dispatcher = None


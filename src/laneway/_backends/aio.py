"""The async backend: a coroutine function's items run concurrently on one event loop.

One process-wide event loop runs on a daemon thread (``laneway-async``), started on first
use, so that the *sync* ``parallel_map``/``imap`` can run a coroutine function the way
async code would: every item in flight at once (up to the run's ``workers``), instead of
one ``asyncio.run`` per item on a pool thread.  The caller's side is the ordinary
pipeline: each chunk becomes one task on the loop, whose items run together, and the
chunk's outcomes reach the run's queue as one batch.

``task_timeout`` cancels an overrunning item (``asyncio.timeout``) and fails it with
:class:`TaskTimeoutError`; closing the run (a failure with ``errors="raise"``, the call's
``timeout``, Ctrl-C, leaving an ``imap`` early) cancels every item of it still running.
A run started from a coroutine that itself runs on laneway's loop gets a loop of its own
(the shared one is busy waiting for it), stopped when the run closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from .._chunks import Batch, Chunk
from .._errors import Failure, LanewayError, TaskTimeoutError
from .._lazy import ProcessWide

__all__ = ["IMPORTED", "AsyncRun", "EventLoopThread", "call_within", "default_loop",
           "hold_shared_loop", "on_a_laneway_loop"]


class EventLoopThread:
    """An event loop running forever on a daemon thread of its own."""

    def __init__(self, name: str = "laneway-async") -> None:
        self.loop = asyncio.new_event_loop()
        self._ended: list[Callable[[], None]] | None = []  # None once ended (under lock)
        self._ended_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=name)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        _this_thread.loop_thread = self
        try:
            self.loop.run_forever()
        finally:
            with self._ended_lock:
                listeners, self._ended = self._ended or [], None
            for listener in listeners:  # what was left on the loop will never run
                listener()
            self._cancel_leftovers()
            self.loop.close()

    def _cancel_leftovers(self) -> None:
        """Cancel the tasks a stopped loop left (their runs were told): let them end
        briefly, rather than be destroyed pending at exit."""
        for _ in range(3):  # (callbacks queued before the stop may start a few more)
            leftovers = asyncio.all_tasks(self.loop)
            if not leftovers:
                return
            for task in leftovers:
                task.cancel()
            with contextlib.suppress(BaseException):
                self.loop.run_until_complete(asyncio.wait(leftovers, timeout=1.0))

    def when_ended(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once the loop has stopped for good (a task may stop it:
        ``asyncio.get_running_loop().stop()``), or at once if it has."""
        with self._ended_lock:
            if self._ended is not None:
                self._ended.append(listener)
                return
        listener()

    def forget(self, listener: Callable[[], None]) -> None:
        """Drop a listener given to :meth:`when_ended` (its run is over)."""
        with self._ended_lock:
            if self._ended is not None and listener in self._ended:
                self._ended.remove(listener)

    def is_alive(self) -> bool:
        """Whether the loop still serves (its thread runs, and the loop was not stopped)."""
        with self._ended_lock:
            return self._ended is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop the loop (what is scheduled on it is dropped) and let the thread end."""
        self.loop.call_soon_threadsafe(self.loop.stop)


_this_thread = threading.local()

_default: ProcessWide[EventLoopThread] = ProcessWide(EventLoopThread)


def default_loop() -> EventLoopThread:
    """The process-wide loop thread, started on first use (and again if it ended)."""
    current = _default.get()
    if not current.is_alive():
        _default.take()
        current = _default.get()
    return current


def _loop_of_this_thread() -> EventLoopThread | None:
    loop_thread: EventLoopThread | None = getattr(_this_thread, "loop_thread", None)
    return loop_thread


def on_a_laneway_loop() -> bool:
    """Whether the calling thread runs one of laneway's event loops (a coroutine on it
    is making a sync call: that loop cannot serve the call while it waits for it)."""
    return _loop_of_this_thread() is not None


_blocked_lock = threading.Lock()
_blocked = 0  # sync calls made from the shared loop's thread that have not ended


def hold_shared_loop() -> Callable[[], None] | None:
    """If the caller is the shared loop's thread, note that the loop is blocked until
    the returned function is called: meanwhile every async run, even one started on
    another thread (a pool thread running an item of that call), gets a loop of its own."""
    global _blocked
    shared = _default.current()
    if shared is None or _loop_of_this_thread() is not shared:
        return None
    with _blocked_lock:
        _blocked += 1

    def release() -> None:
        global _blocked
        with _blocked_lock:
            _blocked -= 1

    return release


class AsyncRun:
    """One run's items on the loop: chunks as tasks, at most ``workers`` items at once."""

    def __init__(self, fn: Callable[[Any], Awaitable[Any]], sink: queue.SimpleQueue[Any],
                 workers: int, task_timeout: float | None = None,
                 name: str | None = None) -> None:
        self._fn = fn
        self._sink = sink
        self._task_timeout = task_timeout
        self._name = name or getattr(fn, "__qualname__", None) or repr(fn)
        # (called from a coroutine on a laneway loop: that loop waits for this run, so this
        # run gets a loop of its own, started at its first chunk)
        self._private: EventLoopThread | None = None
        self._shared = None if on_a_laneway_loop() or _blocked else default_loop()
        self._limit = asyncio.Semaphore(workers)  # (binds to the loop at first use)
        self._tasks: set[asyncio.Task[None]] = set()  # touched on the loop thread only
        self._closed = False
        self._unfinished: dict[int, Chunk] = {}  # submitted, no batch yet (under _lock)
        self._loop_ended = False
        self._lock = threading.Lock()
        self._watching = False

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._shared is not None:
            return self._shared.loop
        if self._private is None:
            self._private = EventLoopThread("laneway-async-nested")
        return self._private.loop

    def submit(self, chunk: Chunk) -> None:
        """Start the chunk's items on the loop; one batch arrives when all have ended
        (or, if the loop stops before, a batch of failures)."""
        loop = self._loop
        if not self._watching:  # (submit and close are called from the run's thread only)
            self._watching = True
            assert self._loop_thread is not None
            self._loop_thread.when_ended(self._on_loop_ended)
        with self._lock:
            if not self._loop_ended:
                self._unfinished[chunk.id] = chunk
                with contextlib.suppress(RuntimeError):  # closed: _on_loop_ended has it
                    loop.call_soon_threadsafe(self._start, chunk)
                return
        self._fail(chunk)

    @property
    def _loop_thread(self) -> EventLoopThread | None:
        return self._shared if self._shared is not None else self._private

    def _on_loop_ended(self) -> None:
        with self._lock:
            self._loop_ended = True
            chunks, self._unfinished = list(self._unfinished.values()), {}
        if not self._closed:
            for chunk in chunks:
                self._fail(chunk)

    def _fail(self, chunk: Chunk) -> None:
        error = LanewayError(
            f"{self._name}: laneway's event loop stopped before these items ended (did a "
            f"task call loop.stop()?); they were dropped with it")
        self._sink.put(Batch(chunk.id, chunk.start, len(chunk.items), 0.0,
                             [None] * len(chunk.items),
                             {k: Failure(error) for k in range(len(chunk.items))}))

    def close(self) -> None:
        """Cancel every item of this run still running or not yet started."""
        loop_thread = self._loop_thread
        if loop_thread is not None and self._watching:
            loop_thread.forget(self._on_loop_ended)
        if self._shared is None and self._private is None:
            self._closed = True  # nothing was started: no loop to stop
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs on it
            self._loop.call_soon_threadsafe(self._cancel_all)

    def check_deadlines(self) -> None:
        """Per-item deadlines are kept on the loop (``asyncio.timeout``)."""

    # -- on the loop thread -------------------------------------------------------------

    def _start(self, chunk: Chunk) -> None:
        with self._lock:  # (a loop that stopped failed its chunks: none may start now)
            if self._closed or chunk.id not in self._unfinished:
                return
        task = self._loop.create_task(self._run_chunk(chunk))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_all(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if self._private is not None:  # stopped once its cancelled tasks have ended
            self._loop.create_task(self._stop_after(tasks))

    async def _stop_after(self, tasks: list[asyncio.Task[None]]) -> None:
        if tasks:
            await asyncio.wait(tasks)
        assert self._private is not None
        self._private.stop()

    async def _run_chunk(self, chunk: Chunk) -> None:
        began = perf_counter()
        outcomes = await asyncio.gather(*(self._one(chunk.start + k, item)
                                          for k, item in enumerate(chunk.items)))
        values = [value for value, _ in outcomes]
        failures = {k: failure for k, (_, failure) in enumerate(outcomes)
                    if failure is not None}
        with self._lock:
            if self._unfinished.pop(chunk.id, None) is None:
                return  # (already failed: the loop is stopping)
        self._sink.put(Batch(chunk.id, chunk.start, len(values), perf_counter() - began,
                             values, failures or None))

    async def _one(self, index: int, item: Any) -> tuple[Any, Failure | None]:
        async with self._limit:
            try:
                if self._task_timeout is None:
                    return await self._fn(item), None
                return await call_within(self._fn, item, self._task_timeout, self._name,
                                         index), None
            except asyncio.CancelledError:
                if self._closed:  # the run is being cancelled: let the task end
                    raise
                # the coroutine cancelled itself (or something it awaited was): that
                # is this item's failure, not the end of the run
                return None, Failure(LanewayError(
                    f"{self._name}(item #{index}) was cancelled from inside the task "
                    f"(asyncio.CancelledError)"))
            except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the loop
                return None, Failure(exc)  # is shared, so only this item fails


async def call_within(fn: Callable[[Any], Awaitable[Any]], item: Any, seconds: float,
                      name: str, index: int) -> Any:
    """``await fn(item)``, cancelled after ``seconds`` (``TaskTimeoutError``).

    The coroutine's own ``TimeoutError`` stays its own.  A coroutine that catches the
    cancellation and ends anyway, late, overran all the same: ``TaskTimeoutError``, its
    value dropped."""
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline:
            value = await fn(item)
    except TimeoutError:
        if not deadline.expired():
            raise  # the coroutine's own TimeoutError: its failure
        how = "and was cancelled"
    else:
        if not deadline.expired():
            return value
        how = "; it was cancelled, but caught that and ended late (its result is dropped)"
    raise TaskTimeoutError(f"{name}(item #{index}) ran longer than task_timeout={seconds}s "
                           f"{how}", index=index, seconds=seconds)


IMPORTED = True
"""Set last: ``Run.segments`` of another thread may find this module in ``sys.modules``
while it is still being imported (``asyncio`` takes a while), and must then leave it
alone (no loop can exist yet)."""

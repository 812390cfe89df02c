"""``run_concurrently`` and ``task``: different calls at once, each on its own backend.

Every task is routed on its own: a hint, ``kind`` of a coroutine function, or a
measurement cached from an earlier run decides at once.  A function never seen before is
*probed*: its first call starts on a thread and is watched (its thread's CPU clock) for
``PROBE_S``; a call that has used almost no CPU by then is waiting, so the function's
other calls go to threads at once; one that computes goes on computing where it is, and
the function's other calls go to processes (GIL on) or threads (GIL off, or unpicklable).
A probe that finishes sooner is measured exactly.  No call ever runs twice.

All backends run at the same time and report to one queue; results come back in
argument order, with the same error policy as ``parallel_map``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from . import _context
from ._chunks import Batch, Chunk
from ._errors import Failure, describe_value
from ._hints import Kind, hinted_kind, is_coroutine_function
from ._options import ErrorPolicy, RunOptions, bounded_wait
from ._profile import Measurement, cached_measurement, remember_measurement, thread_cpu_clock
from ._router import _cpus as _router_cpus
from ._router import measured_kind

__all__ = ["Task", "run_concurrently", "task"]

P = ParamSpec("P")
R = TypeVar("R")

PROBE_S = 0.03
"""How long the first call of an unknown function is watched before its kind is read off
its CPU clock: a few tens of milliseconds tell waiting from computing."""

_CANCELLED = Batch(-1, -1, 0, 0.0)
"""Put on the queue by :meth:`_Concurrent.cancel`."""

WAITING_CPU_RATIO = 0.5
"""A probed call that used less CPU than this share of its time so far is waiting."""


@dataclass(frozen=True)
class Task(Generic[R]):
    """A call to make later: ``fn(*args, **kwargs)``.  Build it with :func:`task`."""

    fn: Callable[..., R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> R:
        """Make the call here and now."""
        return self.fn(*self.args, **self.kwargs)


def task(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
    """A call of ``fn(*args, **kwargs)`` for :func:`run_concurrently`.

    Example:
        >>> import laneway, math
        >>> laneway.run_concurrently(laneway.task(math.factorial, 5), lambda: "hi")
        [120, 'hi']
    """
    if not callable(fn):
        msg = f"task() argument fn must be callable, got {describe_value(fn)}"
        raise TypeError(msg)
    return Task(fn, args, dict(kwargs))


class _CallWith:
    """Process-side adapter: the item is ``(args, kwargs)``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))

    def describe_unsendable(self, item: tuple[tuple[Any, ...], dict[str, Any]]) -> str:
        """How the process pool names an item of this adapter that cannot be pickled."""
        args, kwargs = item
        what = ", ".join([*(describe_value(a) for a in args),
                          *(f"{k}={describe_value(v)}" for k, v in kwargs.items())])
        return (f"the arguments of a call of {self.__qualname__} ({what}) cannot be sent to "
                f"a process worker; hint the function @laneway.io_bound (threads need no "
                f"pickling), or pass picklable arguments")

    def __call__(self, item: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
        args, kwargs = item
        return self.fn(*args, **kwargs)


def _as_task(position: int, value: object, entry: str = "run_concurrently") -> Task[Any]:
    if isinstance(value, Task):
        return value
    if callable(value):
        return Task(value)
    msg = (f"{entry}() argument #{position} must be a callable or a "
           f"laneway.task(...), got {describe_value(value)}")
    raise TypeError(msg)


def _known_kind(fn: Callable[..., Any]) -> Kind | None:
    hinted = hinted_kind(fn)
    if hinted is not None:
        return hinted
    if is_coroutine_function(fn):
        return "async"
    cached = cached_measurement(fn)
    return measured_kind(cached) if cached is not None else None


class _Concurrent:
    """One run_concurrently call: dispatch, probes, the result queue, delivery."""

    def __init__(self, tasks: list[Task[Any]], options: RunOptions,
                 skip: frozenset[int] = frozenset()) -> None:
        _context.refuse_in_fork_server("run_concurrently")
        self.tasks = tasks
        self.options = options
        self.sink: queue.SimpleQueue[Batch] = queue.SimpleQueue()
        self.results: list[Any] = [None] * len(tasks)
        self.skip = skip  # positions someone else runs (arun_concurrently's coroutines)
        self.pending = set(range(len(tasks))) - skip
        self.process_runs: dict[int, Any] = {}  # id(fn) -> ProcessRun
        self.probes: dict[int, list[int]] = {}  # first call -> the calls waiting on it
        self.probe_ready: dict[int, threading.Event] = {}
        # first call -> (its thread's CPU clock or None, CPU then, wall time then)
        self.probe_clock: dict[int, tuple[Callable[[], float] | None, float, float]] = {}

    # -- dispatch -------------------------------------------------------------------------

    def start(self) -> None:
        groups: dict[int, list[int]] = {}
        for index, t in enumerate(self.tasks):
            if index not in self.skip:
                groups.setdefault(id(t.fn), []).append(index)
        for indices in groups.values():
            fn = self.tasks[indices[0]].fn
            kind = _known_kind(fn)
            if kind is None:
                self._probe(indices[0], indices[1:])
            else:
                self._route(kind, indices)

    def _route(self, kind: Kind, indices: list[int]) -> None:
        if not indices:
            return
        fn = self.tasks[indices[0]].fn
        if kind == "cpu" and _context.gil_enabled() and not _context.in_process_worker() \
                and self._send_to_processes(fn, indices):
            return
        for index in indices:
            self._on_thread(index)

    def _send_to_processes(self, fn: Callable[..., Any], indices: list[int]) -> bool:
        from ._backends.process.launch import start_early

        start_early()
        from ._backends.process.pool import default_pool

        try:
            run = self.process_runs.get(id(fn))
            if run is None:
                cpus = max(1, min(len(indices), _router_cpus()))
                run = default_pool().open_run(_CallWith(fn), self.sink, cpus, unit="task")
                self.process_runs[id(fn)] = run
        except TypeError:  # the function cannot be pickled: threads it is
            return False
        for index in indices:
            t = self.tasks[index]
            run.submit(Chunk(index, index, [(t.args, t.kwargs)]))
        return True

    def _on_thread(self, index: int, watch: threading.Event | None = None) -> None:
        from ._backends.threads import default_thread_pool

        t = self.tasks[index]
        call: Callable[[], Any] = t
        if is_coroutine_function(t.fn):
            def call() -> Any:
                import asyncio

                return asyncio.run(t.fn(*t.args, **t.kwargs))

        sink = self.sink

        def job() -> None:
            if watch is not None:
                clock = thread_cpu_clock(threading.get_ident())
                self.probe_clock[index] = (clock, clock() if clock else 0.0,
                                           time.perf_counter())
                watch.set()
            began, cpu_began = time.perf_counter(), time.thread_time()
            try:
                value, failures = call(), None
            except BaseException as exc:
                value, failures = None, {0: Failure(exc)}
            wall, cpu = time.perf_counter() - began, time.thread_time() - cpu_began
            sink.put(Batch(index, index, 1, wall, [value], failures))
            if watch is not None and failures is None:
                remember_measurement(t.fn, Measurement(1, wall, cpu, None, None, None))

        default_thread_pool().submit(job)

    def _probe(self, first: int, rest: list[int]) -> None:
        started = threading.Event()
        self.probe_ready[first] = started
        self.probes[first] = rest
        self._on_thread(first, watch=started)

    def _check_probes(self, finished: int | None = None) -> float | None:
        """Route the rest of probed groups whose kind is now known; seconds to the next
        look (None: no probe left)."""
        now = time.perf_counter()
        upcoming: list[float] = []
        for first, rest in list(self.probes.items()):
            if finished == first:
                del self.probes[first]
                cached = cached_measurement(self.tasks[first].fn)
                kind: Kind = measured_kind(cached) if cached is not None else "io"
                self._route(kind, rest)
                continue
            if not self.probe_ready[first].is_set():
                upcoming.append(PROBE_S)  # its thread has not started yet
                continue
            clock, cpu_then, began = self.probe_clock[first]
            if now - began < PROBE_S:
                upcoming.append(began + PROBE_S - now)
                continue
            if clock is None:  # cannot watch this platform's threads: wait for the call
                continue
            ratio = (clock() - cpu_then) / max(now - began, 1e-9)
            del self.probes[first]
            self._route("io" if ratio < WAITING_CPU_RATIO else "cpu", rest)
        if upcoming:
            return max(0.0, min(upcoming))
        return None

    # -- collection -----------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop from another thread: ``collect`` returns, process calls are stopped
        (a call running on a thread cannot be: it finishes and its result is dropped)."""
        self.sink.put(_CANCELLED)

    def collect(self) -> list[Any]:
        deadline = None if self.options.timeout is None else \
            time.monotonic() + self.options.timeout
        try:
            while self.pending:
                waits = [self._check_probes()]
                if deadline is not None:
                    waits.append(max(0.0, deadline - time.monotonic()))
                wait = min((w for w in waits if w is not None), default=None)
                try:
                    wait = bounded_wait(wait)
                    batch = self.sink.get(timeout=wait) if wait is not None else self.sink.get()
                except queue.Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        msg = (f"run_concurrently did not finish within "
                               f"timeout={self.options.timeout}s: {len(self.pending)} of "
                               f"{len(self.tasks)} tasks were still running and were "
                               f"cancelled")
                        raise TimeoutError(msg) from None
                    continue
                if batch is _CANCELLED:
                    break
                self._take(batch)
        finally:
            for run in self.process_runs.values():
                run.close()
        return self.results

    def _take(self, batch: Batch) -> None:
        batch.decode()
        index = batch.start
        if index not in self.pending:
            return
        self.pending.discard(index)
        if index in self.probes:
            self._check_probes(finished=index)
        assert batch.values is not None
        if batch.failures:
            name = getattr(self.tasks[index].fn, "__qualname__", None) or \
                repr(self.tasks[index].fn)
            exc = batch.failures[0].materialize(index, name, unit="task")
            if self.options.errors == "raise":
                raise exc
            self.results[index] = exc
        else:
            self.results[index] = batch.values[0]


def run_concurrently(*tasks: Task[Any] | Callable[[], Any], timeout: float | None = None,
                     errors: ErrorPolicy = "raise") -> list[Any]:
    """Run different calls at the same time, each on the backend that suits it.

    ``tasks`` are callables taking no arguments or :func:`task` objects.  Each is
    classified on its own (hint, coroutine function, an earlier measurement, or a probe
    of its first call) and CPU-bound, native, I/O-bound and coroutine calls run on
    processes and threads at once.  Results come back in argument order.

    Args:
        timeout: seconds for the whole call; overrunning raises ``TimeoutError`` and
            cancels what is left.
        errors: ``"raise"`` raises the first failure (its own type, with a note naming
            the task); ``"return"`` puts each failure's exception in its task's place.

    Example:
        >>> import laneway, time
        >>> laneway.run_concurrently(lambda: 1 + 1, laneway.task(time.sleep, 0.01))
        [2, None]
    """
    options = RunOptions.validate(timeout=timeout, errors=errors)
    normalized = [_as_task(position, value) for position, value in enumerate(tasks)]
    if not normalized:
        return []
    run = _Concurrent(normalized, options)
    run.start()
    return run.collect()

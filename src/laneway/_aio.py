"""``amap`` and ``arun_concurrently``: the entry points for async code.

Neither blocks the event loop.  Coroutine functions run *on the loop* itself, at most
``workers`` at a time (default ``ASYNC_CONCURRENCY``), pulling items lazily.  Anything
else is routed exactly as by ``parallel_map``/``run_concurrently`` (hints, profiling,
pools), with the caller's side of the pipeline on a helper thread that the loop awaits;
cancelling the awaiting task cancels the run.

Calling the *sync* ``parallel_map`` from inside a running loop works too (it is an
ordinary blocking call), but it blocks the loop until it returns: in async code use
``await amap(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar, overload

from ._api import _checked
from ._backends.aio import call_within
from ._concurrent import Task, _as_task, _Concurrent
from ._context import refuse_in_fork_server
from ._errors import Failure
from ._hints import Kind, is_coroutine_function
from ._options import BackendName, ErrorPolicy, Progress, RunOptions
from ._progress import make_reporter
from ._router import ASYNC_CONCURRENCY
from ._run import Run, total_of

__all__ = ["amap", "arun_concurrently"]

T = TypeVar("T")
R = TypeVar("R")


@overload
async def amap(fn: Callable[[T], Awaitable[R]], iterable: Iterable[T], *,
               kind: Kind | None = ..., backend: BackendName | None = ...,
               workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
               timeout: float | None = ..., task_timeout: float | None = ...,
               errors: ErrorPolicy = ..., progress: Progress = ...) -> list[R]: ...
@overload
async def amap(fn: Callable[[T], R], iterable: Iterable[T], *,
               kind: Kind | None = ..., backend: BackendName | None = ...,
               workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
               timeout: float | None = ..., task_timeout: float | None = ...,
               errors: ErrorPolicy = ..., progress: Progress = ...) -> list[R]: ...
async def amap(fn: Callable[[T], Any], iterable: Iterable[T], *, kind: Kind | None = None,
               backend: BackendName | None = None, workers: int | None = None,
               chunksize: int | None = None, ordered: bool = True,
               timeout: float | None = None, task_timeout: float | None = None,
               errors: ErrorPolicy = "raise", progress: Progress = False) -> list[Any]:
    """``parallel_map`` for async code: ``results = await laneway.amap(fn, items)``.

    A coroutine function runs on the running loop with at most ``workers`` calls in
    flight (default 1024); any other function is routed like ``parallel_map`` and
    awaited without blocking the loop.  Same keywords and error policy as
    ``parallel_map``.

    Example:
        >>> import asyncio, laneway
        >>> async def double(x):
        ...     await asyncio.sleep(0.01)
        ...     return 2 * x
        >>> asyncio.run(laneway.amap(double, range(3)))
        [0, 2, 4]
    """
    keywords = {"kind": kind, "backend": backend, "workers": workers,
                "chunksize": chunksize, "ordered": ordered, "timeout": timeout,
                "task_timeout": task_timeout, "errors": errors, "progress": progress}
    if is_coroutine_function(fn) and backend in (None, "async"):
        _, options = _checked("amap", fn, iterable, **{**keywords, "backend": None})
        return await _map_on_loop(fn, iterable, options)
    call, options = _checked("amap", fn, iterable, **keywords)  # bad arguments: raised here
    # The run is made on the helper thread: making it may start the process pool, which
    # takes a while, and the loop must not wait for that.
    runs: list[Run] = []
    cancelled = threading.Event()

    def collect() -> list[Any]:
        run = Run(call, iterable, options, total_of(iterable), fail_fast=True, entry="amap",
                  bounded=False)
        runs.append(run)
        if cancelled.is_set():
            run.cancel()
        results: list[Any] = []
        for segment in run.segments():
            results.extend(segment)
        return results

    def cancel() -> None:
        cancelled.set()
        for run in runs:
            run.cancel()

    return await _await_thread(collect, cancel)


async def _await_thread(work: Callable[[], T], cancel: Callable[[], None]) -> T:
    """Run blocking ``work`` on a helper thread and await it without blocking the loop;
    cancelling the awaiting task calls ``cancel`` (which must make ``work`` return)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, outcome: Any) -> None:
        if done.cancelled():
            return
        if ok:
            done.set_result(outcome)
        else:
            done.set_exception(outcome)

    def run() -> None:
        outcome: Any
        try:
            outcome, ok = work(), True
        except BaseException as exc:
            outcome, ok = exc, False
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting now
            loop.call_soon_threadsafe(settle, ok, outcome)

    threading.Thread(target=run, daemon=True, name="laneway-await").start()
    try:
        return await done
    except asyncio.CancelledError:
        cancel()
        raise


async def _map_on_loop(fn: Callable[[Any], Awaitable[Any]], iterable: Iterable[Any],
                       options: RunOptions) -> list[Any]:
    limit = options.workers or ASYNC_CONCURRENCY
    name = getattr(fn, "__qualname__", None) or repr(fn)
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    report = make_reporter(options.progress, total)
    results: dict[int, Any] = {}
    order: list[int] = []

    async def one(index: int, item: Any) -> tuple[int, Any, Failure | None]:
        try:
            if options.task_timeout is None:
                return index, await fn(item), None
            return index, await call_within(fn, item, options.task_timeout, name, index), None
        except Exception as exc:
            return index, None, Failure(exc)

    async def drive() -> None:
        items = iter(iterable)
        pending: set[asyncio.Task[tuple[int, Any, Failure | None]]] = set()
        next_index = 0
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < limit:
                    try:
                        item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    pending.add(asyncio.ensure_future(one(next_index, item)))
                    next_index += 1
                if not pending:
                    return
                finished, pending = await asyncio.wait(pending,
                                                       return_when=asyncio.FIRST_COMPLETED)
                for future in finished:
                    index, value, failure = future.result()
                    if failure is not None:
                        error = failure.materialize(index, name)
                        if options.errors == "raise":
                            raise error
                        value = error
                    results[index] = value
                    order.append(index)
                report(len(results))
        finally:
            for future in pending:
                future.cancel()
            report(None)

    if options.timeout is None:
        await drive()
    else:
        try:
            async with asyncio.timeout(options.timeout):
                await drive()
        except TimeoutError:
            msg = (f"{name} did not finish within timeout={options.timeout}s: "
                   f"{len(results)} items were delivered; the rest were cancelled")
            raise TimeoutError(msg) from None
    keys = sorted(results) if options.ordered else order
    return [results[k] for k in keys]


async def arun_concurrently(*tasks: Task[Any] | Callable[[], Any],
                            timeout: float | None = None,
                            errors: ErrorPolicy = "raise") -> list[Any]:
    """``run_concurrently`` for async code: coroutine tasks run on the running loop,
    the others are routed as usual and awaited without blocking it.

    Example:
        >>> import asyncio, laneway
        >>> async def hello():
        ...     return "hi"
        >>> asyncio.run(laneway.arun_concurrently(hello, lambda: 1 + 1))
        ['hi', 2]
    """
    refuse_in_fork_server("arun_concurrently")
    options = RunOptions.validate(timeout=timeout, errors=errors)
    normalized = [_as_task(position, value, "arun_concurrently")
                  for position, value in enumerate(tasks)]
    if not normalized:
        return []
    on_loop = [k for k, t in enumerate(normalized) if is_coroutine_function(t.fn)]
    # The other tasks: one run_concurrently, numbered as in this call, on a helper thread.
    others = _Concurrent(normalized, RunOptions.validate(errors=errors),
                         skip=frozenset(on_loop))

    def run_others() -> list[Any]:
        others.start()
        return others.collect()

    async def coroutine_task(k: int) -> Any:
        t = normalized[k]
        try:
            return await t.fn(*t.args, **t.kwargs)
        except Exception as exc:
            name = getattr(t.fn, "__qualname__", None) or repr(t.fn)
            error = Failure(exc).materialize(k, name, unit="task")
            if options.errors == "raise":
                raise error from exc.__cause__
            return error

    async def everything() -> list[Any]:
        jobs: dict[int, asyncio.Future[Any]] = {k: asyncio.ensure_future(coroutine_task(k))
                                                for k in on_loop}
        if len(on_loop) < len(normalized):
            jobs[-1] = asyncio.ensure_future(_await_thread(run_others, others.cancel))
        try:
            finished, _ = await asyncio.wait(jobs.values(),
                                             return_when=asyncio.FIRST_EXCEPTION)
            failed = [j for j in finished if not j.cancelled() and j.exception() is not None]
            if failed:  # errors="raise": the first failure stops every other task
                raise failed[0].exception()  # type: ignore[misc]
        finally:
            unfinished = [j for j in jobs.values() if not j.done()]
            for job in unfinished:
                job.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
        results = jobs[-1].result() if -1 in jobs else [None] * len(normalized)
        for k in on_loop:
            results[k] = jobs[k].result()
        return results

    if options.timeout is None:
        return await everything()
    try:
        async with asyncio.timeout(options.timeout):
            return await everything()
    except TimeoutError:
        msg = f"arun_concurrently did not finish within timeout={options.timeout}s"
        raise TimeoutError(msg) from None

"""The entry points: ``parallel_map`` and ``imap``.

Both validate every argument when called (``imap`` too, before its first ``next()``),
plan the run (see ``_router``), log the plan to the ``laneway`` logger at INFO, and
drive the shared pipeline (``_run.Run``).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar, overload

from ._context import refuse_in_fork_server
from ._errors import describe_value
from ._hints import Kind, hinted_kind, is_coroutine_function
from ._options import BackendName, ErrorPolicy, Progress, RunOptions, validate_callable
from ._run import Run, total_of

__all__ = ["imap", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")

class _AwaitEach:
    """Runs a coroutine function to completion for each item (picklable by value)."""

    def __init__(self, fn: Callable[[Any], Awaitable[Any]]) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        hinted = hinted_kind(fn)
        if hinted is not None:
            self.__laneway_kind__ = hinted
        self.__laneway_coroutine__ = fn

    def __call__(self, item: Any) -> Any:
        import asyncio  # costs ~60 ms to import: only when a coroutine function runs

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop in this thread
            return asyncio.run(_awaited(self.fn(item)))
        # A loop already runs in this thread (the serial backend called from async code):
        # asyncio.run() cannot nest, so this item gets a loop on a thread of its own.
        outcome: list[Any] = []

        def run_alone() -> None:
            try:
                outcome.append((True, asyncio.run(_awaited(self.fn(item)))))
            except BaseException as exc:
                outcome.append((False, exc))

        helper = threading.Thread(target=run_alone, name="laneway-await")
        helper.start()
        helper.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return value


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _checked(entry: str, fn: Callable[[Any], Any], iterable: Iterable[Any],
             **keywords: Any) -> tuple[Callable[[Any], Any], RunOptions]:
    """Validate a call's arguments (raising TypeError/ValueError that name them); the
    function to run (coroutine functions wrapped) and the options."""
    refuse_in_fork_server(entry)
    validate_callable(f"{entry}() argument fn", fn)
    if not isinstance(iterable, Iterable):
        msg = (f"{entry}() argument iterable must be iterable (a list, a generator...), "
               f"got {describe_value(iterable)}")
        raise TypeError(msg)
    options = RunOptions.validate(**keywords)
    return (_AwaitEach(fn) if is_coroutine_function(fn) else fn), options


def _prepare(entry: str, fn: Callable[[Any], Any], iterable: Iterable[Any], *,
             fail_fast: bool, bounded: bool = True, **keywords: Any) -> Run:
    call, options = _checked(entry, fn, iterable, **keywords)
    return Run(call, iterable, options, total_of(iterable), fail_fast=fail_fast, entry=entry,
               bounded=bounded)


@overload
def parallel_map(fn: Callable[[T], Awaitable[R]], iterable: Iterable[T], *,
                 kind: Kind | None = ..., backend: BackendName | None = ...,
                 workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
                 timeout: float | None = ..., task_timeout: float | None = ...,
                 errors: ErrorPolicy = ..., progress: Progress = ...) -> list[R]: ...
@overload
def parallel_map(fn: Callable[[T], R], iterable: Iterable[T], *,
                 kind: Kind | None = ..., backend: BackendName | None = ...,
                 workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
                 timeout: float | None = ..., task_timeout: float | None = ...,
                 errors: ErrorPolicy = ..., progress: Progress = ...) -> list[R]: ...
def parallel_map(fn: Callable[[T], Any], iterable: Iterable[T], *,
                 kind: Kind | None = None, backend: BackendName | None = None,
                 workers: int | None = None, chunksize: int | None = None,
                 ordered: bool = True, timeout: float | None = None,
                 task_timeout: float | None = None, errors: ErrorPolicy = "raise",
                 progress: Progress = False) -> list[Any]:
    """Call ``fn`` on every item, in parallel where that pays, and return the results.

    The backend is chosen from ``backend`` (forced), ``kind``, a hint decorator
    (``@laneway.cpu_bound``, ``@laneway.io_bound``) or the function's nature, and the
    choice is logged to the ``laneway`` logger with its reason.

    Args:
        fn: a callable taking one item (a coroutine function's results are awaited).
        iterable: the items; any iterable.
        kind: ``"cpu"``, ``"native"``, ``"io"`` or ``"async"``: overrides hints.
        backend: ``"serial"``, ``"thread"``, ``"process"``, ``"async"`` (coroutine
            functions, on laneway's event loop) or ``"dask"`` (the current Dask
            client, or ``LANEWAY_DASK_ADDRESS``): forces a backend
            (``LANEWAY_BACKEND`` does the same for the whole program).
        workers: most items running at once; None sizes the pool from the CPUs
            this process may use (:func:`laneway.available_cpus`).
        chunksize: items per chunk; None batches automatically (about 10 ms of work
            per chunk, measured as the run goes).
        ordered: results in input order (True) or in completion order (False).
        timeout: seconds for the whole call; overrunning raises ``TimeoutError``
            and cancels what is left.
        task_timeout: seconds for each item (see the reliability docs).
        errors: ``"raise"`` raises the first failure (its own type, the worker
            traceback attached, the item's index in a note) and cancels the rest;
            ``"return"`` puts each failure's exception in its item's place.
        progress: True for a progress bar, or a callable receiving ``(done, total)``.

    Returns:
        A list of results.

    Example:
        >>> import laneway
        >>> laneway.parallel_map(abs, [-1, 2, -3], backend="thread")
        [1, 2, 3]
    """
    run = _prepare("parallel_map", fn, iterable, fail_fast=True, bounded=False, kind=kind,
                   backend=backend,
                   workers=workers, chunksize=chunksize, ordered=ordered, timeout=timeout,
                   task_timeout=task_timeout, errors=errors, progress=progress)
    return run.collect()


@overload
def imap(fn: Callable[[T], Awaitable[R]], iterable: Iterable[T], *,
         kind: Kind | None = ..., backend: BackendName | None = ...,
         workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
         timeout: float | None = ..., task_timeout: float | None = ...,
         errors: ErrorPolicy = ..., progress: Progress = ...) -> Iterator[R]: ...
@overload
def imap(fn: Callable[[T], R], iterable: Iterable[T], *,
         kind: Kind | None = ..., backend: BackendName | None = ...,
         workers: int | None = ..., chunksize: int | None = ..., ordered: bool = ...,
         timeout: float | None = ..., task_timeout: float | None = ...,
         errors: ErrorPolicy = ..., progress: Progress = ...) -> Iterator[R]: ...
def imap(fn: Callable[[T], Any], iterable: Iterable[T], *,
         kind: Kind | None = None, backend: BackendName | None = None,
         workers: int | None = None, chunksize: int | None = None,
         ordered: bool = True, timeout: float | None = None,
         task_timeout: float | None = None, errors: ErrorPolicy = "raise",
         progress: Progress = False) -> Iterator[Any]:
    """Like :func:`parallel_map`, but lazy: yields results as they are ready.

    Items are pulled from ``iterable`` only as workers free up, so an infinite
    generator works and memory does not grow with the input.  Arguments are
    validated now, before the first ``next()``.  Breaking out of the loop (or
    dropping the iterator) cancels the work that is left.  With ``errors="raise"``
    and ``ordered=True`` a failure is raised when its turn comes, after the results
    before it.

    Example:
        >>> import itertools, laneway
        >>> squares = laneway.imap(lambda x: x * x, itertools.count(), backend="thread")
        >>> list(itertools.islice(squares, 4))
        [0, 1, 4, 9]
    """
    run = _prepare("imap", fn, iterable, fail_fast=False, kind=kind, backend=backend,
                   workers=workers, chunksize=chunksize, ordered=ordered, timeout=timeout,
                   task_timeout=task_timeout, errors=errors, progress=progress)
    return _flatten(run)


def _flatten(run: Run) -> Iterator[Any]:
    for segment in run.segments():
        yield from segment

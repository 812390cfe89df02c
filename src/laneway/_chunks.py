"""Chunks of items: what a backend runs, what it sends back, and how big a chunk should be.

Every backend calls the items of a chunk with the same function, :func:`call_each` (a
C loop that keeps what ran before a failure), through an :class:`ItemRunner` on pool
threads and in process workers, so the order of calls, the error capture and the result
batching are identical in the caller (serial), in a pool thread and in a process worker.
A chunk's outcomes come back as one or more :class:`Batch` objects (a slow chunk
reports as it goes, so a crash or a timeout loses as little as possible); the caller
counts outcomes, not chunks, so a backend may split a chunk (to re-send part of it, or
to fail one unsendable item) without telling anyone.
"""

from __future__ import annotations

import io
import math
import pickle
from collections.abc import Callable, Sequence
from time import perf_counter

from ._errors import Failure, RemoteTaskError

TYPE_CHECKING = False  # (no typing at run time: see process.worker)
if TYPE_CHECKING:
    from typing import Any, TypeAlias

__all__ = ["Batch", "Chunk", "ChunkSizer", "Emit", "ItemRunner", "call_each", "capture",
           "decode_failure", "encode_failure", "encode_outcomes", "item_error",
           "stop_iteration_error"]

FLUSH_INTERVAL_S = 0.002
"""A running chunk reports its finished outcomes at least this often.  Shorter means a
crash loses fewer finished results and imap yields sooner; longer means fewer messages."""

STEP_TARGET_S = 0.0005
"""Tiny items run in steps of about this long between clock reads, so reading the clock
costs nothing next to the items themselves."""


class Chunk:
    """Consecutive items of one run: ``items[k]`` is input item ``start + k``."""

    __slots__ = ("id", "items", "start")

    def __init__(self, id: int, start: int, items: list[Any]) -> None:
        self.id = id
        self.start = start
        self.items = items


class Batch:
    """Outcomes of consecutive items of one chunk, as they reach the caller.

    ``values[k]`` is the result of item ``start + k`` unless ``failures`` has the key
    ``k``.  A process worker's batch arrives as ``payload`` bytes and is decoded by the
    caller (:meth:`decode`), so the collector thread never unpickles user data.
    """

    __slots__ = ("busy_s", "chunk_id", "count", "failures", "payload", "start", "values")

    def __init__(self, chunk_id: int, start: int, count: int, busy_s: float,
                 values: list[Any] | None = None, failures: dict[int, Failure] | None = None,
                 payload: bytes | memoryview | None = None) -> None:
        self.chunk_id = chunk_id
        self.start = start
        self.count = count
        self.busy_s = busy_s
        self.values = values
        self.failures = failures
        self.payload = payload

    def decode(self) -> None:
        """Turn ``payload`` into ``values`` and ``failures`` (idempotent)."""
        if self.payload is None:
            return
        payload, self.payload = self.payload, None
        try:
            values, failures = pickle.loads(payload)
        except Exception as exc:  # a result type the caller cannot import, for one
            error = RemoteTaskError(
                f"the results of items #{self.start}-#{self.start + self.count - 1} "
                f"could not be unpickled in the caller: {type(exc).__name__}: {exc}"
            )
            self.values = [None] * self.count
            self.failures = {k: Failure(error) for k in range(self.count)}
            return
        self.values = values
        self.failures = (
            {k: decode_failure(blob) for k, blob in failures.items()} if failures else None
        )


Emit: TypeAlias = "Callable[[int, list[Any], dict[int, Failure] | None, float], None]"
"""``emit(offset, values, failures, busy_s)``: hand finished outcomes on."""


class ItemRunner:
    """Calls ``fn`` on each item of a chunk in order, reporting outcomes through ``emit``.

    Items run in steps: one item at first, doubling while a step takes less than
    ``STEP_TARGET_S``, so tiny items pay for the clock once per thousands of calls and slow
    items are reported one by one (``max_step=1`` keeps every step to one item, for per-item
    deadlines; ``flush_interval=0`` then hands in every outcome at once, so an abandoned
    item holds back no finished result). ``started(end)`` is called before a step that will
    run items up to position ``end`` (the process worker publishes it so the parent knows
    which items may have run if the worker dies), and ``finished(end)`` after it: if that
    returns False, the step's outcomes are dropped and the runner stops (a pool thread
    whose run was cancelled, or whose item was declared overdue and reported as such:
    the two decisions are made under one lock by the caller, so an item gets exactly one
    outcome). Exceptions of type ``catch`` become that item's :class:`Failure`; with
    ``remote`` the traceback is kept as text for the trip to another process. Outcomes not
    yet emitted can be pushed out at any time with :meth:`flush` (a worker told to stop
    does so).
    """

    def __init__(self, fn: Callable[[Any], Any], items: Sequence[Any], emit: Emit, *,
                 catch: type[BaseException] = Exception,
                 started: Callable[[int], None] | None = None,
                 finished: Callable[[int], bool] | None = None, remote: bool = False,
                 max_step: int = 1 << 16, flush_interval: float = FLUSH_INTERVAL_S,
                 step_target: float = STEP_TARGET_S, first_step: int = 1,
                 clock: Callable[[], float] = perf_counter) -> None:
        self._fn = fn
        self._items = items
        self._emit = emit
        self._catch = catch
        self._started = started
        self._finished = finished
        self._remote = remote
        self._max_step = max_step
        self._flush_interval = flush_interval
        self._step_target = step_target
        self._clock = clock
        self._offset = 0
        self._values: list[Any] = []
        self._failures: dict[int, Failure] | None = None
        self._flushed_at = clock()
        self._first_step = max(1, min(first_step, max_step))
        self.pace: float | None = None
        """Seconds per item of the run, once it ended (None before)."""

    def run(self) -> None:
        """Run every item (or until ``finished`` says stop), emitting as it goes.

        The first step holds ``first_step`` items (a caller that knows the pace of the
        function passes what fits in ``step_target``), later steps adapt."""
        items, fn, catch, n = self._items, self._fn, self._catch, len(self._items)
        pos = 0
        step = self._first_step
        began = self._clock()
        while pos < n:
            end = min(n, pos + step)
            if self._started is not None:
                self._started(end)
            step_began = self._clock()
            values = self._values
            kept = len(values)
            self._failures = call_each(fn, items[pos:end], values, self._failures, catch,
                                       self._capture)
            pos = end
            if self._finished is not None and not self._finished(end):
                del values[kept:]  # (flush drops their failures too)
                self.flush()
                return
            now = self._clock()
            took = now - step_began
            if took < self._step_target:
                step = min(step * 2, self._max_step)
            elif took > 4 * self._step_target and step > 1:
                step = max(1, step // 4)
            if pos >= n or now - self._flushed_at >= self._flush_interval:
                self.flush(now)
        if n:
            self.pace = (self._clock() - began) / n

    def flush(self, now: float | None = None) -> None:
        """Emit the outcomes gathered since the last emit (if any)."""
        now = self._clock() if now is None else now
        values, failures = self._values, self._failures
        if values:
            if failures:
                failures = {k: f for k, f in failures.items() if k < len(values)}
            self._values, self._failures = [], None
            self._emit(self._offset, values, failures or None, now - self._flushed_at)
            self._offset += len(values)
        self._flushed_at = now

    def _capture(self, exc: BaseException) -> Failure:
        return capture(exc, self._remote)


def call_each(fn: Callable[[Any], Any], items: Sequence[Any], values: list[Any],
              failures: dict[int, Failure] | None = None,
              catch: type[BaseException] = Exception,
              capture: Callable[[BaseException], Failure] = Failure,
              ) -> dict[int, Failure] | None:
    """Append ``fn(item)`` to ``values`` for every item, in a C loop.

    An item that raises ``catch`` gets ``None`` in ``values`` and its failure in
    ``failures`` under its position in ``values``; the items before it keep their results
    and the loop goes on after it.  Returns ``failures`` (created if needed).

    ``list.extend(map(...))`` takes a ``StopIteration`` raised by ``fn`` for the end of
    the items; the count tells the two apart: the item that raised it gets a
    ``RuntimeError`` (as a generator's would, PEP 479) and the loop goes on.  After a
    failure the loop resumes on the same iterator, so many failures cost no copies.
    """
    start, total = len(values), len(items)
    remaining = iter(items)
    while True:
        try:
            values.extend(map(fn, remaining))
            if len(values) - start >= total:
                return failures
            error: BaseException = stop_iteration_error(fn)  # map ended early: see above
        except catch as exc:  # what ran before it was kept by extend; map took the item
            error = exc
        if failures is None:
            failures = {}
        failures[len(values)] = capture(error)
        values.append(None)


def encode_outcomes(values: list[Any], failures: dict[int, Failure] | None) -> bytes:
    """A chunk's outcomes as bytes for the trip back from another process (a process
    worker's or a Dask worker's), read by :meth:`Batch.decode`.  A result that neither
    pickle nor cloudpickle can send fails its own item; the others travel."""
    blobs = {k: encode_failure(f) for k, f in failures.items()} if failures else None
    try:
        return pickle.dumps((values, blobs), pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    # Some result cannot travel with pickle: try cloudpickle for it, else fail that item.
    import cloudpickle

    blobs = dict(blobs or {})
    kept: list[Any] = []
    dumps: Callable[[Any], bytes] = _pickle_dumps
    for k, value in enumerate(values):
        if k in blobs:
            kept.append(None)
            continue
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            try:
                cloudpickle.dumps(value)
                dumps = cloudpickle.dumps
            except Exception:
                error = RemoteTaskError(
                    f"the result, a {type(value).__module__}.{type(value).__qualname__}, "
                    f"cannot be pickled to return it from the worker "
                    f"({type(exc).__name__}: {exc}); return plain data, or run the work "
                    f"with backend='thread'"
                )
                kept.append(None)
                blobs[k] = encode_failure(Failure(error))
                continue
        kept.append(value)
    return dumps((kept, blobs or None))


def _pickle_dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)


def stop_iteration_error(fn: Callable[[Any], Any]) -> RuntimeError:
    """What an item whose call raised ``StopIteration`` fails with."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return RuntimeError(f"{name} raised StopIteration (a next() without a default?); "
                        f"it would have ended the loop over the items")


def item_error(fn: Callable[[Any], Any], exc: BaseException) -> BaseException:
    """``exc`` as the failure of an item of ``fn`` called one by one: the same as in
    :func:`call_each`'s loop (a ``StopIteration`` is a ``RuntimeError`` there)."""
    if isinstance(exc, StopIteration):
        error = stop_iteration_error(fn)
        error.__cause__ = exc
        return error
    return exc


def capture(exc: BaseException, remote: bool) -> Failure:
    """An item's exception as a :class:`Failure`; ``remote`` keeps its traceback as text
    for the trip to another process."""
    if not remote:
        return Failure(exc)
    import traceback  # only when something failed: keeps worker start-up lean

    tb = "".join(traceback.format_exception(exc))
    exc.__traceback__ = None
    return Failure(exc, tb)


def encode_failure(failure: Failure) -> bytes:
    """Pickle a failure for the trip to the parent; never raises.

    A built-in exception, or one with its own ``__reduce__``, travels as pickle makes it;
    any other, at any depth, as its type, ``args`` and fields (:class:`_FailurePickler`),
    rebuilt without calling its ``__init__``; if that fails, every exception by state;
    one that cannot make the trip either way (unpicklable attributes) as a
    :class:`RemoteTaskError` carrying its type name and message.
    """
    exc = failure.exc
    blob = b""
    for every_by_state in (False, True):  # (then even those with a broken __reduce__)
        try:
            buffer = io.BytesIO()
            _FailurePickler(buffer, every_by_state).dump((exc, failure.remote_tb))
            blob = buffer.getvalue()
            pickle.loads(blob)
            break
        except Exception:
            blob = b""
    if not blob:
        kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
        stand_in = RemoteTaskError(
            f"{kind}: {exc} (the original exception could not be pickled, so it is "
            f"reported as RemoteTaskError)",
            remote_type=kind,
        )
        blob = pickle.dumps((stand_in, failure.remote_tb), pickle.HIGHEST_PROTOCOL)
    return blob


class _FailurePickler(pickle.Pickler):
    """Pickles exceptions, at any depth (the ones an ``ExceptionGroup`` holds, a
    ``__cause__`` kept as an attribute), by state where pickle's own way would call
    ``type(*args)`` again (see :func:`_pickles_itself`), or all of them: as its type,
    ``args``, attributes and the fields its built-in base keeps in C (``errno`` and
    ``filename`` of an ``OSError``, ``value`` of a ``StopIteration``, ...) or in
    ``__slots__``, rebuilt without calling its ``__init__`` (:func:`_rebuilt`).  Pickle's
    own way fails for ``def __init__(self, msg, code): super().__init__(msg)`` (``args``
    holds only ``msg``), and the task's exception would change type on the process
    backend."""

    def __init__(self, file: io.BytesIO, every_by_state: bool) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._every = every_by_state

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseException) and (
                self._every or not _pickles_itself(type(obj))):
            fields = {name: value for name in _field_names(type(obj))
                      # (None is their default: an OSError shows a set one)
                      if (value := getattr(obj, name, None)) is not None}
            return _rebuilt, (type(obj), obj.args, getattr(obj, "__dict__", None) or {},
                              fields)
        return NotImplemented


def _pickles_itself(cls: type[BaseException]) -> bool:
    """A built-in exception, or one whose class says how to pickle it (``__reduce__``).

    Any other travels by state (:class:`_FailurePickler`): pickle's own way calls
    ``type(*args)`` again, which raises for an ``__init__`` with arguments of its own,
    or worse, runs it on the wrong ones (``super().__init__(f"no plugin {name}")``
    came back as "no plugin no plugin foo")."""
    return cls.__module__ == "builtins" or any(
        "__reduce__" in vars(base) or "__reduce_ex__" in vars(base)
        for base in cls.__mro__ if base.__module__ != "builtins")


def _field_names(cls: type[BaseException]) -> list[str]:
    """The instance fields of ``cls`` that ``__dict__`` does not hold: those of its
    built-in bases (C members and properties) and its ``__slots__``."""
    import copyreg

    names: list[str] = list(copyreg._slotnames(cls))  # type: ignore[attr-defined]
    for base in cls.__mro__:
        if base.__module__ != "builtins":
            continue
        for name, attribute in vars(base).items():
            if not name.startswith("_") and name != "args" and hasattr(attribute, "__set__"):
                names.append(name)
    return names


def _rebuilt(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any],
             fields: dict[str, Any]) -> BaseException:
    exc = cls.__new__(cls, *args)
    exc.args = args
    for name, value in fields.items():
        try:
            setattr(exc, name, value)
        except (AttributeError, TypeError, ValueError):
            continue  # (read-only, or refused: the rest of the exception still arrives)
    exc.__dict__.update(state)
    return exc


def decode_failure(blob: bytes) -> Failure:
    """The inverse of :func:`encode_failure`."""
    exc, tb = pickle.loads(blob)
    return Failure(exc, tb)


class ChunkSizer:
    """Picks the size of the next chunk so that a chunk takes about ``target_s``.

    With ``fixed`` (the user's ``chunksize``) every chunk has that size.  Otherwise the
    first chunks hold one item; each observed batch updates an estimate of seconds per
    item, and the size grows at most ``GROWTH``-fold per chunk towards
    ``target_s / seconds_per_item``.  With a known total the size is capped so that
    every worker gets at least ``SPREAD`` chunks, which keeps the end of a run balanced,
    unless the whole run is known to be tiny (``ONE_CHUNK_S``): then it is one chunk.
    """

    GROWTH = 8
    SPREAD = 4
    UNSIZED_CAP = 4096
    ONE_CHUNK_S = 2e-4
    """A run whose whole work is estimated below this goes out as one chunk: splitting
    it between workers would save less time than the extra message costs."""

    def __init__(self, *, fixed: int | None, workers: int, total: int | None,
                 target_s: float, per_item_s: float | None = None) -> None:
        self._fixed = fixed
        self._target_s = target_s
        self._per_item_s: float | None = per_item_s
        self._size = 1 if per_item_s is None else self.GROWTH
        if total is None:
            self._cap = self.UNSIZED_CAP
        elif workers == 1 or (per_item_s is not None and total * per_item_s <= self.ONE_CHUNK_S):
            self._cap = max(1, total)  # (one worker, or tiny: there is nothing to balance)
        else:
            self._cap = max(1, math.ceil(total / (workers * self.SPREAD)))

    def next_size(self) -> int:
        """The number of items to put in the next chunk."""
        if self._fixed is not None:
            return self._fixed
        if self._per_item_s is not None:
            wanted = self._target_s / max(self._per_item_s, 1e-9)
            self._size = max(1, min(self._cap, int(wanted), self._size * self.GROWTH))
        return self._size

    @property
    def per_item_s(self) -> float | None:
        """The current estimate of seconds per item (None before any observation)."""
        return self._per_item_s

    def observe(self, count: int, busy_s: float) -> None:
        """Record that ``count`` items took ``busy_s`` seconds of a worker's time."""
        if count <= 0:
            return
        per_item = busy_s / count
        if self._per_item_s is None:
            self._per_item_s = per_item
        else:
            self._per_item_s = 0.7 * self._per_item_s + 0.3 * per_item

"""laneway's process pool, parent side: warm workers, one pipe each, one collector thread.

Data flow (one pool, shared by every run in the process)::

    caller thread (a run)                      collector thread
    ---------------------                      ----------------
    ProcessRun.submit(chunk)                   poll(wakeup, pipes, sentinels)
      pickle items -> _Job (frame bytes)         pipe ready:  header -> Batch -> run's sink
      pool._enqueue(job) --+                     sentinel:    drain pipe, fail/requeue
                           v                     then _assign(): pending jobs -> free workers
                  pending deque --_assign()--> worker pipe (at most 2 jobs per worker)

* **One pipe per worker.**  The parent always knows which jobs a worker holds
  (``_Worker.inflight``, FIFO) and, through the shared ``progress`` array, which items of
  the running job may have started.  A dead worker therefore fails only what it may
  have run, and its other items go to another worker: nothing is lost or run twice.
* **At most two jobs per worker**: the running one and the next (prefetched only when
  small, so a send never blocks for long).  Everything else waits in ``pending``, where
  a cancelled run's jobs are simply dropped.
* **Caller-side pickling.**  Items are pickled in the caller's thread, so a pickling
  error surfaces in the caller and names the item; results are unpickled there too.
  The collector only routes bytes; it never runs user code.
* **Warm and reused.**  Workers start lazily (forkserver on Linux, spawn elsewhere,
  never plain fork of a threaded parent), serve every later run, and stop after
  ``IDLE_TIMEOUT_S`` without work.  The pool shuts down at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import logging
import multiprocessing
import multiprocessing.process
import pickle
import queue
import select
import threading
import time
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import Any

from ..._chunks import Batch, Chunk
from ..._cpus import available_cpus
from ..._errors import (
    Failure,
    LanewayError,
    TaskTimeoutError,
    WorkerCrashedError,
    describe_value,
    exit_description,
)
from ..._lazy import ProcessWide
from ..._options import bounded_wait
from . import byvalue
from . import messages as m
from . import worker as worker_module
from .launch import await_server_exit, start_early, start_method
from .shared_slots import SharedSlots

__all__ = ["ProcessPool", "ProcessRun", "default_pool", "start_method"]

IDLE_TIMEOUT_S = 300.0
"""A worker with nothing to do for this long is stopped; the next run starts a new one.
Long enough that interactive use stays warm, short enough not to hold memory forever."""

PREFETCH_MAX_BYTES = 64 * 1024
"""A job is queued on a busy worker only if its frame is this small: a small frame fits
in the pipe's buffer, so sending it never waits for the worker to finish its job."""

MAX_CRASHES_IN_A_ROW = 5
"""A run whose items kill this many workers in a row, with no success in between, is
stopped: its remaining items fail instead of killing workers forever."""

STOP_GRACE_S = 1.0
"""A worker asked to stop (SIGTERM) because its item overran ``task_timeout`` gets this
long to hand in its finished results and exit before it is killed (SIGKILL)."""

MAX_STARTUP_DEATHS = 3
"""Workers that die as they start, this many in a row, stop the pool from respawning
and fail the queued work with an explanation (typically a script without a
``if __name__ == "__main__":`` guard, whose top level runs again in every worker)."""

SERVER_EXIT_WAIT_S = 0.5
"""How long a failed worker start waits for a dying fork server to end before it asks
again (multiprocessing starts a new server only once the old one has ended; its pipes
close a moment before).  Spent under the pool's lock, so kept short."""

CANCEL_GRACE_S = 0.2
"""After a run is cancelled, a worker still busy with its items this long is killed
(and replaced), so cancellation is prompt even for long items."""

_seq = itertools.count(1)
logger = logging.getLogger("laneway")


_by_reference: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def dumps_function(fn: Callable[..., Any]) -> bytes:
    """Pickle ``fn`` for a worker (:func:`pickle_for_worker`), with an error that says
    what to do instead.

    A module-level function of an importable module pickles to a mere reference, the
    same bytes every time: that result is cached.  Anything pickled by value (lambdas,
    closures, ``__main__`` functions, partials) is pickled afresh for every run, so
    the worker always sees the values its globals and closure cells have *now*.
    """
    cached = _by_reference.get(fn) if _is_plain_function(fn) else None
    if cached is not None:
        return cached
    try:
        payload = pickle_for_worker(fn)
    except Exception as exc:
        msg = (f"cannot send {describe_value(fn)} to a process worker: "
               f"{type(exc).__name__}: {exc}. Run it with backend='thread' (no pickling "
               f"needed), or make what it uses picklable")
        raise TypeError(msg) from exc
    if _is_plain_function(fn) and fn.__module__ != "__main__":
        try:
            by_reference = pickle.dumps(fn, pickle.HIGHEST_PROTOCOL) == payload
        except Exception:
            by_reference = False
        if by_reference:
            _by_reference[fn] = payload
    return payload


def _is_plain_function(fn: object) -> bool:
    return isinstance(fn, types.FunctionType | types.BuiltinFunctionType)


def pickle_for_worker(obj: Any) -> bytes:
    """``obj`` pickled for a worker: functions that cannot go by reference go by value,
    with the standard pickle where :mod:`byvalue` can (no cloudpickle to import, here
    or in the worker), else with cloudpickle."""
    try:
        return byvalue.dumps(obj)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickle_for_worker(obj)


def _always(error: BaseException) -> Callable[[int], BaseException]:
    return lambda _: error


@dataclass(eq=False, slots=True)
class _Job:
    run: ProcessRun
    chunk_id: int
    start: int
    items: list[Any]
    frame: bytes | memoryview
    flags: int
    seq: int
    delivered: int = 0


def _make_job(run: ProcessRun, chunk_id: int, start: int, items: list[Any],
              isolated: bool = False) -> _Job:
    seq = next(_seq)
    flags = (m.ISOLATED if isolated else 0) | (m.TIMED if run.task_timeout else 0)
    buf = io.BytesIO()
    buf.write(m.CHUNK_HEADER.pack(m.CHUNK, seq, flags, run.key))
    body = [_dumps(item) for item in items] if isolated else items
    try:
        pickle.dump(body, buf, pickle.HIGHEST_PROTOCOL)
    except Exception:
        buf.seek(m.CHUNK_HEADER.size)
        buf.truncate()
        buf.write(pickle_for_worker(body))
    return _Job(run, chunk_id, start, items, buf.getbuffer(), flags, seq)


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    progress: SharedSlots
    inflight: deque[_Job] = field(default_factory=deque)
    functions: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    idle_since: float = field(default_factory=time.monotonic)
    busy_since: float = 0.0
    reported: bool = False  # has it sent a frame yet?
    killed: bool = False  # stopped by the pool itself (not a death of its own)
    stopping: tuple[int, int] | None = None  # (job seq, position) of an overrunning item
    kill_at: float | None = None


_Watched = dict[int, tuple[bool, _Worker]]
"""The collector's poll set: file descriptor -> (is it a sentinel, its worker)."""


class ProcessRun:
    """One run's use of the pool: its function, its result queue, its worker limit.

    Runs that share a ``group`` share the worker limit: together they occupy at most
    ``workers`` workers (an Executor's calls, each a run of its own, obey its
    ``max_workers`` this way).  By default a run is a group of its own.
    """

    def __init__(self, pool: ProcessPool, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any],
                 workers: int, task_timeout: float | None = None,
                 group: object | None = None, unit: str = "item") -> None:
        self.pool = pool
        self.unit = unit
        self.group = self if group is None else group
        self.task_timeout = task_timeout
        self.fn = fn
        self.fn_name = getattr(fn, "__qualname__", None) or describe_value(fn)
        self.function_frame = dumps_function(fn)
        self.key = m.function_key(self.function_frame)
        self.function_frame = m.FUNCTION_HEADER.pack(m.FUNCTION, self.key) + self.function_frame
        self.sink = sink
        self.max_workers = workers
        self.forget_demand: weakref.finalize[Any, Any] | None = None
        self.closed = False
        self.cancelled_at: float | None = None
        self.crashes_in_a_row = 0
        self.broken: LanewayError | None = None

    def submit(self, chunk: Chunk) -> None:
        """Queue a chunk; unsendable items fail alone, in this (the caller's) thread."""
        try:
            jobs = [_make_job(self, chunk.id, chunk.start, chunk.items)]
        except Exception:
            jobs = self._split_unsendable(chunk)
        self.pool.enqueue(self, jobs)

    def _split_unsendable(self, chunk: Chunk) -> list[_Job]:
        jobs: list[_Job] = []
        run_start = 0
        for k, item in enumerate(chunk.items):
            try:
                _dumps(item)
                continue
            except Exception as exc:
                describe = getattr(self.fn, "describe_unsendable", None)
                error = TypeError(
                    f"{describe(item)}: {type(exc).__name__}: {exc}" if describe else
                    f"cannot send item #{chunk.start + k}, {describe_value(item)}, to a "
                    f"process worker: {type(exc).__name__}: {exc}. Run it with "
                    f"backend='thread' (no pickling needed), or pass picklable data"
                )
            if k > run_start:
                jobs.append(_make_job(self, chunk.id, chunk.start + run_start,
                                      chunk.items[run_start:k]))
            self.deliver_failures(chunk.id, chunk.start + k, 1, _always(error))
            run_start = k + 1
        if run_start < len(chunk.items):
            jobs.append(_make_job(self, chunk.id, chunk.start + run_start,
                                  chunk.items[run_start:]))
        return jobs

    def deliver_failures(self, chunk_id: int, start: int, count: int,
                         make_error: Callable[[int], BaseException]) -> None:
        """Give each of ``count`` items from ``start`` its own ``make_error(index)``."""
        if count > 0 and not self.closed:
            self.sink.put(Batch(chunk_id, start, count, 0.0, [None] * count,
                                {k: Failure(make_error(start + k)) for k in range(count)}))

    def stopped_error(self, index: int) -> LanewayError:
        """The error of an item not run because the run was stopped (``broken``)."""
        return LanewayError(f"item #{index} was not run: {self.broken}")

    def is_running(self) -> bool:
        """Whether a worker has started one of this run's jobs."""
        return self.pool.running(self)

    def close(self) -> None:
        """Drop this run's queued jobs; workers still busy with it are stopped soon."""
        self.pool.cancel(self)

    def check_deadlines(self) -> None:
        """Per-item deadlines are kept by the pool's collector thread, not the caller."""

    def hold_slot(self) -> None:
        """Count one item running elsewhere (the run's first, measured call, on a thread
        of this process) as one of the run's workers until :meth:`release_slot`."""
        self.pool.change_limit(self, -1)

    def release_slot(self) -> None:
        """The item counted by :meth:`hold_slot` has ended: one more worker may take
        this run's jobs."""
        self.pool.change_limit(self, +1)


class ProcessPool:
    """A pool of warm worker processes shared by every run (see the module docstring)."""

    def __init__(self, context: BaseContext | None = None,
                 idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self._ctx = context or multiprocessing.get_context(start_method())
        if self._ctx.get_start_method() == "forkserver":
            start_early()
        self._idle_timeout = idle_timeout
        self._lock = threading.RLock()
        self._workers: list[_Worker] = []
        self._pending: deque[_Job] = deque()
        self._target = 0
        # worker demand of the runs open now: id(group) -> [its worker limit, open runs];
        # runs closed (or dropped unclosed) are queued in _gone by a finalizer (no lock:
        # it may fire during garbage collection) and settled under the lock
        self._demand: dict[int, list[int]] = {}
        self._gone: list[int] = []
        self._collector: threading.Thread | None = None
        self._closed = False
        self._wakeup_r, self._wakeup_w = self._ctx.Pipe(duplex=False)
        self._alive_r, self._alive_w = self._ctx.Pipe(duplex=False)
        self._cancelled: list[ProcessRun] = []
        self._startup_deaths = 0
        self._generation = 0  # bumped whenever _workers changes: the collector re-polls
        self._outbox: list[tuple[queue.SimpleQueue[Any], Batch]] = []

    # -- the run-facing side ------------------------------------------------------------

    def open_run(self, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any],
                 workers: int, task_timeout: float | None = None,
                 group: object | None = None, unit: str = "item") -> ProcessRun:
        """Prepare a run (pickles ``fn`` once) and make sure ``workers`` workers exist;
        runs opened with the same ``group`` share that worker limit.  ``unit`` is what
        messages call one of its items ("call" for an Executor's, "task" for
        run_concurrently's)."""
        run = ProcessRun(self, fn, sink, workers, task_timeout, group, unit)
        with self._lock:
            if self._closed:
                msg = "the laneway process pool has been shut down"
                raise RuntimeError(msg)
            self._target = max(self._target, self._demand_with_locked(run))
            self._startup_deaths = 0
            self._staff_locked()
        return run

    def _staff_locked(self) -> None:
        """Start workers up to the target, and the collector if it is not running."""
        while len(self._workers) < self._target:
            self._spawn_locked()
        if self._collector is None:
            self._collector = threading.Thread(target=self._collect, daemon=True,
                                               name="laneway-collector")
            self._collector.start()

    def enqueue(self, run: ProcessRun, jobs: list[_Job]) -> None:
        """Queue jobs and hand out whatever free workers can take."""
        with self._lock:
            if run.broken is not None:
                for job in jobs:
                    run.deliver_failures(job.chunk_id, job.start, len(job.items),
                                         run.stopped_error)
                return
            self._pending.extend(jobs)
            self._assign_locked()

    def _demand_with_locked(self, run: ProcessRun) -> int:
        """Count ``run`` as open; the workers the open runs ask for together.

        One run gets the workers it asks for.  Runs open at the same time (two threads'
        calls with ``workers=1`` each, two Executors) each get theirs too, as separate
        pools would give them, up to the machine's CPUs (or the largest single request):
        beyond that they share, without oversubscribing the machine."""
        self._settle_gone_locked()
        key = id(run.group)
        entry = self._demand.setdefault(key, [0, 0])
        entry[0] = max(entry[0], run.max_workers)
        entry[1] += 1
        run.forget_demand = weakref.finalize(run, self._gone.append, key)
        wanted = sum(limit for limit, _ in self._demand.values())
        if wanted <= max(self._target, run.max_workers):
            return run.max_workers
        return min(wanted, max(available_cpus(), run.max_workers))

    def _settle_gone_locked(self) -> None:
        while self._gone:
            key = self._gone.pop()
            entry = self._demand.get(key)
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._demand[key]

    def change_limit(self, run: ProcessRun, delta: int) -> None:
        """Let ``run``'s group occupy ``delta`` more (or fewer) workers from now on."""
        with self._lock:
            run.max_workers += delta
            if delta > 0 and self._pending and not self._closed:
                # (idle workers may have been stopped while the slot was held: a first
                # item that ran past the idle timeout left the pool without any)
                self._target = max(self._target, run.max_workers)
                self._staff_locked()
            self._assign_locked()

    def cancel(self, run: ProcessRun) -> None:
        """Forget a run: drop its queued jobs, ignore its results, stop its busy workers."""
        with self._lock:
            if run.closed:
                return
            run.closed = True
            if run.forget_demand is not None:
                run.forget_demand()  # (once: the finalizer does not fire again)
            self._settle_gone_locked()
            self._pending = deque(j for j in self._pending if j.run is not run)
            for w in self._workers:
                for position, job in enumerate(w.inflight):
                    if job.run is run and w.progress[m.PROGRESS_SEQ] != job.seq \
                            and position < len(m.PROGRESS_SKIP):
                        # sent but not started: the worker hands it back unrun
                        w.progress[m.PROGRESS_SKIP[position]] = job.seq
            if any(j.run is run for w in self._workers for j in w.inflight):
                run.cancelled_at = time.monotonic()
                self._cancelled.append(run)
                self._wake()

    def running(self, run: ProcessRun) -> bool:
        """Whether a worker is running one of ``run``'s jobs right now."""
        with self._lock:
            return any(w.inflight and w.inflight[0].run is run
                       and w.progress[m.PROGRESS_SEQ] == w.inflight[0].seq
                       for w in self._workers)

    def size(self) -> int:
        """Number of live workers."""
        with self._lock:
            return len(self._workers)

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        with self._lock:
            return [w.process.pid for w in self._workers if w.process.pid is not None]

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop every worker and the collector; queued jobs are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending.clear()
            collector = self._collector
            workers = list(self._workers)
            self._wake()
        if collector is not None and collector is not threading.current_thread():
            collector.join(timeout)
        else:
            for w in workers:
                w.conn.close()
        for w in workers:
            if w.inflight:  # nobody will collect its results: do not wait for them
                w.process.kill()
        deadline = time.monotonic() + timeout
        for w in workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(1.0)
            w.progress.close()
        self._alive_w.close()

    # -- workers --------------------------------------------------------------------------

    def abandon_in_forked_child(self) -> None:
        """In a child forked from this process (``os.fork``): drop the child's copies of
        the pool's pipes, leaving the workers to the parent.  Kept, the copy of the pipe
        the workers watch would keep them alive after the parent died, for as long as
        the child lives; and multiprocessing would try to join them at the child's
        exit ("can only join a child process")."""
        children = getattr(multiprocessing.process, "_children", None)
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.close()
            worker.progress.close()
            if isinstance(children, set):
                children.discard(worker.process)
        for end in (self._wakeup_r, self._wakeup_w, self._alive_r, self._alive_w):
            with contextlib.suppress(OSError):
                end.close()

    def _spawn_locked(self) -> None:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        progress = SharedSlots(m.PROGRESS_SLOTS)
        native_threads = max(1, available_cpus() // max(1, self._target))
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_module.main,
            args=(child_end, self._alive_r, progress, native_threads),
            name="laneway-worker", daemon=False,
        )
        try:
            try:
                process.start()
            except (EOFError, ConnectionError):
                # The fork server died as it was asked for a worker (the program's
                # script, which it runs first, may end its process): multiprocessing
                # starts a new one at the next start, which leaves the script to the
                # workers.
                await_server_exit(SERVER_EXIT_WAIT_S)
                process.start()
        except BaseException:  # (no start: nothing of this worker stays open)
            for end in (parent_end, child_end):
                end.close()
            progress.close()
            raise
        child_end.close()
        self._workers.append(_Worker(process, parent_end, progress))
        self._generation += 1
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wakeup_w.send_bytes(b"")

    # -- assignment (always under the lock) ----------------------------------------------

    def _assign_locked(self) -> None:
        if not self._pending:
            return
        kept: deque[_Job] = deque()
        while self._pending:
            job = self._pending.popleft()
            worker = self._pick_worker_locked(job)
            if worker is None:
                kept.append(job)
            else:
                self._send_locked(worker, job)
        self._pending = kept

    def _pick_worker_locked(self, job: _Job) -> _Worker | None:
        run = job.run
        group = run.group
        occupied = [w for w in self._workers if any(j.run.group is group for j in w.inflight)]
        choices = occupied if len(occupied) >= run.max_workers else self._workers
        best: _Worker | None = None
        for w in choices:
            load = len(w.inflight)
            if load == 0:
                return w
            if load == 1 and best is None and run.task_timeout is None \
                    and len(job.frame) <= PREFETCH_MAX_BYTES and (
                        job.run.key in w.functions
                        or len(run.function_frame) <= PREFETCH_MAX_BYTES):
                # (no queueing behind an item that may hang: a timed run's next chunk
                # waits for a free worker instead)
                best = w
        return best

    def _send_locked(self, worker: _Worker, job: _Job) -> None:
        key = job.run.key
        if not worker.inflight:
            worker.busy_since = time.monotonic()
        worker.inflight.append(job)
        try:
            if key not in worker.functions:
                worker.conn.send_bytes(job.run.function_frame)
                worker.functions[key] = None
                while len(worker.functions) > m.FUNCTION_CACHE_SIZE:
                    worker.functions.popitem(last=False)
            worker.functions.move_to_end(key)
            worker.conn.send_bytes(job.frame)
        except OSError:
            pass  # the worker died; its sentinel fires and the job is re-sent
        if job.run.task_timeout is not None:
            self._wake()  # the collector may be asleep on a later timer: this item's is due

    # -- the collector thread ------------------------------------------------------------

    def _collect(self) -> None:
        # One poll object for the collector's life, re-registered only when the set of
        # workers changes (multiprocessing.connection.wait builds a selector per call).
        # Results are handed to their runs right before the collector blocks again, so
        # a woken caller does not wait for the GIL while the collector does its chores.
        poller = select.poll()
        wakeup_fd = self._wakeup_r.fileno()
        poller.register(wakeup_fd, select.POLLIN)
        try:
            self._collect_loop(poller, wakeup_fd, {}, -1)
        except BaseException as exc:  # a bug here must not leave every caller waiting
            self._collector_failed(exc)
        finally:
            self._hand_over()

    def _collect_loop(self, poller: select.poll, wakeup_fd: int, watched: _Watched,
                      generation: int) -> None:
        """Until the pool closes or has no workers: wait, route, handle exits, timers."""
        while True:
            with self._lock:
                if self._closed or not self._workers:
                    self._stop_collector_locked()
                    return
                if generation != self._generation:
                    generation = self._generation
                    watched = self._rewatch_locked(poller, watched)
                timeout = self._next_timer_locked()
            self._hand_over()
            timeout = bounded_wait(timeout)
            events = poller.poll(None if timeout is None else timeout * 1000.0)
            for fd, _ in events:
                if fd == wakeup_fd:
                    while self._wakeup_r.poll():
                        self._wakeup_r.recv_bytes()
                    continue
                is_sentinel, worker = watched[fd]
                if worker not in self._workers:
                    continue  # gone since the poll set was made: re-polled next turn
                if is_sentinel:
                    self._on_exit(worker)
                else:
                    self._receive(worker)
            self._run_timers()

    def _collector_failed(self, exc: BaseException) -> None:
        """The collector thread hit an unexpected error: fail the work it was looking after
        (its callers would wait forever) and stop the workers; the next run starts afresh."""
        logger.error("laneway's process pool collector failed; the workers were stopped "
                     "and their items failed", exc_info=exc)
        with self._lock:
            error = LanewayError(f"laneway's process pool failed internally "
                                 f"({type(exc).__name__}: {exc}); the item was not run or "
                                 f"its result was lost. Please report this.")
            jobs = [job for w in self._workers for job in w.inflight] + list(self._pending)
            self._pending.clear()
            workers, self._workers = self._workers, []
            self._generation += 1
            self._collector = None
            for job in jobs:
                job.run.deliver_failures(job.chunk_id, job.start + job.delivered,
                                         len(job.items) - job.delivered, lambda _: error)
        for w in workers:
            _kill(w)
            w.process.join(1.0)
            w.conn.close()
            w.progress.close()

    def _rewatch_locked(self, poller: select.poll, watched: _Watched) -> _Watched:
        """Make ``poller`` watch the current workers' pipes and sentinels."""
        wanted: _Watched = {}
        for w in self._workers:
            wanted[w.conn.fileno()] = (False, w)
            wanted[w.process.sentinel] = (True, w)
        for fd, entry in watched.items():
            if wanted.get(fd) != entry:
                poller.unregister(fd)
        for fd, entry in wanted.items():
            if watched.get(fd) != entry:
                poller.register(fd, select.POLLIN)
        return wanted

    def _hand_over(self) -> None:
        """Put the results received so far on their runs' queues."""
        with self._lock:
            outbox, self._outbox = self._outbox, []
        for sink, batch in outbox:
            sink.put(batch)

    def _stop_collector_locked(self) -> None:
        self._collector = None
        if self._closed:
            for w in self._workers:
                w.conn.close()

    def _receive(self, worker: _Worker) -> None:
        try:
            frame = worker.conn.recv_bytes()
        except (EOFError, OSError):
            self._on_exit(worker)
            return
        with self._lock:
            self._handle_frame_locked(worker, frame)
            self._assign_locked()

    def _handle_frame_locked(self, worker: _Worker, frame: bytes) -> None:
        kind, done, offset, count, busy_s = m.RESULT_HEADER.unpack_from(frame)
        worker.reported = True
        self._startup_deaths = 0
        job = worker.inflight[0]
        run = job.run
        if kind == m.UNREADABLE:
            worker.inflight.popleft()
            if not run.closed:
                self._pending.appendleft(
                    _make_job(run, job.chunk_id, job.start, job.items, isolated=True))
        else:
            if count:
                job.delivered = offset + count
                run.crashes_in_a_row = 0
                if worker.stopping is not None and worker.stopping[0] == job.seq \
                        and job.delivered > worker.stopping[1]:
                    # the overrunning item finished as it was being stopped, and the
                    # worker carried on (see worker.stop): it is not stopped after all
                    worker.stopping = worker.kill_at = None
                if not run.closed:  # handed over just before the collector waits again
                    self._outbox.append((run.sink, Batch(
                        job.chunk_id, job.start + offset, count, busy_s,
                        payload=memoryview(frame)[m.RESULT_HEADER.size:])))
            if done:
                worker.inflight.popleft()
        now = time.monotonic()
        if worker.inflight:
            if done:
                worker.busy_since = now
        else:
            worker.idle_since = now

    def _on_exit(self, worker: _Worker) -> None:
        """A worker's process ended: keep what it reported, fail what it may have run,
        re-send what it never started, and replace it."""
        with self._lock:
            if worker not in self._workers:
                return
            try:
                while worker.conn.poll(0):
                    self._handle_frame_locked(worker, worker.conn.recv_bytes())
            except (EOFError, OSError):
                pass
            self._workers.remove(worker)
            self._generation += 1
            worker.conn.close()
            worker.process.join(1.0)
            exitcode = worker.process.exitcode
            if not worker.reported and worker.progress[m.PROGRESS_SEQ] == 0 \
                    and exitcode not in (0, None) and not worker.killed:
                self._startup_deaths += 1
                if self._startup_deaths >= MAX_STARTUP_DEATHS:
                    self._fail_everything_locked(worker, exitcode)
                    worker.progress.close()
                    return
            requeue: list[_Job] = []
            for position, job in enumerate(worker.inflight):
                running = position == 0 and worker.progress[m.PROGRESS_SEQ] == job.seq
                begun = max(job.delivered, worker.progress[m.PROGRESS_STARTED]) if running \
                    else job.delivered
                # (an overrunning item that finished and was delivered as its worker was
                # stopped has its outcome already: no timeout on top of it)
                timed_out = running and worker.stopping == (job.seq, begun - 1) \
                    and begun - 1 >= job.delivered
                lost_until = begun - 1 if timed_out else begun
                if not job.run.closed and lost_until > job.delivered:
                    self._fail_crashed_locked(worker, job, lost_until, exitcode)
                if not job.run.closed and timed_out:
                    self._fail_timed_out_locked(job, begun - 1)
                if begun < len(job.items) and not job.run.closed:
                    if position == 0 and not running and not job.flags & m.ISOLATED:
                        # It died before starting this job, perhaps unpickling it: send the
                        # items one by one, so that an item that kills a worker as it is
                        # unpickled fails alone instead of killing worker after worker.
                        requeue.append(_make_job(job.run, job.chunk_id, job.start, job.items,
                                                 isolated=True))
                    elif begun == 0:
                        requeue.append(job)
                    else:
                        requeue.append(_make_job(job.run, job.chunk_id, job.start + begun,
                                                 job.items[begun:]))
            for job in [j for j in requeue if j.run.broken is not None]:
                requeue.remove(job)
                job.run.deliver_failures(job.chunk_id, job.start, len(job.items),
                                         job.run.stopped_error)
            self._pending.extendleft(reversed(requeue))
            worker.progress.close()
            if not self._closed and len(self._workers) < self._target and (
                self._pending or any(w.inflight for w in self._workers)
            ):
                self._spawn_locked()
            self._assign_locked()

    def _fail_everything_locked(self, worker: _Worker, exitcode: int | None) -> None:
        """Workers die as they start: fail the queued work instead of respawning forever."""
        reason = (
            f"laneway's worker processes {exit_description(exitcode)} as they started, "
            f"{self._startup_deaths} in a row, before running anything. With the "
            f"{self._ctx.get_start_method()} start method every worker imports your main "
            f"module: if your script starts laneway work at its top level, move that code "
            f"under `if __name__ == \"__main__\":`. The worker's own error, if it printed "
            f"one, is on stderr."
        )
        jobs = [*worker.inflight, *self._pending]
        self._pending.clear()
        self._target = len(self._workers)
        for job in jobs:
            job.run.deliver_failures(job.chunk_id, job.start + job.delivered,
                                     len(job.items) - job.delivered,
                                     lambda index: LanewayError(f"item #{index}: {reason}"))

    def _fail_timed_out_locked(self, job: _Job, position: int) -> None:
        run = job.run
        index = job.start + position
        seconds = run.task_timeout
        error = TaskTimeoutError(
            f"{run.fn_name}({run.unit} #{index}) ran longer than task_timeout={seconds}s; its "
            f"worker process was stopped and replaced. Other items were not affected.",
            index=index, seconds=seconds,
        )
        run.deliver_failures(job.chunk_id, index, 1, lambda _: error)

    def _fail_crashed_locked(self, worker: _Worker, job: _Job, begun: int,
                             exitcode: int | None) -> None:
        run = job.run
        first, last = job.start + job.delivered, job.start + begun - 1
        pid = worker.process.pid
        how = exit_description(exitcode)
        if first == last:
            what = f"{run.fn_name}({run.unit} #{first}). Other {run.unit}s were not affected"
        elif job.flags & m.TIMED:  # one item per step, handed in every ~2 ms
            what = (f"{run.fn_name} on items #{first}-#{last}: item #{last} was running, "
                    f"and the others had finished but not yet been handed in (with "
                    f"task_timeout, results are sent every ~2 ms), so their results were "
                    f"lost with it. Other items were not affected")
        else:
            what = (f"{run.fn_name} on items #{first}-#{last}, a small group run in one "
                    f"step (each item takes less than about 2 ms): one of them crashed "
                    f"it, and the group's results were lost with it (the items before "
                    f"that one ran, those after it did not start; which one it was is "
                    f"not known). Other items were not affected")

        def crashed(index: int) -> WorkerCrashedError:
            return WorkerCrashedError(
                f"worker process {pid} {how} while running {what}; the worker was "
                f"replaced.", pid=pid, exitcode=exitcode, index=index)

        run.deliver_failures(job.chunk_id, first, begun - job.delivered, crashed)
        error = crashed(first)
        run.crashes_in_a_row += 1
        if run.crashes_in_a_row >= MAX_CRASHES_IN_A_ROW and run.broken is None:
            run.broken = LanewayError(
                f"{run.fn_name} crashed {run.crashes_in_a_row} worker processes in a row; "
                f"laneway stopped sending it items (the last crash: {error})"
            )
            for other in [j for j in self._pending if j.run is run]:
                self._pending.remove(other)
                run.deliver_failures(other.chunk_id, other.start, len(other.items),
                                     run.stopped_error)

    # -- timers: idle workers, cancelled runs, item deadlines, kills ----------------------

    @staticmethod
    def _item_deadline(worker: _Worker) -> float | None:
        """When the item the worker is running overruns its run's task_timeout."""
        if not worker.inflight or worker.stopping is not None:
            return None
        job = worker.inflight[0]
        timeout = job.run.task_timeout
        progress = worker.progress
        if timeout is None or progress[m.PROGRESS_SEQ] != job.seq \
                or progress[m.PROGRESS_STARTED] <= job.delivered:
            return None
        return progress[m.PROGRESS_STARTED_NS] / 1e9 + timeout

    def _next_timer_locked(self) -> float | None:
        now = time.monotonic()
        deadlines = [w.idle_since + self._idle_timeout for w in self._workers if not w.inflight]
        deadlines += [r.cancelled_at + CANCEL_GRACE_S for r in self._cancelled
                      if r.cancelled_at is not None]
        deadlines += [w.kill_at for w in self._workers if w.kill_at is not None]
        for w in self._workers:
            deadline = self._item_deadline(w)
            if deadline is None and w.inflight and w.stopping is None \
                    and w.inflight[0].run.task_timeout is not None:
                # Between items, or not started: an item that starts from now on cannot
                # overrun before now + task_timeout, so look again then.
                deadline = now + w.inflight[0].run.task_timeout
            if deadline is not None:
                deadlines.append(deadline)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _run_timers(self) -> None:
        now = time.monotonic()
        with self._lock:
            for w in [w for w in self._workers
                      if not w.inflight and not self._pending
                      and now - w.idle_since >= self._idle_timeout]:
                self._workers.remove(w)
                self._generation += 1
                w.conn.close()  # the worker sees EOF and exits
                w.process.join(1.0)
                w.progress.close()
            self._target = min(self._target, len(self._workers)) if not self._workers \
                else self._target
            for w in self._workers:
                deadline = self._item_deadline(w)
                if deadline is not None and now >= deadline:
                    position = w.progress[m.PROGRESS_STARTED] - 1
                    w.stopping = (w.inflight[0].seq, position)
                    w.kill_at = now + STOP_GRACE_S
                    w.progress[m.PROGRESS_STOP] = position + 1
                    w.killed = True
                    w.process.terminate()  # the worker flushes its results and exits
                elif w.kill_at is not None and now >= w.kill_at:
                    _kill(w)
            due = [r for r in self._cancelled
                   if r.cancelled_at is not None and now - r.cancelled_at >= CANCEL_GRACE_S]
            for run in due:
                self._cancelled.remove(run)
                for w in self._workers:
                    if w.inflight and w.inflight[0].run is run \
                            and w.progress[m.PROGRESS_SEQ] == w.inflight[0].seq:
                        _kill(w)  # its sentinel fires; _on_exit replaces it


def _kill(worker: _Worker) -> None:
    worker.killed = True
    worker.process.kill()


def _new_default_pool() -> ProcessPool:
    atexit.register(_shutdown_default)
    return ProcessPool()


_default: ProcessWide[ProcessPool] = ProcessWide(
    _new_default_pool, in_forked_child=lambda pool: pool.abandon_in_forked_child())


def default_pool() -> ProcessPool:
    """The process-wide pool, created on first use and shut down at exit."""
    return _default.get()


def _shutdown_default() -> None:
    pool = _default.take()
    if pool is not None:
        pool.shutdown()

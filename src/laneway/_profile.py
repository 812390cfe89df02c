"""Measuring a task: how long it takes, how much of that is computing, whether it holds the GIL.

Everything here measures *real* calls whose results are kept: no item is ever run twice.

* **CPU/wall ratio.**  The CPU time of the calling thread (``time.thread_time``), plus
  that of child processes the call ran and waited for (``subprocess.run`` computes in
  its child), over the wall time of the call separates computing from waiting.
* **GIL probe.**  While the measured calls run, a tiny canary thread wakes every
  ``CANARY_SLEEP_S`` and records how late it woke.  If the task holds the GIL, the
  canary must wait for the interpreter's switch interval (5 ms by default) before it
  can run, so it wakes late; if the task releases the GIL (numpy, hashlib, zlib,
  sqlite, sleeping), the canary wakes on time.  The canary uses almost no CPU and
  forces at most one GIL hand-over per switch interval, so it barely disturbs the
  task.  Too few canary wake-ups (very short samples) leave the answer unknown.
* **Pickled sizes** of an item and its result price the trip to a process.

Clocks are parameters so that tests can drive the measuring code with fake clocks.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._chunks import call_each, item_error
from ._errors import Failure
from ._options import bounded_wait

__all__ = ["FirstCall", "Measurement", "Sample", "cached_measurement", "check_drift",
           "child_pids", "forget", "measure_calls", "needs_measuring", "pickled_size",
           "recent_pace", "remember_measurement", "remember_pace", "running_children_cpu",
           "thread_cpu_clock"]

DRIFT_FACTOR = 4.0
"""A cached measurement is dropped when a run sees items this many times slower or
faster than measured, so the next run measures again."""

CANARY_SLEEP_S = 0.00025
"""How long the canary sleeps between wake-ups: its 4 wake-ups (``MIN_CANARY_WAKEUPS``)
take ~1.2 ms, so one numpy product of ~2.5 ms gets a verdict (with 0.5 ms naps, half
the time it did not, and one more item ran serially in the caller).  Shorter naps add
no GIL hand-overs for work that holds the GIL (the canary still waits out the switch
interval) and only a few microseconds per wake-up for work that does not."""

LATE_S = 0.0015
"""A canary wake-up later than this (beyond its sleep) means it waited for the GIL."""

MIN_CANARY_WAKEUPS = 4
"""Fewer wake-ups than this say nothing about the GIL..."""

SILENT_CANARY_S = 0.008
"""...unless the canary hardly woke at all in this long: then the GIL was held."""

SAMPLE_BUDGET_S = 0.02
"""Profiling inside a run measures items until this much time has passed (at least one
item): long enough for a stable estimate and a GIL verdict, short enough that running
those items serially costs little..."""

SAMPLE_SHARE = 0.03
"""...and, when the number of items is known, until this share of the whole run's serial
time (estimated from the items measured so far) has passed, if that is sooner: a short
run is not slowed by measuring a good part of it serially."""

PROBE_MIN_S = 0.004
"""...but not before the GIL canary has watched this long, if it cannot tell yet: a run
of 32 numpy products of ~2.5 ms each reached its 3% after one call, too short for the
canary's 4 wake-ups about one time in six, and went serial (1.0x) instead of on threads
(1.9x).  One more item settles it."""

EARLY_LOOK_S = 0.004
"""The first measured call runs on a pool thread; if it is still running after this long
its thread's CPU clock is read once..."""

WAITING_CPU_SHARE = 0.1
"""...and a call that has used less CPU than this share of that time is waiting: the
run is planned at once (threads) and that first call's outcome is delivered when it
ends.  The share is low so that a computing call slowed down by a busy machine is not
taken for a waiting one."""

LONG_CALL_S = 0.1
"""A first call still computing this long after it began goes on alone while the rest of
the run is planned from what it showed so far (it would idle the pool until it ends).
Long enough that most items end first, so their full time (and an uneven item's, that
computes then waits, its true CPU share) is what gets measured."""

TINY_ITEM_S = 2e-6
"""Items this short (seconds each) cannot gain from any pool: once ``TINY_AFTER_S`` of
them have run, measuring stops early."""

TINY_AFTER_S = 0.001

MAX_SAMPLE_ITEMS = 100_000
"""And never more items than this, however small they are."""


_NOTHING: Any = object()


@dataclass(frozen=True, slots=True)
class Measurement:
    """What measuring some calls of a task found.

    ``wall_s`` and ``cpu_s`` are per call (``cpu_s`` includes child processes'
    ``child_cpu_s``); ``releases_gil`` is None when the probe could
    not tell; ``arg_bytes``/``result_bytes`` are pickled sizes of one item and its
    result (None: could not be pickled, so the task cannot go to a process).
    """

    calls: int
    wall_s: float
    cpu_s: float
    releases_gil: bool | None
    arg_bytes: int | None
    result_bytes: int | None
    child_cpu_s: float = 0.0
    """The part of ``cpu_s`` spent in child processes the call ran and waited for."""

    @property
    def cpu_ratio(self) -> float:
        """CPU time of the calling thread over wall time (0 = waiting, 1 = computing)."""
        return min(1.0, self.cpu_s / self.wall_s) if self.wall_s > 0 else 1.0


@dataclass(slots=True)
class Sample:
    """Items run while measuring, with their outcomes, and what was measured.

    ``pending`` is the first call when it was found waiting before it finished: it is
    still running, ``values`` is empty and ``measurement`` is provisional (the call's
    time so far); the call's own outcome comes through :meth:`FirstCall.when_done`.
    """

    values: list[Any]
    failures: dict[int, Failure] | None
    measurement: Measurement
    exhausted: bool
    pending: FirstCall | None = None


if sys.platform != "win32":
    import resource

    def _children_cpu() -> float:
        """CPU seconds of this process's child processes that ended and were waited for."""
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
else:  # pragma: no cover - Windows has no RUSAGE_CHILDREN
    def _children_cpu() -> float:
        return 0.0


def _no_children() -> float:
    return 0.0


def work_clock() -> float:
    """CPU seconds of the calling thread, plus those of child processes waited for: a task
    that runs a subprocess (and waits for it) is computing, in that subprocess, not
    waiting for I/O."""
    return time.thread_time() + _children_cpu()


MAX_CHILDREN_READ = 256
"""Most descendant processes :func:`running_children_cpu` reads (a fork bomb would
otherwise make the early look slow)."""


def child_pids(native_id: int) -> frozenset[str]:
    """The live (unreaped) child processes one thread of this process started (Linux
    ``/proc/self/task/<tid>/children``; empty elsewhere)."""
    return frozenset(_read_words(f"/proc/self/task/{native_id}/children"))


def running_children_cpu(native_id: int, exclude: frozenset[str] = frozenset()) -> float:
    """CPU seconds used so far by the processes one thread started (but those in
    ``exclude``: started before the call being measured), with every thread of each
    and their own descendants, while not yet reaped (running, or exited and not yet
    waited for).

    ``RUSAGE_CHILDREN`` counts a child only once it has been waited for; this reads
    Linux's ``/proc``: each process's live threads' ``schedstat`` (nanoseconds on a CPU)
    or, if more, its ``stat`` (clock ticks, exited threads included), and its threads'
    ``children``.  0.0 where they do not exist."""
    pending = [pid for pid in child_pids(native_id) if pid not in exclude]
    seen: set[str] = set()
    nanoseconds = 0
    while pending and len(seen) < MAX_CHILDREN_READ:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # (reaped meanwhile)
        live = 0  # (its live threads, to the nanosecond)
        for tid in threads:
            words = _read_words(f"/proc/{pid}/task/{tid}/schedstat")
            if words and words[0].isdigit():
                live += int(words[0])
            pending += _read_words(f"/proc/{pid}/task/{tid}/children")
        nanoseconds += max(live, _process_ticks_ns(pid))
    return nanoseconds / 1e9


_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_ticks_ns(pid: str) -> int:
    """A process's user + system CPU from ``/proc/<pid>/stat``, in clock ticks (10 ms
    here) as nanoseconds: coarse, but it includes threads that have already exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // _TICKS_PER_S
    except (OSError, ValueError, IndexError):
        return 0



def _read_words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def thread_cpu_clock(ident: int) -> Callable[[], float] | None:
    """A reader of another thread's CPU time, where the platform offers one."""
    getter = getattr(time, "pthread_getcpuclockid", None)
    if getter is None:
        return None
    try:
        clock_id = getter(ident)
    except (OSError, OverflowError):
        return None
    return lambda: time.clock_gettime(clock_id)


class FirstCall:
    """The first measured call of a run, made on a pool thread so that the caller can
    tell early whether it is waiting (see ``EARLY_LOOK_S``).  It runs exactly once."""

    def __init__(self, call: Callable[[Any], Any], item: Any,
                 submit: Callable[[Callable[[], None]], None],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.item = item
        self.value: Any = None
        self.failure: Failure | None = None
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.child_cpu_s = 0.0
        self._call = call
        self._clock = clock
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._done = threading.Event()
        self._began = 0.0
        self._cpu_clock: Callable[[], float] | None = None
        self._cpu_began = 0.0
        self._native_id = 0
        self._children_before: frozenset[str] = frozenset()
        self._listener: Callable[[FirstCall], None] | None = None
        self.computing = False
        """Set when :meth:`wait` gave up on a call that computes past ``long_s``."""
        submit(self._run)

    def _run(self) -> None:
        self._cpu_clock = thread_cpu_clock(threading.get_ident())
        self._native_id = threading.get_native_id()
        self._children_before = child_pids(self._native_id)  # (not this call's)
        self._began, cpu_began, child_began = self._clock(), work_clock(), _children_cpu()
        self._cpu_began = self._cpu_clock() if self._cpu_clock is not None else 0.0
        self._started.set()
        try:
            self.value = self._call(self.item)
        except BaseException as exc:  # delivered as the item's failure
            self.failure = Failure(item_error(self._call, exc))
        self.wall_s = self._clock() - self._began
        self.cpu_s = work_clock() - cpu_began
        self.child_cpu_s = _children_cpu() - child_began
        with self._lock:
            self._done.set()
            listener = self._listener
        if listener is not None:
            listener(self)

    def wait(self, early_s: float = EARLY_LOOK_S,
             waiting_share: float = WAITING_CPU_SHARE, deadline: float | None = None,
             long_s: float | None = None) -> bool:
        """Wait for the call: True once it finished, False if it was found waiting, or
        (with ``long_s``) still computing ``long_s`` after it began (``computing``).

        Raises ``TimeoutError`` at ``deadline`` (``time.monotonic()``) if it is still
        computing then (it runs on; its outcome is dropped)."""
        if self._done.wait(early_s):
            return True
        self._started.wait()  # (submitted: a pool thread takes it as soon as it can)
        left = early_s - (self._clock() - self._began)
        if (left > 0 and self._done.wait(left)) or self._done.is_set():
            return True
        clock = self._cpu_clock
        if clock is not None:
            # (with the CPU its running child processes used so far: a call waiting for
            # a program that computes is computing, as it is once the program is reaped)
            used = clock() - self._cpu_began + running_children_cpu(
                self._native_id, self._children_before)
            if used < waiting_share * (self._clock() - self._began):
                return False
        if long_s is not None and not self._done.wait(
                max(0.0, long_s - (self._clock() - self._began))):
            self.computing = True
            return False
        while not self._done.wait(bounded_wait(
                None if deadline is None else max(0.0, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError("the first call was still running")
        return True

    def so_far(self) -> tuple[float, float, float]:
        """Wall and CPU seconds the unfinished call has used so far, and the part of that
        CPU its running child processes used."""
        wall, clock = self._clock() - self._began, self._cpu_clock
        if clock is None:
            return wall, 0.0, 0.0
        children = running_children_cpu(self._native_id, self._children_before)
        return wall, clock() - self._cpu_began + children, children

    def when_done(self, listener: Callable[[FirstCall], None]) -> None:
        """Call ``listener(self)`` when the call ends (at once if it has)."""
        with self._lock:
            if not self._done.is_set():
                self._listener = listener
                return
        listener(self)


class _Canary:
    """The process's canary thread (see the module docstring): it naps ``CANARY_SLEEP_S``
    at a time and counts how late it wakes while at least one measurement watches it,
    and is parked (on an event, using nothing) when none does.

    It is started on the first measurement and kept: starting and joining a thread for
    each measurement cost ~0.2 ms, a third of what measuring a run of tiny items costs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched = threading.Event()
        self._watchers = 0
        self._thread: threading.Thread | None = None
        self._wakeups = self._late = 0

    def watch(self) -> tuple[int, int]:
        """Start watching (the thread runs until the last watcher stops); the counts
        now, for :meth:`since`."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._run, daemon=True,
                                          name="laneway-canary")
                thread.start()  # (first: if it cannot start, no watcher is counted)
                self._thread = thread
            self._watchers += 1
            self._watched.set()
            return self._wakeups, self._late

    def unwatch(self) -> None:
        with self._lock:
            self._watchers -= 1
            if self._watchers == 0:
                self._watched.clear()

    def since(self, counts: tuple[int, int]) -> tuple[int, int]:
        """Wake-ups, and late ones, since ``counts`` (from :meth:`watch`)."""
        with self._lock:
            return self._wakeups - counts[0], self._late - counts[1]

    def _run(self) -> None:
        clock, watched = time.perf_counter, self._watched
        while True:
            watched.wait()
            before = clock()
            time.sleep(CANARY_SLEEP_S)
            late = clock() - before - CANARY_SLEEP_S > LATE_S
            if watched.is_set():  # (a nap that ended after the last watcher left: dropped)
                with self._lock:
                    self._wakeups += 1
                    self._late += late


_canary = _Canary()


def _new_canary_after_fork() -> None:
    global _canary
    _canary = _Canary()  # (the parent's thread and the state of its lock stay behind)


os.register_at_fork(after_in_child=_new_canary_after_fork)


class _Watch:
    """One measurement's view of the canary: its wake-ups from enter to exit."""

    def __init__(self) -> None:
        self._canary = _canary
        self._counts: tuple[int, int] | None = None
        self._final: tuple[int, int] | None = None

    def __enter__(self) -> _Watch:
        self._counts = self._canary.watch()
        return self

    def __exit__(self, *_: object) -> None:
        if self._counts is None or self._final is not None:
            return  # (never entered, or already left)
        self._final = self._canary.since(self._counts)
        self._canary.unwatch()

    def verdict(self, watched_s: float) -> bool | None:
        """True: the task let the canary run (GIL released); None: cannot tell.

        A canary that barely woke during ``watched_s`` of measuring was kept off the GIL
        the whole time (a single long C call that holds it, say): that is a False."""
        if self._counts is None:
            return None
        wakeups, late = self._final or self._canary.since(self._counts)
        if wakeups < MIN_CANARY_WAKEUPS:
            if watched_s >= SILENT_CANARY_S and wakeups < MIN_CANARY_WAKEUPS / 2:
                return False
            return None
        return late * 2 < wakeups


def pickled_size(value: object) -> int | None:
    """Bytes of ``pickle.dumps(value)``, or None if it cannot be pickled.

    Large buffers (numpy arrays, for one) are counted without being copied: pickle
    protocol 5 hands them over out-of-band and only their sizes are added up."""
    buffers = 0

    def count(buffer: pickle.PickleBuffer) -> bool:
        nonlocal buffers
        buffers += memoryview(buffer).nbytes
        return False  # out-of-band: not copied into the pickle

    try:
        return len(pickle.dumps(value, 5, buffer_callback=count)) + buffers
    except Exception:
        return None


def measure_calls(
    call: Callable[[Any], Any],
    items: Iterator[Any],
    *,
    budget_s: float = SAMPLE_BUDGET_S,
    max_items: int = MAX_SAMPLE_ITEMS,
    clock: Callable[[], float] = time.perf_counter,
    thread_clock: Callable[[], float] = work_clock,
    children_clock: Callable[[], float] | None = None,
    probe_gil: bool = True,
    submit: Callable[[Callable[[], None]], None] | None = None,
    total: int | None = None,
    deadline: float | None = None,
    early_s: float = EARLY_LOOK_S,
) -> Sample:
    """Run ``call`` on items from ``items`` until ``budget_s`` has passed, measuring.

    At least one item runs (unless there is none).  Exceptions become the item's
    :class:`Failure`; a KeyboardInterrupt propagates.  The pickled sizes are taken from
    the first item that succeeded.  With ``submit`` (a thread pool's), the first item
    runs as a :class:`FirstCall` on a pool thread, and if it is found waiting the sample
    returns at once with it ``pending``; the other items run in the caller.  With
    ``total`` (the number of items of the run), measuring also stops at ``SAMPLE_SHARE``
    of the run's estimated serial time.  Either limit gives way, for items of at least
    ``TINY_ITEM_S``, until the GIL canary can tell or has watched ``PROBE_MIN_S``.
    ``deadline`` (``time.monotonic()``) bounds the wait for the first call
    (``TimeoutError``); ``early_s`` is when it is first looked at
    (:meth:`FirstCall.wait`).  ``children_clock`` reads the CPU of child processes waited
    for (the part of ``thread_clock`` spent in them; default: none with a
    ``thread_clock`` of the caller's own, else ``RUSAGE_CHILDREN``).
    """
    if children_clock is None:
        children_clock = _children_cpu if thread_clock is work_clock else _no_children
    values: list[Any] = []
    failures: dict[int, Failure] | None = None
    first: tuple[Any, Any] | None = None
    first_item: Any = _NOTHING
    exhausted = enough = False
    probe = probe_gil and _can_probe_gil()
    canary = _Watch() if probe else None
    watched_from = 0.0

    def undecided(per_item: float) -> bool:
        """The canary has watched too little to tell, and more items may settle it.
        (It reads ``clock``: with the probe on, a fake clock sees more readings.)"""
        if canary is None or per_item < TINY_ITEM_S:
            return False
        watched = clock() - watched_from
        return watched < PROBE_MIN_S and canary.verdict(watched) is None

    try:
        if canary is not None:  # (entered inside the try: an interrupt cannot leak it)
            canary.__enter__()
            watched_from = clock()
        began, cpu_began, child_began = clock(), thread_clock(), children_clock()
        rest_began, rest_cpu_began, rest_child_began = began, cpu_began, child_began
        if submit is not None:
            first_item = next(items, _NOTHING)
            if first_item is _NOTHING:
                exhausted = True
            else:
                probe_call = FirstCall(call, first_item, submit, clock)
                if not probe_call.wait(early_s, deadline=deadline,
                                       long_s=max(budget_s, LONG_CALL_S)):
                    # The rest is planned now, while the call goes on: it waits, or it
                    # has computed for LONG_CALL_S (running it alone to its end would
                    # idle the pool for that long).
                    wall, cpu, child = probe_call.so_far()
                    releases: bool | None
                    if not probe_call.computing:
                        # (CPU so far is negligible by definition: as many threads as
                        # items, up to the cap, since the call may wait much longer)
                        cpu, child, releases = 0.0, 0.0, True
                    else:
                        releases = canary.verdict(wall) if canary is not None else None
                    return Sample([], None, Measurement(
                        calls=1, wall_s=wall, cpu_s=cpu, releases_gil=releases,
                        arg_bytes=pickled_size(first_item), result_bytes=0,
                        child_cpu_s=child,
                    ), exhausted=False, pending=probe_call)
                values.append(probe_call.value)
                if probe_call.failure is not None:
                    failures = {0: probe_call.failure}
                else:
                    first = (first_item, probe_call.value)
                # the call's CPU time is its own thread's, not the caller's; its wall
                # time is its own too, without the hand-over to the pool thread and
                # back (which would pass a tiny call for a waiting one)
                rest_began, rest_cpu_began = clock(), thread_clock()
                rest_child_began = children_clock()
                # (its children, reaped, are in the process-wide RUSAGE_CHILDREN that
                # the caller's clocks read too: only its own thread's CPU is added)
                cpu_began -= probe_call.cpu_s - probe_call.child_cpu_s
                began = rest_began - probe_call.wall_s
                # a first call that used up the budget is the whole sample: no more
                # items run serially in the caller while the pool waits
                enough = _over_budget(probe_call.wall_s, 1, budget_s, total) \
                    and not undecided(probe_call.wall_s)
        step = 1  # items between clock readings: doubles, so tiny items are not slowed
        while not enough and not exhausted and len(values) < max_items:
            if first is not None:  # the fast path: the items' own C loop
                exhausted, failures = _run_items(call, items, step, values, failures)
            for _ in range(step if first is None else 0):
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    break
                if first_item is _NOTHING:
                    first_item = item
                try:
                    result = call(item)
                except Exception as exc:
                    if failures is None:
                        failures = {}
                    failures[len(values)] = Failure(item_error(call, exc))
                    values.append(None)
                else:
                    values.append(result)
                    if first is None:
                        first = (item, result)
            elapsed = clock() - began
            per_item = elapsed / max(1, len(values))
            if exhausted or (_over_budget(elapsed, len(values), budget_s, total)
                             and not undecided(per_item)):
                break
            # double the step, but not past the budget: what fits in the time left (past
            # it, measuring goes on only for the canary: what fits in its window; a run
            # of 100 x*x went on one item per step, 2 us of clock reads and canary
            # checks each, 0.2 ms in all)
            limit = _limit(per_item, budget_s, total)
            if elapsed >= limit:
                limit = max(limit, PROBE_MIN_S)
            fits = int((limit - elapsed) / per_item) if per_item > 0 else step * 2
            step = max(1, min(step * 2, fits, max_items - len(values)))
        wall, cpu = clock() - began, thread_clock() - cpu_began
        child = children_clock() - child_began
        if submit is not None and len(values) > 1:
            # the pace is the later calls', measured in the caller: the first call
            # paid one-off costs (cold caches, lazy imports, the pool thread) that the
            # rest of the run will not (the budget above did count them)
            wall, cpu = clock() - rest_began, thread_clock() - rest_cpu_began
            child = children_clock() - rest_child_began
            paced = len(values) - 1
        else:
            paced = len(values)
    finally:
        if canary is not None:
            canary.__exit__()
    arg_bytes = result_bytes = None
    if first is not None:  # sized after the clock stopped: pickling is not the task's time
        arg_bytes, result_bytes = pickled_size(first[0]), pickled_size(first[1])
    elif first_item is not _NOTHING:  # every item failed: size the item, assume a small result
        arg_bytes, result_bytes = pickled_size(first_item), 0
    calls = max(1, paced)
    measurement = Measurement(
        calls=len(values), wall_s=wall / calls, cpu_s=cpu / calls,
        releases_gil=canary.verdict(wall) if canary is not None else None,
        arg_bytes=arg_bytes, result_bytes=result_bytes,
        child_cpu_s=min(max(0.0, child), max(0.0, cpu)) / calls,
    )
    return Sample(values, failures, measurement, exhausted)


def _limit(per_item: float, budget_s: float, total: int | None) -> float:
    """How long measuring may take: the budget, and at most ``SAMPLE_SHARE`` of the
    run's estimated serial time when its size is known."""
    return budget_s if total is None else min(budget_s, SAMPLE_SHARE * total * per_item)


def _over_budget(elapsed: float, calls: int, budget_s: float, total: int | None) -> bool:
    """Whether measuring should stop after ``calls`` items took ``elapsed``: another
    item would mostly overrun the limit, or the items are tiny and plenty were seen."""
    per_item = elapsed / max(1, calls)
    return elapsed + per_item / 2 >= _limit(per_item, budget_s, total) or (
        elapsed >= TINY_AFTER_S and per_item < TINY_ITEM_S)


def _run_items(call: Callable[[Any], Any], items: Iterator[Any], count: int,
               values: list[Any], failures: dict[int, Failure] | None,
               ) -> tuple[bool, dict[int, Failure] | None]:
    """Run up to ``count`` more items into ``values``; (exhausted, failures).

    The items are taken first, so an error of the iterable itself propagates (as when a
    run builds its chunks) instead of passing for an item's failure."""
    batch = list(itertools.islice(items, count))
    return len(batch) < count, call_each(call, batch, values, failures)


def _can_probe_gil() -> bool:
    """The canary only means something while a GIL exists and switches."""
    check = getattr(sys, "_is_gil_enabled", None)
    return check is None or bool(check())


_measured: weakref.WeakKeyDictionary[Any, Measurement] = weakref.WeakKeyDictionary()
_measured_lock = threading.Lock()


def needs_measuring(fn: Callable[..., Any], options: Any) -> bool:
    """True when a measurement decides the plan: nothing decides the backend (no
    backend, no kind, no hint, not async), or the work is I/O for threads (forced or
    not) and only a measured wait ratio can size the pool (no ``workers=``)."""
    from ._hints import coroutine_of
    from ._router import forced_backend, task_kind

    if options.task_timeout is not None:
        return False
    forced, kind = forced_backend(fn, options), task_kind(fn, options)[0]
    if forced is None and kind is None:
        return True
    return kind == "io" and forced in (None, "thread") and options.workers is None \
        and coroutine_of(fn) is None


def cached_measurement(fn: Callable[..., Any]) -> Measurement | None:
    """The measurement of ``fn`` made earlier in this process, if still trusted."""
    with _measured_lock:
        try:
            return _measured.get(fn)
        except TypeError:  # not weak-referenceable: never cached
            return None


def remember_measurement(fn: Callable[..., Any], measurement: Measurement) -> None:
    """Cache ``measurement`` for later runs of ``fn`` (keyed by the function object)."""
    with _measured_lock, contextlib.suppress(TypeError):
        _measured[fn] = measurement


def check_drift(fn: Callable[..., Any], measurement: Measurement,
                observed_per_item_s: float | None) -> None:
    """Forget ``fn``'s measurement if a run saw a very different time per item.

    The observed figure is a pool worker's busy time per item, comparable to
    ``measurement.wall_s``.
    """
    if observed_per_item_s is None or measurement.wall_s <= 0:
        return
    ratio = observed_per_item_s / measurement.wall_s
    if ratio > DRIFT_FACTOR or ratio < 1 / DRIFT_FACTOR:
        with _measured_lock:
            try:
                if _measured.get(fn) is measurement:
                    del _measured[fn]
            except TypeError:
                pass


_paces: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
"""Seconds per item that pool workers spent on each function in its latest run."""


def remember_pace(fn: Callable[..., Any], per_item_s: float | None) -> None:
    """Record the time per item a run observed for ``fn`` (a worker's busy time)."""
    if per_item_s is None:
        return
    with _measured_lock, contextlib.suppress(TypeError):
        _paces[fn] = per_item_s


def recent_pace(fn: Callable[..., Any]) -> float | None:
    """The time per item of ``fn``'s latest run in this process, if any.

    Runs with a forced backend are never measured in the caller; this is what sizes
    their chunks from the start instead of from one-item chunks.
    """
    with _measured_lock:
        try:
            return _paces.get(fn)
        except TypeError:
            return None


def forget(fn: Callable[..., Any]) -> None:
    """Drop what this process remembers of ``fn`` (its measurement and pace), so its
    next unhinted run measures it again, as a program's first call would."""
    with _measured_lock, contextlib.suppress(TypeError):
        _measured.pop(fn, None)
        _paces.pop(fn, None)

"""The async backend: sync parallel_map/imap run a coroutine function's items together
on laneway's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT
from laneway import _run
from laneway._backends import aio


class Gate:
    """Opens once ``expected`` coroutines are inside at the same time (on one loop)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inside = 0
        self.most = 0
        self.opened: asyncio.Event | None = None

    async def enter(self) -> None:
        if self.opened is None:
            self.opened = asyncio.Event()
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.inside >= self.expected:
            self.opened.set()
        try:
            await asyncio.wait_for(self.opened.wait(), DEADLOCK_TIMEOUT)
        finally:
            self.inside -= 1


def test_coroutines_are_all_in_flight_at_once_on_the_async_backend() -> None:
    """With no hint and no backend, 300 coroutines run at the same time (a thread pool
    of 64 could not open the gate) and the plan says so."""
    gate = Gate(300)

    async def meet(x: int) -> int:
        await gate.enter()
        return 2 * x

    assert laneway.parallel_map(meet, range(300)) == [2 * x for x in range(300)]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "async" and plan.kind == "async"
    assert "event loop" in plan.reason and "coroutine function" in plan.reason


def test_workers_limits_the_coroutines_in_flight() -> None:
    """workers=3: never more than 3 items at once, and 3 do overlap."""
    gate = Gate(3)

    async def meet(x: int) -> int:
        await gate.enter()
        return x

    assert laneway.parallel_map(meet, range(30), workers=3) == list(range(30))
    assert gate.most == 3


async def double_later(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def test_imap_of_a_coroutine_function_is_lazy_and_ordered() -> None:
    """imap over an endless input terminates; results in input order."""
    got = list(itertools.islice(laneway.imap(double_later, itertools.count()), 50))
    assert got == [2 * x for x in range(50)]
    assert laneway.last_plan() is not None and laneway.last_plan().backend == "async"


async def wait_long(x: int) -> int:
    await asyncio.sleep(DEADLOCK_TIMEOUT)
    return x


def test_imap_of_coroutines_keeps_a_window_of_items_not_chunks() -> None:
    """The async backend's workers are items in flight, so imap's window counts items
    too: with no result coming, an endless input is read at most 2 x workers items plus
    ASYNC_ITEMS_AHEAD ahead.  (It counted chunks: 2 x 1,024 of them here, of 100 items
    each, 204,800 items; a loaded machine once had 300,000 coroutines on the loop, whose
    cancellation held it, and the next call, for minutes.)"""
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        for x in itertools.count():
            pulled += 1
            yield x

    # (no item ever ends: the call's timeout ends it once the window is full)
    with pytest.raises(TimeoutError):
        next(laneway.imap(wait_long, endless(), chunksize=100, timeout=0.5))
    workers = laneway.last_plan().workers  # type: ignore[union-attr]
    assert pulled <= 2 * workers + _run.ASYNC_ITEMS_AHEAD + 100


def test_tiny_coroutines_go_in_chunks_of_many_items() -> None:
    """An async chunk's wall time is shared by every item in flight on the loop: taken
    as one item's time, it made every chunk one item long (5,000 chunks for 5,000 tiny
    coroutines, each its own task, batch and hand-over; 10x slower)."""
    sizes: list[int] = []
    original = aio.AsyncRun.submit

    def counting(run: aio.AsyncRun, chunk: Any) -> None:
        sizes.append(len(chunk.items))
        original(run, chunk)

    aio.AsyncRun.submit = counting  # type: ignore[method-assign]
    try:
        assert laneway.parallel_map(double_later, range(5000)) == [2 * x for x in range(5000)]
    finally:
        aio.AsyncRun.submit = original  # type: ignore[method-assign]
    assert sum(sizes) == 5000 and len(sizes) <= 3000, (len(sizes), max(sizes))


async def fail_on_three(x: int) -> int:
    await asyncio.sleep(0)
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def test_errors_return_and_raise() -> None:
    """A coroutine's exception is its item's failure: in place, or raised as itself."""
    got = laneway.parallel_map(fail_on_three, range(6), errors="return")
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5] and isinstance(got[3], ValueError)
    with pytest.raises(ValueError, match="bad item 3") as info:
        laneway.parallel_map(fail_on_three, range(6))
    assert any("item #3" in note for note in info.value.__notes__)


def test_a_failure_cancels_the_coroutines_still_running() -> None:
    """errors="raise": the other items, waiting forever, are cancelled."""
    cancelled: list[int] = []
    all_cancelled = threading.Event()
    started = Gate(10)

    async def wait_or_fail(x: int) -> int:
        await started.enter()  # every item is running before item 0 fails
        if x == 0:
            raise KeyError("item zero failed")
        try:
            await asyncio.sleep(DEADLOCK_TIMEOUT)
        except asyncio.CancelledError:
            cancelled.append(x)
            if len(cancelled) == 9:
                all_cancelled.set()
            raise
        return x

    with pytest.raises(KeyError, match="item zero failed"):
        laneway.parallel_map(wait_or_fail, range(10))
    assert all_cancelled.wait(DEADLOCK_TIMEOUT)
    assert sorted(cancelled) == list(range(1, 10))


def test_task_timeout_cancels_only_the_overrunning_item() -> None:
    """task_timeout: the item that waits forever fails with TaskTimeoutError."""
    forever = asyncio.Event  # (an event nobody sets)

    async def maybe_hang(x: int) -> int:
        if x == 2:
            await forever().wait()
        return x

    got = laneway.parallel_map(maybe_hang, range(5), task_timeout=0.2, errors="return")
    assert got[:2] == [0, 1] and got[3:] == [3, 4]
    assert isinstance(got[2], laneway.TaskTimeoutError) and "task_timeout=0.2" in str(got[2])


def test_timeout_bounds_the_whole_call() -> None:
    """timeout=: TimeoutError for the call, and its items are cancelled."""
    cancelled = threading.Event()

    async def hang(x: int) -> int:
        try:
            await asyncio.sleep(DEADLOCK_TIMEOUT)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return x

    with pytest.raises(TimeoutError, match="timeout=0.2"):
        laneway.parallel_map(hang, range(3), timeout=0.2)
    assert cancelled.wait(DEADLOCK_TIMEOUT)


def test_async_backend_refuses_a_plain_function() -> None:
    """backend="async" needs a coroutine function: a ValueError that names it."""
    with pytest.raises(ValueError, match=r"async backend runs coroutine functions, but "
                                         r"abs is not one"):
        laneway.parallel_map(abs, [1, 2], backend="async")


def test_a_coroutine_on_the_loop_can_run_its_own_parallel_map() -> None:
    """A coroutine running on laneway's loop that calls the sync parallel_map of another
    coroutine function gets a loop of its own for it: no deadlock."""

    async def outer(x: int) -> list[int]:
        return laneway.parallel_map(double_later, range(x))

    assert laneway.parallel_map(outer, [2, 3]) == [[0, 2], [0, 2, 4]]


def test_forced_other_backends_still_await_each_item() -> None:
    """A coroutine function forced onto threads or processes is still awaited per item."""
    assert laneway.parallel_map(double_later, [1, 2], backend="thread") == [2, 4]
    assert laneway.parallel_map(double_later, [1, 2], backend="process") == [2, 4]


async def exits_on_one(x: int) -> int:
    await asyncio.sleep(0)
    if x == 1:
        raise SystemExit("leaving")
    if x == 2:
        raise KeyboardInterrupt
    return x


def test_system_exit_in_a_coroutine_fails_only_its_item() -> None:
    """SystemExit or KeyboardInterrupt raised by a coroutine fails its item; the shared
    loop keeps running for later calls."""
    got = laneway.parallel_map(exits_on_one, range(4), errors="return")
    assert got[0] == 0 and got[3] == 3
    assert isinstance(got[1], SystemExit) and isinstance(got[2], KeyboardInterrupt)
    assert laneway.parallel_map(double_later, [1, 2]) == [2, 4]


async def cancels_itself(x: int) -> int:
    if x == 1:
        raise asyncio.CancelledError
    await asyncio.sleep(0)
    return x


def test_a_coroutine_that_cancels_itself_fails_only_its_item() -> None:
    """A coroutine raising CancelledError on its own is its item's failure, not a hang."""
    got = laneway.parallel_map(cancels_itself, range(3), errors="return", timeout=30)
    assert got[0] == 0 and got[2] == 2
    assert isinstance(got[1], laneway.LanewayError) and "cancelled from inside" in str(got[1])


async def own_timeout(x: int) -> int:
    await asyncio.sleep(0)
    if x == 1:
        raise TimeoutError("the service timed out")
    return x


def test_a_coroutines_own_timeout_error_is_not_a_task_timeout() -> None:
    """With task_timeout, a TimeoutError the coroutine raises itself stays its own."""
    got = laneway.parallel_map(own_timeout, range(3), task_timeout=30, errors="return")
    assert got[0] == 0 and got[2] == 2
    assert type(got[1]) is TimeoutError and "service timed out" in str(got[1])


async def ignores_cancellation(x: int) -> int:
    if x == 1:
        for _ in range(3):
            with contextlib.suppress(asyncio.CancelledError):  # swallowed: it goes on
                await asyncio.sleep(0.1)  # task work, past its task_timeout
    return x


def test_a_coroutine_that_swallows_its_cancellation_still_overran() -> None:
    """An item cancelled at task_timeout that catches the cancellation and returns late
    gets TaskTimeoutError (its late value dropped), on the async backend and in amap."""
    got = laneway.parallel_map(ignores_cancellation, range(3), backend="async",
                               task_timeout=0.05, errors="return")
    assert got[0] == 0 and got[2] == 2
    assert isinstance(got[1], laneway.TaskTimeoutError) and "ended late" in str(got[1])
    got = asyncio.run(laneway.amap(ignores_cancellation, range(3), task_timeout=0.05,
                                   errors="return"))
    assert got[0] == 0 and got[2] == 2
    assert isinstance(got[1], laneway.TaskTimeoutError) and got[1].index == 1


async def stops_the_loop(x: int) -> int:
    if x == 1:
        asyncio.get_running_loop().stop()
    await asyncio.sleep(0.05)  # task work; the loop stops before it ends
    return x


def test_a_coroutine_that_stops_the_loop_fails_the_items_dropped_with_it() -> None:
    """Stopping laneway's loop drops what ran on it: those items fail with a LanewayError
    that says so (the call used to wait for them forever), and the next call gets a new
    loop."""
    got = laneway.parallel_map(stops_the_loop, range(4), backend="async", errors="return",
                               timeout=DEADLOCK_TIMEOUT)
    assert all(isinstance(g, laneway.LanewayError) for g in got), got
    assert "event loop stopped before these items ended" in str(got[1])
    assert laneway.parallel_map(double_later, range(3), backend="async",
                                timeout=DEADLOCK_TIMEOUT) == [0, 2, 4]


async def leaf(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def middle(x: int) -> int:
    return sum(laneway.parallel_map(leaf, range(x)))


async def top(x: int) -> int:
    return sum(laneway.parallel_map(middle, range(x)))


def test_sync_calls_nested_two_levels_deep_in_coroutines() -> None:
    """A coroutine on a laneway loop (shared or private) that makes a sync call gets a
    loop of its own for it, at any depth: no deadlock, and no loop thread left over."""
    assert laneway.parallel_map(top, [3, 4]) == [1, 4]
    assert not [t for t in threading.enumerate() if t.name == "laneway-async-nested"
                and not t.join(DEADLOCK_TIMEOUT) and t.is_alive()]


async def makes_an_imap_and_drops_it(x: int) -> int:
    iterator = laneway.imap(leaf, range(3))  # never iterated
    del iterator
    return x


def test_a_nested_imap_never_iterated_starts_no_loop() -> None:
    """The private loop of a nested run starts with its first chunk: an imap dropped
    before its first next() leaves no thread behind."""
    before = {t for t in threading.enumerate() if t.name == "laneway-async-nested"}
    assert laneway.parallel_map(makes_an_imap_and_drops_it, range(5)) == list(range(5))
    after = {t for t in threading.enumerate() if t.name == "laneway-async-nested"}
    assert after <= before


def test_env_async_applies_to_coroutine_functions_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """LANEWAY_BACKEND=async forces coroutine functions onto the loop; a plain function
    is routed as if the variable were unset (not refused)."""
    monkeypatch.setenv("LANEWAY_BACKEND", "async")
    assert laneway.parallel_map(double_later, [1, 2], kind="cpu") == [2, 4]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "async" and "LANEWAY_BACKEND" in plan.reason
    assert laneway.parallel_map(abs, [-1, -2]) == [1, 2]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend != "async"


def test_amap_keeps_a_coroutines_own_timeout_error() -> None:
    """amap with task_timeout: a TimeoutError the coroutine raises itself stays its own."""
    got = asyncio.run(laneway.amap(own_timeout, range(3), task_timeout=30, errors="return"))
    assert got[0] == 0 and got[2] == 2 and type(got[1]) is TimeoutError


def sums_leaves(x: int) -> int:
    return sum(laneway.parallel_map(leaf, range(3)))


async def through_a_thread(x: int) -> int:
    return sum(laneway.parallel_map(sums_leaves, range(2), backend="thread"))


def test_a_coroutine_whose_sync_call_runs_async_work_on_pool_threads() -> None:
    """A coroutine on the shared loop makes a thread-backend call whose items start
    async runs on pool threads: those get loops of their own while the shared one is
    blocked (no deadlock)."""
    assert laneway.parallel_map(through_a_thread, range(2)) == [6, 6]


class AsyncCallable:
    """An instance whose class defines ``async def __call__``."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return self.factor * x


def test_an_instance_with_async_call_is_a_coroutine_function() -> None:
    """Its calls are awaited, on the async backend (not returned as coroutine objects)."""
    assert laneway.parallel_map(AsyncCallable(3), [1, 2]) == [3, 6]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "async"
    assert asyncio.run(laneway.amap(AsyncCallable(2), [1, 2])) == [2, 4]

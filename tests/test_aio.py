"""amap and arun_concurrently: async entry points that never block the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT


async def double(x: int) -> int:
    await asyncio.sleep(0.001)
    return 2 * x


def test_amap_coroutines_run_on_the_loop_in_order() -> None:
    """Coroutine functions run on the loop; results in input order."""
    assert asyncio.run(laneway.amap(double, range(200))) == [2 * x for x in range(200)]


def test_amap_sync_work_does_not_block_the_loop() -> None:
    """Sync items wait for an event that only the loop can set: no deadlock."""
    released = threading.Event()

    def wait_for_loop(x: int) -> int:
        if not released.wait(DEADLOCK_TIMEOUT):
            raise TimeoutError("the event loop was blocked")
        return x

    async def main() -> list[int]:
        async def release_soon() -> None:
            await asyncio.sleep(0)
            released.set()

        releaser = asyncio.ensure_future(release_soon())
        result = await laneway.amap(wait_for_loop, range(4), backend="thread")
        await releaser
        return result

    assert asyncio.run(main()) == [0, 1, 2, 3]


def test_amap_errors_and_task_timeout() -> None:
    """Errors follow the same policy; a coroutine past task_timeout fails alone."""
    async def maybe(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        if x == 3:
            await asyncio.sleep(DEADLOCK_TIMEOUT)
        return x

    with pytest.raises(ValueError, match="two"):
        asyncio.run(laneway.amap(maybe, [0, 1, 2]))
    got = asyncio.run(laneway.amap(maybe, range(5), errors="return", task_timeout=0.1))
    assert got[:2] == [0, 1] and got[4] == 4
    assert isinstance(got[2], ValueError)
    assert isinstance(got[3], laneway.TaskTimeoutError)


def test_amap_timeout() -> None:
    """timeout= bounds the whole amap."""
    async def slow(x: int) -> int:
        await asyncio.sleep(DEADLOCK_TIMEOUT)
        return x

    with pytest.raises(TimeoutError, match="timeout=0.1"):
        asyncio.run(laneway.amap(slow, range(3), timeout=0.1))


def test_cancelling_amap_cancels_the_run() -> None:
    """Cancelling the awaiting task stops a sync run (no thread left behind)."""
    release = threading.Event()

    def blocked(x: int) -> int:
        release.wait(DEADLOCK_TIMEOUT)
        return x

    async def main() -> None:
        job = asyncio.ensure_future(laneway.amap(blocked, range(4), backend="thread",
                                                 workers=2))
        await asyncio.sleep(0)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(main())
    release.set()


def test_amap_validates_before_running() -> None:
    """Bad keywords raise at the await, before anything runs."""
    with pytest.raises(ValueError, match="workers must be a positive int"):
        asyncio.run(laneway.amap(double, [1], workers=0))


def test_arun_concurrently_mixes_coroutines_and_calls() -> None:
    """Coroutine tasks on the loop, the rest routed; argument order kept."""
    got = asyncio.run(laneway.arun_concurrently(
        laneway.task(double, 4), lambda: "sync", laneway.task(pow, 2, 5)))
    assert got == [8, "sync", 32]

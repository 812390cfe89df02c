"""amap and arun_concurrently: async entry points that never block the loop."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
import time

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


def fail(message: str) -> None:
    raise ValueError(message)


@laneway.cpu_bound
def cpu_pid_then_block(path: str) -> None:
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)  # one atomic appearance: the test reads a whole pid
    threading.Event().wait(DEADLOCK_TIMEOUT)  # blocks until stopped


def test_arun_concurrently_of_nothing_and_of_a_non_task() -> None:
    """No tasks: [] (as run_concurrently); a non-callable is refused under its own name."""
    assert asyncio.run(laneway.arun_concurrently()) == []
    with pytest.raises(TypeError, match=r"^arun_concurrently\(\) argument #0 must be a "
                                        r"callable or a laneway.task\(...\), got 42"):
        asyncio.run(laneway.arun_concurrently(42))  # type: ignore[arg-type]


def test_arun_concurrently_numbers_tasks_as_given() -> None:
    """A failing non-coroutine task is named by its position in the call."""
    with pytest.raises(ValueError, match="boom") as info:
        asyncio.run(laneway.arun_concurrently(laneway.task(double, 1),
                                              laneway.task(fail, "boom")))
    assert any("task #1" in note for note in info.value.__notes__)
    got = asyncio.run(laneway.arun_concurrently(laneway.task(double, 1),
                                                laneway.task(fail, "boom"), errors="return"))
    assert got[0] == 2 and isinstance(got[1], ValueError)


def test_arun_concurrently_failure_stops_the_other_tasks(tmp_path: pathlib.Path) -> None:
    """errors="raise": the first failure stops a process task still running."""
    marker = str(tmp_path / "pid")

    async def fail_once_started() -> None:
        deadline = time.monotonic() + DEADLOCK_TIMEOUT
        while not os.path.exists(marker):  # the worker writes it when the task runs
            assert time.monotonic() < deadline, "the process task never started"
            await asyncio.sleep(0.005)
        raise ValueError("stop everything")

    with pytest.raises(ValueError, match="stop everything"):
        asyncio.run(laneway.arun_concurrently(laneway.task(cpu_pid_then_block, marker),
                                              fail_once_started))
    pid = int(pathlib.Path(marker).read_text())
    deadline = time.monotonic() + DEADLOCK_TIMEOUT
    while _alive(pid):  # the worker running it is killed and replaced
        assert time.monotonic() < deadline, "the process task was not stopped"
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    from laneway._backends.process.pool import default_pool

    return pid in default_pool().worker_pids()


def test_sync_parallel_map_of_coroutines_inside_a_loop_on_serial() -> None:
    """The serial backend runs coroutine functions even when called from a running loop."""
    async def main() -> list[int]:
        return laneway.parallel_map(double, range(3), backend="serial")

    assert asyncio.run(main()) == [0, 2, 4]

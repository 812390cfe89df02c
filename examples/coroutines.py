"""Coroutine functions from sync code: laneway runs them together on its event loop.

Run: python examples/coroutines.py
"""

from __future__ import annotations

import asyncio
import time

import laneway


async def fetch(n: int) -> int:
    """Stands in for a network call: 50 ms of waiting."""
    await asyncio.sleep(0.05)
    return n * 2


async def sometimes_hangs(n: int) -> int:
    """Item 3 never answers; task_timeout cancels it, the others return."""
    if n == 3:
        await asyncio.Event().wait()
    await asyncio.sleep(0.01)
    return n


def main() -> None:
    t = time.perf_counter()
    results = laneway.parallel_map(fetch, range(500))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "async", plan
    print(f"500 coroutines on the async backend: {time.perf_counter() - t:.2f} s "
          f"({plan.reason})")
    assert results == [2 * n for n in range(500)]

    t = time.perf_counter()
    laneway.parallel_map(fetch, range(500), backend="thread")
    print(f"the same on threads (one asyncio.run per item, 64 at a time): "
          f"{time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    limited = laneway.parallel_map(fetch, range(40), workers=10)
    print(f"40 coroutines, at most 10 in flight: {time.perf_counter() - t:.2f} s "
          f"(4 rounds of 50 ms), {limited[:3]}...")

    outcomes = laneway.parallel_map(sometimes_hangs, range(6), task_timeout=0.5,
                                    errors="return")
    for n, outcome in enumerate(outcomes):
        shown = type(outcome).__name__ if isinstance(outcome, Exception) else outcome
        print(f"  sometimes_hangs({n}) -> {shown}")
    assert isinstance(outcomes[3], laneway.TaskTimeoutError)

    async def from_async_code() -> list[int]:
        return await laneway.amap(fetch, range(100))  # on the caller's own loop

    print("amap from async code:", asyncio.run(from_async_code())[:5], "...")


if __name__ == "__main__":
    main()

"""Heterogeneous work and async: run_concurrently and amap against their targets.

Run: python benchmarks/bench_concurrent.py [--reps N]

1. 2 pure-Python CPU tasks of ~0.5 s + 20 `sleep(0.5)` tasks through run_concurrently on
   2 cores: hinted (target <= 0.8 s) and unhinted, functions never seen before (target
   <= 1.1 s; the lower bound is ~0.5 s, one thread pool >= 1.0 s, one 2-process pool ~5 s).
2. amap over 1,000 coroutine calls of asyncio.sleep(0.05) (target <= 0.3 s) while
   another task on the same loop ticks every 10 ms (it must keep ticking).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import laneway


def spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of fn that laneway has never seen (no cached measurement, no hint)."""
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__)


def mixed(cpu: Callable[..., Any], wait: Callable[..., Any], n: int) -> float:
    began = time.perf_counter()
    laneway.run_concurrently(*[laneway.task(cpu, n) for _ in range(2)],
                             *[laneway.task(wait, 0.5) for _ in range(20)])
    return time.perf_counter() - began


async def amap_with_ticker() -> tuple[float, int, int]:
    ticks = 0
    stop = False

    async def ticker() -> None:
        nonlocal ticks
        while not stop:
            await asyncio.sleep(0.01)
            ticks += 1

    async def nap_async(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    ticking = asyncio.ensure_future(ticker())
    began = time.perf_counter()
    await laneway.amap(nap_async, range(1000))
    took = time.perf_counter() - began
    stop = True
    await ticking
    return took, ticks, int(took / 0.01)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    reps = parser.parse_args().reps
    laneway.parallel_map(abs, range(2), backend="process")  # warm pool
    began = time.perf_counter()
    spin(1_000_000)
    n = int(1_000_000 * 0.5 / (time.perf_counter() - began))
    hinted_cpu, hinted_io = laneway.cpu_bound(fresh(spin)), laneway.io_bound(fresh(nap))
    hinted, unhinted = [], []
    for _ in range(reps):
        hinted.append(mixed(hinted_cpu, hinted_io, n))
        unhinted.append(mixed(fresh(spin), fresh(nap), n))
    amap_runs = [asyncio.run(amap_with_ticker()) for _ in range(reps)]
    amap_s = statistics.median(run[0] for run in amap_runs)
    print(f"Python {sys.version.split()[0]}, available_cpus() = {laneway.available_cpus()}; "
          f"medians of {reps}\n")
    print("| scenario | median | target | result |")
    print("|---|---|---|---|")
    h, u = statistics.median(hinted), statistics.median(unhinted)
    print(f"| run_concurrently, 2 CPU x 0.5 s + 20 sleep(0.5), hinted | {h:.3f} s | <= 0.8 s "
          f"| {'PASS' if h <= 0.8 else 'FAIL'} |")
    print(f"| same, unhinted, never seen before | {u:.3f} s | <= 1.1 s | "
          f"{'PASS' if u <= 1.1 else 'FAIL'} |")
    ticks = min(run[1] for run in amap_runs)
    print(f"| amap, 1,000 x asyncio.sleep(0.05), ticker every 10 ms | {amap_s:.3f} s "
          f"(ticker: at least {ticks} ticks) | <= 0.3 s, ticker keeps ticking | "
          f"{'PASS' if amap_s <= 0.3 and ticks > 0 else 'FAIL'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

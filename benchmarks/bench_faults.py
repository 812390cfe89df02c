"""Fault figures for docs/reliability.md: crash recovery, per-task timeouts, their cost,
and the memory/fd/thread footprint of a long stream.

Run: python benchmarks/bench_faults.py [--reps N]

Each figure is a median over --reps runs (default 3) in this one process (the warm pool
is shared, as in real use); ratios are measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable

import laneway


def ten_ms_exit_on_50(x: int) -> int:
    if x == 50:
        os._exit(1)
    time.sleep(0.01)  # ~10 ms of task work
    return x


def fifty_ms_hang_on_5(x: int) -> int:
    time.sleep(60 if x == 5 else 0.05)
    return x


def trivial(x: int) -> int:
    return x


def square(x: int) -> int:
    return x * x


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    began = time.perf_counter()
    result = fn()
    return time.perf_counter() - began, result


def crash_recovery(reps: int) -> str:
    seconds, good, errors = [], [], []
    for _ in range(reps):
        took, got = timed(lambda: laneway.parallel_map(
            ten_ms_exit_on_50, range(100), backend="process", workers=2, errors="return"))
        assert isinstance(got, list)
        seconds.append(took)
        good.append(sum(1 for k, g in enumerate(got) if g == k))
        errors.append(sum(isinstance(g, laneway.WorkerCrashedError) for g in got))
    return (f"| crash: 100 x 10 ms, item 50 calls os._exit(1), errors='return' | "
            f"{statistics.median(seconds):.3f} s | {min(good)}-{max(good)} correct, "
            f"{min(errors)}-{max(errors)} WorkerCrashedError | target <= 0.6 s, 99 + 1 |")


def timeout_recovery(reps: int) -> str:
    seconds, good, errors = [], [], []
    for _ in range(reps):
        took, got = timed(lambda: laneway.parallel_map(
            fifty_ms_hang_on_5, range(20), backend="process", workers=2, task_timeout=1,
            errors="return"))
        assert isinstance(got, list)
        seconds.append(took)
        good.append(sum(1 for k, g in enumerate(got) if g == k))
        errors.append(sum(isinstance(g, laneway.TaskTimeoutError) for g in got))
    return (f"| timeout: 20 x 50 ms, item 5 hangs 60 s, task_timeout=1 | "
            f"{statistics.median(seconds):.3f} s | {min(good)}-{max(good)} correct, "
            f"{min(errors)}-{max(errors)} TaskTimeoutError | target <= 1.2 s, 19 + 1 |")


def timeout_cost(reps: int) -> str:
    plain, guarded = [], []
    for _ in range(reps):  # alternate, so both see the same machine
        plain.append(timed(lambda: laneway.parallel_map(
            trivial, range(1000), backend="process"))[0])
        guarded.append(timed(lambda: laneway.parallel_map(
            trivial, range(1000), backend="process", task_timeout=60))[0])
    a, b = statistics.median(plain), statistics.median(guarded)
    return (f"| cost of task_timeout=60 on 1,000 trivial tasks | {b * 1e3:.1f} ms vs "
            f"{a * 1e3:.1f} ms without | {b / a:.2f}x, {b / 1000 * 1e6:.1f} us per task | "
            f"target <= 1.5x (pebble ~80 us, mpire ~22 us per task) |")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stream_footprint() -> str:
    laneway.parallel_map(square, range(1000), backend="process")  # warm: pool and imports
    fds, threads, rss = len(os.listdir("/proc/self/fd")), threading.active_count(), _rss_mb()
    took, total = timed(lambda: sum(laneway.imap(square, (x for x in range(1_000_000)),
                                                 backend="process")))
    assert total == sum(x * x for x in range(1_000_000))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    growth = peak - rss
    fds_after, threads_after = len(os.listdir("/proc/self/fd")), threading.active_count()
    return (f"| 1,000,000 tiny items through imap(backend='process') | {took:.2f} s | "
            f"peak RSS +{growth:.1f} MB; fds {fds} -> {fds_after}; threads {threads} -> "
            f"{threads_after} | target < 30 MB, fds and threads unchanged |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    reps = parser.parse_args().reps
    laneway.parallel_map(trivial, range(4), backend="process", workers=2)  # warm pool
    print(f"Python {sys.version.split()[0]}, available_cpus() = {laneway.available_cpus()}, "
          f"load average {os.getloadavg()[0]:.2f}; medians of {reps}\n")
    print("| scenario | wall | outcome | target |")
    print("|---|---|---|---|")
    print(crash_recovery(reps))
    print(timeout_recovery(reps))
    print(timeout_cost(max(reps, 5)))
    print(stream_footprint())
    return 0


if __name__ == "__main__":
    sys.exit(main())

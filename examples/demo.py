"""laneway in one minute: hints route work, a crash stays local, the plan says why.

Run: python examples/demo.py
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

import laneway


@laneway.cpu_bound
def busy_sum(n: int) -> int:
    """Pure-Python arithmetic: holds the GIL, so laneway sends it to processes."""
    return sum(i * i % 7 for i in range(n))


@laneway.cpu_bound(releases_gil=True)
def digest(seed: int) -> str:
    """hashlib releases the GIL on large inputs: threads are enough."""
    return hashlib.sha256(bytes([seed % 256]) * 4_000_000).hexdigest()[:12]


@laneway.io_bound
def wait_a_bit(x: int) -> int:
    """Mostly waiting: many threads overlap the waits."""
    time.sleep(0.02)
    return x


def flaky(x: int) -> int:
    """Item 3 kills its worker process; only that item fails."""
    if x == 3:
        os._exit(1)
    return x * 10


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="  [%(name)s] %(message)s", stream=sys.stdout)
    print(f"CPUs this process may use: {laneway.available_cpus()}")

    t = time.perf_counter()
    sums = laneway.parallel_map(busy_sum, [300_000] * 8)
    print(f"cpu-bound:  {len(sums)} results in {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    digests = laneway.parallel_map(digest, range(8))
    print(f"native:     {digests[:2]}... in {time.perf_counter() - t:.2f} s")

    t = time.perf_counter()
    waited = laneway.parallel_map(wait_a_bit, range(100))
    print(f"io-bound:   {len(waited)} waits of 20 ms in {time.perf_counter() - t:.2f} s")

    results = laneway.parallel_map(flaky, range(6), backend="process", chunksize=1,
                                   errors="return")
    for item, result in enumerate(results):
        shown = type(result).__name__ if isinstance(result, Exception) else result
        print(f"  flaky({item}) -> {shown}")
    crashed = results[3]
    assert isinstance(crashed, laneway.WorkerCrashedError), crashed
    print(f"the crash stayed local: {crashed}")

    squares = laneway.imap(lambda x: x * x, range(10**9), backend="thread")
    print("lazy imap over a billion items, first five:", [next(squares) for _ in range(5)])


if __name__ == "__main__":
    main()

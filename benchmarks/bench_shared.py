"""Shared-state figures for docs/shared-state.md: operations per second of laneway's
SharedCounter and SharedDict from process workers and from threads, side by side with a
``multiprocessing.Manager`` proxy guarded by a Manager lock (processes) and a plain
``threading.Lock`` (threads); then the exactness check of issue 6 (4 process tasks +
4 thread tasks, each 10,000 updates, 20 runs, for each helper).

Run: python benchmarks/bench_shared.py [--reps N] [--quick]

Every figure is a median over --reps rounds (default 3); within a round the variants run
one after the other, in an order that rotates from round to round.  Process figures use
laneway's warm process pool (2 workers, started before any helper exists); each worker
waits at a barrier, then times its own loop: operations per second = all operations /
(last worker's end - first worker's start).  Thread figures use 4 threads the same way.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import laneway
from laneway._shared import SharedCounter, SharedDict, SharedValue

PROCESSES = 2
THREADS = 4


# -- what the tasks run (module level: process workers receive these functions) ---------


def arrive_and_wait(arrived: Any, parties: int) -> None:
    """A barrier for threads and processes alike (a SharedCounter; not timed)."""
    arrived.increment()
    while arrived.value < parties:
        pass


def laneway_counter(args: tuple[SharedCounter, SharedCounter, int, int]) -> tuple[float, float]:
    counter, arrived, parties, n = args
    arrive_and_wait(arrived, parties)
    began = time.perf_counter()
    increment = counter.increment
    for _ in range(n):
        increment()
    return began, time.perf_counter()


def manager_counter(args: tuple[Any, Any, SharedCounter, int, int]) -> tuple[float, float]:
    value, lock, arrived, parties, n = args
    arrive_and_wait(arrived, parties)
    began = time.perf_counter()
    for _ in range(n):
        with lock:
            value.value += 1
    return began, time.perf_counter()


def laneway_dict(args: tuple[SharedDict[str, int], SharedCounter, int, int]
                 ) -> tuple[float, float]:
    table, arrived, parties, n = args
    arrive_and_wait(arrived, parties)
    began = time.perf_counter()
    for i in range(n):
        table.update_with(KEYS[i & 7], plus_one, 0)
    return began, time.perf_counter()


def manager_dict(args: tuple[Any, Any, SharedCounter, int, int]) -> tuple[float, float]:
    table, lock, arrived, parties, n = args
    arrive_and_wait(arrived, parties)
    began = time.perf_counter()
    for i in range(n):
        key = KEYS[i & 7]
        with lock:
            table[key] = table.get(key, 0) + 1
    return began, time.perf_counter()


KEYS = [f"key{k}" for k in range(8)]


def plus_one(n: int) -> int:
    return n + 1


def hammer(args: tuple[str, Any, SharedCounter, int, int]) -> None:
    kind, helper, arrived, parties, n = args
    arrive_and_wait(arrived, parties)
    if kind == "SharedCounter.increment":
        for _ in range(n):
            helper.increment()
    elif kind == "SharedDict.update_with":
        for _ in range(n):
            helper.update_with("n", plus_one, 0)
    else:
        for _ in range(n):
            helper.update(plus_one)


# -- running variants --------------------------------------------------------------------


def on_processes(task: Callable[[Any], tuple[float, float]],
                 make_args: Callable[[SharedCounter], tuple[Any, ...]], n: int) -> float:
    """Operations per second of ``task`` run by PROCESSES process workers at once."""
    arrived = SharedCounter()
    spans = laneway.parallel_map(task, [(*make_args(arrived), PROCESSES, n)] * PROCESSES,
                                 backend="process", workers=PROCESSES, chunksize=1)
    return PROCESSES * n / (max(e for _, e in spans) - min(b for b, _ in spans))


def on_threads(loop: Callable[[int], None], n: int) -> float:
    """Operations per second of ``loop(n)`` run by THREADS threads at once."""
    barrier = threading.Barrier(THREADS)
    spans: list[tuple[float, float]] = []

    def run() -> None:
        barrier.wait()
        began = time.perf_counter()
        loop(n)
        spans.append((began, time.perf_counter()))

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return THREADS * n / (max(e for _, e in spans) - min(b for b, _ in spans))


def thread_variants(n: int) -> dict[str, Callable[[], float]]:
    def plain_counter() -> float:
        lock, box = threading.Lock(), [0]

        def loop(k: int) -> None:
            for _ in range(k):
                with lock:
                    box[0] += 1

        rate = on_threads(loop, n)
        assert box[0] == THREADS * n
        return rate

    def shared_counter(share: bool) -> Callable[[], float]:
        def measure() -> float:
            counter = SharedCounter()
            if share:
                counter._share()  # what pickling it for a process task does

            def loop(k: int) -> None:
                increment = counter.increment
                for _ in range(k):
                    increment()

            rate = on_threads(loop, n)
            assert counter.value == THREADS * n
            return rate
        return measure

    def plain_dict() -> float:
        lock = threading.Lock()
        table: dict[str, int] = {}

        def loop(k: int) -> None:
            for i in range(k):
                key = KEYS[i & 7]
                with lock:
                    table[key] = table.get(key, 0) + 1

        rate = on_threads(loop, n)
        assert sum(table.values()) == THREADS * n
        return rate

    def shared_dict(share: bool) -> Callable[[], float]:
        def measure() -> float:
            table: SharedDict[str, int] = SharedDict()
            if share:
                table._share()

            def loop(k: int) -> None:
                for i in range(k):
                    table.update_with(KEYS[i & 7], plus_one, 0)

            rate = on_threads(loop, n)
            assert sum(table.values()) == THREADS * n
            return rate
        return measure

    return {
        "counter/thread/lock": plain_counter,
        "counter/thread/laneway": shared_counter(False),
        "counter/thread/laneway-shared": shared_counter(True),
        "dict/thread/lock": plain_dict,
        "dict/thread/laneway": shared_dict(False),
        "dict/thread/laneway-shared": shared_dict(True),
    }


def process_variants(manager: Any, n_fast: int, n_slow: int) -> dict[str, Callable[[], float]]:
    def laneway_counter_rate() -> float:
        counter = SharedCounter()
        rate = on_processes(laneway_counter, lambda a: (counter, a), n_fast)
        assert counter.value == PROCESSES * n_fast
        return rate

    def manager_counter_rate() -> float:
        value, lock = manager.Value("q", 0), manager.Lock()
        rate = on_processes(manager_counter, lambda a: (value, lock, a), n_slow)
        assert value.value == PROCESSES * n_slow
        return rate

    def laneway_dict_rate() -> float:
        table: SharedDict[str, int] = SharedDict()
        rate = on_processes(laneway_dict, lambda a: (table, a), n_fast // 4)
        assert sum(table.values()) == PROCESSES * (n_fast // 4)
        return rate

    def manager_dict_rate() -> float:
        table, lock = manager.dict(), manager.Lock()
        rate = on_processes(manager_dict, lambda a: (table, lock, a), n_slow)
        assert sum(table.values()) == PROCESSES * n_slow
        return rate

    return {
        "counter/process/laneway": laneway_counter_rate,
        "counter/process/manager": manager_counter_rate,
        "dict/process/laneway": laneway_dict_rate,
        "dict/process/manager": manager_dict_rate,
    }


def exactness(runs: int, n: int) -> list[str]:
    """4 process tasks + 4 thread tasks, n updates each, at once, ``runs`` times."""
    rows = []
    for kind in ("SharedCounter.increment", "SharedDict.update_with", "SharedValue.update"):
        exact, began = 0, time.perf_counter()
        for _ in range(runs):
            helper: Any = (SharedCounter() if kind.startswith("SharedCounter") else
                           SharedDict() if kind.startswith("SharedDict") else SharedValue(0))
            arrived = SharedCounter()
            items = [(kind, helper, arrived, 8, n)] * 4
            failure: list[BaseException] = []

            def threads(items: list[Any] = items, failure: list[BaseException] = failure
                        ) -> None:
                try:
                    laneway.parallel_map(hammer, items, backend="thread", workers=4,
                                         chunksize=1)
                except BaseException as exc:
                    failure.append(exc)

            runner = threading.Thread(target=threads)
            runner.start()
            laneway.parallel_map(hammer, items, backend="process", workers=4, chunksize=1)
            runner.join()
            if failure:
                raise failure[0]
            total = (helper.value if kind.startswith("SharedCounter") else
                     helper["n"] if kind.startswith("SharedDict") else helper.get())
            exact += total == 8 * n
        seconds = time.perf_counter() - began
        rows.append(f"| {kind} | {runs} | {8 * n:,} | {exact}/{runs} | {seconds:.1f} s | "
                    f"{'PASS' if exact == runs else 'FAIL'} |")
    return rows


def fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    n_fast, n_slow, n_threads = (5_000, 200, 5_000) if args.quick else (100_000, 3_000, 100_000)
    runs, n_exact = (2, 1_000) if args.quick else (20, 10_000)
    started = time.perf_counter()
    print(f"Python {sys.version.split()[0]}, {sys.platform}, available_cpus() = "
          f"{laneway.available_cpus()}, load average {os.getloadavg()[0]:.2f}; medians of "
          f"{reps}; {PROCESSES} process workers, {THREADS} threads\n")

    # The pool first (warm, as in the issue), then the Manager's server process.
    laneway.parallel_map(plus_one, range(4), backend="process", workers=4, chunksize=1)
    manager = multiprocessing.get_context("spawn").Manager()
    try:
        variants = {**thread_variants(n_threads), **process_variants(manager, n_fast, n_slow)}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        names = list(variants)
        for rep in range(reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                rates[name].append(variants[name]())
    finally:
        manager.shutdown()
    median = {name: statistics.median(values) for name, values in rates.items()}

    print("| operation | from | laneway ops/s | baseline | baseline ops/s | ratio | target |")
    print("|---|---|---:|---|---:|---:|---|")
    targets_ok = True
    for op, label in (("counter", "SharedCounter.increment"),
                      ("dict", "SharedDict.update_with")):
        mine, theirs = median[f"{op}/process/laneway"], median[f"{op}/process/manager"]
        ratio = mine / theirs
        target = ""
        if op == "counter":
            passed = ratio >= 10
            targets_ok &= passed
            target = f"{'PASS' if passed else 'FAIL'}: >= 10x"
        print(f"| {label} | {PROCESSES} processes | {fmt(mine)} | Manager "
              f"{'Value' if op == 'counter' else 'dict'} + Manager Lock | {fmt(theirs)} | "
              f"{ratio:.1f}x faster | {target or '-'} |")
        lock = median[f"{op}/thread/lock"]
        for mode in ("laneway", "laneway-shared"):
            mine = median[f"{op}/thread/{mode}"]
            slower = lock / mine
            target = "-"
            if op == "counter" and mode == "laneway":
                passed = slower <= 3
                targets_ok &= passed
                target = f"{'PASS' if passed else 'FAIL'}: within 3x"
            what = "local mode" if mode == "laneway" else "shared mode"
            print(f"| {label} ({what}) | {THREADS} threads | {fmt(mine)} | threading.Lock + "
                  f"{'int' if op == 'counter' else 'dict'} | {fmt(lock)} | {slower:.2f}x "
                  f"slower | {target} |")

    print(f"\nExactness: 4 process tasks + 4 thread tasks at once, each {n_exact:,} updates, "
          f"{runs} runs per helper\n")
    print("| operation | runs | expected | exact runs | time | result |")
    print("|---|---:|---:|---:|---:|---|")
    rows = exactness(runs, n_exact)
    for row in rows:
        print(row)
    all_exact = all(row.endswith("PASS |") for row in rows)
    print(f"\ntargets {'all met' if targets_ok else 'NOT all met'}; exactness "
          f"{'PASS' if all_exact else 'FAIL'}; {time.perf_counter() - started:.0f} s in all")
    return 0 if all_exact else 1


if __name__ == "__main__":
    sys.exit(main())

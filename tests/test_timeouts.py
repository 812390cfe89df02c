"""task_timeout: only the overrunning item fails; its process worker is stopped and replaced."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT


def hang_on_five(x: int) -> tuple[int, int]:
    if x == 5:
        time.sleep(DEADLOCK_TIMEOUT)  # simulated runaway work; the timeout must stop it
    return x, os.getpid()


def square(x: int) -> int:
    return x * x


def test_process_item_overrun_fails_alone_and_worker_is_replaced() -> None:
    """The hung item gets TaskTimeoutError, the other 19 their results, the worker dies."""
    got = laneway.parallel_map(hang_on_five, range(20), backend="process", workers=2,
                               task_timeout=1, errors="return")
    error = got[5]
    assert isinstance(error, laneway.TaskTimeoutError)
    assert isinstance(error, TimeoutError)
    assert error.index == 5 and error.seconds == 1.0
    assert "task_timeout=1.0s" in str(error)
    assert [g[0] for k, g in enumerate(got) if k != 5] == [k for k in range(20) if k != 5]
    # the worker that ran item 5 is not among the live workers any more
    from laneway._backends.process.pool import default_pool

    assert laneway.parallel_map(square, range(3), backend="process") == [0, 1, 4]
    survivors = set(default_pool().worker_pids())
    assert all(pid in survivors or not _alive(pid) for _, pid in
               (g for k, g in enumerate(got) if k != 5))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_process_overrun_on_a_warm_idle_pool_is_stopped() -> None:
    """A timed job sent to an idle warm pool wakes the collector, which was asleep on
    the idle workers' (minutes-long) timer: the overrun is stopped at task_timeout, not
    when the item happens to end."""
    assert laneway.parallel_map(square, range(4), backend="process") == [0, 1, 4, 9]
    got = laneway.parallel_map(hang_on_five, [5, 5], backend="process", task_timeout=0.5,
                               errors="return")
    assert [type(g) for g in got] == [laneway.TaskTimeoutError] * 2, got


def test_process_timeout_with_errors_raise() -> None:
    """errors="raise" raises the TaskTimeoutError in the caller."""
    with pytest.raises(laneway.TaskTimeoutError, match="item #5"):
        laneway.parallel_map(hang_on_five, range(8), backend="process", task_timeout=0.5)


def test_thread_item_overrun_is_abandoned() -> None:
    """On threads the overrunning item is reported and abandoned; the rest complete."""
    release = threading.Event()

    def wait_on_three(x: int) -> int:
        if x == 3:
            release.wait(DEADLOCK_TIMEOUT)
        return x

    try:
        got = laneway.parallel_map(wait_on_three, range(10), backend="thread", workers=2,
                                   chunksize=5, task_timeout=0.3, errors="return")
    finally:
        release.set()
    assert isinstance(got[3], laneway.TaskTimeoutError)
    assert "abandoned" in str(got[3])
    assert [g for k, g in enumerate(got) if k != 3] == [k for k in range(10) if k != 3]


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_timeout_that_never_fires_changes_nothing(backend: str) -> None:
    """Many tiny items with a generous task_timeout: every result, in order."""
    got = laneway.parallel_map(square, range(3000), backend=backend, task_timeout=60)
    assert got == [x * x for x in range(3000)]


def test_serial_refuses_task_timeout() -> None:
    """A serial run cannot interrupt an item, so task_timeout is refused up front."""
    with pytest.raises(ValueError, match="task_timeout needs the 'thread' or 'process'"):
        laneway.parallel_map(square, [1], backend="serial", task_timeout=1)


def at_the_deadline(x: int) -> int:
    time.sleep(0.02)  # task work that ends right about when task_timeout does
    return x


def test_process_items_ending_at_their_deadline_get_one_outcome_each() -> None:
    """An item that finishes as its worker is stopped keeps its result, and no item gets
    both a result and a TaskTimeoutError (which used to break the run's bookkeeping)."""
    for _ in range(3):
        got = laneway.parallel_map(at_the_deadline, range(40), backend="process", workers=2,
                                   task_timeout=0.02, errors="return", chunksize=10)
        assert len(got) == 40
        for x, value in enumerate(got):
            assert value == x or isinstance(value, laneway.TaskTimeoutError), (x, value)


def test_thread_items_ending_at_their_deadline_run_once_with_one_outcome() -> None:
    """Threads: a deadline met as the item returns gives it one outcome, and the chunk's
    next item is not run twice (once by its thread, once re-submitted)."""
    runs: dict[int, int] = {}
    lock = threading.Lock()

    def at_deadline(x: int) -> int:
        with lock:
            runs[x] = runs.get(x, 0) + 1
        time.sleep(0.004)  # task work that ends right about when task_timeout does
        return x

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # thread switches everywhere: the race shows at once
    try:
        for _ in range(5):
            runs.clear()
            got = laneway.parallel_map(at_deadline, range(200), backend="thread", workers=4,
                                       chunksize=50, task_timeout=0.004, errors="return")
            assert len(got) == 200
            for x, value in enumerate(got):
                assert value == x or isinstance(value, laneway.TaskTimeoutError), (x, value)
            deadline = time.monotonic() + DEADLOCK_TIMEOUT
            while sum(runs.values()) < 200:  # abandoned items finish in the background
                assert time.monotonic() < deadline, "an item never ran"
                time.sleep(0.01)
            assert sorted(runs) == list(range(200))
            assert max(runs.values()) == 1, {k: c for k, c in runs.items() if c > 1}
    finally:
        sys.setswitchinterval(interval)


def test_unlimited_timeouts_are_accepted() -> None:
    """float("inf") (or years) means no limit; it must not overflow a timer anywhere."""
    inf = float("inf")
    assert laneway.parallel_map(square, range(4), backend="process",
                                task_timeout=inf, timeout=inf) == [0, 1, 4, 9]
    assert laneway.parallel_map(square, range(4), backend="thread",
                                task_timeout=1e12, timeout=1e12) == [0, 1, 4, 9]
    assert laneway.run_concurrently(lambda: 1, timeout=inf) == [1]
    # the process pool still works afterwards (its collector survived)
    assert laneway.parallel_map(square, range(3), backend="process") == [0, 1, 4]

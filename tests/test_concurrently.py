"""run_concurrently and task: heterogeneous calls, each routed on its own."""

from __future__ import annotations

import os
import threading
import time

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT


@laneway.cpu_bound
def worker_pid() -> int:
    return os.getpid()


@laneway.io_bound
def thread_name() -> str:
    return threading.current_thread().name


def add(a: int, b: int = 0) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def test_results_in_argument_order_from_every_backend() -> None:
    """Hinted CPU calls run in processes, I/O calls on threads, results in order."""
    got = laneway.run_concurrently(worker_pid, thread_name, laneway.task(add, 1, b=2),
                                   lambda: "plain")
    assert got[0] != os.getpid()
    assert got[1].startswith("laneway-thread")
    assert got[2:] == [3, "plain"]


def test_task_keeps_args_and_calls() -> None:
    """task() records a call; calling the Task makes it."""
    t = laneway.task(add, 4, b=5)
    assert (t.fn, t.args, t.kwargs) == (add, (4,), {"b": 5})
    assert t() == 9


def test_errors_raise_and_return() -> None:
    """The first failure is raised with a note naming the task, or returned in place."""
    with pytest.raises(ValueError, match="boom") as info:
        laneway.run_concurrently(laneway.task(add, 1), laneway.task(fail, "boom"))
    assert any("task #1" in note for note in info.value.__notes__)
    got = laneway.run_concurrently(laneway.task(add, 1), laneway.task(fail, "boom"),
                                   errors="return")
    assert got[0] == 1 and isinstance(got[1], ValueError)


def test_timeout_cancels() -> None:
    """timeout= bounds the whole call."""
    release = threading.Event()
    try:
        with pytest.raises(TimeoutError, match="timeout=0.2"):
            laneway.run_concurrently(lambda: release.wait(DEADLOCK_TIMEOUT), timeout=0.2)
    finally:
        release.set()


def test_coroutine_tasks_are_awaited() -> None:
    """A coroutine function's task returns its awaited value."""
    async def double(x: int) -> int:
        return 2 * x

    assert laneway.run_concurrently(laneway.task(double, 21)) == [42]


def test_unknown_waiting_function_runs_all_its_calls_at_once() -> None:
    """Unhinted calls that wait are probed and the rest go to threads: all meet at once."""
    barrier = threading.Barrier(6)

    def meet(k: int) -> int:
        barrier.wait(DEADLOCK_TIMEOUT)  # only returns when all six run at the same time
        return k

    assert laneway.run_concurrently(*[laneway.task(meet, k) for k in range(6)]) == \
        list(range(6))


def test_every_task_runs_exactly_once(tmp_path: os.PathLike[str]) -> None:
    """Probing never runs a call twice."""
    def mark(k: int) -> int:
        os.close(os.open(os.path.join(tmp_path, f"{k}"), os.O_CREAT | os.O_EXCL))
        time.sleep(0.01)  # task work
        return k

    assert laneway.run_concurrently(*[laneway.task(mark, k) for k in range(10)]) == \
        list(range(10))
    assert len(os.listdir(tmp_path)) == 10


def test_bad_arguments() -> None:
    """Non-callables and bad keywords are refused, naming what was wrong."""
    with pytest.raises(TypeError, match="argument #1 must be a callable"):
        laneway.run_concurrently(add, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="task\\(\\) argument fn must be callable"):
        laneway.task(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="errors must be one of"):
        laneway.run_concurrently(add, errors="ignore")  # type: ignore[arg-type]
    assert laneway.run_concurrently() == []

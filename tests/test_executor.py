"""laneway.Executor against the behaviours CPython's executor tests specify (our own tests)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT


def mul(x: int, y: int) -> int:
    return x * y


@laneway.io_bound
def io_mul(x: int, y: int) -> int:
    return x * y


@laneway.cpu_bound
def cpu_mul(x: int, y: int = 1) -> int:
    return x * y


@laneway.cpu_bound
def cpu_pid() -> int:
    return os.getpid()


@laneway.cpu_bound
def cpu_sleep_then_mark(path: str) -> None:
    open(path + ".started", "w").close()
    time.sleep(DEADLOCK_TIMEOUT)  # long task work that cancel() must stop
    open(path + ".finished", "w").close()


def raise_value_error(message: str) -> None:
    raise ValueError(message)


@pytest.fixture
def executor() -> futures.Executor:
    with laneway.Executor(max_workers=4) as pool:
        yield pool


def test_is_a_concurrent_futures_executor(executor: futures.Executor) -> None:
    """It is an Executor and its futures are concurrent.futures.Future objects."""
    assert isinstance(executor, futures.Executor)
    assert isinstance(executor.submit(mul, 2, 3), futures.Future)


def test_submit_and_keywords(executor: futures.Executor) -> None:
    """submit passes positional and keyword arguments, on threads and processes."""
    assert executor.submit(mul, 2, 8).result(DEADLOCK_TIMEOUT) == 16
    assert executor.submit(cpu_mul, 3, y=5).result(DEADLOCK_TIMEOUT) == 15
    assert executor.submit(cpu_pid).result(DEADLOCK_TIMEOUT) != os.getpid()


def test_exceptions_travel_through_futures(executor: futures.Executor) -> None:
    """A raising call's future holds the exception, with its own type."""
    future = executor.submit(raise_value_error, "bad")
    with pytest.raises(ValueError, match="bad"):
        future.result(DEADLOCK_TIMEOUT)
    assert isinstance(future.exception(), ValueError)


def test_map_in_order_and_exceptions(executor: futures.Executor) -> None:
    """map yields results in order; an exception is raised when its turn comes."""
    assert list(executor.map(mul, range(10), range(10))) == [x * x for x in range(10)]
    results = executor.map(lambda x: 1 // x, [1, 0, 1])
    assert next(results) == 1
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_map_is_lazy_over_infinite_input(executor: futures.Executor) -> None:
    """map does not consume an infinite iterable up front."""
    squares = executor.map(lambda x: x * x, itertools.count())
    assert list(itertools.islice(squares, 5)) == [0, 1, 4, 9, 16]


def test_map_refills_its_window_as_each_result_is_taken() -> None:
    """2 x max_workers calls are in flight; taking a result submits one more at once."""
    pulled: list[int] = []

    def inputs() -> Iterator[int]:
        for x in itertools.count():
            pulled.append(x)
            yield x

    with laneway.Executor(max_workers=2) as pool:
        results = pool.map(mul, inputs(), itertools.repeat(2))
        assert len(pulled) == 4
        assert next(results) == 0
        assert len(pulled) == 5
        results.close()  # type: ignore[attr-defined]


def test_map_refuses_bad_arguments_by_name(executor: futures.Executor) -> None:
    """Non-iterables, a timeout that is not a number, a chunksize below 1: named errors."""
    with pytest.raises(TypeError, match=r"map\(\) argument #2 after fn must be iterable, "
                                        r"got 5 \(int\)"):
        executor.map(mul, [1], 5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="map\\(\\) argument timeout must be a number"):
        executor.map(mul, [1], [2], timeout="1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="map\\(\\) argument timeout must be a number"):
        executor.map(mul, [1], [2], timeout=float("nan"))
    with pytest.raises(ValueError, match="map\\(\\) argument chunksize must be a positive"):
        executor.map(mul, [1], [2], chunksize=0)


def test_map_timeout(executor: futures.Executor) -> None:
    """map's timeout counts from the call and raises TimeoutError."""
    release = threading.Event()
    try:
        results = executor.map(lambda _: release.wait(DEADLOCK_TIMEOUT), [1, 2], timeout=0.1)
        with pytest.raises(futures.TimeoutError):
            list(results)
    finally:
        release.set()


def test_no_submit_after_shutdown() -> None:
    """submit after shutdown raises RuntimeError."""
    pool = laneway.Executor()
    pool.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(mul, 1, 2)


def test_shutdown_waits_and_cancel_futures() -> None:
    """shutdown(cancel_futures=True) cancels what has not started; wait=True waits."""
    release = threading.Event()
    pool = laneway.Executor(max_workers=1)
    running = pool.submit(release.wait, DEADLOCK_TIMEOUT)
    queued = [pool.submit(io_mul, k, k) for k in range(5)]  # hinted: they wait for a thread
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    assert not running.done()
    # the cancelled calls count as done for futures.wait and as_completed (they were
    # never notified: wait(wait=True, cancel_futures=True) hung on them)
    done, not_done = futures.wait(queued, timeout=DEADLOCK_TIMEOUT)
    assert done == set(queued)
    assert not not_done
    assert set(futures.as_completed(queued, timeout=DEADLOCK_TIMEOUT)) == set(queued)
    release.set()
    pool.shutdown(wait=True)
    assert running.done() and running.result() is True


def test_shutdown_wait_with_cancel_futures_returns() -> None:
    """shutdown(wait=True, cancel_futures=True) with calls queued for a thread returns
    once the running call ends (it waited for the cancelled ones forever)."""
    release = threading.Event()
    pool = laneway.Executor(max_workers=1)
    running = pool.submit(release.wait, DEADLOCK_TIMEOUT)
    queued = [pool.submit(io_mul, k, k) for k in range(3)]
    release.set()  # (the running call may end before or during shutdown: both must work)
    returned = threading.Event()
    shutter = threading.Thread(
        target=lambda: (pool.shutdown(wait=True, cancel_futures=True), returned.set()),
        daemon=True)
    shutter.start()
    assert returned.wait(DEADLOCK_TIMEOUT), "shutdown(wait=True, cancel_futures=True) hung"
    assert running.result() is True
    assert all(f.done() for f in queued)


def test_wait_and_as_completed(executor: futures.Executor) -> None:
    """futures.wait and as_completed work with these futures."""
    release = threading.Event()
    slow = executor.submit(release.wait, DEADLOCK_TIMEOUT)
    fast = executor.submit(mul, 2, 2)
    done, not_done = futures.wait([slow, fast], timeout=DEADLOCK_TIMEOUT,
                                  return_when=futures.FIRST_COMPLETED)
    assert fast in done and slow in not_done
    failing = executor.submit(raise_value_error, "x")
    done, _ = futures.wait([slow, failing], timeout=DEADLOCK_TIMEOUT,
                           return_when=futures.FIRST_EXCEPTION)
    assert failing in done
    release.set()
    assert set(futures.as_completed([slow, fast, failing], timeout=DEADLOCK_TIMEOUT)) == \
        {slow, fast, failing}
    done, not_done = futures.wait([slow, fast, failing], return_when=futures.ALL_COMPLETED)
    assert not not_done


def test_cancel_pending_thread_call() -> None:
    """A call still waiting for a thread can be cancelled and never runs."""
    release = threading.Event()
    ran: list[int] = []
    with laneway.Executor(max_workers=1) as pool:
        blocker = pool.submit(release.wait, DEADLOCK_TIMEOUT)
        pending = pool.submit(ran.append, 1)
        assert pending.cancel()
        release.set()
        blocker.result(DEADLOCK_TIMEOUT)
    assert pending.cancelled() and ran == []


def test_cancel_running_process_call_stops_it(tmp_path: os.PathLike[str]) -> None:
    """Future.cancel() on a call running in a worker process stops that call."""
    marker = os.path.join(tmp_path, "task")
    with laneway.Executor() as pool:
        future = pool.submit(cpu_sleep_then_mark, marker)
        deadline = time.monotonic() + DEADLOCK_TIMEOUT
        while not os.path.exists(marker + ".started"):  # the worker writes it when running
            assert time.monotonic() < deadline, "the call never started"
            time.sleep(0.005)
        assert future.cancel()
        assert future.cancelled()
        with pytest.raises(futures.CancelledError):
            future.result()
        # the pool is usable at once: the worker was replaced
        assert pool.submit(cpu_mul, 6, y=7).result(DEADLOCK_TIMEOUT) == 42
    assert not os.path.exists(marker + ".finished")


def test_bad_max_workers() -> None:
    """max_workers must be a positive int, named in the error."""
    with pytest.raises(ValueError, match="max_workers must be a positive int or None, got 0"):
        laneway.Executor(0)
    with pytest.raises(TypeError, match="max_workers must be a positive int"):
        laneway.Executor("4")  # type: ignore[arg-type]


def test_max_workers_caps_process_workers_on_a_warm_pool(tmp_path: os.PathLike[str]) -> None:
    """max_workers=1 holds however many workers the shared pool already has."""
    from laneway._backends.process.pool import default_pool

    laneway.parallel_map(cpu_mul, [1, 2], backend="process", workers=2)  # 2 warm workers
    marker = os.path.join(tmp_path, "task")
    pool = laneway.Executor(max_workers=1)
    try:
        first = pool.submit(cpu_sleep_then_mark, marker)
        second = pool.submit(cpu_mul, 6, y=7)
        processes = default_pool()
        with processes._lock:
            holding = [w for w in processes._workers
                       if any(j.run.group is pool for j in w.inflight)]
        assert len(holding) == 1, "the executor's calls were spread over several workers"
        first.cancel()
        assert second.result(DEADLOCK_TIMEOUT) == 42
    finally:
        pool.shutdown(cancel_futures=True)


@laneway.cpu_bound
def cpu_mark_then_wait(path: str) -> str:
    open(path + ".started", "w").close()
    deadline = time.monotonic() + DEADLOCK_TIMEOUT
    while not os.path.exists(os.path.join(os.path.dirname(path), "release")):
        if time.monotonic() > deadline:
            raise TimeoutError("never released")
        time.sleep(0.005)  # task work: waits for the test's go-ahead file
    return os.path.basename(path)


def test_cancelled_call_queued_on_a_busy_worker_never_runs(
        tmp_path: os.PathLike[str]) -> None:
    """A call already sent to a busy worker (queued behind its current call) and then
    cancelled is handed back unrun."""
    from laneway._backends.process.pool import default_pool

    laneway.parallel_map(cpu_mul, [1, 2], backend="process", workers=2)  # 2 warm workers
    base = str(tmp_path)
    with laneway.Executor(max_workers=2) as pool:
        a = pool.submit(cpu_mark_then_wait, os.path.join(base, "a"))
        b = pool.submit(cpu_mark_then_wait, os.path.join(base, "b"))
        deadline = time.monotonic() + DEADLOCK_TIMEOUT
        while not (os.path.exists(os.path.join(base, "a.started"))
                   and os.path.exists(os.path.join(base, "b.started"))):
            assert time.monotonic() < deadline, "the first calls never started"
            time.sleep(0.005)
        c = pool.submit(cpu_mark_then_wait, os.path.join(base, "c"))
        processes = default_pool()
        with processes._lock:  # c went to a busy worker's pipe, behind a or b
            assert any(len(w.inflight) == 2 for w in processes._workers)
        assert c.cancel() and c.cancelled()
        open(os.path.join(base, "release"), "w").close()
        assert sorted([a.result(DEADLOCK_TIMEOUT), b.result(DEADLOCK_TIMEOUT)]) == ["a", "b"]
        while True:  # every job sent has come back (c's, unrun, included)
            with processes._lock:
                if not any(w.inflight for w in processes._workers):
                    break
            assert time.monotonic() < deadline, "a worker never handed its jobs back"
            time.sleep(0.005)
    assert not os.path.exists(os.path.join(base, "c.started"))


def test_map_results_can_be_read_after_shutdown() -> None:
    """As with the stdlib, a map's calls all run even if the executor is shut down
    before its results are read."""
    with laneway.Executor(max_workers=1) as pool:
        results = pool.map(mul, range(20), range(20))
    assert list(results) == [x * x for x in range(20)]


def test_map_timeout_cancels_the_call_it_timed_out_on() -> None:
    release = threading.Event()
    ran: list[int] = []

    def slow(x: int) -> int:
        release.wait(DEADLOCK_TIMEOUT)
        ran.append(x)
        return x

    with laneway.Executor(max_workers=1) as pool:
        blocker = pool.submit(release.wait, DEADLOCK_TIMEOUT)  # holds the only thread
        results = pool.map(slow, [1], timeout=0.05)
        with pytest.raises(futures.TimeoutError):
            next(results)
        release.set()
        blocker.result(DEADLOCK_TIMEOUT)
    assert ran == []  # it was still queued when map gave up on it: cancelled


def test_dropped_executor_ends_its_dispatcher_thread() -> None:
    import gc

    def dispatchers() -> int:
        return sum(t.name == "laneway-executor" for t in threading.enumerate())

    before = dispatchers()
    pool = laneway.Executor(max_workers=1)
    assert pool.submit(cpu_mul, 3, y=4).result(DEADLOCK_TIMEOUT) == 12
    assert dispatchers() == before + 1
    del pool
    gc.collect()
    deadline = time.monotonic() + DEADLOCK_TIMEOUT
    while dispatchers() > before:
        assert time.monotonic() < deadline, "the dispatcher thread outlived its executor"
        time.sleep(0.01)


def test_unpicklable_arguments_of_a_process_call_are_named() -> None:
    with laneway.Executor() as pool:
        future = pool.submit(cpu_mul, threading.Lock())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="the arguments of a call of cpu_mul .*lock.*"
                                            "@laneway.io_bound"):
            future.result(DEADLOCK_TIMEOUT)

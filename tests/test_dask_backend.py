"""The dask backend: chunks as tasks on a Dask cluster (here an in-process one)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import laneway
from _support import Unpicklable, fail_on_three, square

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """An in-process cluster of one worker with two threads, for the whole module."""
    with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=2,
                                  dashboard_address=":0") as local:  # (any free port)
        yield local


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    """A client of the module's cluster, current for the test."""
    with distributed.Client(cluster) as current:
        yield current


def test_runs_on_the_current_client_in_order(client: Any) -> None:
    """parallel_map and imap with backend="dask": results in order, the plan sized from
    the cluster (2 threads), closures too."""
    assert laneway.parallel_map(square, range(50), backend="dask") == \
        [x * x for x in range(50)]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "dask" and plan.workers == 2
    assert list(laneway.imap(square, iter(range(20)), backend="dask")) == \
        [x * x for x in range(20)]
    offset = 10
    assert laneway.parallel_map(lambda x: x + offset, [1, 2], backend="dask") == [11, 12]
    unordered = laneway.parallel_map(square, range(30), backend="dask", ordered=False)
    assert sorted(unordered) == [x * x for x in range(30)]


def test_errors_are_the_items_own(client: Any) -> None:
    """A task's exception: in its item's place, or raised as itself with the index."""
    got = laneway.parallel_map(fail_on_three, range(6), backend="dask", errors="return")
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5] and isinstance(got[3], ValueError)
    with pytest.raises(ValueError, match="bad item 3") as info:
        laneway.parallel_map(fail_on_three, range(6), backend="dask")
    assert any("item #3" in note for note in info.value.__notes__)
    assert "fail_on_three" in str(info.value.__cause__)  # the worker's traceback


def test_no_client_says_what_to_do(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a current client or LANEWAY_DASK_ADDRESS: a LanewayError saying how."""
    monkeypatch.delenv("LANEWAY_DASK_ADDRESS", raising=False)
    with pytest.raises(laneway.LanewayError, match="LANEWAY_DASK_ADDRESS"):
        laneway.parallel_map(square, [1], backend="dask")


def test_address_from_the_environment(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """LANEWAY_DASK_ADDRESS: laneway connects to that scheduler itself, once, and keeps
    the connection for later calls; an unreachable address is a clear LanewayError."""
    from laneway._backends import dask_run

    address = cluster.scheduler_address
    monkeypatch.setenv("LANEWAY_DASK_ADDRESS", address)
    try:
        assert laneway.parallel_map(square, range(5), backend="dask") == [0, 1, 4, 9, 16]
        kept = dask_run._connected[address]
        assert laneway.parallel_map(square, [3], backend="dask") == [9]
        assert dask_run._connected[address] is kept
    finally:
        client = dask_run._connected.pop(address, None)
        if client is not None:
            client.close()
    monkeypatch.setenv("LANEWAY_DASK_ADDRESS", "tcp://127.0.0.1:1")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(laneway.LanewayError, match="cannot connect"):
        laneway.parallel_map(square, [1], backend="dask")


def test_task_timeout_is_refused(client: Any) -> None:
    """Dask cannot stop a running task: task_timeout is a ValueError naming it."""
    with pytest.raises(ValueError, match="task_timeout is not supported on the dask"):
        laneway.parallel_map(square, [1], backend="dask", task_timeout=1.0)


def test_missing_extra_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the distributed package: a LanewayError naming the extra."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(laneway.LanewayError, match=r"laneway\[dask\]"):
        laneway.parallel_map(square, [1], backend="dask")


def test_chunks_grow_from_the_time_items_take_on_the_workers(client: Any) -> None:
    """Chunk sizes come from the items' own time on the workers, not the scheduler's
    round trip: 20,000 trivial items go out as a few dozen tasks, not thousands."""
    sent: list[int] = []
    real_submit = client.submit

    def counting_submit(*args: Any, **kwargs: Any) -> Any:
        sent.append(len(args[2]))
        return real_submit(*args, **kwargs)

    client.submit = counting_submit
    try:
        assert laneway.parallel_map(square, range(20_000), backend="dask") == \
            [x * x for x in range(20_000)]
    finally:
        del client.submit
    assert sum(sent) == 20_000 and len(sent) < 200


_running: list[int] = []
_most = [0]
_running_lock = threading.Lock()


def sleepy_mark(x: int) -> int:
    with _running_lock:
        _running.append(1)
        _most[0] = max(_most[0], len(_running))
    time.sleep(0.05)  # task work, overlapping with other tasks if they were sent
    with _running_lock:
        _running.pop()
    return x


def test_workers_limits_the_tasks_on_the_cluster(client: Any) -> None:
    """workers=1: one chunk on the cluster at a time, though it has two threads."""
    _most[0] = 0
    assert laneway.parallel_map(sleepy_mark, range(6), backend="dask", workers=1,
                                chunksize=1) == list(range(6))
    assert _most[0] == 1


def exits_on_two(x: int) -> int:
    if x == 2:
        raise SystemExit("leaving")
    return x


def test_system_exit_in_an_item_fails_only_that_item(client: Any) -> None:
    """SystemExit from an item does not take the Dask worker down: its item fails."""
    got = laneway.parallel_map(exits_on_two, range(4), backend="dask", errors="return")
    assert got[:2] == [0, 1] and got[3] == 3 and isinstance(got[2], SystemExit)


def test_items_that_cannot_be_sent_fail_as_items(client: Any) -> None:
    """A chunk Dask cannot send fails its items (errors="return"), not the whole call."""
    items = [1, Unpicklable(), 3]
    got = laneway.parallel_map(lambda x: x, items, backend="dask", chunksize=1,
                               errors="return")
    assert got[0] == 1 and got[2] == 3
    assert isinstance(got[1], laneway.LanewayError) and "could not be sent" in str(got[1])


class Locked(Exception):
    def __init__(self, x: int) -> None:
        super().__init__(f"locked {x}")
        self.lock = threading.Lock()  # cannot be pickled


def unsendable_outcomes(x: int) -> Any:
    if x == 1:
        raise Locked(x)
    if x == 2:
        return threading.Lock()
    return x


def test_an_unpicklable_result_or_exception_fails_only_its_item(client: Any) -> None:
    """As on the process backend: the other items of the chunk keep their results."""
    got = laneway.parallel_map(unsendable_outcomes, range(4), backend="dask", chunksize=4,
                               errors="return")
    assert got[0] == 0 and got[3] == 3
    assert "locked 1" in str(got[1]) and "cannot be pickled" in str(got[2])


def plus_one(x: int) -> int:
    return x + 1


def nested_dask_call(x: int) -> int:
    """A task that makes its own dask call (a library that uses laneway itself)."""
    return sum(laneway.parallel_map(plus_one, range(4), backend="dask"))


def test_a_dask_call_made_inside_a_dask_task_does_not_deadlock(client: Any) -> None:
    """The outer tasks leave their worker's thread pool while they wait (secede), so the
    inner tasks find threads: 4 outer items on a 2-thread cluster finish."""
    assert laneway.parallel_map(nested_dask_call, range(4), backend="dask", chunksize=1,
                                timeout=60) == [10] * 4


def test_a_dask_call_inside_a_task_on_a_worker_process_finds_the_workers_client() -> None:
    """On a cluster of worker processes (how real clusters run) there is no default
    client inside a task: the call uses the worker's own (``distributed.get_client``)."""
    with distributed.LocalCluster(processes=True, n_workers=1, threads_per_worker=2,
                                  dashboard_address=":0") as local, \
            distributed.Client(local):
        assert laneway.parallel_map(nested_dask_call, range(2), backend="dask", chunksize=1,
                                    timeout=60) == [10] * 2

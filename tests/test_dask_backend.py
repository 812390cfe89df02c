"""The dask backend: chunks as tasks on a Dask cluster (here an in-process one)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

import laneway

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


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


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

"""parallel_map and imap on every backend: results, order, laziness, errors, validation."""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import threading
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT, Unpicklable, fail_on_three, square
from laneway import _context, _run
from laneway._chunks import ChunkSizer

BACKENDS = ["serial", "thread", "process"]



def make_unpicklable(x: int) -> object:
    return Unpicklable() if x == 2 else x


def record_run(args: tuple[str, int]) -> int:
    """Create a file per call, failing if the item already ran (exactly-once check)."""
    folder, x = args
    fd = os.open(os.path.join(folder, f"{x}.ran"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    return x


def pid_of(_: object) -> int:
    return os.getpid()


def nested_pids(_: object) -> tuple[bool, list[int]]:
    inner = laneway.parallel_map(pid_of, range(4), kind="cpu")
    return _context.in_process_worker(), inner


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_in_input_order(backend: str) -> None:
    """Every backend returns f(x) for each item, in input order."""
    assert laneway.parallel_map(square, range(500), backend=backend) == [x * x for x in range(500)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_unordered_returns_every_result(backend: str) -> None:
    """ordered=False returns the same results in some order."""
    got = laneway.parallel_map(square, range(300), backend=backend, ordered=False)
    assert sorted(got) == [x * x for x in range(300)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input(backend: str) -> None:
    """No items, no results, no error."""
    assert laneway.parallel_map(square, [], backend=backend) == []
    assert list(laneway.imap(square, iter(()), backend=backend)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixed_chunksize(backend: str) -> None:
    """A given chunksize is honoured and does not change the results."""
    got = laneway.parallel_map(square, range(101), backend=backend, chunksize=7, workers=2)
    assert got == [x * x for x in range(101)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_imap_over_infinite_input_terminates(backend: str) -> None:
    """imap pulls lazily: islice over itertools.count() stops."""
    got = list(itertools.islice(laneway.imap(square, itertools.count(), backend=backend), 50))
    assert got == [x * x for x in range(50)]


class Payload:
    """An item that can be watched for being freed (weakly referenced)."""

    def __init__(self, n: int) -> None:
        self.n = n


def payload_number(p: Payload) -> int:
    return p.n


@pytest.mark.parametrize("backend", [*BACKENDS, None])
def test_imap_frees_the_items_of_finished_chunks_without_the_garbage_collector(
        backend: str | None) -> None:
    """Items of delivered chunks are freed by reference counting alone: a reference
    cycle on the thread backend (a chunk's runner <-> its bookkeeping) kept every
    finished chunk until the cyclic GC ran, which large bytes items never trigger (an
    endless imap of 100 KB items grew by 1 GB per 25,000 results)."""
    import gc
    import weakref

    alive: weakref.WeakSet[Payload] = weakref.WeakSet()

    def source() -> Iterator[Payload]:
        for n in range(2000):
            p = Payload(n)
            alive.add(p)
            yield p

    gc.collect()
    gc.disable()
    try:
        results = laneway.imap(payload_number, source(), backend=backend, chunksize=10,
                               workers=2)
        for got in results:
            if got == 1500:
                # the window (2 x workers chunks) and the reorder slack, not 1,500
                assert len(alive) <= 200, f"{len(alive)} items of finished chunks alive"
        assert got == 1999
    finally:
        gc.enable()


def test_imap_pulls_only_what_the_window_allows() -> None:
    """Breaking out early leaves most of a long generator unconsumed."""
    pulled = itertools.count()

    def source() -> itertools.count[int]:
        for x in itertools.count():
            next(pulled)
            yield x

    results = laneway.imap(square, source(), backend="thread", workers=2)
    assert next(results) == 0
    results.close()  # type: ignore[attr-defined]
    # at most the reorder bound of chunks, each at most the cap for an unsized input
    # (chunks are that big once square's pace is known from earlier calls)
    window = _run.WINDOW_PER_WORKER * 2
    assert next(pulled) <= (_run.REORDER_SLACK * window + window) * ChunkSizer.UNSIZED_CAP


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_lambdas_and_closures(backend: str) -> None:
    """Lambdas and closures run on every backend (cloudpickle for processes)."""
    offset = 10
    assert laneway.parallel_map(lambda x: x + offset, [1, 2], backend=backend) == [11, 12]


@pytest.mark.parametrize("backend", BACKENDS)
def test_raise_reraises_original_type_with_item_note(backend: str) -> None:
    """errors="raise": the task's own exception, with the item index in a note."""
    with pytest.raises(ValueError, match="bad item 3") as info:
        laneway.parallel_map(fail_on_three, range(10), backend=backend)
    assert any("item #3" in note for note in info.value.__notes__)


def test_process_failure_carries_remote_traceback() -> None:
    """A worker-side exception has the worker traceback as its cause."""
    with pytest.raises(ValueError) as info:
        laneway.parallel_map(fail_on_three, range(5), backend="process")
    cause = info.value.__cause__
    assert isinstance(cause, laneway.LanewayError) or "fail_on_three" in str(cause)
    assert "fail_on_three" in str(cause)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors_return_places_exceptions(backend: str) -> None:
    """errors="return": the exception object takes the failing item's place."""
    got = laneway.parallel_map(fail_on_three, range(6), backend=backend, errors="return")
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5]
    assert isinstance(got[3], ValueError)


def test_imap_raise_delivers_results_before_the_failure() -> None:
    """Ordered imap yields every result before a failing item, then raises."""
    seen: list[int] = []
    with pytest.raises(ValueError, match="bad item 3"):
        seen.extend(laneway.imap(fail_on_three, range(10), backend="thread", chunksize=2))
    assert seen == [0, 1, 2]


def test_unpicklable_item_fails_alone_and_names_the_item() -> None:
    """An item that cannot be pickled fails with a message naming it; others succeed."""
    items = [1, threading.Lock(), 3]
    got = laneway.parallel_map(square_or_passthrough, items, backend="process", errors="return")
    assert got[0] == 1 and got[2] == 9
    assert isinstance(got[1], TypeError)
    assert "item #1" in str(got[1]) and "backend='thread'" in str(got[1])
    with pytest.raises(TypeError, match="item #1"):
        laneway.parallel_map(square_or_passthrough, items, backend="process")


def square_or_passthrough(x: object) -> object:
    return x * x if isinstance(x, int) else x


def test_unpicklable_result_fails_alone() -> None:
    """A result that cannot be pickled back fails only its item, naming the type."""
    got = laneway.parallel_map(make_unpicklable, range(4), backend="process", errors="return")
    assert got[0] == 0 and got[1] == 1 and got[3] == 3
    assert isinstance(got[2], laneway.LanewayError)
    assert "Unpicklable" in str(got[2])


def test_unpicklable_function_is_a_clear_error() -> None:
    """A function that cannot be pickled is refused before anything runs."""
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot send .* to a process worker"):
        laneway.parallel_map(lambda x: (lock, x), [1], backend="process")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_item_runs_exactly_once(backend: str, tmp_path: Path) -> None:
    """No item is run twice and none is skipped."""
    items = [(str(tmp_path), x) for x in range(400)]
    assert laneway.parallel_map(record_run, items, backend=backend) == list(range(400))
    assert len(list(tmp_path.glob("*.ran"))) == 400


def test_worker_crash_fails_only_its_item() -> None:
    """A worker that exits abruptly fails its item with WorkerCrashedError; the rest succeed."""
    got = laneway.parallel_map(exit_on_five, range(12), backend="process", workers=2,
                               chunksize=1, errors="return")
    assert [g for k, g in enumerate(got) if k != 5] == [k for k in range(12) if k != 5]
    error = got[5]
    assert isinstance(error, laneway.WorkerCrashedError)
    assert error.index == 5 and error.exitcode == 3
    assert "exited with code 3" in str(error) and "item #5" in str(error)
    # the pool healed: the next call works
    assert laneway.parallel_map(square, range(4), backend="process") == [0, 1, 4, 9]


def exit_on_five(x: int) -> int:
    if x == 5:
        os._exit(3)
    return x


def test_timeout_bounds_the_whole_call() -> None:
    """timeout= raises TimeoutError when the call overruns, and cancels the rest."""
    release = threading.Event()

    def wait_for_release(x: int) -> int:
        release.wait(DEADLOCK_TIMEOUT)
        return x

    with pytest.raises(TimeoutError, match="timeout=0.2"):
        laneway.parallel_map(wait_for_release, range(4), backend="thread", workers=2,
                             timeout=0.2)
    release.set()


def test_hint_routes_cpu_work_to_processes(caplog: pytest.LogCaptureFixture) -> None:
    """A @cpu_bound function goes to processes and the log says why."""
    fn = laneway.cpu_bound(square_hinted)
    with caplog.at_level(logging.INFO, logger="laneway"):
        assert laneway.parallel_map(fn, range(3)) == [0, 1, 4]
    assert "process backend" in caplog.text and "hinted 'cpu'" in caplog.text


def square_hinted(x: int) -> int:
    return x * x


def test_unhinted_tiny_work_is_measured_and_runs_serially(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a hint, tiny work is measured, stays in the caller, and the log says why."""
    with caplog.at_level(logging.INFO, logger="laneway"):
        assert laneway.parallel_map(square_unhinted, range(20_000)) == \
            [x * x for x in range(20_000)]
    assert "serial backend" in caplog.text and "measured" in caplog.text
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "serial"


def square_unhinted(x: int) -> int:
    return x * x


def test_env_backend_forces_serial(monkeypatch: pytest.MonkeyPatch) -> None:
    """LANEWAY_BACKEND=serial runs everything in the caller."""
    monkeypatch.setenv("LANEWAY_BACKEND", "serial")
    assert set(laneway.parallel_map(pid_of, range(5), kind="cpu")) == {os.getpid()}


def test_env_backend_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong LANEWAY_BACKEND is a clear error."""
    monkeypatch.setenv("LANEWAY_BACKEND", "gpu")
    with pytest.raises(ValueError, match="LANEWAY_BACKEND.*'gpu'"):
        laneway.parallel_map(square, [1])


def test_nested_calls_in_a_process_worker_do_not_start_processes() -> None:
    """Inside a process worker, a CPU-hinted laneway call runs on threads."""
    (in_worker, inner), = laneway.parallel_map(nested_pids, [0], backend="process")
    assert in_worker is True
    assert os.getpid() not in inner
    assert len(set(inner)) == 1  # every inner item ran in the worker process itself


def test_concurrent_callers_share_the_pool() -> None:
    """Eight threads calling parallel_map at once each get their own results."""
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(8)

    def caller(k: int) -> None:
        barrier.wait(DEADLOCK_TIMEOUT)
        results[k] = laneway.parallel_map(square, range(k * 100, k * 100 + 200),
                                          backend="process")

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(DEADLOCK_TIMEOUT)
    assert all(results[k] == [x * x for x in range(k * 100, k * 100 + 200)] for k in range(8))


def test_coroutine_function_results_are_awaited() -> None:
    """A coroutine function's results are the awaited values."""

    async def double(x: int) -> int:
        return 2 * x

    assert laneway.parallel_map(double, [1, 2, 3], backend="thread") == [2, 4, 6]


def test_progress_callback_reaches_total() -> None:
    """A progress callable sees (done, total) and ends at total."""
    calls: list[tuple[int, int | None]] = []
    laneway.parallel_map(square, range(50), backend="thread",
                         progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (50, 50)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize(
    ("keywords", "error", "pattern"),
    [
        ({"workers": 0}, ValueError, "workers must be a positive int or None, got 0"),
        ({"workers": 2.5}, TypeError, "workers must be a positive int or None, got 2.5"),
        ({"workers": True}, TypeError, "workers must be a positive int"),
        ({"chunksize": -1}, ValueError, "chunksize must be a positive int or None, got -1"),
        ({"backend": "gpu"}, ValueError, "backend must be one of .*'process'.*got 'gpu'"),
        ({"backend": 3}, TypeError, "backend must be one of"),
        ({"kind": "fast"}, ValueError, "kind must be one of 'cpu', 'native', 'io', 'async'"),
        ({"errors": "ignore"}, ValueError, "errors must be one of 'raise', 'return'"),
        ({"ordered": "yes"}, TypeError, "ordered must be True or False, got 'yes'"),
        ({"timeout": 0}, ValueError, "timeout must be a positive number of seconds"),
        ({"timeout": "1"}, TypeError, "timeout must be a positive number of seconds"),
        ({"task_timeout": -2}, ValueError, "task_timeout must be a positive number"),
        ({"progress": 3}, TypeError, "progress must be True, False or a callable"),
    ],
)
def test_bad_keywords_are_refused_before_anything_runs(
    keywords: dict[str, object], error: type[Exception], pattern: str
) -> None:
    """Each bad keyword raises, naming the parameter and the value, for map and imap."""
    ran: list[int] = []
    with pytest.raises(error, match=pattern):
        laneway.parallel_map(ran.append, [1, 2], **keywords)  # type: ignore[arg-type]
    with pytest.raises(error, match=pattern):
        laneway.imap(ran.append, [1, 2], **keywords)  # type: ignore[arg-type]
    assert ran == []


def test_bad_fn_and_iterable_are_refused() -> None:
    """A non-callable fn or a non-iterable input is a TypeError naming it."""
    with pytest.raises(TypeError, match="argument fn must be callable, got 42"):
        laneway.parallel_map(42, [1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"argument iterable must be iterable \(a list, a "
                                        r"generator...\), got 5 \(int\)"):
        laneway.imap(square, 5)  # type: ignore[arg-type]


def test_numbers_of_any_numeric_type_are_accepted() -> None:
    """workers/chunksize take any integer type (numpy's: ``__index__``); timeouts any real
    number (Fraction, Decimal); a timeout too large for a float is no limit."""
    class Count:  # as numpy.int64 is
        def __index__(self) -> int:
            return 2

    class Seconds:  # as numpy.float64 is
        def __float__(self) -> float:
            return 60.0

    assert laneway.parallel_map(square, range(4), backend="thread", workers=Count(),  # type: ignore[arg-type]
                                chunksize=Count()) == [0, 1, 4, 9]  # type: ignore[arg-type]
    for seconds in (Fraction(60, 1), Decimal("60"), Seconds(), 10**400):
        assert laneway.parallel_map(square, [3], backend="thread", timeout=seconds,  # type: ignore[arg-type]
                                    task_timeout=seconds) == [9]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds "
                                         r"or None, got -1/2$"):
        laneway.parallel_map(square, [3], timeout=Fraction(-1, 2))
    with pytest.raises(ValueError, match="task_timeout must be a positive number"):
        laneway.parallel_map(square, [3], task_timeout=-(10**400))
    with pytest.raises(TypeError, match=r"^timeout must be a positive number of seconds "
                                        r"or None, got '1' \(str\)$"):
        laneway.parallel_map(square, [3], timeout="1")  # type: ignore[arg-type]


def test_a_progress_callable_that_cannot_take_done_and_total_is_refused() -> None:
    """progress is called as progress(done, total): a callable that cannot be is refused
    before anything runs, not after items ran."""
    ran: list[int] = []
    with pytest.raises(TypeError, match=r"progress must be True, False or a callable "
                                        r"taking \(done, total\), got <function"):
        laneway.parallel_map(ran.append, [1], progress=lambda done: None)  # type: ignore[arg-type]
    assert ran == []
    seen: list[tuple[int, int | None]] = []
    laneway.parallel_map(square, [1, 2], backend="serial",
                         progress=lambda *counts: seen.append(counts))
    assert seen[-1] == (2, 2)


def test_dask_without_a_cluster_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend="dask" with no Dask client (or without the extra) is a clear LanewayError
    before anything runs, not a silent fallback."""
    monkeypatch.delenv("LANEWAY_DASK_ADDRESS", raising=False)
    with pytest.raises(laneway.LanewayError, match="backend='dask' needs"):
        laneway.parallel_map(square, [1], backend="dask")


def test_errors_pickle_round_trip() -> None:
    """laneway's errors keep their attributes through pickle."""
    crash = laneway.WorkerCrashedError("boom", pid=7, exitcode=-9, index=3)
    again = pickle.loads(pickle.dumps(crash))
    assert (again.pid, again.exitcode, again.index, str(again)) == (7, -9, 3, "boom")
    timeout = pickle.loads(pickle.dumps(laneway.TaskTimeoutError("slow", index=1, seconds=2.0)))
    assert isinstance(timeout, TimeoutError) and timeout.seconds == 2.0


def fail_on_multiples_of_1000(x: int) -> int:
    if x % 1000 == 999:
        raise ValueError(f"bad item {x}")
    return x * 2


@pytest.mark.parametrize("make_input", [list, tuple, lambda r: r, iter],
                         ids=["list", "tuple", "range", "iterator"])
def test_serial_run_into_one_list_keeps_every_result_in_place(
        make_input: Any, tmp_path: Path) -> None:
    """The serial backend runs the items straight into the returned list (no chunk
    copies): across many chunks, errors="return" puts each failure at its own index,
    and every item ran once."""
    n = 10_000
    got = laneway.parallel_map(fail_on_multiples_of_1000, make_input(range(n)),
                               backend="serial", errors="return")
    assert len(got) == n
    for x, value in enumerate(got):
        if x % 1000 == 999:
            assert isinstance(value, ValueError) and f"bad item {x}" in str(value)
            assert any(f"item #{x}" in note for note in value.__notes__)
        else:
            assert value == x * 2
    items = [(str(tmp_path), x) for x in range(n)]
    assert laneway.parallel_map(record_run, make_input(items), backend="serial") == \
        list(range(n))
    assert len(list(tmp_path.glob("*.ran"))) == n


def test_serial_run_raises_the_first_failure_by_its_index() -> None:
    """errors="raise" on the serial backend: the first failure, named by its index."""
    with pytest.raises(ValueError, match="bad item 999") as info:
        laneway.parallel_map(fail_on_multiples_of_1000, range(5000), backend="serial")
    assert any("item #999" in note for note in info.value.__notes__)


def test_serial_run_lets_the_inputs_own_error_through() -> None:
    """An error raised by the input iterator is not an item's failure: it propagates as
    itself, even with errors="return"."""

    def items() -> Iterator[int]:
        yield from range(5000)
        raise OSError("the input broke")

    with pytest.raises(OSError, match="the input broke"):
        laneway.parallel_map(square, items(), backend="serial", errors="return")


def test_unhinted_serial_run_reports_progress_and_keeps_measured_items() -> None:
    """A measured run planned serial delivers the measured items first, then the rest,
    in order, and its progress reaches the total."""
    seen: list[tuple[int, int | None]] = []
    n = 50_000
    got = laneway.parallel_map(square_progress, list(range(n)),
                               progress=lambda done, total: seen.append((done, total)))
    assert got == [x * x for x in range(n)]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "serial"
    assert seen[-1] == (n, n)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)


def square_progress(x: int) -> int:
    return x * x


def stop_on(bad: frozenset[int]) -> Any:
    def f(x: int) -> int:
        if x in bad:
            raise StopIteration  # e.g. next(iter(())) inside a task
        return x * 10
    return f


@pytest.mark.parametrize("backend", [*BACKENDS, None])
@pytest.mark.parametrize("make_input", [list, tuple, lambda r: r, iter],
                         ids=["list", "tuple", "range", "iterator"])
def test_a_task_raising_stop_iteration_fails_only_its_item(backend: str | None,
                                                           make_input: Any) -> None:
    """StopIteration from fn ends list.extend(map(...)) like the end of the items would:
    the item fails (RuntimeError, as in a generator) and no result shifts or is lost,
    first, middle and last item alike, on every backend and in the measured items."""
    n = 9_000 if backend in ("serial", None) else 40  # several serial chunks of 4,096
    bad = frozenset({0, 5, n - 1})
    got = laneway.parallel_map(stop_on(bad), make_input(range(n)), backend=backend,
                               errors="return")
    assert len(got) == n
    for x, value in enumerate(got):
        if x in bad:
            assert isinstance(value, RuntimeError) and "raised StopIteration" in str(value)
            assert any(f"item #{x}" in note for note in value.__notes__)
        else:
            assert value == x * 10


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_stop_iteration_under_task_timeout_fails_only_its_item(backend: str) -> None:
    """Timed items run one by one: a StopIteration fails its item the same way."""
    got = laneway.parallel_map(stop_on(frozenset({1})), range(4), backend=backend,
                               task_timeout=60, errors="return")
    assert got[0] == 0 and got[2:] == [20, 30]
    assert isinstance(got[1], RuntimeError) and "raised StopIteration" in str(got[1])


def test_serial_run_over_a_list_the_task_appends_to() -> None:
    """A task that appends to the list it is mapped over (a growing work list) and one
    that raises StopIteration: no result is lost or shifted (the list's chunks are
    copied, as its length can change under the run)."""
    work = list(range(6))

    def grow(x: int) -> int:
        if x == 0:
            work.append(99)
        if x == 2:
            raise StopIteration
        return x

    got = laneway.parallel_map(grow, work, backend="serial", errors="return")
    assert got[:2] == [0, 1] and got[3:] == [3, 4, 5, 99]
    assert isinstance(got[2], RuntimeError)


def test_imap_of_a_slow_input_yields_while_the_input_is_still_being_read() -> None:
    """A generator that takes a while per item is sent on in small chunks, and results
    are delivered as soon as they come: the first one arrives after a few items have
    been read, not after the whole input (or a whole window of chunks) was."""
    read = 0

    def slow_input() -> Iterator[int]:
        nonlocal read
        for x in range(300):
            threading.Event().wait(0.002)  # producing an item takes a while (input work)
            read += 1
            yield x

    results = laneway.imap(square, slow_input(), backend="process")
    assert next(results) == 0
    assert read < 150, read  # (the whole input, 300, before)
    assert list(results) == [x * x for x in range(1, 300)]


@pytest.mark.parametrize("backend", [None, "serial"])
def test_a_serial_run_over_a_list_sees_the_list_as_a_for_loop_would(
        backend: str | None) -> None:
    """A serial run slices its chunks out of a list: items a task appends are run, items
    it removes far enough ahead (beyond the chunk it runs in: each chunk is taken out
    before it runs) are skipped, as ``list(map(...))`` would, also after the items that
    were measured through the list's iterator."""
    def run(mapper: Any) -> list[Any]:
        data = list(range(10_000))

        def grow_and_shrink(x: int) -> int:
            if x == 5:
                data.append(-1)        # appended: run at the end
            if x == 100:
                del data[9_000:9_010]  # removed far ahead: never run
            return x

        return list(mapper(grow_and_shrink, data))

    expected = run(map)
    assert len(expected) == 10_000 + 1 - 10
    got = run(lambda f, xs: laneway.parallel_map(f, xs, backend=backend))
    assert got == expected
    assert laneway.last_plan() is not None and laneway.last_plan().backend == "serial"


@pytest.mark.parametrize("backend", [None, "serial", "thread"])
def test_a_range_too_large_for_len_is_mapped_lazily(backend: str | None) -> None:
    """``len(range(10**20))`` overflows: such an input counts as one of unknown length
    (it raised OverflowError before any item ran)."""
    got = laneway.imap(abs, range(-10**20, 0), backend=backend)
    assert list(itertools.islice(got, 3)) == [10**20, 10**20 - 1, 10**20 - 2]

"""SharedCounter, SharedValue, SharedDict: local and shared mode, threads and processes,
atomicity, the lock, crashes, cleanup, errors."""

from __future__ import annotations

import copy
import gc
import multiprocessing
import os
import pickle
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT
from laneway import _shared
from laneway._errors import LanewayError
from laneway._shared import SharedCounter, SharedDict, SharedValue

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shared mode needs flock")

MODES = ["local", "shared", "shared-file"]
PARTIES = 8  # 4 process tasks + 4 thread tasks
INCREMENTS = 2_000
REPEATS = 3


# -- helpers run by tasks (module level: process workers import them) --------------------


def noop(x: int) -> int:
    return x


def arrive_and_wait(arrived: SharedCounter, parties: int) -> None:
    """A barrier for thread and process tasks alike, built on a SharedCounter."""
    arrived.increment()
    deadline = time.monotonic() + DEADLOCK_TIMEOUT
    while arrived.value < parties:
        if time.monotonic() > deadline:
            raise TimeoutError("not every task arrived")


def hammer(args: tuple[str, Any, SharedCounter, int]) -> int:
    kind, helper, arrived, n = args
    arrive_and_wait(arrived, PARTIES)
    if kind == "counter":
        for _ in range(n):
            helper.increment()
    elif kind == "dict":
        for _ in range(n):
            helper.update_with("n", lambda v: v + 1, 0)
    else:
        for _ in range(n):
            helper.update(lambda v: v + 1)
    return os.getpid()


def use_everything(args: tuple[SharedCounter, SharedValue[list[int]], SharedDict[str, Any]]
                   ) -> tuple[int, list[int], dict[str, Any]]:
    counter, box, table = args
    counter.increment(n=10)
    box.update(lambda xs: [*xs, os.getpid()])
    table["from_worker"] = {"pid": os.getpid()}
    table.update_with("hits", lambda n: n + 1, 0)
    return counter.value, box.get(), table.copy()


def total(kind: str, helper: Any) -> int:
    value: int = (helper.value if kind == "counter" else helper["n"] if kind == "dict"
                  else helper.get())
    return value


def give_back(helper: Any) -> Any:
    return helper


def die_holding_lock(counter: SharedCounter) -> None:
    with counter.lock():
        counter.increment()
        os._exit(3)


def die_mid_write(args: tuple[Any, str]) -> None:
    """Store into a helper, but die halfway through writing the new bytes."""
    helper, value = args
    write = _shared._Store.write

    def half_then_die(store: Any, where: int, data: bytes) -> None:
        write(store, where, data[:len(data) // 2])
        os._exit(9)

    _shared._Store.write = half_then_die  # type: ignore[method-assign]
    if isinstance(helper, SharedValue):
        helper.set(value)
    else:
        helper["k"] = value  # a small value is appended, a big one rewrites the log


def try_flock(counter: SharedCounter) -> bool:
    """Whether this process can take the counter's flock right now (without waiting)."""
    import fcntl

    store = counter._share()
    try:
        fcntl.flock(store.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(store.fd, fcntl.LOCK_UN)
    return True


def count_in_child(counter: SharedCounter, n: int) -> None:
    for _ in range(n):
        counter.increment()


def expect_detached(counter: SharedCounter) -> None:
    try:
        counter.increment()
    except LanewayError as exc:
        os._exit(0 if "inherited by a forked process" in str(exc) else 4)
    os._exit(5)


# -- fixtures ----------------------------------------------------------------------------


def laneway_files() -> list[str]:
    """This process's named storage files (mode LANEWAY_SHARED_STORAGE=file)."""
    prefix = f"laneway-{os.getpid()}-"
    return [n for n in os.listdir(_shared._storage_dir()) if n.startswith(prefix)]


def laneway_memfds() -> int:
    """How many of laneway's memfds this process has open (each may have two
    descriptors: ours and the mapping's own)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:laneway-shared"):
                inodes.add(os.stat(f"/proc/self/fd/{fd}").st_ino)
        except OSError:
            pass
    return len(inodes)


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """After this module: no storage file of this process, no memfd open."""
    yield
    gc.collect()
    assert laneway_files() == []
    if os.path.isdir("/proc/self/fd"):
        assert laneway_memfds() == 0


@pytest.fixture(scope="module")
def warm_pool() -> None:
    """Four warm process workers, started before any helper of the test exists."""
    assert laneway.parallel_map(noop, range(4), backend="process", workers=4,
                                chunksize=1) == [0, 1, 2, 3]


def in_mode(helper: Any, mode: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Put a helper in the given mode (shared: by pickling it, as a task would)."""
    if mode == "shared-file":
        monkeypatch.setenv(_shared.STORAGE_ENV, "file")
    if mode != "local":
        assert pickle.loads(pickle.dumps(helper)) is helper
        assert helper._store is not None
    else:
        assert helper._store is None
    return helper


def other_process_view(helper: Any) -> Any:
    """A second handle on a shared helper, opened the way another process opens it."""
    store = helper._share()
    cls: Any = type(helper)
    view = cls.__new__(cls)
    view._attach(helper._token,
                 _shared._open_store(store.path, helper._token, store.owner_pid, cls))
    return view


# -- SharedCounter -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_counter_operations(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """increment returns the new value, n may be negative, value reads it."""
    counter = in_mode(SharedCounter(5), mode, monkeypatch)
    assert counter.increment() == 6
    assert counter.increment(n=10) == 16
    assert counter.increment(-20) == -4
    assert counter.value == -4
    assert repr(counter) == "laneway.SharedCounter(-4)"


@pytest.mark.parametrize("mode", MODES)
def test_counter_overflow_changes_nothing(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counter is int64 in both modes; leaving the range raises and changes nothing."""
    counter = in_mode(SharedCounter(2**63 - 2), mode, monkeypatch)
    assert counter.increment() == 2**63 - 1
    with pytest.raises(OverflowError, match="signed 64-bit"):
        counter.increment()
    assert counter.value == 2**63 - 1
    with pytest.raises(OverflowError):
        SharedCounter(-(2**63) - 1)


def test_counter_bad_arguments() -> None:
    """Wrong types name the parameter and the value."""
    with pytest.raises(TypeError, match=r"SharedCounter\(\) argument initial must be an int, "
                                        r"got 'a' \(str\)"):
        SharedCounter("a")  # type: ignore[arg-type]
    counter = SharedCounter()
    with pytest.raises(TypeError, match=r"increment\(\) argument n must be an int, got 'x'"):
        counter.increment(n="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got 1\.5 \(float\)"):
        counter.increment(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"argument initial must be an int, got True \(bool\)"):
        SharedCounter(True)
    with pytest.raises(TypeError, match=r"argument n must be an int, got False \(bool\)"):
        counter.increment(False)
    assert counter.value == 0


# -- SharedValue -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_value_operations(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """get, set and update; update returns the new value."""
    box: SharedValue[Any] = in_mode(SharedValue([1]), mode, monkeypatch)
    assert box.get() == [1]
    box.set({"a": (1, 2)})
    assert box.get() == {"a": (1, 2)}
    assert box.update(lambda v: {**v, "b": None}) == {"a": (1, 2), "b": None}
    box.set(7)
    assert box.update(lambda v: v * 6) == 42
    assert repr(box) == "laneway.SharedValue(42)"


@pytest.mark.parametrize("mode", MODES)
def test_value_get_returns_a_copy(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutating what get() returned does not change the stored value, in either mode."""
    box = in_mode(SharedValue([1, 2]), mode, monkeypatch)
    box.get().append(3)
    assert box.get() == [1, 2]


@pytest.mark.parametrize("mode", MODES)
def test_value_update_that_raises_changes_nothing(mode: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """If fn raises, the exception propagates and the value stays."""
    box = in_mode(SharedValue(1), mode, monkeypatch)
    with pytest.raises(ZeroDivisionError):
        box.update(lambda v: v / 0)
    assert box.get() == 1


@pytest.mark.parametrize("mode", MODES)
def test_value_grows_and_shrinks(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values of very different sizes replace each other, seen from another handle too."""
    box = in_mode(SharedValue(b""), mode, monkeypatch)
    for size in [10, 3_000_000, 5, 100_000, 8_000_000, 0]:
        box.set(b"x" * size)
        assert box.get() == b"x" * size
    if mode != "local":
        view = other_process_view(box)
        view.set(b"y" * 5_000_000)
        assert box.get() == b"y" * 5_000_000
        box.set("small")
        assert view.get() == "small"


def test_value_bad_arguments() -> None:
    """update() with a non-callable names the parameter and the value."""
    with pytest.raises(TypeError, match=r"update\(\) argument fn must be callable, got 42 \(int\)"):
        SharedValue(1).update(42)  # type: ignore[arg-type]


# -- SharedDict --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_dict_mapping_operations(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mapping operation behaves as on a dict."""
    table: SharedDict[Any, Any] = in_mode(SharedDict({"a": 1, 2: [2]}), mode, monkeypatch)
    reference: dict[Any, Any] = {"a": 1, 2: [2]}

    def same() -> None:
        assert table.copy() == reference
        assert dict(table) == reference
        assert list(table) == list(reference)
        assert list(table.items()) == list(reference.items())
        assert list(table.values()) == list(reference.values())
        assert len(table) == len(reference)
        assert table == reference

    same()
    table[("t", 1)] = reference[("t", 1)] = {"nested": [1, 2]}
    table["a"] = reference["a"] = 10
    same()
    del table[2], reference[2]
    same()
    assert "a" in table and 2 not in table and ("t", 1) in table.keys()  # noqa: SIM118
    assert ("a", 10) in table.items() and ("a", 11) not in table.items()
    assert table["a"] == 10 and table.get("zz") is None and table.get("zz", 5) == 5
    with pytest.raises(KeyError):
        table["zz"]
    with pytest.raises(KeyError):
        del table["zz"]
    assert table.setdefault("s", [0]) == reference.setdefault("s", [0])
    assert table.setdefault("s", [1]) == [0]
    assert table.pop("s") == reference.pop("s")
    assert table.pop("s", "gone") == "gone"
    with pytest.raises(KeyError):
        table.pop("s")
    table.update({"u": 1}, v=2)
    table.update([("w", 3)])
    reference.update({"u": 1, "v": 2, "w": 3})
    same()
    assert table.popitem() == reference.popitem() == ("w", 3)
    same()
    table.clear()
    reference.clear()
    same()
    with pytest.raises(KeyError, match="empty"):
        table.popitem()
    table["after clear"] = 1
    assert table.copy() == {"after clear": 1}
    assert repr(table) == "laneway.SharedDict({'after clear': 1})"


@pytest.mark.parametrize("mode", MODES)
def test_dict_update_with_defaults(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_with applies fn to the value, or to default (None if not given) when absent."""
    table: SharedDict[str, Any] = in_mode(SharedDict(), mode, monkeypatch)
    assert table.update_with("n", lambda v: v + 1, 0) == 1
    assert table.update_with("n", lambda v: v + 1, default=100) == 2  # present: unused
    assert table.update_with("xs", lambda v: [v]) == [None]
    assert table.update_with("xs", lambda v: [*(v or ()), 1]) == [None, 1]
    with pytest.raises(ZeroDivisionError):
        table.update_with("n", lambda v: v / 0, 0)
    assert table.copy() == {"n": 2, "xs": [None, 1]}
    with pytest.raises(TypeError, match=r"update_with\(\) argument fn must be callable"):
        table.update_with("n", 3)  # type: ignore[call-overload]


@pytest.mark.parametrize("mode", MODES)
def test_dict_values_read_are_copies(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutating a list read from an entry changes only the copy; update_with changes it."""
    table = in_mode(SharedDict({"xs": [1]}), mode, monkeypatch)
    table["xs"].append(2)
    assert table["xs"] == [1]
    table.update_with("xs", lambda xs: [*xs, 2])
    assert table["xs"] == [1, 2]


@pytest.mark.parametrize("storage", ["memfd", "file"])
def test_dict_log_replay_and_rewrite(storage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two handles stay in step through many appends, log rewrites and file growth."""
    if storage == "memfd" and not os.path.isdir("/proc/self/fd"):
        pytest.skip("no memfd here")
    monkeypatch.setenv(_shared.STORAGE_ENV, storage)
    table: SharedDict[Any, Any] = SharedDict({"start": 0})
    view = other_process_view(table)
    reference: dict[Any, Any] = {"start": 0}
    for i in range(3_000):
        writer = table if i % 3 else view
        key = ("k", i % 200)
        if i % 17 == 0:
            writer.pop(key, None)
            reference.pop(key, None)
        elif i % 101 == 0:
            writer[key] = reference[key] = "v" * 20_000  # grows the file
        else:
            writer[key] = reference[key] = [i] * (i % 7)
        if i % 500 == 0:
            assert view.copy() == reference
    assert table.copy() == view.copy() == reference
    store = table._share()
    assert table._epoch > 1  # the log was rewritten
    assert len(store.map) < 16 * 1024 * 1024
    view.clear()
    assert len(table) == 0


def test_dict_file_stays_small_under_many_updates() -> None:
    """A hot key updated 50,000 times keeps the storage small (the log is rewritten)."""
    table: SharedDict[str, int] = SharedDict()
    pickle.dumps(table)
    for _ in range(50_000):
        table.update_with("n", lambda v: v + 1, 0)
    assert table["n"] == 50_000
    assert len(table._share().map) <= 256 * 1024


def test_dict_bad_arguments() -> None:
    """A non-mapping, non-iterable argument, and an unhashable key, raise TypeError."""
    with pytest.raises(TypeError, match="argument items must be a mapping"):
        SharedDict(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"pairs, but its element #1 is \[3\] \(list\)$"):
        SharedDict([(1, 2), [3]])  # type: ignore[list-item]
    table: SharedDict[Any, int] = SharedDict()
    with pytest.raises(TypeError, match=r"^SharedDict.update\(\) argument must be a mapping "
                                        r"or an iterable of \(key, value\) pairs"):
        table.update([(1, 2, 3)])
    assert table.copy() == {}
    with pytest.raises(TypeError, match=r"cannot use \[1\] \(list\) as a key"):
        table[[1]] = 1


# -- picklability ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_unpicklable_values_are_refused(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Storing something pickle cannot handle raises TypeError naming helper, key, type
    and the fix, and changes nothing."""
    lock = threading.Lock()
    box = in_mode(SharedValue(1), mode, monkeypatch)
    fix = "values must be picklable.*Store plain data"
    with pytest.raises(TypeError, match=f"laneway.SharedValue cannot store .*lock.*{fix}"):
        box.set(lock)
    with pytest.raises(TypeError, match="the value fn returned, <function"):
        box.update(lambda v: lambda: v)
    assert box.get() == 1
    table = in_mode(SharedDict({"k": 1}), mode, monkeypatch)
    with pytest.raises(TypeError, match=f"SharedDict cannot store .* under key 'k' .*{fix}"):
        table["k"] = lock
    with pytest.raises(TypeError, match="under key 'k'"):
        table.update_with("k", lambda v: lock)
    with pytest.raises(TypeError, match="under key 'new'"):
        table.setdefault("new", lock)
    with pytest.raises(TypeError, match="under key 'u'"):
        table.update({"ok": 1, "u": lock})
    with pytest.raises(TypeError, match="as a key: keys must be hashable and picklable"):
        table[lock] = 1
    assert table.copy() == {"k": 1}
    with pytest.raises(TypeError, match="laneway.SharedValue cannot store"):
        SharedValue(lock)
    with pytest.raises(TypeError, match="under key 'x'"):
        SharedDict({"x": lock})


# -- pickling, identity, the lock --------------------------------------------------------


def test_pickling_shares_and_keeps_identity() -> None:
    """Pickling moves a helper to shared mode; unpickling in its process gives it back;
    copy and deepcopy return the helper itself."""
    counter = SharedCounter(3)
    assert counter._store is None
    assert pickle.loads(pickle.dumps(counter)) is counter
    assert counter._store is not None and counter.value == 3
    table: SharedDict[str, int] = SharedDict()
    assert copy.copy(table) is table and copy.deepcopy(table) is table
    assert table._store is None  # copying is not sharing


def test_lock_is_reentrant_and_excludes_threads() -> None:
    """The holder can nest lock() and call operations; another thread cannot get in."""
    counter = SharedCounter()
    pickle.dumps(counter)
    with counter.lock():
        with counter.lock():
            counter.increment()
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(counter._rlock.acquire(False)))
        other.start()
        other.join(DEADLOCK_TIMEOUT)
        assert seen == [False]
        assert counter.increment() == 2
    assert counter._depth == 0


def test_update_fn_may_use_the_helper() -> None:
    """Operations called from inside update()/update_with() nest instead of deadlocking."""
    box = SharedValue(1)
    pickle.dumps(box)
    assert box.update(lambda v: v + box.get()) == 2
    table: SharedDict[str, int] = SharedDict({"a": 5})
    pickle.dumps(table)
    assert table.update_with("b", lambda _: table["a"] * 2) == 10


def test_lock_excludes_processes(warm_pool: None) -> None:
    """While the parent holds lock() (even one taken before the helper was shared), a
    process worker cannot take the file lock; afterwards it can."""
    counter = SharedCounter()
    with counter.lock():
        assert laneway.parallel_map(try_flock, [counter], backend="process") == [False]
    assert laneway.parallel_map(try_flock, [counter], backend="process") == [True]


# -- processes ---------------------------------------------------------------------------


def test_process_workers_see_and_change_the_same_state(warm_pool: None) -> None:
    """Helpers created after the pool started reach its workers as arguments; workers'
    changes are seen by the parent; a helper sent back is the parent's own object."""
    counter, box = SharedCounter(), SharedValue([0])
    table: SharedDict[str, Any] = SharedDict({"hits": 0})
    results = laneway.parallel_map(use_everything, [(counter, box, table)] * 4,
                                   backend="process", workers=4, chunksize=1)
    assert counter.value == 40
    assert len(box.get()) == 5 and table["hits"] == 4
    assert table["from_worker"]["pid"] in {pid for _count, xs, _table in results for pid in xs[1:]}
    back = laneway.parallel_map(give_back, [counter, box, table], backend="process")
    assert back[0] is counter and back[1] is box and back[2] is table


def test_closures_capturing_a_helper_work_on_processes(warm_pool: None) -> None:
    """A helper captured by a lambda (cloudpickled by value) is shared the same way."""
    counter = SharedCounter()
    laneway.parallel_map(lambda _: counter.increment(), range(50), backend="process",
                         workers=2)
    assert counter.value == 50


@pytest.mark.parametrize("kind", ["counter", "dict", "value"])
def test_processes_and_threads_together_lose_no_update(kind: str, warm_pool: None) -> None:
    """4 process tasks and 4 thread tasks, running at once, update one helper 2,000 times
    each: exactly 16,000, on each of 3 runs (the benchmark does 20 runs of 10,000)."""
    for _ in range(REPEATS):
        helper: Any = (SharedCounter() if kind == "counter" else SharedDict() if kind == "dict"
                       else SharedValue(0))
        arrived = SharedCounter()
        items = [(kind, helper, arrived, INCREMENTS)] * 4
        outcome: dict[str, Any] = {}

        def on_threads(items: list[Any] = items, outcome: dict[str, Any] = outcome) -> None:
            try:
                outcome["threads"] = laneway.parallel_map(hammer, items, backend="thread",
                                                          workers=4, chunksize=1)
            except BaseException as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=on_threads)
        runner.start()
        pids = laneway.parallel_map(hammer, items, backend="process", workers=4, chunksize=1)
        runner.join(DEADLOCK_TIMEOUT)
        assert not runner.is_alive() and "error" not in outcome, outcome.get("error")
        assert len(set(pids)) == 4 and set(pids).isdisjoint({os.getpid()})
        assert total(kind, helper) == PARTIES * INCREMENTS


def test_worker_dying_inside_lock_does_not_block_others(warm_pool: None) -> None:
    """A worker that exits while holding lock() fails its item; the lock is free after."""
    counter = SharedCounter()
    [outcome] = laneway.parallel_map(die_holding_lock, [counter], backend="process",
                                     errors="return")
    assert isinstance(outcome, laneway.WorkerCrashedError)
    done = threading.Event()

    def use() -> None:
        counter.increment()
        done.set()

    user = threading.Thread(target=use)
    user.start()
    user.join(DEADLOCK_TIMEOUT)
    assert done.is_set(), "the lock of the dead worker was never released"
    assert counter.value == 2  # the dead worker's increment was committed before it died
    assert laneway.parallel_map(try_flock, [counter], backend="process") == [True]
    assert laneway.parallel_map(give_back, [counter], backend="process")[0].value == 2


def test_crash_mid_write_leaves_the_old_state(warm_pool: None) -> None:
    """A worker that dies halfway through writing a new value leaves the old value (never
    a torn one) and the lock free; later writes work."""
    box: SharedValue[Any] = SharedValue("old")
    table: SharedDict[str, Any] = SharedDict({"k": "old"})
    big = "new" * 100_000
    outcomes = laneway.parallel_map(
        die_mid_write, [(box, big), (table, "new"), (table, big)], backend="process",
        errors="return", chunksize=1)
    assert all(isinstance(o, laneway.WorkerCrashedError) and o.exitcode == 9
               for o in outcomes), outcomes
    assert box.get() == "old" and table.copy() == {"k": "old"}
    table["k2"] = 2
    box.set("newer")
    assert laneway.parallel_map(give_back, [(box, table)], backend="process")[0] == (box, table)
    assert box.get() == "newer" and table.copy() == {"k": "old", "k2": 2}


def test_stale_pickle_says_the_helper_is_gone() -> None:
    """Unpickling a helper whose creator dropped it raises a clear LanewayError."""
    counter = SharedCounter()
    data = pickle.dumps(counter)
    del counter
    gc.collect()
    with pytest.raises(LanewayError, match="no longer exists.*Keep a reference"):
        pickle.loads(data)


# -- lifetime ----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memfd", "file"])
def test_nothing_left_after_collection(storage: str, warm_pool: None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Create, share, use from process workers, drop, collect: no file, no memfd left."""
    if storage == "memfd" and not os.path.isdir("/proc/self/fd"):
        pytest.skip("no memfd here")
    monkeypatch.setenv(_shared.STORAGE_ENV, storage)
    gc.collect()
    files, memfds = laneway_files(), laneway_memfds()
    helpers = (SharedCounter(), SharedValue([0]), SharedDict({"hits": 0}))
    laneway.parallel_map(use_everything, [helpers] * 2, backend="process", workers=2)
    if storage == "file":
        assert len(laneway_files()) == len(files) + 3
    else:
        assert laneway_memfds() == memfds + 3
    del helpers
    gc.collect()
    assert laneway_files() == files
    assert laneway_memfds() == memfds


# -- fork --------------------------------------------------------------------------------


def fork_context() -> Any:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    return multiprocessing.get_context("fork")


def run_forked(target: Callable[..., None], *args: Any) -> int | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process
        child = fork_context().Process(target=target, args=args)
        child.start()
    child.join(DEADLOCK_TIMEOUT)
    exitcode: int | None = child.exitcode
    return exitcode


def test_local_helper_inherited_by_fork_is_shared() -> None:
    """A helper inherited by a forked child (never pickled) is shared before the fork."""
    counter = SharedCounter()
    assert run_forked(count_in_child, counter, 1_000) == 0
    assert counter.value == 1_000


def test_fork_while_another_thread_holds_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """If a helper cannot be shared before a fork, the child's copy refuses to work."""
    monkeypatch.setattr(_shared, "_FORK_BUDGET_S", 0.05)
    counter = SharedCounter()
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with counter.lock():
            holding.set()
            release.wait(DEADLOCK_TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(DEADLOCK_TIMEOUT)
        assert run_forked(expect_detached, counter) == 0
    finally:
        release.set()
        holder.join(DEADLOCK_TIMEOUT)
    assert counter.increment() == 1


def test_public_names() -> None:
    """The helpers are exported by the laneway package."""
    if "SharedCounter" not in laneway.__all__:
        pytest.skip("not exported from laneway yet")
    assert laneway.SharedCounter is SharedCounter
    assert laneway.SharedValue is SharedValue
    assert laneway.SharedDict is SharedDict

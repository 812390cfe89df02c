"""The fault matrix: each kind of fault fails only its own item, whatever the entry point."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT
from laneway._errors import RemoteTaskError

BAD = 8
ITEMS = 20


class Unpicklable:
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("refuses to be pickled")


class ExitOnUnpickle:
    """Pickles fine in the parent; unpickling it kills the worker."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (4,))


def fault(kind: str) -> Callable[[Any], Any]:
    """The task function for a fault kind: item BAD misbehaves, the others return x."""
    return {
        "raise": raise_on_bad, "exit": exit_on_bad, "sigkill": sigkill_on_bad,
        "segfault": segfault_on_bad, "bad_result": bad_result_on_bad, "hang": hang_on_bad,
    }.get(kind, identity)


def work() -> None:
    """A few milliseconds of task work: items this long run (and crash) one at a time
    (shorter ones run in groups of about 2 ms, and a crash fails its whole group)."""
    time.sleep(0.005)


def identity(x: Any) -> Any:
    work()
    return x if isinstance(x, int) else -1


def raise_on_bad(x: int) -> int:
    work()
    if x == BAD:
        raise ValueError("task failed")
    return x


def exit_on_bad(x: int) -> int:
    work()
    if x == BAD:
        os._exit(1)
    return x


def sigkill_on_bad(x: int) -> int:
    work()
    if x == BAD:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def segfault_on_bad(x: int) -> int:
    work()
    if x == BAD:
        ctypes.string_at(0)
    return x


def bad_result_on_bad(x: int) -> object:
    work()
    return Unpicklable() if x == BAD else x


def hang_on_bad(x: int) -> int:
    work()
    if x == BAD:
        time.sleep(DEADLOCK_TIMEOUT)  # runaway work that task_timeout must stop
    return x


FAULTS: dict[str, tuple[type[BaseException], str]] = {
    "raise": (ValueError, "task failed"),
    "exit": (laneway.WorkerCrashedError, "exited with code 1"),
    "sigkill": (laneway.WorkerCrashedError, "SIGKILL"),
    "segfault": (laneway.WorkerCrashedError, "SIGSEGV"),
    "bad_result": (RemoteTaskError, "cannot be pickled"),
    "hang": (laneway.TaskTimeoutError, "task_timeout"),
    "pickle_item": (TypeError, "cannot send item #8"),
    "unpickle_exit": (laneway.WorkerCrashedError, "exited with code 4"),
}


def _items(kind: str) -> list[Any]:
    items: list[Any] = list(range(ITEMS))
    if kind == "pickle_item":
        items[BAD] = Unpicklable()
    elif kind == "unpickle_exit":
        items[BAD] = ExitOnUnpickle()
    return items


@pytest.mark.parametrize("entry", ["parallel_map", "imap_unordered"])
@pytest.mark.parametrize("kind", sorted(FAULTS))
def test_fault_fails_only_its_item(kind: str, entry: str) -> None:
    """The faulty item gets the expected error; every innocent item its result."""
    error_type, text = FAULTS[kind]
    options: dict[str, Any] = {"backend": "process", "workers": 2, "errors": "return",
                               "task_timeout": 2 if kind == "hang" else None}
    fn, items = fault(kind), _items(kind)
    if entry == "parallel_map":
        got = laneway.parallel_map(fn, items, **options)
    else:
        got = list(laneway.imap(fn, items, ordered=False, **options))
    failures = [g for g in got if isinstance(g, BaseException)]
    assert len(got) == ITEMS
    assert len(failures) == 1, failures
    assert isinstance(failures[0], error_type), failures[0]
    assert text in str(failures[0])
    assert sorted(g for g in got if not isinstance(g, BaseException)) == \
        [x for x in range(ITEMS) if x != BAD]


def crash_always(x: int) -> int:
    os._exit(2)


def test_a_function_that_kills_every_worker_stops_the_run() -> None:
    """After a few crashes in a row the run fails with a clear message instead of looping."""
    got = laneway.parallel_map(crash_always, range(30), backend="process", workers=2,
                               chunksize=1, errors="return")
    assert all(isinstance(g, laneway.LanewayError) for g in got)
    assert any("in a row" in str(g) for g in got)
    assert laneway.parallel_map(identity, range(3), backend="process") == [0, 1, 2]


def test_crashes_leak_no_file_descriptors() -> None:
    """Replacing crashed workers leaves the parent with the same open fds as before."""
    laneway.parallel_map(identity, range(4), backend="process", workers=2)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        laneway.parallel_map(exit_on_bad, range(12), backend="process", workers=2,
                             errors="return")
    assert len(os.listdir("/proc/self/fd")) == before


class CodedError(Exception):
    """An exception whose __init__ takes an argument of its own: pickle's way of
    rebuilding it (``CodedError(*args)``) fails, since ``args`` holds only the message."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raise_coded(x: int) -> int:
    if x == 3:
        raise CodedError(f"bad item {x}", code=40 + x)
    return x


class InputMissing(FileNotFoundError):
    """An OSError whose errno and filename live in C fields, not in ``args``."""

    def __init__(self, path: str) -> None:
        super().__init__(2, "no such input", path)


class SlottedError(Exception):
    __slots__ = ("code",)

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class PluginMissing(ImportError):
    """Its __init__ would run again on the wrong argument if pickle called it."""

    def __init__(self, plugin: str) -> None:
        super().__init__(f"no plugin {plugin}", name=plugin)


def raise_varied(kind: str) -> str:
    if kind == "os":
        raise InputMissing("/data/1")
    if kind == "slots":
        raise SlottedError("slotted", 42)
    if kind == "import":
        raise PluginMissing("foo")
    if kind == "group":
        raise ExceptionGroup("several", [CodedError("inner", 7), InputMissing("/x")])
    return kind


def _exception_view(exc: BaseException) -> tuple[object, ...]:
    return (type(exc), str(exc), *(getattr(exc, name, None) for name in (
        "errno", "strerror", "filename", "filename2", "code", "name")))


def test_exceptions_with_fields_outside_args_arrive_whole_from_a_process() -> None:
    """Type, message and fields (C fields of built-in bases, __slots__, keyword-only
    ones) arrive from a process worker as they are on threads; an __init__ is never
    run again on the wrong arguments (PluginMissing's message would double)."""
    kinds = ["os", "slots", "import", "group", "fine"]
    on_threads = laneway.parallel_map(raise_varied, kinds, backend="thread", errors="return")
    on_processes = laneway.parallel_map(raise_varied, kinds, backend="process",
                                        errors="return")
    assert on_processes[4] == "fine"
    for local, remote in zip(on_threads[:4], on_processes[:4], strict=True):
        assert _exception_view(remote) == _exception_view(local)
    group = on_processes[3]  # (the exceptions it holds travel by state too)
    assert isinstance(group, ExceptionGroup)
    assert [_exception_view(e) for e in group.exceptions] == \
        [_exception_view(e) for e in on_threads[3].exceptions]
    assert group.exceptions[0].code == 7
    assert str(on_processes[0]) == "[Errno 2] no such input: '/data/1'"
    assert str(on_processes[2]) == "no plugin foo"


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_an_exception_with_its_own_init_arguments_keeps_its_type(backend: str) -> None:
    """A task's exception arrives as itself from a process worker too (same type, message
    and attributes), not as RemoteTaskError: ``except CodedError`` must not depend on
    the backend the router picked."""
    got = laneway.parallel_map(raise_coded, range(6), backend=backend, errors="return")
    error = got[3]
    assert type(error) is CodedError, repr(error)
    assert str(error) == "bad item 3" and error.code == 43
    with pytest.raises(CodedError, match="bad item 3") as caught:
        laneway.parallel_map(raise_coded, range(6), backend=backend)
    assert caught.value.code == 43

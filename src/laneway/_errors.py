"""laneway's exceptions, and how a task's failure travels back to the caller.

The hierarchy::

    Exception
    └── LanewayError                      the library's own errors
        ├── WorkerCrashedError            a process worker died while running an item
        ├── TaskTimeoutError (+ TimeoutError)   an item overran ``task_timeout``
        └── RemoteTaskError               a task raised something that could not be pickled

A task's *own* exception is re-raised as itself (same type).  When it was raised in a
process worker it carries the worker's traceback as its ``__cause__`` (a
:class:`RemoteTraceback`), like :mod:`concurrent.futures` does, and every failure
delivered by laneway gets a note naming the item (``exc.__notes__``).
"""

from __future__ import annotations

import signal

__all__ = [
    "Failure",
    "LanewayError",
    "RemoteTaskError",
    "RemoteTraceback",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "describe_value",
    "exit_description",
]


class LanewayError(Exception):
    """Base class of the errors laneway raises itself.

    Example::

        try:
            laneway.parallel_map(score, items, backend="process")
        except laneway.LanewayError as exc:
            log.error("the pool failed: %s", exc)
    """


class WorkerCrashedError(LanewayError):
    """A process worker died (exit code or signal) while running an item.

    Only the item(s) the worker held fail; the pool replaces the worker and the
    run goes on.  Attributes: ``pid``, ``exitcode`` (negative for a signal, as in
    :attr:`multiprocessing.Process.exitcode`), ``index`` (the item's position in
    the input, or ``None``).
    """

    def __init__(
        self, message: str, *, pid: int | None = None, exitcode: int | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.index = index

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_crash, (str(self), self.pid, self.exitcode, self.index))


def _rebuild_crash(
    message: str, pid: int | None, exitcode: int | None, index: int | None
) -> WorkerCrashedError:
    return WorkerCrashedError(message, pid=pid, exitcode=exitcode, index=index)


class TaskTimeoutError(LanewayError, TimeoutError):
    """An item ran longer than the ``task_timeout`` it was given.

    A process worker running it is stopped and replaced; a thread running it is
    abandoned.  Catch it as :class:`TimeoutError` too.  Attributes: ``index``,
    ``seconds`` (the limit).
    """

    def __init__(self, message: str, *, index: int | None = None,
                 seconds: float | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_timeout, (str(self), self.index, self.seconds))


def _rebuild_timeout(message: str, index: int | None, seconds: float | None) -> TaskTimeoutError:
    return TaskTimeoutError(message, index=index, seconds=seconds)


class RemoteTaskError(LanewayError):
    """A task in a process worker raised an exception that could not be sent back.

    Its type name and text are kept: ``remote_type`` (e.g. ``"mylib.OddError"``)
    and the message; the worker's traceback is attached as ``__cause__``.
    """

    def __init__(self, message: str, *, remote_type: str = "") -> None:
        super().__init__(message)
        self.remote_type = remote_type

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_remote, (str(self), self.remote_type))


def _rebuild_remote(message: str, remote_type: str) -> RemoteTaskError:
    return RemoteTaskError(message, remote_type=remote_type)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a process worker, as text.

    laneway sets it as the ``__cause__`` of the re-raised exception, so Python
    prints it above the caller's own traceback.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


class Failure:
    """One item's failure on its way to the caller (internal).

    ``exc`` is the exception; ``remote_tb`` the worker-side traceback text when it
    happened in another process.
    """

    __slots__ = ("exc", "remote_tb")

    def __init__(self, exc: BaseException, remote_tb: str | None = None) -> None:
        self.exc = exc
        self.remote_tb = remote_tb

    def materialize(self, index: int, fn_name: str, unit: str = "item") -> BaseException:
        """The exception to hand to the user, with the item (or task) noted (once)."""
        exc = self.exc
        if self.remote_tb is not None and exc.__cause__ is None:
            exc.__cause__ = RemoteTraceback(self.remote_tb)
            self.remote_tb = None
        note = f"laneway: raised by {unit} #{index} of {fn_name}"
        notes = getattr(exc, "__notes__", ())
        if note not in notes:
            exc.add_note(note)
        return exc


def describe_value(value: object, limit: int = 80) -> str:
    """A short, safe description of a user value for error messages."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__qualname__} object>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__qualname__})"


def exit_description(exitcode: int | None) -> str:
    """Say how a process ended, and the likely cause, from its exit code."""
    if exitcode is None:
        return "vanished without an exit code"
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    signum = -exitcode
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    cause = {
        "SIGKILL": "; the OS usually does this when a process uses too much memory",
        "SIGSEGV": "; a native extension crashed (segmentation fault)",
        "SIGBUS": "; a native extension crashed (bus error)",
        "SIGABRT": "; a native extension aborted",
        "SIGTERM": "; something asked it to stop",
    }.get(name, "")
    return f"was killed by {name}{cause}"

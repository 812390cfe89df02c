"""The keyword arguments every entry point shares, validated once, before anything runs.

Each check names the parameter, the value received and what is accepted, and raises
``TypeError`` for a wrong type, ``ValueError`` for a wrong value of the right type.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from ._errors import describe_value
from ._hints import KINDS, Kind

__all__ = ["BACKENDS", "ERRORS", "BackendName", "ErrorPolicy", "Progress", "RunOptions",
           "env_backend", "validate_callable"]

BackendName = Literal["serial", "thread", "process", "async", "dask"]
ErrorPolicy = Literal["raise", "return"]
Progress = bool | Callable[[int, int | None], object]

BACKENDS: tuple[BackendName, ...] = ("serial", "thread", "process", "async", "dask")
ERRORS: tuple[ErrorPolicy, ...] = ("raise", "return")


@dataclass(frozen=True, slots=True)
class RunOptions:
    """The validated keywords of one call."""

    kind: Kind | None = None
    backend: BackendName | None = None
    workers: int | None = None
    chunksize: int | None = None
    ordered: bool = True
    timeout: float | None = None
    task_timeout: float | None = None
    errors: ErrorPolicy = "raise"
    progress: Progress = False

    @classmethod
    def validate(cls, *, kind: object = None, backend: object = None, workers: object = None,
                 chunksize: object = None, ordered: object = True, timeout: object = None,
                 task_timeout: object = None, errors: object = "raise",
                 progress: object = False) -> RunOptions:
        """Check every keyword and return them as a RunOptions."""
        return cls(
            kind=cast("Kind | None", _choice("kind", kind, KINDS, allow_none=True)),
            backend=cast("BackendName | None",
                         _choice("backend", backend, BACKENDS, allow_none=True)),
            workers=_positive_int("workers", workers),
            chunksize=_positive_int("chunksize", chunksize),
            ordered=_bool("ordered", ordered),
            timeout=_seconds("timeout", timeout),
            task_timeout=_seconds("task_timeout", task_timeout),
            errors=cast("ErrorPolicy", _choice("errors", errors, ERRORS, allow_none=False)),
            progress=_progress(progress),
        )


def validate_callable(name: str, fn: object) -> None:
    """Raise TypeError unless ``fn`` is callable."""
    if not callable(fn):
        msg = f"{name} must be callable, got {describe_value(fn)}"
        raise TypeError(msg)


def env_backend() -> BackendName | None:
    """The backend forced by ``LANEWAY_BACKEND``, if set (validated)."""
    raw = os.environ.get("LANEWAY_BACKEND", "").strip()
    if not raw:
        return None
    if raw not in BACKENDS:
        msg = (f"LANEWAY_BACKEND must be one of {', '.join(BACKENDS)} (or unset), "
               f"got {raw!r}")
        raise ValueError(msg)
    return raw


def _choice(name: str, value: object, accepted: tuple[str, ...], *, allow_none: bool) -> object:
    if value is None and allow_none:
        return None
    if not isinstance(value, str):
        none = " or None" if allow_none else ""
        msg = (f"{name} must be one of {', '.join(map(repr, accepted))}{none}, "
               f"got {describe_value(value)}")
        raise TypeError(msg)
    if value not in accepted:
        msg = f"{name} must be one of {', '.join(map(repr, accepted))}, got {value!r}"
        raise ValueError(msg)
    return value


def _positive_int(name: str, value: object) -> int | None:
    """A positive int: any integer type (``numpy.int64`` too, through ``__index__``) but
    ``bool``."""
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        msg = f"{name} must be a positive int or None, got {describe_value(value)}"
        raise TypeError(msg)
    value = operator.index(value)  # type: ignore[arg-type]
    if value < 1:
        msg = f"{name} must be a positive int or None, got {value}"
        raise ValueError(msg)
    return value


MAX_WAIT_S = 3600.0
"""The longest a single internal wait lasts: the waiting loops look at their deadlines
again when it ends, so a ``timeout``/``task_timeout`` of ``float("inf")`` (no limit) or
of years works, where one wait that long would overflow the operating system's timer."""


def bounded_wait(seconds: float | None) -> float | None:
    """``seconds`` capped at ``MAX_WAIT_S`` (None stays None: wait without a timer)."""
    return None if seconds is None else min(seconds, MAX_WAIT_S)


def _seconds(name: str, value: object) -> float | None:
    """Positive seconds: any real number (``Fraction``, ``Decimal`` and numpy's too) but
    ``bool``; one too large for a float (``10**400``) is no limit, as ``inf`` is."""
    if value is None:
        return None
    if isinstance(value, bool) or not hasattr(type(value), "__float__"):
        msg = f"{name} must be a positive number of seconds or None, got {describe_value(value)}"
        raise TypeError(msg)
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except OverflowError:
        seconds = math.inf if value > 0 else -math.inf  # type: ignore[operator]
    if not seconds > 0 or math.isnan(seconds):
        msg = f"{name} must be a positive number of seconds or None, got {value}"
        raise ValueError(msg)
    return seconds


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, got {describe_value(value)}"
        raise TypeError(msg)
    return value


def _progress(value: object) -> Progress:
    if isinstance(value, bool):
        return value
    if callable(value) and _takes_two_arguments(value):
        return cast("Progress", value)
    msg = (f"progress must be True, False or a callable taking (done, total), "
           f"got {describe_value(value)}")
    raise TypeError(msg)


def _takes_two_arguments(fn: Callable[..., object]) -> bool:
    """Whether ``fn(done, total)`` binds (True when the signature cannot be read)."""
    import inspect

    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    try:
        signature.bind(0, None)
    except TypeError:
        return False
    return True


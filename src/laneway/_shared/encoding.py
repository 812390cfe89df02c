"""How a helper stores values and keys: immutable built-in scalars as they are, anything
else as its pickle (``_Blob``), checked when stored; and the int64 checks of
``SharedCounter``."""

from __future__ import annotations

import contextlib
import operator
import pickle
from typing import Any

from .._errors import describe_value

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, complex, str, bytes})


_NO_KEY: Any = object()


class _Blob:
    """A stored value's pickle (anything that is not an immutable built-in scalar)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Blob, (self.data,))


def _stored(value: object, helper: str, key: object = _NO_KEY, returned: bool = False) -> object:
    """``value`` in stored form: a scalar as is, anything else pickled (checked now)."""
    if type(value) in _SCALARS:
        return value
    try:
        return _Blob(pickle.dumps(value, _PROTOCOL))
    except Exception as exc:
        where = "" if key is _NO_KEY else f" under key {describe_value(key, 40)}"
        what = f"the value fn returned, {describe_value(value)}," if returned \
            else describe_value(value)
        msg = (f"laneway.{helper} cannot store {what}{where}: values must be picklable "
               f"with the standard pickle module, because tasks in other processes read "
               f"them (pickle.dumps failed: {type(exc).__name__}: {exc}). Store plain data "
               f"instead: numbers, strings, bytes, tuples, lists, dicts, or instances of "
               f"classes defined at module level")
        raise TypeError(msg) from exc


def _decoded(stored: object) -> Any:
    return pickle.loads(stored.data) if type(stored) is _Blob else stored


def _pickled(stored: object) -> bytes:
    return stored.data if type(stored) is _Blob else pickle.dumps(stored, _PROTOCOL)


def _key_pickle(key: object, name: str) -> bytes | None:
    """The key's pickle, checked now (None for a scalar, pickled only when needed)."""
    if type(key) in _SCALARS:
        return None
    try:
        hash(key)
        return pickle.dumps(key, _PROTOCOL)
    except Exception as exc:
        msg = (f"laneway.{name} cannot use {describe_value(key)} as a key: keys must be "
               f"hashable and picklable with the standard pickle module ({type(exc).__name__}:"
               f" {exc}). Use strings, numbers or tuples of them as keys")
        raise TypeError(msg) from exc


def _as_int(where: str, value: object) -> int:
    # (a bool is an int to Python, but a flag: refused, as workers= does)
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # type: ignore[arg-type]
    msg = f"{where} must be an int, got {describe_value(value)}"
    raise TypeError(msg)


def _overflow(value: int) -> OverflowError:
    return OverflowError(
        f"laneway.SharedCounter holds a signed 64-bit integer; {value} is out of range")

"""``SharedCounter``: a signed 64-bit integer kept in the storage header."""

from __future__ import annotations

from .base import _Shared
from .encoding import _INT64_MAX, _INT64_MIN, _as_int, _overflow
from .storage import _W_COUNT, _create_store, _Store

__all__ = ["SharedCounter"]


class SharedCounter(_Shared):
    """A signed 64-bit integer counter shared by thread and process tasks.

    ``increment`` is atomic: N tasks each incrementing M times, on any mix of backends,
    always leave N * M.

    Args:
        initial: the starting value (an int in the signed 64-bit range).

    Example:
        >>> import laneway
        >>> done = laneway.SharedCounter()
        >>> done.increment()
        1
        >>> done.increment(n=5)
        6
        >>> done.value
        6
    """

    _KIND = 1

    def __init__(self, initial: int = 0) -> None:
        if type(initial) is not int:
            initial = _as_int("SharedCounter() argument initial", initial)
        if not _INT64_MIN <= initial <= _INT64_MAX:
            raise _overflow(initial)
        self._value = initial
        super().__init__()

    def increment(self, n: int = 1) -> int:
        """Add ``n`` (which may be negative) atomically and return the new value.

        Raises OverflowError, changing nothing, if the result leaves the int64 range.

        Example:
            >>> import laneway
            >>> laneway.SharedCounter(10).increment(n=-3)
            7
        """
        if type(n) is not int:
            n = _as_int("SharedCounter.increment() argument n", n)
        with self._rlock:
            store = self._store
            if store is None:
                value = self._value + n
                if value > _INT64_MAX or value < _INT64_MIN:
                    raise _overflow(value)
                self._value = value
                return value
            depth = self._depth
            if not depth:
                store.lock()
            try:
                words = store.words
                value = words[_W_COUNT] + n
                if value > _INT64_MAX or value < _INT64_MIN:
                    raise _overflow(value)
                words[_W_COUNT] = value
                return value
            finally:
                if not depth:
                    store.unlock()

    @property
    def value(self) -> int:
        """The current value.

        Example:
            >>> import laneway
            >>> laneway.SharedCounter(3).value
            3
        """
        with self._rlock:
            store = self._store
            if store is None:
                return self._value
            self._begin()
            try:
                count: int = store.words[_W_COUNT]
                return count
            finally:
                self._end()

    def _export(self) -> _Store:
        store = _create_store(self._KIND, self._token, 0)
        store.words[_W_COUNT] = self._value
        return store

    def _attach(self, token: bytes, store: _Store) -> None:
        self._value = 0
        super()._attach(token, store)

    def __repr__(self) -> str:
        return f"laneway.SharedCounter({self.value})"

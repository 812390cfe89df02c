"""``SharedValue``: one value, its pickle kept in the storage's data area."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Generic, TypeVar, cast

from .._errors import describe_value
from .base import _Shared
from .encoding import _decoded, _pickled, _stored
from .storage import _HEADER, _commit, _create_store, _Store

__all__ = ["SharedValue"]

T = TypeVar("T")


class SharedValue(_Shared, Generic[T]):
    """One value shared by thread and process tasks: ``get``, ``set``, ``update``.

    The value must be picklable.  ``get`` returns a copy: change the value with ``set``
    or, to read and change it atomically, ``update``.

    Args:
        initial: the starting value.

    Example:
        >>> import laneway
        >>> best = laneway.SharedValue(0.0)
        >>> best.update(lambda b: max(b, 2.5))
        2.5
        >>> best.set(1.0)
        >>> best.get()
        1.0
    """

    _KIND = 2

    def __init__(self, initial: T) -> None:
        self._value: object = _stored(initial, "SharedValue")
        super().__init__()

    def get(self) -> T:
        """The current value (a copy: changing it does not change the stored value).

        Example:
            >>> import laneway
            >>> laneway.SharedValue("hello").get()
            'hello'
        """
        with self._rlock:
            if self._store is None:
                return cast(T, _decoded(self._value))
            self._begin()
            try:
                return cast(T, self._load())
            finally:
                self._end()

    def set(self, value: T) -> None:
        """Replace the value.

        Raises TypeError if ``value`` cannot be pickled (nothing changes).

        Example:
            >>> import laneway
            >>> box = laneway.SharedValue([1])
            >>> box.set([1, 2])
            >>> box.get()
            [1, 2]
        """
        stored = _stored(value, "SharedValue")
        with self._rlock:
            self._begin()
            try:
                self._save(stored)
            finally:
                self._end()

    def update(self, fn: Callable[[T], T]) -> T:
        """Replace the value with ``fn(value)`` atomically and return the new value.

        ``fn`` runs with the lock held (keep it short); if it raises, nothing changes.

        Example:
            >>> import laneway
            >>> seen = laneway.SharedValue(())
            >>> seen.update(lambda t: t + ("a",))
            ('a',)
        """
        if not callable(fn):
            msg = f"SharedValue.update() argument fn must be callable, got {describe_value(fn)}"
            raise TypeError(msg)
        with self._rlock:
            self._begin()
            try:
                new = fn(cast(T, self._load()))
                self._save(_stored(new, "SharedValue", returned=True))
                return new
            finally:
                self._end()

    def _load(self) -> object:
        store = self._store
        if store is None:
            return _decoded(self._value)
        store.refresh()
        return pickle.loads(store.read())

    def _save(self, stored: object) -> None:
        store = self._store
        if store is None:
            self._value = stored
            return
        store.refresh()
        data = _pickled(stored)
        where = store.place(len(data))
        store.write(where, data)
        _commit(store.words, where, len(data))

    def _export(self) -> _Store:
        data = _pickled(self._value)
        store = _create_store(self._KIND, self._token, len(data))
        store.write(_HEADER, data)
        _commit(store.words, _HEADER, len(data))
        self._value = None
        return store

    def __repr__(self) -> str:
        return f"laneway.SharedValue({self.get()!r})"

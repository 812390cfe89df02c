"""``SharedDict``: a table kept as a log (a snapshot record, then one record per change),
replayed into a per-process replica; and the log's record helpers."""

from __future__ import annotations

import pickle
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import Any, TypeVar, cast, overload

from .._errors import LanewayError, describe_value
from .base import _Shared
from .encoding import _PROTOCOL, _SCALARS, _Blob, _decoded, _key_pickle, _pickled, _stored
from .storage import (
    _DEL,
    _HEADER,
    _LOG_BYTES,
    _MAX_USED,
    _REC,
    _SET,
    _SNAP,
    _W_EPOCH,
    _W_GEN,
    _commit,
    _create_store,
    _region,
    _Store,
)

__all__ = ["SharedDict"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class _SnapshotItems(ItemsView[K, V]):
    def __init__(self, mapping: SharedDict[K, V]) -> None:
        super().__init__(mapping)
        self._shared = mapping

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return iter(self._shared.copy().items())


class _SnapshotValues(ValuesView[V]):
    def __init__(self, mapping: SharedDict[Any, V]) -> None:
        super().__init__(mapping)
        self._shared = mapping

    def __iter__(self) -> Iterator[V]:
        return iter(self._shared.copy().values())


_MISSING: Any = object()


class SharedDict(_Shared, MutableMapping[K, V]):
    """A dict shared by thread and process tasks.

    Every mapping operation is atomic, and so is ``update_with`` (read, compute, store).
    Keys must be hashable and picklable, values picklable.  Reads return copies: mutating
    a list read from the table changes only the copy, so use ``update_with`` (or hold
    ``lock()``) to change an entry.  Iterating, ``items()`` and ``values()`` work on a
    snapshot taken when the iteration starts; ``copy()`` returns one as a plain dict.

    Args:
        items: the initial contents: a mapping, or an iterable of (key, value) pairs.

    Example:
        >>> import laneway
        >>> words = laneway.SharedDict()
        >>> words["a"] = 1
        >>> words.update_with("a", lambda n: n + 1, 0)
        2
        >>> words.update_with("b", lambda n: n + 1, 0)
        1
        >>> dict(words)
        {'a': 2, 'b': 1}
    """

    _KIND = 3

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = (), /) -> None:
        self._data: dict[Any, object] = {}
        self._gen = self._epoch = self._pos = 0
        pairs = items.items() if isinstance(items, Mapping) else items
        if not isinstance(pairs, Iterable):
            msg = (f"SharedDict() argument items must be a mapping or an iterable of "
                   f"(key, value) pairs, got {describe_value(items)}")
            raise TypeError(msg)
        for key, value in _pairs(pairs, "SharedDict() argument items"):
            _key_pickle(key, "SharedDict")
            self._data[key] = _stored(value, "SharedDict", key)
        super().__init__()

    # -- reads ---------------------------------------------------------------------------

    def __getitem__(self, key: K) -> V:
        with self._rlock:
            self._begin()
            try:
                return cast(V, _decoded(self._table()[key]))
            finally:
                self._end()

    def __contains__(self, key: object) -> bool:
        with self._rlock:
            self._begin()
            try:
                return key in self._table()
            finally:
                self._end()

    def __len__(self) -> int:
        with self._rlock:
            self._begin()
            try:
                return len(self._table())
            finally:
                self._end()

    def __iter__(self) -> Iterator[K]:
        with self._rlock:
            self._begin()
            try:
                keys = list(self._table())
            finally:
                self._end()
        return iter(keys)

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V, /) -> V: ...
    @overload
    def get(self, key: K, default: D, /) -> V | D: ...
    def get(self, key: K, default: object = None, /) -> object:
        """``table[key]`` if the key is present, else ``default``.

        Example:
            >>> import laneway
            >>> laneway.SharedDict({"a": 1}).get("b", 0)
            0
        """
        with self._rlock:
            self._begin()
            try:
                stored = self._table().get(key, _MISSING)
            finally:
                self._end()
        return default if stored is _MISSING else _decoded(stored)

    def copy(self) -> dict[K, V]:
        """A snapshot of the whole table, as a plain ``dict`` (taken atomically).

        Example:
            >>> import laneway
            >>> laneway.SharedDict([("a", [1])]).copy()
            {'a': [1]}
        """
        with self._rlock:
            self._begin()
            try:
                table = dict(self._table())
            finally:
                self._end()
        return {key: _decoded(stored) for key, stored in table.items()}

    def items(self) -> ItemsView[K, V]:
        """The (key, value) pairs; iterating it iterates over a snapshot.

        Example:
            >>> import laneway
            >>> list(laneway.SharedDict({"a": 1}).items())
            [('a', 1)]
        """
        return _SnapshotItems(self)

    def values(self) -> ValuesView[V]:
        """The values; iterating it iterates over a snapshot.

        Example:
            >>> import laneway
            >>> sum(laneway.SharedDict({"a": 1, "b": 2}).values())
            3
        """
        return _SnapshotValues(self)

    # -- writes --------------------------------------------------------------------------

    def __setitem__(self, key: K, value: V) -> None:
        key_pickle = None if type(key) in _SCALARS else _key_pickle(key, "SharedDict")
        stored = value if type(value) in _SCALARS else _stored(value, "SharedDict", key)
        with self._rlock:
            self._begin()
            try:
                self._table()[key] = stored
                if self._store is not None:
                    self._log(_set_record(key, key_pickle, stored))
            finally:
                self._end()

    def __delitem__(self, key: K) -> None:
        with self._rlock:
            self._begin()
            try:
                del self._table()[key]
                if self._store is not None:
                    self._log(_delete_record(key))
            finally:
                self._end()

    @overload
    def pop(self, key: K, /) -> V: ...
    @overload
    def pop(self, key: K, default: V, /) -> V: ...
    @overload
    def pop(self, key: K, default: D, /) -> V | D: ...
    def pop(self, key: K, default: object = _MISSING, /) -> object:
        """Remove ``key`` and return its value (or ``default``; KeyError without one).

        Example:
            >>> import laneway
            >>> jobs = laneway.SharedDict({"j1": "queued"})
            >>> jobs.pop("j1"), jobs.pop("j1", None)
            ('queued', None)
        """
        with self._rlock:
            self._begin()
            try:
                table = self._table()
                if key not in table:
                    if default is _MISSING:
                        raise KeyError(key)
                    return default
                stored = table.pop(key)
                if self._store is not None:
                    self._log(_delete_record(key))
            finally:
                self._end()
        return _decoded(stored)

    def popitem(self) -> tuple[K, V]:
        """Remove and return the last inserted (key, value) pair (KeyError if empty).

        Example:
            >>> import laneway
            >>> laneway.SharedDict({"a": 1}).popitem()
            ('a', 1)
        """
        with self._rlock:
            self._begin()
            try:
                table = self._table()
                if not table:
                    msg = "popitem(): laneway.SharedDict is empty"
                    raise KeyError(msg)
                key, stored = table.popitem()
                if self._store is not None:
                    self._log(_delete_record(key))
            finally:
                self._end()
        return key, cast(V, _decoded(stored))

    @overload
    def setdefault(self: SharedDict[K, T | None], key: K, default: None = None, /) -> T | None:
        ...
    @overload
    def setdefault(self, key: K, default: V, /) -> V: ...
    def setdefault(self, key: K, default: object = None, /) -> object:
        """``table[key]`` if present, else store ``default`` there and return it.

        Example:
            >>> import laneway
            >>> seen = laneway.SharedDict()
            >>> seen.setdefault("x", 1), seen.setdefault("x", 2)
            (1, 1)
        """
        key_pickle = _key_pickle(key, "SharedDict")
        stored = _stored(default, "SharedDict", key)
        with self._rlock:
            self._begin()
            try:
                table = self._table()
                if key in table:
                    return _decoded(table[key])
                table[key] = stored
                if self._store is not None:
                    self._log(_set_record(key, key_pickle, stored))
            finally:
                self._end()
        return default

    def update(self, other: Any = (), /, **kwargs: V) -> None:
        """Store every pair of ``other`` (a mapping or (key, value) pairs) and ``kwargs``,
        all in one atomic step.

        Example:
            >>> import laneway
            >>> table = laneway.SharedDict()
            >>> table.update({"a": 1}, b=2)
            >>> sorted(table.items())
            [('a', 1), ('b', 2)]
        """
        if isinstance(other, Mapping):
            pairs = list(other.items())
        elif hasattr(other, "keys"):
            pairs = [(key, other[key]) for key in other.keys()]  # noqa: SIM118
        else:
            pairs = _pairs(other, "SharedDict.update() argument")
        pairs.extend(kwargs.items())
        prepared = [(key, _key_pickle(key, "SharedDict"),
                     _stored(value, "SharedDict", key))
                    for key, value in pairs]
        if not prepared:
            return
        with self._rlock:
            self._begin()
            try:
                table = self._table()
                for key, _, stored in prepared:
                    table[key] = stored
                if self._store is not None:
                    self._log(b"".join(_set_record(key, key_pickle, stored)
                                       for key, key_pickle, stored in prepared))
            finally:
                self._end()

    def clear(self) -> None:
        """Remove every entry.

        Example:
            >>> import laneway
            >>> table = laneway.SharedDict({"a": 1})
            >>> table.clear(); len(table)
            0
        """
        with self._rlock:
            self._begin()
            try:
                self._table().clear()
                store = self._store
                if store is not None:
                    try:
                        self._rewrite(store)
                    except BaseException:
                        self._epoch = self._gen = -1
                        raise
            finally:
                self._end()

    @overload
    def update_with(self, key: K, fn: Callable[[V | None], V]) -> V: ...
    @overload
    def update_with(self, key: K, fn: Callable[[V], V], default: V) -> V: ...
    def update_with(self, key: K, fn: Callable[[Any], V], default: object = None) -> V:
        """Store ``fn(table.get(key, default))`` under ``key`` atomically and return it.

        This is the way to change an entry from several tasks at once (``table[key] += 1``
        is a read and a write: two tasks can read the same value).  ``fn`` runs with the
        lock held (keep it short); if it raises, nothing changes.

        Example:
            >>> import laneway
            >>> counts = laneway.SharedDict()
            >>> for word in ["a", "b", "a"]:
            ...     _ = counts.update_with(word, lambda n: n + 1, 0)
            >>> counts.copy()
            {'a': 2, 'b': 1}
            >>> counts.update_with("seen", lambda xs: [*(xs or []), 1])
            [1]
        """
        if not callable(fn):
            msg = (f"SharedDict.update_with() argument fn must be callable, got "
                   f"{describe_value(fn)}")
            raise TypeError(msg)
        key_pickle = None if type(key) in _SCALARS else _key_pickle(key, "SharedDict")
        with self._rlock:
            self._begin()
            try:
                stored = self._table().get(key, _MISSING)
                new = fn(default if stored is _MISSING else _decoded(stored))
                stored = (new if type(new) in _SCALARS
                          else _stored(new, "SharedDict", key, returned=True))
                self._table()[key] = stored
                if self._store is not None:
                    self._log(_set_record(key, key_pickle, stored))
                return new
            finally:
                self._end()

    def __repr__(self) -> str:
        return f"laneway.SharedDict({self.copy()!r})"

    # -- storage (always called with the lock held) -------------------------------------

    def _table(self) -> dict[Any, object]:
        """The current table: the local dict, or the replica brought up to date."""
        store = self._store
        if store is None:
            return self._data
        store.refresh()
        words = store.words
        generation: int = words[_W_GEN]
        if generation != self._gen:
            start, used = _region(words)
            epoch: int = words[_W_EPOCH]
            if epoch != self._epoch:
                self._data = {}
                self._epoch = epoch
                self._replay(store.map[start:start + used])
            else:
                self._replay(store.map[self._pos:start + used])
            self._pos = start + used
            self._gen = generation
        return self._data

    def _replay(self, log: bytes) -> None:
        data = self._data
        at, end, size = 0, len(log), _REC.size
        while at < end:
            op, key_len, value_len = _REC.unpack_from(log, at)
            at += size
            if op == _SET:
                key = pickle.loads(log[at:at + key_len])
                data[key] = _Blob(log[at + key_len:at + key_len + value_len])
            elif op == _DEL:
                data.pop(pickle.loads(log[at:at + key_len]), None)
            elif op == _SNAP:
                data.clear()
                data.update(pickle.loads(log[at + key_len:at + key_len + value_len]))
            else:
                msg = f"corrupted laneway.SharedDict storage (record type {op})"
                raise LanewayError(msg)
            at += key_len + value_len

    def _log(self, records: bytes) -> None:
        """Append change records (the replica already has the changes)."""
        store = self._store
        assert store is not None
        try:
            self._append(store, records)
        except BaseException:
            self._epoch = self._gen = -1  # the replica is ahead of the file: rebuild it
            raise

    def _append(self, store: _Store, records: bytes) -> None:
        start, used = _region(store.words)
        snapshot = _REC.size + _REC.unpack_from(store.map, start)[2]
        if used + len(records) > min(max(4 * snapshot, _LOG_BYTES), _MAX_USED):
            self._rewrite(store)
            return
        end = start + used
        store.ensure(end + len(records))
        store.write(end, records)
        words = store.words
        generation = words[_W_GEN] + 1
        words[_W_GEN] = generation
        _commit(words, start, used + len(records))
        self._gen = generation
        self._pos = end + len(records)

    def _rewrite(self, store: _Store) -> None:
        """Replace the log with a snapshot of the replica, at a free place."""
        blob = pickle.dumps(self._data, _PROTOCOL)
        record = _REC.pack(_SNAP, 0, len(blob)) + blob
        where = store.place(len(record))
        store.write(where, record)
        words = store.words
        epoch = words[_W_EPOCH] + 1
        generation = words[_W_GEN] + 1
        words[_W_EPOCH] = epoch
        words[_W_GEN] = generation
        _commit(words, where, len(record))
        self._epoch, self._gen, self._pos = epoch, generation, where + len(record)

    def _export(self) -> _Store:
        blob = pickle.dumps(self._data, _PROTOCOL)
        record = _REC.pack(_SNAP, 0, len(blob)) + blob
        store = _create_store(self._KIND, self._token, len(record))
        store.write(_HEADER, record)
        words = store.words
        words[_W_EPOCH] = words[_W_GEN] = 1
        _commit(words, _HEADER, len(record))
        self._epoch = self._gen = 1
        self._pos = _HEADER + len(record)
        return store

    def _attach(self, token: bytes, store: _Store) -> None:
        self._data = {}
        self._gen = self._epoch = self._pos = 0
        super()._attach(token, store)


def _set_record(key: object, key_pickle: bytes | None, stored: object) -> bytes:
    if key_pickle is None:
        key_pickle = pickle.dumps(key, _PROTOCOL)
    value = _pickled(stored)
    return _REC.pack(_SET, len(key_pickle), len(value)) + key_pickle + value


def _delete_record(key: object) -> bytes:
    key_pickle = pickle.dumps(key, _PROTOCOL)
    return _REC.pack(_DEL, len(key_pickle), 0) + key_pickle


def _pairs(items: Iterable[Any], where: str) -> list[tuple[Any, Any]]:
    """The (key, value) pairs of ``items``; a TypeError naming the element that is not
    one (as ``dict()`` takes them: any 2-item iterable)."""
    pairs = []
    for position, pair in enumerate(items):
        try:
            key, value = pair
        except (TypeError, ValueError):
            msg = (f"{where} must be a mapping or an iterable of (key, value) pairs, but "
                   f"its element #{position} is {describe_value(pair)}")
            raise TypeError(msg) from None
        pairs.append((key, value))
    return pairs

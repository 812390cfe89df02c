"""What the three helpers share (``_Shared``): the two modes, the lock protocol (thread
lock, then ``flock``), pickling (``_rebuild``), lifetime, and the per-process registry of
live helpers."""

from __future__ import annotations

import os
import sys
import threading
import weakref
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, ClassVar, Protocol

from .._errors import LanewayError
from .storage import _HAVE_FLOCK, _open_store, _Store

# -- the registry: one live object per token in each process ----------------------------

_registry: weakref.WeakValueDictionary[bytes, _Shared] = weakref.WeakValueDictionary()
_registry_lock = threading.Lock()


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class _Inherited:
    """The lock of a helper that a forked child inherited in local mode: every use says
    why it cannot work."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _error(self) -> LanewayError:
        return LanewayError(
            f"this laneway.{self.name} was inherited by a forked process while another "
            f"thread held its lock, so it could not be shared first and this copy is "
            f"detached from the original. Pass it to the process as an argument (it is "
            f"then pickled, which shares it), or use the forkserver or spawn start method")

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        raise self._error()

    def release(self) -> None:
        raise self._error()

    def __enter__(self) -> bool:
        raise self._error()

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        raise self._error()


class _Holding(AbstractContextManager[None]):
    """What ``lock()`` returns."""

    __slots__ = ("_owner",)

    def __init__(self, owner: _Shared) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        owner = self._owner
        owner._rlock.acquire()
        try:
            owner._begin()
        except BaseException:
            owner._rlock.release()
            raise

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        owner = self._owner
        try:
            owner._end()
        finally:
            owner._rlock.release()


class _Shared:
    """What the three helpers share: the two modes, the lock, pickling, lifetime."""

    _KIND: ClassVar[int] = 0
    _rlock: _Lock
    _store: _Store | None
    _depth: int
    _token: bytes

    def __init__(self) -> None:
        self._rlock = threading.RLock()
        self._store = None
        self._depth = 0  # nesting of the thread holding _rlock (the flock is held if > 0)
        self._token = os.urandom(16)
        with _registry_lock:
            _registry[self._token] = self

    def lock(self) -> AbstractContextManager[None]:
        """Hold this helper's lock across several operations (re-entrant per thread).

        Other threads and processes wait; operations called by the holder nest.  Holding
        it while waiting for tasks that use the helper deadlocks, as with any lock.

        Example:
            >>> import laneway
            >>> box = laneway.SharedValue([])
            >>> with box.lock():
            ...     if not box.get():
            ...         box.set(["first"])
            >>> box.get()
            ['first']
        """
        return _Holding(self)

    # -- the lock, for one operation (called with _rlock held) --------------------------

    def _begin(self) -> None:
        store = self._store
        if self._depth == 0 and store is not None:
            store.lock()
        self._depth += 1

    def _end(self) -> None:
        self._depth -= 1
        store = self._store
        if self._depth == 0 and store is not None:
            store.unlock()

    # -- pickling and modes --------------------------------------------------------------

    def __reduce__(self) -> tuple[Any, ...]:
        store = self._share()
        return (_rebuild, (type(self), store.path, self._token, store.owner_pid))

    def __copy__(self) -> _Shared:
        return self  # a handle: copies are the same shared state

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self

    def _share(self) -> _Store:
        """Move to shared mode (once) and return the store."""
        store = self._store
        if store is not None:
            return store
        with self._rlock:
            store = self._store
            if store is None:
                if not _HAVE_FLOCK:
                    msg = (f"laneway.{type(self).__name__} cannot be shared with other "
                           f"processes on {sys.platform} (it needs fcntl.flock); use it "
                           f"from thread tasks only (backend='thread')")
                    raise TypeError(msg)
                store = self._export()
                weakref.finalize(self, store.close)
                self._store = store
                if self._depth:  # pickled by the lock's holder: hold the flock too
                    store.lock()
            return store

    def _export(self) -> _Store:
        """Create the storage holding the local state (the subclass's part)."""
        raise NotImplementedError

    def _attach(self, token: bytes, store: _Store) -> None:
        """Initialise an object unpickled in another process (shared mode)."""
        self._rlock = threading.RLock()
        self._store = store
        self._depth = 0
        self._token = token
        weakref.finalize(self, store.close)

    def _after_fork(self) -> None:
        """In a forked child: fresh locks, and an open file description of its own."""
        self._depth = 0
        store = self._store
        if store is None:
            self._rlock = _Inherited(type(self).__name__)
            return
        try:
            store.reopen()
        except Exception:
            self._rlock = _Inherited(type(self).__name__)
            return
        self._rlock = threading.RLock()


def _rebuild(cls: type[_Shared], path: str, token: bytes, owner_pid: int) -> _Shared:
    """Unpickle: this process's live copy, or open the storage."""
    if not (isinstance(cls, type) and issubclass(cls, _Shared)):
        msg = f"not a laneway shared helper: {cls!r}"
        raise TypeError(msg)
    with _registry_lock:
        existing = _registry.get(token)
        if existing is not None:
            return existing
        store = _open_store(path, token, owner_pid, cls)
        obj = cls.__new__(cls)
        try:
            obj._attach(token, store)
        except BaseException:
            store.close()
            raise
        _registry[token] = obj
        return obj

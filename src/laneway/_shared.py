"""Shared state that follows a task to whichever backend runs it.

``SharedCounter``, ``SharedValue`` and ``SharedDict`` are one API for thread tasks and
process tasks alike.  Each operation is atomic, ``lock()`` holds the lock across several,
and the objects pickle with the standard ``pickle``, so they can be passed as arguments
(or captured in closures) to tasks on an already running process pool, whose workers
receive objects only by pickling, never by inheritance.

>>> import laneway
>>> hits = laneway.SharedCounter()
>>> laneway.parallel_map(lambda _: hits.increment(), range(100), backend="thread")[-1] > 0
True
>>> hits.value
100

Design
======

**Two modes.**  A new helper is *local*: a ``threading.RLock`` and a Python value, so
thread-only use pays no inter-process price (no server, no system call).  The first time
it is pickled (``__reduce__``) it becomes *shared*, for good and in its creating process
too: its state moves into a small memory-mapped file that every process using it maps.
There is no server and no helper process: every process reads and writes the mapping
itself, under a lock.

**Storage.**  On Linux the file is an anonymous ``memfd`` (nothing in ``/dev/shm`` or on
disk, ever); another process opens it as ``/proc/<creator pid>/fd/<fd>``, which is what the
pickle carries, with a random 128-bit token that the opener checks against the file's
header (so a stale pickle can never open some other file that reused the fd number).
Elsewhere (macOS), or with ``LANEWAY_SHARED_STORAGE=file``, it is a regular file
``laneway-<pid>-<token>`` (mode 0600) in ``/dev/shm`` when present, else in
``tempfile.gettempdir()``.  The file is a 128-byte header of int64 words (magic and
format version, token, kind, mapped size, generation, epoch, commit word, counter) and a
data area; it only ever grows (``posix_fallocate``; the size word is written after the
file grew, and a process remaps when the word exceeds its mapping), so no mapping ever
points past its end.

* ``SharedCounter`` keeps its int64 in the header: an increment is one read and one
  store, with no pickling.
* ``SharedValue`` keeps the value's pickle in the data area.
* ``SharedDict`` keeps a *log*: a snapshot record (the pickled table) followed by one
  record per change (``set key``, ``delete key``).  Each process keeps a decoded replica
  of the table and, under the lock, replays only the records written since it last looked
  (the generation word says whether anything changed, the epoch word whether the log was
  rewritten).  A write appends one small record, so its cost does not grow with the
  table; when the log outgrows four times its snapshot (and 64 KiB), the writer rewrites
  it as a new snapshot.  Values stay pickled in the replica and are unpickled when read,
  so every read returns a fresh copy.

**Commit protocol: old or new, never torn.**  A writer writes new bytes only where no
reader looks (past the committed end of the log, or to a free place in the data area
that does not overlap the committed region), then publishes them with one aligned 8-byte
store of the *commit word* (region start and length).  A process that dies in the middle
of a write therefore leaves the previous committed state; the bytes it wrote are ignored
and overwritten later.  The generation and epoch words are bumped *before* the commit
word: if a writer dies between the two, readers merely re-read state that did not change.

**Locking.**  ``fcntl.flock(LOCK_EX)`` on the file, taken by every operation, excludes
other processes (each process opens the file itself, so each has its own open file
description).  ``flock`` does not exclude threads of one process, which share the
descriptor, so a per-object ``threading.RLock`` is taken first.  The kernel releases a
``flock`` when its holder dies: a worker that crashes, is killed by ``task_timeout``, or
calls ``os._exit`` while holding the lock (even inside ``with x.lock():``) cannot
deadlock the others.  The lock is re-entrant per thread: operations called by the holder
of ``lock()`` (or by a function running inside ``update``/``update_with``) nest; the
``flock`` is taken by the outermost level and released by it.

**Lifetime.**  The creating process owns the storage.  When the object is
garbage-collected (or at interpreter exit, through ``weakref.finalize``) its mapping and
descriptor are closed, and a regular file is unlinked; another process only closes its own
mapping when its copy is collected.  A memfd disappears when its last descriptor closes,
even if the creator is killed with SIGKILL; a regular file (non-Linux) would then stay
behind.  Each process opens a given object once: unpickling returns the live copy of this
process if there is one (in the creator, the original object itself).

**Values** are pickled with the standard ``pickle`` when they are stored (in local mode
too, so an unpicklable value fails at once, in the thread that stored it, and not later
when some call happens to be routed to processes), except the immutable built-in scalars
(``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``), which local mode
keeps as they are.  Reads unpickle, so a read returns a copy in both modes: mutating a list
read from a helper never changes the stored one.

**fork.**  A helper inherited by ``os.fork()`` (multiprocessing's "fork" start method) is
moved to shared mode just before the fork, so parent and child share it; the child opens
its own descriptor (a ``flock`` would not exclude a shared one).  If that is impossible
within a second (another thread holds the helper's lock), the child's copy raises a clear
error when used instead of silently counting on its own.

**Windows** has no ``flock``: the helpers work in local mode (threads), and pickling one
raises ``TypeError`` saying so.

**Why not something else.**  A ``multiprocessing.Manager`` costs a socket round trip to a
server process per operation (four for a guarded increment) and a process to clean up;
``multiprocessing.Value``/``Lock`` reach only processes that inherit them, not a pool that
is already running; a POSIX semaphore in shared memory is not released when its holder
dies, so one crash would deadlock everyone.  A memfd reached through ``/proc`` needs no
name to clean up, which a named file (the fallback) does; ``flock`` is released by the
kernel.  The cost is one descriptor per shared helper in each process that has it open
(two before Python 3.13, whose ``mmap`` keeps a duplicate), and two ``flock`` system
calls per operation in shared mode, which release the GIL: threads of a process that use a
*shared* helper queue up behind each other (see docs/shared-state.md for figures).
"""

from __future__ import annotations

import errno
import mmap
import operator
import os
import pickle
import stat
import struct
import sys
import threading
import time
import weakref
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    ValuesView,
)
from contextlib import AbstractContextManager, suppress
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast, overload

from ._errors import LanewayError, describe_value

__all__ = ["SharedCounter", "SharedDict", "SharedValue"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

STORAGE_ENV = "LANEWAY_SHARED_STORAGE"
"""``memfd`` (the default where available: Linux) or ``file`` (a named file in /dev/shm
or the temporary directory; the default elsewhere)."""

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SCALARS: frozenset[type] = frozenset({type(None), bool, int, float, complex, str, bytes})
_FORK_BUDGET_S = 1.0

# -- the file format -------------------------------------------------------------------

_HEADER = 128
_W_MAGIC, _W_TOKEN, _W_KIND, _W_SIZE, _W_GEN, _W_EPOCH, _W_COMMIT, _W_COUNT = (
    0, 1, 3, 4, 5, 6, 7, 8)
_MAGIC = int.from_bytes(b"laneway\x01", "little", signed=True)  # the last byte: version
_MAX_START = 8 * (2**31 - 1)
_MAX_USED = 2**32 - 1
_LOG_BYTES = 64 * 1024
_REC = struct.Struct("<BII")  # op, key length, value length; then the key, then the value
_SNAP, _SET, _DEL = 1, 2, 3

if sys.platform == "win32":  # pragma: no cover - no flock: local (thread) mode only
    _HAVE_FLOCK = False

    def _flock(fd: int) -> None:
        raise OSError("flock is not available on Windows")

    def _funlock(fd: int) -> None:
        raise OSError("flock is not available on Windows")
else:
    import fcntl

    _HAVE_FLOCK = True
    _LOCK_EX = fcntl.LOCK_EX
    _LOCK_UN = fcntl.LOCK_UN
    _fcntl_flock = fcntl.flock

    def _flock(fd: int) -> None:
        _fcntl_flock(fd, _LOCK_EX)

    def _funlock(fd: int) -> None:
        _fcntl_flock(fd, _LOCK_UN)


def _round_up(size: int, unit: int) -> int:
    return -(-size // unit) * unit


def _region(words: memoryview) -> tuple[int, int]:
    """The committed region: (start, length) in bytes."""
    commit: int = words[_W_COMMIT]
    return (commit >> 32) * 8, commit & 0xFFFFFFFF


def _commit(words: memoryview, start: int, used: int) -> None:
    """Publish a region with one aligned 8-byte store."""
    words[_W_COMMIT] = ((start // 8) << 32) | used


def _storage_dir() -> str:
    """Where named storage files go: /dev/shm when usable, else the temporary directory."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    import tempfile  # not imported up front: process workers import this module

    return tempfile.gettempdir()


def _use_memfd() -> bool:
    choice = os.environ.get(STORAGE_ENV, "").strip().lower()
    if choice not in ("", "memfd", "file"):
        msg = f"{STORAGE_ENV} must be 'memfd', 'file' or unset, got {choice!r}"
        raise ValueError(msg)
    available = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
    if choice == "memfd" and not available:
        msg = f"{STORAGE_ENV}=memfd, but this system has no memfd_create or no /proc"
        raise ValueError(msg)
    return available and choice != "file"


def _allocate(fd: int, size: int) -> None:
    """Make the file at least ``size`` bytes, with its pages reserved where possible
    (on tmpfs, a page that cannot be allocated later would be a SIGBUS, not an error)."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    if os.fstat(fd).st_size < size:
        os.ftruncate(fd, size)


def _map(fd: int, size: int) -> mmap.mmap:
    if sys.version_info >= (3, 13):  # no second descriptor for the mapping
        return mmap.mmap(fd, size, trackfd=False)
    return mmap.mmap(fd, size)


class _Store:
    """The mapped file of one shared helper in this process.

    Every method except ``close`` and ``reopen`` is called with the helper's lock held
    (the thread lock and the ``flock``).
    """

    __slots__ = ("fd", "map", "owner_pid", "path", "unlink", "words")

    def __init__(self, fd: int, path: str, size: int, owner_pid: int, unlink: bool) -> None:
        self.fd = fd
        self.path = path
        self.owner_pid = owner_pid
        self.unlink = unlink
        self.map = _map(fd, size)
        self.words = memoryview(self.map).cast("q")

    def lock(self) -> None:
        _flock(self.fd)

    def unlock(self) -> None:
        _funlock(self.fd)

    def refresh(self) -> None:
        """Remap if another process grew the file."""
        size: int = self.words[_W_SIZE]
        if size > len(self.map):
            self._remap(size)

    def ensure(self, needed: int) -> None:
        """Grow the file (and this mapping) to hold ``needed`` bytes."""
        size = len(self.map)
        if needed <= size:
            return
        new = _round_up(max(needed, 2 * size), mmap.PAGESIZE)
        _allocate(self.fd, new)
        self._remap(new)
        self.words[_W_SIZE] = new

    def place(self, size: int) -> int:
        """A start for ``size`` new bytes that does not overlap the committed region."""
        start, used = _region(self.words)
        if _HEADER + size <= start:
            return _HEADER
        where = _round_up(start + used, 8)
        if where > _MAX_START or size > _MAX_USED:
            msg = "a laneway shared helper is limited to 4 GiB of pickled data"
            raise OverflowError(msg)
        self.ensure(where + size)
        return where

    def read(self) -> bytes:
        """The committed region's bytes."""
        start, used = _region(self.words)
        return self.map[start:start + used]

    def write(self, where: int, data: bytes) -> None:
        self.map[where:where + len(data)] = data

    def _remap(self, size: int) -> None:
        self.words.release()
        self.map.close()
        self.map = _map(self.fd, size)
        self.words = memoryview(self.map).cast("q")

    def reopen(self) -> None:
        """In a forked child: a descriptor (and mapping) of its own, so that ``flock``
        excludes the parent (a shared open file description would not)."""
        source = f"/proc/self/fd/{self.fd}" if os.path.isdir("/proc/self/fd") else self.path
        fd = os.open(source, os.O_RDWR)
        size = len(self.map)
        self.words.release()
        self.map.close()
        os.close(self.fd)
        self.fd = fd
        self.map = _map(fd, size)
        self.words = memoryview(self.map).cast("q")

    def close(self) -> None:
        """Unmap and close; the creating process also unlinks a named file."""
        try:
            self.words.release()
            self.map.close()
            os.close(self.fd)
        finally:
            if self.unlink and os.getpid() == self.owner_pid:
                with suppress(FileNotFoundError):
                    os.unlink(self.path)


def _create_store(kind: int, token: bytes, data_size: int) -> _Store:
    size = _round_up(_HEADER + max(data_size, 64) * 2, mmap.PAGESIZE)
    pid = os.getpid()
    if _use_memfd():
        fd = os.memfd_create("laneway-shared", os.MFD_CLOEXEC)
        path, unlink = f"/proc/{pid}/fd/{fd}", False
    else:
        path = os.path.join(_storage_dir(), f"laneway-{pid}-{token.hex()}")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        unlink = True
    try:
        _allocate(fd, size)
        store = _Store(fd, path, size, pid, unlink)
    except BaseException:
        os.close(fd)
        if unlink:
            os.unlink(path)
        raise
    words = store.words
    words[_W_TOKEN], words[_W_TOKEN + 1] = struct.unpack("=qq", token)
    words[_W_KIND] = kind
    words[_W_SIZE] = size
    _commit(words, _HEADER, 0)
    words[_W_MAGIC] = _MAGIC
    return store


def _open_store(path: str, token: bytes, owner_pid: int, cls: type[_Shared]) -> _Store:
    name = f"laneway.{cls.__name__}"
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except PermissionError as exc:
        msg = (f"cannot open the shared memory of a {name} ({path}): "
               f"{type(exc).__name__}: {exc}. If this system forbids opening another "
               f"process's /proc/<pid>/fd entries, set {STORAGE_ENV}=file in the process "
               f"that creates the helper")
        raise LanewayError(msg) from exc
    except OSError:  # no such file, or the fd number now names something else
        raise _gone(name, owner_pid) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < _HEADER:
            raise _gone(name, owner_pid)
        header = memoryview(os.pread(fd, _HEADER, 0)).cast("q")
        expected = struct.unpack("=qq", token)
        if header[_W_MAGIC] != _MAGIC or (header[_W_TOKEN], header[_W_TOKEN + 1]) != expected:
            raise _gone(name, owner_pid)
        if header[_W_KIND] != cls._KIND:
            msg = f"the shared memory at {path} does not hold a {name}"
            raise LanewayError(msg)
        return _Store(fd, path, header[_W_SIZE], owner_pid, unlink=False)
    except BaseException:
        os.close(fd)
        raise


def _gone(name: str, owner_pid: int) -> LanewayError:
    return LanewayError(
        f"this {name} no longer exists: the process that created it (pid {owner_pid}) "
        f"dropped its last reference to it, or exited. Keep a reference to it in that "
        f"process for as long as tasks use it")


# -- values ------------------------------------------------------------------------------


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
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        msg = f"{where} must be an int, got {describe_value(value)}"
        raise TypeError(msg) from None


def _overflow(value: int) -> OverflowError:
    return OverflowError(
        f"laneway.SharedCounter holds a signed 64-bit integer; {value} is out of range")


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


def _before_fork() -> None:
    """Share every local helper before ``os.fork()``, so the child shares it too."""
    deadline = time.monotonic() + _FORK_BUDGET_S
    if not _registry_lock.acquire(timeout=_FORK_BUDGET_S):
        return
    try:
        helpers = [h for h in _registry.values() if h._store is None]
    finally:
        _registry_lock.release()
    for helper in helpers:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not helper._rlock.acquire(timeout=remaining):
            continue
        try:
            helper._share()
        except Exception:
            pass  # the child's copy will say it is detached
        finally:
            helper._rlock.release()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for helper in list(_registry.values()):
        helper._after_fork()


if hasattr(os, "register_at_fork") and _HAVE_FLOCK:
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# -- the helpers -------------------------------------------------------------------------


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
        for key, value in pairs:
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
            pairs = list(other)
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

"""The storage of a shared helper: the file format (header words, commit word, log
records), where the file lives (memfd or named file), growing and mapping it (``_Store``),
creating and opening a store, and the error for a store that is gone."""

from __future__ import annotations

import errno
import mmap
import os
import stat
import struct
import sys
from contextlib import suppress
from typing import TYPE_CHECKING

from .._errors import LanewayError

if TYPE_CHECKING:
    from .base import _Shared

STORAGE_ENV = "LANEWAY_SHARED_STORAGE"
"""``memfd`` (the default where available: Linux) or ``file`` (a named file in /dev/shm
or the temporary directory; the default elsewhere)."""

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

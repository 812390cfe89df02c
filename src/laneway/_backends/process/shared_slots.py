"""A few int64 slots shared between the pool and one worker, without ctypes.

A worker's ``progress`` (see ``messages``) lives in a small memory-mapped file that both
processes map: an anonymous ``memfd`` on Linux, an unlinked temporary file elsewhere.
The file descriptor travels to the worker when it starts (``multiprocessing``'s fd
passing, which works with forkserver and spawn), so nothing is left on disk or in
``/dev/shm``.  Plain ``mmap`` + ``memoryview.cast("q")`` keeps ``ctypes`` (and its
~20 ms import) out of both processes.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from multiprocessing import reduction

TYPE_CHECKING = False  # (no typing at run time: see process.worker)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SharedSlots"]


class SharedSlots:
    """``count`` int64 slots in shared memory, indexable like a list."""

    def __init__(self, count: int, fd: int | None = None) -> None:
        self._count = count
        size = count * 8
        if fd is None:
            fd = _anonymous_file(size)
        self._fd = fd
        self._map = mmap.mmap(fd, size)
        self._slots = memoryview(self._map).cast("q")

    def __getitem__(self, index: int) -> int:
        value: int = self._slots[index]
        return value

    def __setitem__(self, index: int, value: int) -> None:
        self._slots[index] = value

    def __len__(self) -> int:
        return self._count

    @property
    def view(self) -> memoryview:
        """The slots as a writable int64 memoryview, for loops where a method call per
        access would cost too much (the worker's per-item stamps)."""
        return self._slots

    def __reduce__(self) -> tuple[Any, ...]:
        # Only meaningful while a Process is being started: DupFd hands the fd over.
        return (_rebuild, (reduction.DupFd(self._fd), self._count))

    def close(self) -> None:
        """Unmap and close (the worker's copy is its own)."""
        self._slots.release()
        self._map.close()
        os.close(self._fd)


def _rebuild(dup: Any, count: int) -> SharedSlots:
    return SharedSlots(count, dup.detach())


def _anonymous_file(size: int) -> int:
    create = getattr(os, "memfd_create", None)
    if create is not None:
        fd: int = create("laneway-progress", 0)
    else:
        handle, path = tempfile.mkstemp(prefix="laneway-progress-")
        os.unlink(path)
        fd = handle
    os.ftruncate(fd, size)
    return fd

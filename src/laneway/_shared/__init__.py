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

Modules
=======

``storage`` (the file format, memfd or named file, mapping, creating and opening a store),
``encoding`` (how values and keys are stored: pickles and scalars, int64 checks),
``base`` (the per-process registry, the lock protocol, the two modes, pickling, lifetime),
``counter``, ``value`` and ``mapping`` (``SharedCounter``, ``SharedValue``, ``SharedDict``).
This package module re-exports the helpers and holds the fork hooks (registered once).
"""

from __future__ import annotations

import os
import threading
import time

from . import base
from .counter import SharedCounter
from .mapping import SharedDict
from .storage import _HAVE_FLOCK
from .storage import STORAGE_ENV as STORAGE_ENV
from .storage import _open_store as _open_store
from .storage import _storage_dir as _storage_dir
from .storage import _Store as _Store
from .value import SharedValue

__all__ = ["SharedCounter", "SharedDict", "SharedValue"]

_FORK_BUDGET_S = 1.0

# -- fork: registered once, when this package is imported --------------------------------


def _before_fork() -> None:
    """Share every local helper before ``os.fork()``, so the child shares it too."""
    deadline = time.monotonic() + _FORK_BUDGET_S
    if not base._registry_lock.acquire(timeout=_FORK_BUDGET_S):
        return
    try:
        helpers = [h for h in base._registry.values() if h._store is None]
    finally:
        base._registry_lock.release()
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
    base._registry_lock = threading.Lock()
    for helper in list(base._registry.values()):
        helper._after_fork()


if hasattr(os, "register_at_fork") and _HAVE_FLOCK:
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)

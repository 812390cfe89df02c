"""The wire format between the pool (parent) and a worker (child).

Every message is one ``Connection.send_bytes`` frame: a fixed ``struct`` header, then
a body.  Headers are structs, not pickles, so the collector thread can route a
result frame without unpickling user data; bodies are unpickled by whoever needs them
(the worker for items, the calling thread for results).

parent -> worker
    FUNCTION  header ``(kind, key)`` + the pickled function (``pickle_for_worker``).  The worker
              caches it under ``key`` (``function_key``), in an LRU that the parent mirrors.
    CHUNK     header ``(kind, seq, flags, key)`` + the pickled list of items (or,
              with ``ISOLATED``, a list of separately pickled items, so one item that
              fails to unpickle fails alone).  With ``TIMED`` the worker runs one item
              per step and stamps each item's start time (per-item deadlines).
worker -> parent
    RESULTS   header ``(kind, done, offset, count, busy_s)`` + pickled
              ``(values, {position: failure_blob})``.  ``done`` ends the chunk.
    UNREADABLE header as RESULTS (count 0, done) + UTF-8 text: the chunk's items could
              not be unpickled as a whole; the parent re-sends it isolated.

Each worker also shares a tiny array with the parent, ``progress = [seq, started,
started_ns, stop]``: the chunk it is running, the end of the range of items it may have
started, (timed chunks) when the current item started, in ``time.monotonic_ns()``
(a system-wide clock, comparable between processes), and, set by the parent just
before it sends SIGTERM, which item overran (its position + 1): a worker whose item
finished in time after all ignores the signal and carries on.  Two more slots, ``skip``,
hold the seqs of jobs already sent to the worker whose run was cancelled: the worker
answers such a job with an empty, finished RESULTS frame instead of running it.  If
the worker dies, items before ``started`` may have run (they fail with
WorkerCrashedError) and items after it have not (they are sent to another worker):
no item ever runs twice.
"""

from __future__ import annotations

import struct

FUNCTION = 1
CHUNK = 2
RESULTS = 3
UNREADABLE = 4

_KEY = struct.Struct("<qQ")
KEY_BYTES = _KEY.size
"""Length of a function key (see :func:`function_key`)."""


def function_key(payload: bytes) -> bytes:
    """The key a pickled function is cached under in the workers: its hash and length.
    Only this process makes keys, so Python's per-process ``hash`` of the bytes is
    consistent; a collision of both (2**-64 per pair) is not a concern, and ``hashlib``
    (OpenSSL: ~5 ms to import) stays out of the caller's first process run."""
    return _KEY.pack(hash(payload), len(payload))

FUNCTION_HEADER = struct.Struct(f"<B{KEY_BYTES}s")
CHUNK_HEADER = struct.Struct(f"<BQB{KEY_BYTES}s")
RESULT_HEADER = struct.Struct("<BBIId")

FUNCTION_CACHE_SIZE = 16
"""Functions a worker keeps unpickled.  Parent and worker apply the same LRU rule to
the same sequence of messages, so the parent always knows what the worker holds."""

ISOLATED = 1
TIMED = 2

PROGRESS_SEQ = 0
PROGRESS_STARTED = 1
PROGRESS_STARTED_NS = 2
PROGRESS_STOP = 3
PROGRESS_SKIP = (4, 5)
PROGRESS_SLOTS = 6

STOPPED_EXIT_CODE = 75
"""Exit code of a worker that flushed its results and exited on SIGTERM (a timeout)."""

"""The serial backend: chunks run inline, in the caller's thread, as they are submitted.

It is the debug switch (``backend="serial"`` or ``LANEWAY_BACKEND=serial``) and what
work too small for any pool runs on.  Only ``Exception`` is captured per item, so a
Ctrl-C during a task interrupts the run at once.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .._chunks import Batch, Chunk, call_each

__all__ = ["SerialRun"]


class SerialRun:
    """Runs each submitted chunk immediately and queues its outcomes."""

    def __init__(self, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any]) -> None:
        self._fn = fn
        self._sink = sink

    def submit(self, chunk: Chunk) -> None:
        """Run every item of ``chunk`` now, as one C loop (nothing waits for part of it:
        the caller is the one running it)."""
        values: list[Any] = []
        began = perf_counter()
        failures = call_each(self._fn, chunk.items, values)
        self._sink.put(Batch(chunk.id, chunk.start, len(values), perf_counter() - began,
                             values, failures))

    def close(self) -> None:
        """Nothing runs in the background, so nothing to stop."""

    def check_deadlines(self) -> None:
        """Serial runs have no per-item deadlines (the router refuses task_timeout)."""

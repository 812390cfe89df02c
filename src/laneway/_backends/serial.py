"""The serial backend: chunks run inline, in the caller's thread, as they are submitted.

It is the debug switch (``backend="serial"`` or ``LANEWAY_BACKEND=serial``) and what
work too small for any pool runs on.  Only ``Exception`` is captured per item, so a
Ctrl-C during a task interrupts the run at once.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from .._chunks import Batch, Chunk, run_items
from .._errors import Failure

__all__ = ["SerialRun"]


class SerialRun:
    """Runs each submitted chunk immediately and queues its outcomes."""

    def __init__(self, fn: Callable[[Any], Any], sink: queue.SimpleQueue[Any]) -> None:
        self._fn = fn
        self._sink = sink

    def submit(self, chunk: Chunk) -> None:
        """Run every item of ``chunk`` now."""

        def emit(offset: int, values: list[Any], failures: dict[int, Failure] | None,
                 busy_s: float) -> None:
            self._sink.put(Batch(chunk.id, chunk.start + offset, len(values), busy_s,
                                 values, failures))

        run_items(self._fn, chunk.items, emit)

    def close(self) -> None:
        """Nothing runs in the background, so nothing to stop."""

    def check_deadlines(self) -> None:
        """Serial runs have no per-item deadlines (the router refuses task_timeout)."""

"""``ProcessWide``: one shared instance of something per process, made on first use.

laneway's shared thread pool, process pool and event loop are each made the first time
a run needs them, from whichever thread, exactly once.  A forked child forgets its
parent's instance (the threads behind it did not survive the fork), after letting it
drop what the child must not keep (``in_forked_child``), and makes its own when it
needs one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ProcessWide"]

T = TypeVar("T")


class ProcessWide(Generic[T]):
    """A lazily made, process-wide instance of ``make()``."""

    def __init__(self, make: Callable[[], T],
                 in_forked_child: Callable[[T], None] | None = None) -> None:
        self._make = make
        self._in_forked_child = in_forked_child
        self._value: T | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def get(self) -> T:
        """The instance, made now if there is none yet."""
        with self._lock:
            if self._value is None:
                self._value = self._make()
            return self._value

    def current(self) -> T | None:
        """The instance if it was made, else None (nothing is made)."""
        return self._value

    def take(self) -> T | None:
        """Remove the instance and return it (the next ``get`` makes a new one)."""
        with self._lock:
            value, self._value = self._value, None
        return value

    def _forget(self) -> None:
        if self._value is not None and self._in_forked_child is not None:
            self._in_forked_child(self._value)
        self._value = None
        self._lock = threading.Lock()

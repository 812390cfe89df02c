"""Progress reporting for a run: a tqdm bar, a plain stderr line, or the user's callable.

``progress=True`` shows a tqdm bar when tqdm is installed (``pip install
laneway[progress]``) and a single self-overwriting stderr line otherwise;
``progress=callable`` calls ``callable(done, total)`` after each delivered batch
(``total`` is None when the input has no length).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ._options import Progress

__all__ = ["make_reporter"]

Reporter = Callable[[int | None], None]
"""``report(done)`` after progress; ``report(None)`` once at the end."""

LINE_INTERVAL_S = 0.1
"""The stderr line is redrawn at most this often."""


def make_reporter(progress: Progress, total: int | None) -> Reporter:
    """The reporter for one run's ``progress=`` value."""
    if progress is False:
        return _silent
    if progress is True:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            return _line_reporter(total)
        return _tqdm_reporter(total)
    return _callback_reporter(progress, total)


def _silent(done: int | None) -> None:
    return None


def _callback_reporter(callback: Callable[[int, int | None], object],
                       total: int | None) -> Reporter:
    last = 0

    def report(done: int | None) -> None:
        nonlocal last
        if done is not None and done != last:
            last = done
            callback(done, total)

    return report


def _line_reporter(total: int | None) -> Reporter:
    shown = 0.0
    last = 0

    def report(done: int | None) -> None:
        nonlocal shown, last
        now = time.monotonic()
        if done is not None:
            last = done
            if now - shown < LINE_INTERVAL_S:
                return
        shown = now
        of = f"/{total}" if total is not None else ""
        end = "\n" if done is None else ""
        sys.stderr.write(f"\rlaneway: {last}{of} items done{end}")
        sys.stderr.flush()

    return report


def _tqdm_reporter(total: int | None) -> Reporter:
    from tqdm import tqdm

    bar: Any = tqdm(total=total, unit="item")
    last = 0

    def report(done: int | None) -> None:
        nonlocal last
        if done is None:
            bar.close()
            return
        bar.update(done - last)
        last = done

    return report

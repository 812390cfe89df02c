"""``classify()``: run one call for real, measure it, and say where laneway would route it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import _context
from ._hints import Kind, is_coroutine_function
from ._options import BackendName, validate_callable
from ._profile import measure_calls, pickled_size
from ._router import _cpus, estimate

__all__ = ["Profile", "classify"]


@dataclass(frozen=True, slots=True)
class Profile:
    """What one measured call showed, and where laneway would route calls like it.

    ``kind``: ``"cpu"``, ``"native"``, ``"io"`` or ``"async"``; ``backend``: where many
    such calls would run fastest; ``wall_s``/``cpu_s``: the call's wall and calling-
    thread CPU seconds; ``cpu_ratio``: their ratio; ``releases_gil``: True/False from
    the GIL probe, None if it could not tell (a call shorter than a few milliseconds);
    ``arg_bytes``/``result_bytes``: pickled sizes (None: cannot be pickled);
    ``reason``: one sentence; ``result``: the call's return value.
    """

    kind: Kind
    backend: BackendName
    wall_s: float
    cpu_s: float
    cpu_ratio: float
    releases_gil: bool | None
    arg_bytes: int | None
    result_bytes: int | None
    reason: str
    result: Any


def classify(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Profile:
    """Run ``fn(*args, **kwargs)`` once, measure it, and return a :class:`Profile`.

    The call really happens (with its effects) and its return value is in
    ``Profile.result``; an exception it raises propagates.  The profile reports what
    was measured, whatever hint ``fn`` carries.

    Example:
        >>> import laneway, time
        >>> profile = laneway.classify(time.sleep, 0.05)
        >>> profile.kind, profile.backend
        ('io', 'thread')
    """
    validate_callable("classify() argument fn", fn)
    _context.refuse_in_fork_server("classify")
    call: Callable[[Any], Any]
    is_coroutine = is_coroutine_function(fn)
    if is_coroutine:
        import asyncio

        def call(_: Any) -> Any:
            return asyncio.run(fn(*args, **kwargs))
    else:
        def call(_: Any) -> Any:
            return fn(*args, **kwargs)

    sample = measure_calls(call, iter([None]), budget_s=0.0)
    if sample.failures:
        raise sample.failures[0].exc
    result = sample.values[0]
    measurement = replace(sample.measurement, arg_bytes=pickled_size((args, kwargs)),
                          result_bytes=pickled_size(result))
    verdict = estimate(measurement, None, _cpus())
    kind: Kind = verdict.kind
    backend: BackendName = verdict.backend
    reason = verdict.reason
    if is_coroutine:  # (routed by what it is, as parallel_map routes it)
        kind, backend = "async", "async"
        reason = (f"it is a coroutine function, so the async backend (its calls overlap "
                  f"on one event loop); {reason}")
    return Profile(kind=kind, backend=backend, wall_s=measurement.wall_s,
                   cpu_s=measurement.cpu_s, cpu_ratio=measurement.cpu_ratio,
                   releases_gil=measurement.releases_gil, arg_bytes=measurement.arg_bytes,
                   result_bytes=measurement.result_bytes, reason=reason + ".",
                   result=result)

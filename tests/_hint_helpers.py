"""Module-level hinted functions for the pickling tests in test_hints.py (importable by name)."""

from __future__ import annotations

from laneway._hints import cpu_bound, io_bound


@cpu_bound
def square(x: int) -> int:
    """Return ``x * x``."""
    return x * x


@cpu_bound(releases_gil=True)
def total(xs: list[int]) -> int:
    """Return the sum of ``xs``."""
    return sum(xs)


@io_bound
def echo(value: str) -> str:
    """Return ``value`` unchanged."""
    return value

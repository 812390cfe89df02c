"""Constants and small task functions shared by the tests.

The functions are module level so that process workers (and Dask workers) can import
them by reference."""

DEADLOCK_TIMEOUT = 60.0
"""Seconds a test waits for something that must happen; only reached on a deadlock."""


def square(x: int) -> int:
    return x * x


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


class Unpicklable:
    """An object that refuses to be pickled."""

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("refuses to be pickled")

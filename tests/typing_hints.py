"""Static typing checks for laneway's hint decorators and map functions; type-checked by
test_hints.py, never run.

Every ``# type: ignore[...]`` marks a call that must be rejected: ``mypy --strict`` turns on
``warn_unused_ignores``, so if a decorator ever loosened a signature to ``Any`` the ignore
would become unused and the check would fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, assert_type

from laneway import amap, imap, parallel_map
from laneway._hints import KINDS, Kind, cpu_bound, hinted_kind, io_bound


@cpu_bound
def bare(x: int, *, y: str = "") -> float:
    return float(x) + len(y)


@cpu_bound()
def called(x: int) -> list[int]:
    return [x]


@cpu_bound(releases_gil=True)
def native(data: bytes, repeat: int = 1) -> bytes:
    return data * repeat


@cpu_bound(releases_gil=False)
def explicit(x: float) -> float:
    return x


@io_bound
def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@io_bound()
def fetch_called(url: str) -> str:
    return url


@io_bound
async def afetch(url: str) -> bytes:
    return url.encode()


def plain(x: int, y: int) -> tuple[int, int]:
    return (x, y)


def _checks() -> None:
    assert_type(bare(1, y="a"), float)
    assert_type(bare(1), float)
    bare("1")  # type: ignore[arg-type]
    bare(1, z=2)  # type: ignore[call-arg]
    bare(1, "a")  # type: ignore[call-arg]

    assert_type(called(3), list[int])
    called()  # type: ignore[call-arg]

    assert_type(native(b"x", 2), bytes)
    native("x")  # type: ignore[arg-type]
    assert_type(explicit(1.5), float)

    assert_type(fetch("u", timeout=2.0), bytes)
    fetch(b"u")  # type: ignore[arg-type]
    assert_type(fetch_called("u"), str)
    assert_type(afetch("u"), Coroutine[Any, Any, bytes]).close()

    at_call_time = cpu_bound(plain)
    assert_type(at_call_time(1, 2), tuple[int, int])
    at_call_time(1)  # type: ignore[call-arg]
    assert_type(cpu_bound(plain, releases_gil=True)(1, 2), tuple[int, int])
    assert_type(io_bound(plain)(1, 2), tuple[int, int])
    assert_type(cpu_bound(math.factorial)(5), int)

    decorator = cpu_bound(releases_gil=True)
    assert_type(decorator(plain)(1, 2), tuple[int, int])
    decorator(plain)("1", 2)  # type: ignore[arg-type]
    untyped_decorator: Callable[[Callable[[int], str]], Callable[[int], str]] = io_bound()
    assert_type(untyped_decorator(str)(1), str)

    cpu_bound(releases_gil="yes")  # type: ignore[call-overload]
    cpu_bound(42)  # type: ignore[call-overload]
    io_bound("x")  # type: ignore[call-overload]
    cpu_bound(plain, True)  # type: ignore[call-overload]

    assert_type(hinted_kind(bare), Kind | None)
    assert_type(KINDS, tuple[Kind, ...])


def map_results() -> None:
    """The result types follow the function's, awaited for coroutine functions."""
    assert_type(parallel_map(fetch_called, ["u"]), list[str])
    assert_type(parallel_map(afetch, ["u"]), list[bytes])
    assert_type(imap(fetch_called, ["u"]), Iterator[str])
    assert_type(imap(afetch, ["u"]), Iterator[bytes])


async def amap_results() -> None:
    assert_type(await amap(fetch_called, ["u"]), list[str])
    assert_type(await amap(afetch, ["u"]), list[bytes])

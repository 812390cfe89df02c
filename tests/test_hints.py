"""Tests for laneway._hints: the cpu_bound / io_bound decorators and hinted_kind."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import inspect
import math
import multiprocessing
import operator
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from laneway import _hints
from laneway._hints import KINDS, cpu_bound, hinted_kind, io_bound

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
SRC_DIR = REPO_ROOT / "src"


@pytest.fixture(autouse=True)
def _fresh_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each test empty fallback registries so hints on builtins do not leak between tests."""
    monkeypatch.setattr(_hints, "_weak_registry", type(_hints._weak_registry)())
    monkeypatch.setattr(_hints, "_strong_registry", {})


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import tests/_hint_helpers.py by its top-level name, importable by spawned children too."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))  # spawn children inherit the parent's sys.path
    pythonpath = [str(TESTS_DIR), str(SRC_DIR), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in pythonpath if p))
    return importlib.import_module("_hint_helpers")


def _add(x: int, y: int = 1) -> int:
    """Plain undecorated module-level function."""
    return x + y


class _Worker:
    def run(self, x: int) -> int:
        return x * 2


class _Unhintable:
    """Callable that takes no attributes, no weak references and no hashing."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = None  # type: ignore[assignment]

    def __call__(self) -> None:
        return None


def test_kinds_order() -> None:
    """KINDS lists every kind in the documented order."""
    assert KINDS == ("cpu", "native", "io", "async")


def test_cpu_bound_bare() -> None:
    """@cpu_bound tags kind "cpu" and returns the same, still callable, function."""

    def f(x: int) -> int:
        return x + 1

    assert cpu_bound(f) is f
    assert hinted_kind(f) == "cpu"
    assert f(1) == 2


def test_cpu_bound_called_without_arguments() -> None:
    """@cpu_bound() tags kind "cpu"."""

    @cpu_bound()
    def f() -> str:
        return "ok"

    assert hinted_kind(f) == "cpu"
    assert f() == "ok"


@pytest.mark.parametrize(("releases_gil", "kind"), [(True, "native"), (False, "cpu")])
def test_cpu_bound_releases_gil(releases_gil: bool, kind: str) -> None:
    """@cpu_bound(releases_gil=...) picks "native" or "cpu"."""

    def f() -> int:
        return 7

    decorator = cpu_bound(releases_gil=releases_gil)
    assert decorator(f) is f
    assert hinted_kind(f) == kind
    assert f() == 7


def test_cpu_bound_with_function_and_keyword() -> None:
    """cpu_bound(fn, releases_gil=True) tags at call time."""

    def f() -> None:
        return None

    assert cpu_bound(f, releases_gil=True) is f
    assert hinted_kind(f) == "native"


def test_io_bound_forms() -> None:
    """@io_bound and @io_bound() tag kind "io"."""

    @io_bound
    def f(x: str) -> str:
        return x

    @io_bound()
    def g() -> None:
        return None

    assert hinted_kind(f) == "io"
    assert hinted_kind(g) == "io"
    assert f("a") == "a"


def test_io_bound_coroutine_function_is_async() -> None:
    """io_bound on a coroutine function tags "async" and the function still runs."""

    async def fetch(x: int) -> int:
        return x * 3

    assert io_bound(fetch) is fetch
    assert hinted_kind(fetch) == "async"
    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(2)) == 6


def test_io_bound_partial_of_coroutine_function_is_async() -> None:
    """io_bound on a partial of a coroutine function tags "async"."""

    async def fetch(x: int, y: int) -> int:
        return x + y

    part = io_bound(functools.partial(fetch, 1))
    assert hinted_kind(part) == "async"
    assert hinted_kind(fetch) is None


def test_metadata_and_signature_unchanged() -> None:
    """Name, doc, module, __wrapped__ and signature are untouched."""

    def base(a: int) -> int:
        return a

    @functools.wraps(base)
    def wrapper(a: int, *, b: str = "x") -> int:
        """Doc."""
        return a

    before = (
        inspect.signature(wrapper),
        wrapper.__name__,
        wrapper.__doc__,
        wrapper.__module__,
        wrapper.__wrapped__,
    )
    cpu_bound(wrapper)
    after = (
        inspect.signature(wrapper),
        wrapper.__name__,
        wrapper.__doc__,
        wrapper.__module__,
        wrapper.__wrapped__,
    )
    assert after == before


@pytest.mark.parametrize("builtin", [math.factorial, len, hashlib.sha256, operator.itemgetter(0)])
def test_builtins_can_be_hinted(builtin: Any) -> None:
    """Builtins that refuse attributes are hinted through the fallback registries."""
    assert hinted_kind(builtin) is None
    assert cpu_bound(builtin) is builtin
    assert hinted_kind(builtin) == "cpu"
    assert cpu_bound(builtin, releases_gil=True) is builtin
    assert hinted_kind(builtin) == "native"


def test_builtin_results_unchanged() -> None:
    """Hinted builtins still compute the same results."""
    assert cpu_bound(math.factorial)(5) == 120
    assert cpu_bound(len)([1, 2]) == 2
    assert cpu_bound(hashlib.sha256)(b"").hexdigest() == hashlib.sha256(b"").hexdigest()


def test_non_weakrefable_builtin_uses_strong_registry() -> None:
    """Method descriptors such as str.upper are hinted via the plain dict."""
    io_bound(str.upper)
    assert hinted_kind(str.upper) == "io"
    assert str.upper in _hints._strong_registry


def test_builtin_bound_method() -> None:
    """A bound builtin method is hinted while the hinted object is alive."""
    items: list[int] = []
    append = cpu_bound(items.append)
    assert hinted_kind(append) == "cpu"
    append(1)
    assert items == [1]


def test_bound_method_tags_underlying_function() -> None:
    """Hinting a bound method tags its __func__, hence the method on every instance."""

    class Worker:
        def run(self, x: int) -> int:
            return x * 2

    first, second = Worker(), Worker()
    method = first.run
    assert cpu_bound(method) is method
    assert hinted_kind(first.run) == "cpu"
    assert hinted_kind(second.run) == "cpu"
    assert hinted_kind(Worker.run) == "cpu"
    assert method(2) == 4


def test_partial_reads_tag_of_function() -> None:
    """A partial (even nested) of a tagged function reads the function's tag."""

    @io_bound
    def f(a: int, b: int, c: int) -> int:
        return a + b + c

    part = functools.partial(functools.partial(f, 1), 2)
    assert hinted_kind(part) == "io"
    assert part(3) == 6


def test_partial_own_tag_wins() -> None:
    """A hint on the partial itself overrides the wrapped function's hint."""

    @cpu_bound
    def f(x: int) -> int:
        return x

    part = io_bound(functools.partial(f, 1))
    assert hinted_kind(part) == "io"
    assert hinted_kind(f) == "cpu"
    assert part() == 1


def test_partial_of_bound_method() -> None:
    """hinted_kind looks through a partial and then a bound method."""

    class Job:
        @cpu_bound(releases_gil=True)
        def run(self, x: int) -> int:
            return x

    assert hinted_kind(functools.partial(Job().run, 1)) == "native"


@pytest.mark.parametrize(
    "obj",
    [_add, lambda: None, len, str.upper, functools.partial(_add, 1), _Worker().run, 42, None],
)
def test_untagged_is_none(obj: object) -> None:
    """Untagged callables and non-callables have no hint."""
    assert hinted_kind(obj) is None


def test_untagged_coroutine_function_is_none() -> None:
    """An untagged coroutine function is not hinted."""

    async def f() -> None:
        return None

    assert hinted_kind(f) is None


def test_unknown_tag_value_is_ignored() -> None:
    """A tag attribute holding something that is not a kind reads as no hint."""

    def f() -> None:
        return None

    f.__laneway_kind__ = "gpu"  # type: ignore[attr-defined]
    assert hinted_kind(f) is None


def test_last_hint_wins() -> None:
    """Re-decorating replaces the hint, for functions and for builtins."""

    def f() -> None:
        return None

    cpu_bound(f)
    io_bound(f)
    assert hinted_kind(f) == "io"
    cpu_bound(f, releases_gil=True)
    assert hinted_kind(f) == "native"
    io_bound(math.sqrt)
    cpu_bound(math.sqrt)
    assert hinted_kind(math.sqrt) == "cpu"


def test_cpu_bound_rejects_non_callable() -> None:
    """cpu_bound(42) names what it got and what it accepts."""
    with pytest.raises(
        TypeError,
        match=r"^cpu_bound\(\) expects a callable or keyword arguments, got 42 \(int\)$",
    ):
        cpu_bound(42)  # type: ignore[call-overload]


def test_cpu_bound_rejects_none() -> None:
    """cpu_bound(None) is an error, not the same as cpu_bound()."""
    with pytest.raises(TypeError, match=r"got None \(NoneType\)"):
        cpu_bound(None)  # type: ignore[call-overload]


def test_io_bound_rejects_non_callable() -> None:
    """io_bound("x") names what it got and what it accepts."""
    with pytest.raises(TypeError, match=r"^io_bound\(\) expects a callable, got 'x' \(str\)$"):
        io_bound("x")  # type: ignore[call-overload]


def test_io_bound_decorator_rejects_non_callable() -> None:
    """io_bound()(3) raises the same TypeError."""
    with pytest.raises(TypeError, match=r"^io_bound\(\) expects a callable, got 3 \(int\)$"):
        io_bound()(3)  # type: ignore[arg-type]


def test_releases_gil_must_be_bool() -> None:
    """releases_gil="yes" is rejected with the parameter named."""
    with pytest.raises(TypeError, match=r"releases_gil must be a bool, got 'yes' \(str\)"):
        cpu_bound(releases_gil="yes")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"releases_gil must be a bool, got 1 \(int\)"):
        cpu_bound(_add, releases_gil=1)  # type: ignore[call-overload]


def test_decorator_rejects_non_callable() -> None:
    """cpu_bound(releases_gil=True)(42) says which call got the bad value."""
    with pytest.raises(
        TypeError,
        match=r"^cpu_bound\(releases_gil=True\) expects a callable, got 42 \(int\)$",
    ):
        cpu_bound(releases_gil=True)(42)  # type: ignore[arg-type]


def test_cpu_bound_rejects_coroutine_function() -> None:
    """cpu_bound on a coroutine function points to io_bound."""

    async def f() -> None:
        return None

    with pytest.raises(TypeError, match=r"coroutine function .*use io_bound"):
        cpu_bound(f)
    assert hinted_kind(f) is None


def test_unhintable_object() -> None:
    """An object with no attributes, weak references or hash gets a clear TypeError."""
    with pytest.raises(TypeError, match=r"cannot hint .*_Unhintable.*not hashable"):
        cpu_bound(_Unhintable())


def test_tagged_partial_pickles_with_its_hint(helpers: ModuleType) -> None:
    """A hinted partial keeps its own hint through a pickle round trip."""
    part = io_bound(functools.partial(helpers.square, 3))
    clone = pickle.loads(pickle.dumps(part))
    assert hinted_kind(clone) == "io"
    assert clone() == 9


def test_pickled_by_reference(helpers: ModuleType) -> None:
    """A decorated module-level function pickles by qualified name and unpickles to itself."""
    for name in ("square", "total", "echo"):
        fn = getattr(helpers, name)
        data = pickle.dumps(fn)
        assert b"_hint_helpers" in data
        assert name.encode() in data
        assert pickle.loads(data) is fn


def test_hint_survives_in_spawned_child(helpers: ModuleType) -> None:
    """Under spawn, the child calls the function and sees the same hint."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(helpers.square, (4,)) == 16
        assert pool.apply(hinted_kind, (helpers.square,)) == "cpu"
        assert pool.apply(hinted_kind, (helpers.total,)) == "native"
        assert pool.apply(hinted_kind, (helpers.echo,)) == "io"
        assert pool.apply(hinted_kind, (functools.partial(helpers.echo, "x"),)) == "io"
        pool.close()
        pool.join()


@pytest.mark.slow
def test_typing_hints_type_check(tmp_path: Path) -> None:
    """mypy --strict accepts tests/typing_hints.py, whose ignores pin the exact signatures."""
    pytest.importorskip("mypy")
    env = {**os.environ, "MYPYPATH": str(SRC_DIR)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            "tests/typing_hints.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout + result.stderr

"""Kind hints: decorators that tag a callable with the kind of work it does.

The decorators return the very object they were given (no wrapper), so a
module-level function stays picklable by reference and calling it directly
runs it directly.  The tag is stored, in order of preference:

1. as the attribute ``__laneway_kind__`` on the object (functions, partials,
   classes, most callable instances);
2. for objects that refuse attributes but can be weakly referenced (builtins
   such as ``len``, ``math.sqrt``, ``hashlib.sha256``, ``[].append``, builtin
   types): in a module-level :class:`weakref.WeakKeyDictionary`;
3. otherwise (``str.upper``, ``operator.itemgetter(1)``, ``(1).__add__``): in
   a module-level plain ``dict`` keyed by the object itself.  These entries
   keep their object alive; that suits descriptors and module attributes,
   which live for the whole process anyway, but hinting many short-lived
   objects of this sort grows the dict.

A bound method is tagged through its ``__func__``, so the hint applies to
the method on every instance of the class.  Registry lookups use the key's
``==``, so an equal object (for example a fresh ``lst.append``) shares the
hint of the one that was tagged while that one is alive.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, ParamSpec, TypeVar, overload

__all__ = ["KINDS", "Kind", "cpu_bound", "hinted_kind", "io_bound", "is_coroutine_function"]

Kind = Literal["cpu", "native", "io", "async"]
"""What a task does: ``"cpu"`` holds the GIL while computing, ``"native"``
computes in native code that releases the GIL, ``"io"`` mostly waits and
``"async"`` is a coroutine function.  Example: ``kind: Kind = "io"``."""

KINDS: tuple[Kind, ...] = ("cpu", "native", "io", "async")
"""Every :data:`Kind`, in a fixed order.  Example: ``"cpu" in KINDS``."""

P = ParamSpec("P")
R = TypeVar("R")

_ATTR = "__laneway_kind__"
_NOTHING: Any = object()
_weak_registry: weakref.WeakKeyDictionary[Any, Kind] = weakref.WeakKeyDictionary()
_strong_registry: dict[Any, Kind] = {}


def is_coroutine_function(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (looks through partials and methods,
    and sees an instance whose class defines ``async def __call__``)."""
    import inspect  # ~10 ms to import: not at start-up, so process workers start fast

    if inspect.iscoroutinefunction(fn):
        return True
    if isinstance(fn, type) or inspect.isroutine(fn) or isinstance(fn, partial):
        return False
    call = next((vars(cls)["__call__"] for cls in type(fn).__mro__ if "__call__" in vars(cls)),
                None)  # (the class's own __call__, as the call fn(x) will use)
    return inspect.iscoroutinefunction(call)


def coroutine_of(fn: object) -> Callable[..., Any] | None:
    """The coroutine function ``fn`` is or stands for (laneway's per-item wrapper of one
    carries it as ``__laneway_coroutine__``), or None."""
    if is_coroutine_function(fn):
        return fn  # type: ignore[return-value]
    inner = getattr(fn, "__laneway_coroutine__", None)
    return inner if inner is not None and is_coroutine_function(inner) else None


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def _tag(fn: Any, kind: Kind) -> None:
    target = fn.__func__ if isinstance(fn, types.MethodType) else fn
    try:
        setattr(target, _ATTR, kind)
    except (AttributeError, TypeError):
        pass
    else:
        return
    try:
        _weak_registry[target] = kind
    except TypeError:
        pass
    else:
        return
    try:
        _strong_registry[target] = kind
    except TypeError:
        msg = f"cannot hint {_describe(fn)}: it takes no attributes and is not hashable"
        raise TypeError(msg) from None


@overload
def cpu_bound(fn: Callable[P, R], /, *, releases_gil: bool = ...) -> Callable[P, R]: ...
@overload
def cpu_bound(*, releases_gil: bool = ...) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def cpu_bound(fn: Any = _NOTHING, /, *, releases_gil: bool = False) -> Any:
    """Hint that ``fn`` computes: kind ``"cpu"``, or ``"native"`` if it releases the GIL.

    Returns ``fn`` itself, tagged; a coroutine function is refused (use
    :func:`io_bound`).  Example::

        @cpu_bound
        def crunch(n: int) -> int: ...

        @cpu_bound(releases_gil=True)
        def blas_heavy(a): ...

        fast_hash = cpu_bound(hashlib.sha256, releases_gil=True)
    """
    if not isinstance(releases_gil, bool):
        msg = f"cpu_bound() argument releases_gil must be a bool, got {_describe(releases_gil)}"
        raise TypeError(msg)
    kind: Kind = "native" if releases_gil else "cpu"

    def decorate(f: Any, caller: str = f"cpu_bound(releases_gil={releases_gil})") -> Any:
        if not callable(f):
            msg = f"{caller} expects a callable, got {_describe(f)}"
            raise TypeError(msg)
        if is_coroutine_function(f):
            msg = f"{caller} got coroutine function {_describe(f)}; use io_bound for it"
            raise TypeError(msg)
        _tag(f, kind)
        return f

    if fn is _NOTHING:
        return decorate
    if not callable(fn):
        msg = f"cpu_bound() expects a callable or keyword arguments, got {_describe(fn)}"
        raise TypeError(msg)
    return decorate(fn, "cpu_bound()")


@overload
def io_bound(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def io_bound() -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def io_bound(fn: Any = _NOTHING, /) -> Any:
    """Hint that ``fn`` mostly waits: kind ``"io"``, or ``"async"`` for a coroutine function.

    Returns ``fn`` itself, tagged.  Example::

        @io_bound
        def fetch(url: str) -> bytes: ...

        @io_bound
        async def afetch(url: str) -> bytes: ...  # hinted_kind(afetch) == "async"
    """
    if fn is _NOTHING:
        return io_bound
    if not callable(fn):
        msg = f"io_bound() expects a callable, got {_describe(fn)}"
        raise TypeError(msg)
    _tag(fn, "async" if is_coroutine_function(fn) else "io")
    return fn


def _own_kind(obj: object) -> Kind | None:
    try:
        kind = vars(obj).get(_ATTR)
    except (TypeError, AttributeError):  # no usable __dict__
        kind = None
    if isinstance(kind, str) and kind in KINDS:
        return kind
    for registry in (_weak_registry, _strong_registry):
        try:
            found = registry.get(obj)
        except TypeError:  # not weak-referenceable or not hashable
            continue
        if found is not None:
            return found
    return None


def hinted_kind(fn: object) -> Kind | None:
    """The kind ``fn`` was hinted with, or ``None`` if it carries no hint.

    Looks through :class:`functools.partial` (its ``.func``) and bound methods
    (their ``__func__``); a hint on the partial itself wins.  An untagged
    coroutine function is not hinted.  Example::

        >>> @io_bound
        ... def fetch(url, timeout): ...
        >>> hinted_kind(partial(fetch, timeout=5))
        'io'
        >>> hinted_kind(lambda: None) is None
        True
    """
    for _ in range(100):  # bounded: a partial's state can be rewritten into a cycle
        if isinstance(fn, types.MethodType):
            fn = fn.__func__
        kind = _own_kind(fn)
        if kind is not None:
            return kind
        if isinstance(fn, partial):
            fn = fn.func
        else:
            return None
    return None

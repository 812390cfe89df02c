"""Send a script's functions to worker processes by value with the standard ``pickle``.

A function defined in ``__main__``, a lambda or a closure cannot be pickled by
reference: the worker must get its code and the values it uses.  cloudpickle does that
for anything, but importing it costs ~40 ms (it imports ``dataclasses``, ``inspect``,
``logging``, ``typing``...), which a worker would pay before it could run the first item
of a program, and the caller too.  This module covers the common case with
``pickle.Pickler.reducer_override`` and ``marshal``: a plain function is rebuilt in the
worker from its code object, the globals its code loads or stores (as they are *now*;
found in its bytecode, nested code included), its defaults, closure cells and
``__dict__``.  The functions of one module sent in one pickle share one globals dict in
the worker, as they did in the module (a helper's ``global`` assignment is seen by the
others), which also holds the module's ``__name__``, ``__package__``, ``__file__`` and
``__path__`` (relative imports and warnings filters need them).  Recursive and mutually
recursive functions work (pickle's memo sees the function before its globals are
filled in).  A module is sent by name, with the submodules the code reaches through it
that are loaded here (``xml.etree.ElementTree`` through ``xml``).

It refuses (:class:`Unsupported`) what it cannot send faithfully, and the caller then
uses cloudpickle: a class, an instance of a class or a module defined in ``__main__``
(the worker's ``__main__`` is the script re-imported, without what ran under
``if __name__ == "__main__":``), a module that cannot be imported by its name (made at
run time, loaded under another name, or registered with cloudpickle to go by value).
Anything plain pickle cannot send (a lock, a class defined in a function) raises as
pickle does, for the same fallback.

The worker needs nothing but this module (``marshal``, ``types``) to rebuild them.
"""

from __future__ import annotations

import builtins
import importlib
import io
import marshal
import opcode
import pickle
import sys
import types
import weakref

TYPE_CHECKING = False  # (no typing at run time: see process.worker)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Unsupported", "dumps"]


class Unsupported(pickle.PicklingError):
    """The object needs cloudpickle (see the module docstring)."""


def dumps(obj: Any) -> bytes:
    """``pickle.dumps(obj)``, with functions that cannot be found by reference sent by
    value (see the module docstring); raises :class:`Unsupported` or pickle's own error
    for what it cannot send."""
    buffer = io.BytesIO()
    _ByValuePickler(buffer, pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


_MODULE_KEYS = ("__name__", "__package__", "__file__", "__path__")
"""What a rebuilt function's globals keep of its module's, besides what it uses."""


class _ByValuePickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, protocol: int) -> None:
        super().__init__(file, protocol)
        self._scopes: dict[int, dict[str, Any]] = {}  # id(module globals) -> shared dict

    def reducer_override(self, obj: Any) -> Any:
        # (not called for None, bools, and exact ints, floats, str, bytes, containers)
        if isinstance(obj, types.FunctionType) and not _by_reference(obj):
            return _reduce_function(obj, self._scope_of(obj))
        if isinstance(obj, types.ModuleType):
            _check_importable(obj)
            return importlib.import_module, (obj.__name__,)
        kind = obj if isinstance(obj, type) else type(obj)
        if getattr(kind, "__module__", None) == "__main__":
            raise Unsupported(f"{kind.__qualname__} is defined in __main__")
        return NotImplemented

    def _scope_of(self, fn: types.FunctionType) -> dict[str, Any]:
        """One globals dict for all of a module's functions in this pickle (pickled
        once, by memo), started with the module's identity keys."""
        scope = self._scopes.get(id(fn.__globals__))
        if scope is None:
            scope = {key: fn.__globals__[key] for key in _MODULE_KEYS
                     if key in fn.__globals__}
            self._scopes[id(fn.__globals__)] = scope
        return scope


def _check_importable(module: types.ModuleType) -> None:
    """Refuse a module the worker cannot import by its name."""
    name = module.__name__
    if name == "__main__":
        raise Unsupported("the __main__ module itself")
    if sys.modules.get(name) is not module or getattr(module, "__spec__", None) is None:
        raise Unsupported(f"module {name!r} cannot be imported by its name")
    if _registered_by_value(name):
        raise Unsupported(f"module {name!r} is registered with cloudpickle to go by value")


def _registered_by_value(name: str) -> bool:
    """Whether cloudpickle was told to send ``name`` (or a package of it) by value
    (``cloudpickle.register_pickle_by_value``; only if cloudpickle is loaded)."""
    registered = getattr(sys.modules.get("cloudpickle.cloudpickle"),
                         "_PICKLE_BY_VALUE_MODULES", ())
    return any(name == r or name.startswith(r + ".") for r in registered)


def _by_reference(fn: types.FunctionType) -> bool:
    """Whether ``fn`` is what its module and qualified name lead to (``__main__``
    excepted: the worker's is the script re-imported)."""
    if fn.__module__ == "__main__" or _registered_by_value(fn.__module__ or ""):
        return False
    module = sys.modules.get(fn.__module__)
    found: Any = module
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is fn


class _EmptyCell:
    """Stands for a closure cell with no value yet (a name bound later in its scope);
    the class itself is the marker (it pickles by reference)."""


def _reduce_function(fn: types.FunctionType, shared: dict[str, Any]) -> tuple[Any, ...]:
    code = fn.__code__
    scope = fn.__globals__
    names = _global_names(code)
    used = {name: scope[name] for name in names if name in scope}
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # empty
            cells.append(_EmptyCell)
    state = {
        "globals": used, "imports": _submodules(used, code),
        "defaults": fn.__defaults__, "kwdefaults": fn.__kwdefaults__,
        "dict": fn.__dict__ or None, "cells": cells, "qualname": fn.__qualname__,
        "module": fn.__module__, "doc": fn.__doc__, "annotations": fn.__annotations__ or None,
    }
    # (callable, args, state, listitems, dictitems, state_setter): the function exists,
    # and is memoized, before its state is pickled, so recursion ends at the memo
    return (_make_function, (marshal.dumps(code), shared, fn.__name__, len(cells)), state,
            None, None, _set_function_state)


_NAME_OPS = {opcode.opmap[name] for name in (  # (LOAD_NAME etc.: class bodies, 3.12's
    "LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME",  # annotation scopes)
    "LOAD_FROM_DICT_OR_GLOBALS") if name in opcode.opmap}
_LOAD_GLOBAL = opcode.opmap["LOAD_GLOBAL"]
_GLOBAL_ARG_SHIFT = 1 if sys.version_info >= (3, 11) else 0  # (3.11: low bit is "push NULL")

_names_of: weakref.WeakKeyDictionary[types.CodeType, frozenset[str]] = \
    weakref.WeakKeyDictionary()


def _global_names(code: types.CodeType) -> frozenset[str]:
    """The global names the code (nested functions, comprehensions and class bodies
    included) loads, stores or deletes, read from its bytecode (cached per code)."""
    names = _names_of.get(code)
    if names is None:
        found = set()
        raw, extended = code.co_code, 0
        for at in range(0, len(raw), 2):
            op, arg = raw[at], raw[at + 1] | extended
            extended = arg << 8 if op == opcode.EXTENDED_ARG else 0
            if op in _NAME_OPS:
                found.add(code.co_names[arg >> _GLOBAL_ARG_SHIFT if op == _LOAD_GLOBAL
                                        else arg])
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                found |= _global_names(const)
        names = _names_of[code] = frozenset(found)
    return names


def _submodules(used: dict[str, Any], code: types.CodeType) -> list[str]:
    """Loaded submodules of the modules in ``used`` that the code may reach by
    attribute (``xml.etree`` for ``xml.etree.ElementTree.fromstring``): the worker
    imports them, as importing the package alone may not."""
    wanted: list[str] = []
    level = [value.__name__ for value in used.values() if isinstance(value, types.ModuleType)]
    attributes = _attribute_names(code) if level else frozenset()
    while level:  # a.b, then a.b.c...: each part one of the code's attribute names
        level = [f"{name}.{part}" for name in level for part in attributes
                 if f"{name}.{part}" in sys.modules]
        wanted += level
    return wanted


def _attribute_names(code: types.CodeType) -> frozenset[str]:
    """Every name the code (nested code included) uses: globals and attributes."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _attribute_names(const)
    return frozenset(names)


def _make_function(code: bytes, scope: dict[str, Any], name: str,
                   cells: int) -> types.FunctionType:
    """(In the worker.)  The function in its module's shared ``scope``, with its used
    globals and cells still to come."""
    scope.setdefault("__builtins__", builtins)
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(marshal.loads(code), scope, name, None, closure)


def _set_function_state(fn: types.FunctionType, state: dict[str, Any]) -> None:
    """(In the worker.)  Fill in what :func:`_reduce_function` captured."""
    for module in state["imports"]:
        importlib.import_module(module)
    fn.__globals__.update(state["globals"])
    fn.__defaults__ = state["defaults"]
    fn.__kwdefaults__ = state["kwdefaults"]
    if state["dict"]:
        fn.__dict__.update(state["dict"])
    fn.__qualname__ = state["qualname"]
    fn.__module__ = state["module"]
    fn.__doc__ = state["doc"]
    if state["annotations"]:
        fn.__annotations__ = state["annotations"]
    for cell, value in zip(fn.__closure__ or (), state["cells"], strict=True):
        if value is not _EmptyCell:
            cell.cell_contents = value

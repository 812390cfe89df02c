"""Send a script's functions to worker processes by value with the standard ``pickle``.

A function defined in ``__main__``, a lambda or a closure cannot be pickled by
reference: the worker must get its code and the values it uses.  cloudpickle does that
for anything, but importing it costs ~40 ms (it imports ``dataclasses``, ``inspect``,
``logging``, ``typing``...), which a worker would pay before it could run the first item
of a program, and the caller too.  This module covers the common case with
``pickle.Pickler.reducer_override`` and ``marshal``: a plain function is rebuilt in the
worker from its code object, the globals its code names (as they are *now*), its
defaults, closure cells and ``__dict__``.  Recursive and mutually recursive functions
work (pickle's memo sees the function before its globals are filled in).

It refuses (:class:`Unsupported`) what it cannot send faithfully, and the caller then
uses cloudpickle: a class, an instance of a class or a module defined in ``__main__``
(the worker's ``__main__`` is the script re-imported, without what ran under
``if __name__ == "__main__":``).  Anything plain pickle cannot send (a lock, a class
defined in a function) raises as pickle does, for the same fallback.

The worker needs nothing but this module (``marshal``, ``types``) to rebuild them.
"""

from __future__ import annotations

import builtins
import importlib
import io
import marshal
import pickle
import sys
import types

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


class _ByValuePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # (not called for None, bools, and exact ints, floats, str, bytes, containers)
        if isinstance(obj, types.FunctionType) and not _by_reference(obj):
            return _reduce_function(obj)
        if isinstance(obj, types.ModuleType):
            if obj.__name__ == "__main__":
                raise Unsupported("the __main__ module itself")
            return importlib.import_module, (obj.__name__,)
        kind = obj if isinstance(obj, type) else type(obj)
        if getattr(kind, "__module__", None) == "__main__":
            raise Unsupported(f"{kind.__qualname__} is defined in __main__")
        return NotImplemented


def _by_reference(fn: types.FunctionType) -> bool:
    """Whether ``fn`` is what its module and qualified name lead to (``__main__``
    excepted: the worker's is the script re-imported)."""
    module = sys.modules.get(fn.__module__) if fn.__module__ != "__main__" else None
    found: Any = module
    for part in fn.__qualname__.split("."):
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is fn


class _EmptyCell:
    """Stands for a closure cell with no value yet (a name bound later in its scope);
    the class itself is the marker (it pickles by reference)."""


def _reduce_function(fn: types.FunctionType) -> tuple[Any, ...]:
    code = fn.__code__
    scope = fn.__globals__
    used = {name: scope[name] for name in _names(code) if name in scope}
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # empty
            cells.append(_EmptyCell)
    state = {
        "globals": used, "defaults": fn.__defaults__, "kwdefaults": fn.__kwdefaults__,
        "dict": fn.__dict__ or None, "cells": cells, "qualname": fn.__qualname__,
        "module": fn.__module__, "doc": fn.__doc__, "annotations": fn.__annotations__ or None,
    }
    # (callable, args, state, listitems, dictitems, state_setter): the function exists,
    # and is memoized, before its state is pickled, so recursion ends at the memo
    return (_make_function, (marshal.dumps(code), fn.__name__, len(cells)), state,
            None, None, _set_function_state)


def _names(code: types.CodeType) -> set[str]:
    """Names the code (nested functions and comprehensions included) may load as
    globals (a superset: attribute names are among them)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _make_function(code: bytes, name: str, cells: int) -> types.FunctionType:
    """(In the worker.)  The function, with empty globals and cells for now."""
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(marshal.loads(code), {"__builtins__": builtins}, name,
                              None, closure)


def _set_function_state(fn: types.FunctionType, state: dict[str, Any]) -> None:
    """(In the worker.)  Fill in what :func:`_reduce_function` captured."""
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

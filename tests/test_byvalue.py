"""Functions sent to process workers by value with the standard pickle (``byvalue``)."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest

from _support import run_script
from laneway._backends.process import byvalue
from laneway._backends.process.pool import pickle_for_worker


def script_namespace(source: str) -> dict[str, Any]:
    """Run ``source`` as a script's ``__main__`` would (its functions' module is
    ``__main__``) and return its globals."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)  # (test code, ours)
    return namespace


def round_trip(obj: Any) -> Any:
    return pickle.loads(byvalue.dumps(obj))


def test_a_script_function_travels_with_the_globals_it_uses_as_they_are_now() -> None:
    ns = script_namespace("""
        import math
        SCALE = 2
        def area(r, *, pi=math.pi):
            "Area of a circle, scaled."
            return SCALE * pi * r * r
        area.unit = "m2"
    """)
    ns["SCALE"] = 3  # changed after the definition, before the call: the value sent
    copy = round_trip(ns["area"])
    assert copy is not ns["area"]
    assert copy(1.0) == pytest.approx(3 * 3.141592653589793)
    assert copy.__doc__ == "Area of a circle, scaled." and copy.unit == "m2"
    assert copy.__qualname__ == "area" and copy.__module__ == "__main__"
    assert copy.__kwdefaults__ == {"pi": pytest.approx(3.141592653589793)}
    ns["SCALE"] = 100
    assert copy(1.0) == pytest.approx(3 * 3.141592653589793)  # its own copy of SCALE


def test_recursion_closures_lambdas_and_comprehensions() -> None:
    ns = script_namespace("""
        def fact(n):
            return 1 if n < 2 else n * fact(n - 1)
        def make_counter(step):
            def rec(n):
                return 0 if n == 0 else step + rec(n - 1)
            return rec
        OFFSETS = [1, 2]
        shifted = lambda xs: [x + o for x in xs for o in OFFSETS]
        def is_even(n):
            return n == 0 or is_odd(n - 1)
        def is_odd(n):
            return n != 0 and is_even(n - 1)
    """)
    assert round_trip(ns["fact"])(5) == 120
    assert round_trip(ns["make_counter"](3))(4) == 12  # a closure cell holding itself
    assert round_trip(ns["shifted"])([10]) == [11, 12]
    assert round_trip(ns["is_even"])(10) is True


def test_an_empty_closure_cell_stays_empty() -> None:
    def outer() -> Any:
        def inner() -> Any:
            return later
        copy = round_trip(inner)  # `later` is not bound yet
        later = 1  # (bound after the copy was made)
        return copy

    with pytest.raises(NameError, match="later"):
        outer()()


def test_what_needs_cloudpickle_is_refused_and_handed_to_it() -> None:
    ns = script_namespace("""
        class Point:
            def __init__(self, x):
                self.x = x
        def norm(p):
            return abs(p.x)
        def make(x):
            return Point(x)
        ORIGIN = Point(0)
        def shift(x):
            return x + ORIGIN.x
    """)
    assert round_trip(ns["norm"])(type("P", (), {"x": -2})()) == 2  # no class in its globals
    for fn in (ns["make"], ns["shift"]):
        with pytest.raises(byvalue.Unsupported, match="Point is defined in __main__"):
            byvalue.dumps(fn)
    # cloudpickle sends them
    assert pickle.loads(pickle_for_worker(ns["make"]))(5).x == 5
    assert pickle.loads(pickle_for_worker(ns["shift"]))(5) == 5


def test_functions_of_one_module_share_their_globals_in_the_worker() -> None:
    """A helper's ``global`` assignment is seen by the function that called it (the
    lazy per-worker set-up), and the module's identity keys are kept."""
    ns = script_namespace("""
        _connection = None
        def connect():
            global _connection
            _connection = {"open": True}
        def task(x):
            if _connection is None:
                connect()
            return _connection["open"], x
    """)
    copy = round_trip(ns["task"])
    assert copy(1) == (True, 1) and copy(2) == (True, 2)
    assert copy.__globals__["__name__"] == "__main__"
    assert ns["_connection"] is None  # (the caller's own is untouched)


def test_only_names_the_code_uses_as_globals_travel() -> None:
    """An attribute that shares its name with a global (``row.lock``, a global lock)
    does not drag that global along: it would not pickle, or weigh megabytes."""
    ns = script_namespace("""
        import threading
        lock = threading.Lock()
        data = bytes(10_000_000)
        def pick(row):
            return row.lock, len(row.data)
    """)
    payload = byvalue.dumps(ns["pick"])
    assert len(payload) < 10_000
    row = type("Row", (), {"lock": 1, "data": b"xy"})()
    assert pickle.loads(payload)(row) == (1, 2)


def test_submodules_the_code_reaches_through_a_package_are_imported_first() -> None:
    import xml.etree.ElementTree  # noqa: F401  (loaded here, as in the caller)

    ns = script_namespace("""
        import xml
        def tag(text):
            return xml.etree.ElementTree.fromstring(text).tag
    """)
    state = byvalue._reduce_function(ns["tag"], {})[2]
    assert state["imports"] == ["xml.etree", "xml.etree.ElementTree"]
    assert round_trip(ns["tag"])("<a/>") == "a"


def test_modules_that_cannot_be_imported_by_name_go_to_cloudpickle() -> None:
    ns = script_namespace("""
        import types
        settings = types.ModuleType("settings")
        settings.FACTOR = 3
        def scaled(x):
            return settings.FACTOR * x
    """)
    with pytest.raises(byvalue.Unsupported, match="'settings' cannot be imported"):
        byvalue.dumps(ns["scaled"])
    assert pickle.loads(pickle_for_worker(ns["scaled"]))(2) == 6


def test_importable_functions_still_go_by_reference() -> None:
    assert byvalue.dumps(textwrap.dedent) == pickle.dumps(textwrap.dedent,
                                                          pickle.HIGHEST_PROTOCOL)


def test_a_script_run_on_processes_needs_no_cloudpickle_in_its_workers(tmp_path: Path) -> None:
    """The end-to-end case: a script's function, its globals set under the main guard,
    run by process workers that never import cloudpickle; a function that needs it
    (a class of the script) still runs."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(
        """
        import sys
        import laneway

        FACTOR = 1

        def scaled(x):
            return (x * FACTOR, "cloudpickle" in sys.modules)

        class Box:
            def __init__(self, x):
                self.x = x

        def boxed(x):
            return Box(x).x

        if __name__ == "__main__":
            FACTOR = 10  # the value the workers must see
            print("scaled", laneway.parallel_map(scaled, [1, 2], backend="process"))
            print("boxed", laneway.parallel_map(boxed, [1, 2], backend="process"))
        """
    ))
    done = run_script(script)
    assert "scaled [(10, False), (20, False)]" in done.stdout, (done.stdout, done.stderr)
    assert "boxed [1, 2]" in done.stdout, (done.stdout, done.stderr)

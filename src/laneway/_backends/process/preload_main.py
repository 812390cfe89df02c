"""Run the program's main module once in the fork server, so workers fork with it.

``multiprocessing`` asks its fork server to preload ``__main__``, but before CPython
3.13.8 / 3.14 the server never does (its ``main_path`` argument is never filled in:
CPython gh-126631, gh-137996), so every worker re-runs the main script as it starts,
top-level imports (numpy, pandas...) included.  :func:`launch.start_early` hands the
main module's path (or name), ``sys.argv`` and ``sys.path`` to the server in the
environment variable :data:`MAIN_ENV` (marshalled, as hex: nothing to import), and puts
this module in the preload list: importing it in the server runs the main module there
as ``__mp_main__``, as a worker would.  Each worker then finds it loaded.

Where CPython already preloaded it, this does nothing.  If running it fails (laneway
work started at a script's top level, outside its ``if __name__ == "__main__":`` guard,
is refused here: :func:`laneway._context.refuse_in_fork_server`), the error is dropped
and each worker runs the script itself and reports what happens, as without the preload.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import marshal
import multiprocessing.popen_forkserver  # noqa: F401  (workers unpickle pipe ends with it)
import os
import sys
import types

from ... import _context
from .launch import MAIN_ENV, MAIN_KEYS


def _already_loaded(data: dict[str, object]) -> bool:
    main = sys.modules.get("__main__")
    path, name = data.get("init_main_from_path"), data.get("init_main_from_name")
    if path is not None:
        return getattr(main, "__file__", None) == path
    return getattr(getattr(main, "__spec__", None), "name", None) == name


def _run_script(path: str) -> bool:
    """Run the script file at ``path`` as module ``__mp_main__``, installed as
    ``__main__`` too, as multiprocessing's start of a worker does; False if ``path`` is
    not a plain source file (a directory, a zip, compiled code: runpy's to run).

    This is ``runpy.run_path`` for the one case it is needed here, without importing
    ``pkgutil`` (and ``typing`` through it on 3.12+, ~3.5 ms on the path to every first
    worker); the functions of the script have the module's own dict as their globals,
    as in the program itself (runpy hands back a copy).
    """
    if not os.path.isfile(path):
        return False
    with io.open_code(path) as file:
        source = file.read()
    if source[:4] == importlib.util.MAGIC_NUMBER:
        return False
    code = compile(source, path, "exec", dont_inherit=True)  # (not our __future__s)
    module = types.ModuleType("__mp_main__")
    module.__dict__.update(__file__=path, __cached__=None, __loader__=None,
                           __package__="", __spec__=None)
    argv0 = sys.argv[0] if sys.argv else None
    sys.modules["__mp_main__"] = module
    if argv0 is not None:
        sys.argv[0] = path
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules["__mp_main__"]
        raise
    finally:
        if argv0 is not None:
            sys.argv[0] = argv0
    sys.modules["__main__"] = module
    return True


def _run_main(data: dict[str, object]) -> None:
    """Set ``sys.argv``, ``sys.path`` and the start method as the program has them, and
    run its main module as a starting worker would (with stdin at end of file, as
    there: a top-level ``input()`` must not read the user's terminal from here)."""
    import multiprocessing
    from multiprocessing import util

    close_stdin = getattr(util, "_close_stdin", None)
    if close_stdin is not None:
        close_stdin()
    argv, path = data.get("sys_argv"), data.get("sys_path")
    if isinstance(argv, list):
        sys.argv = [str(arg) for arg in argv]
    if isinstance(path, list):
        sys.path = [str(entry) for entry in path]
    method = data.get("start_method")
    if isinstance(method, str):
        multiprocessing.set_start_method(method, force=True)
    script = data.get("init_main_from_path")
    if isinstance(script, str):
        if os.path.splitext(os.path.basename(script))[0] == "ipython":
            return  # (IPython's launcher has no main guard: workers skip it too)
        if _run_script(script):
            return
    from multiprocessing import spawn

    spawn.prepare(data)


def _preload() -> None:
    raw = os.environ.pop(MAIN_ENV, None)  # (workers and their children never see it)
    if raw is None:
        return
    try:
        note = marshal.loads(bytes.fromhex(raw))
    except (ValueError, EOFError, TypeError):
        return
    if not isinstance(note, dict) or note.get("parent_pid") != os.getppid():
        return  # (a note another process inherited: not about our parent's program)
    data = {key: value for key, value in note.items() if key in MAIN_KEYS}
    if _already_loaded(data):
        return
    from multiprocessing import process

    me = process.current_process()
    # (as a worker's start does: multiprocessing then refuses to start processes)
    me._inheriting = True  # type: ignore[attr-defined]
    _context.mark_fork_server_preload(True)
    try:
        _run_main(data)
    except BaseException:  # (the server must live on: each worker runs it and reports)
        pass
    finally:
        _context.mark_fork_server_preload(False)
        del me._inheriting  # type: ignore[attr-defined]
        for stream in (sys.stdout, sys.stderr):  # (else each fork would print it again)
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()


_preload()

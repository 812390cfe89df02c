"""Whole programs: a script's own functions, lambdas and prints on the process backend."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT, laneway_env, run_script
from laneway import _context
from laneway._backends.process import launch

SCRIPT = textwrap.dedent(
    """
    import laneway

    def triple(x):
        print(f"task says {x}", flush=True)
        return 3 * x

    if __name__ == "__main__":
        def inside_guard(x):          # not importable by workers: sent by value
            return x + 100
        offset = 7
        print(laneway.parallel_map(triple, [1, 2], backend="process"))
        print(laneway.parallel_map(inside_guard, [1, 2], backend="process"))
        print(laneway.parallel_map(lambda x: x + offset, [1, 2], backend="process"))
    """
)


def test_main_module_functions_lambdas_and_prints(tmp_path: Path) -> None:
    """__main__ functions (even inside the guard) and lambdas run; task prints reach stdout."""
    script = tmp_path / "program.py"
    script.write_text(SCRIPT)
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "[3, 6]" in lines
    assert "[101, 102]" in lines
    assert "[8, 9]" in lines
    # two workers print at once, and print() writes text and newline separately
    assert "task says 1" in done.stdout and "task says 2" in done.stdout


COUNTED = textwrap.dedent(
    """
    import os, sys
    import laneway

    print("top level runs as", __name__, sys.argv[1:], flush=True)
    if __name__ == "__mp_main__":
        print("stdin there:", repr(sys.stdin.read()), flush=True)

    def annotated(x: int) -> int:
        return x

    def pid_and_note(x):
        return os.getpid(), os.environ.get("LANEWAY_FORK_SERVER_MAIN")

    def annotation_there(x):
        return repr(sys.modules["__main__"].annotated.__annotations__["x"])

    if __name__ == "__main__":
        import subprocess
        seen = laneway.parallel_map(pid_and_note, range(40), backend="process", workers=2,
                                    chunksize=1)
        print("workers", len({pid for pid, _ in seen}))
        print("note in workers", {note for _, note in seen})
        print("annotation there", laneway.parallel_map(annotation_there, [0],
                                                        backend="process"))
        child = subprocess.run([sys.executable, "-c",
                                "import os; print(os.environ.get('LANEWAY_FORK_SERVER_MAIN'))"],
                               capture_output=True, text=True)
        print("note in later children", child.stdout.strip())
    """
)


@pytest.mark.skipif(launch.start_method() != "forkserver", reason="fork server only")
def test_the_fork_server_runs_the_main_script_once_for_all_workers(tmp_path: Path) -> None:
    """Workers are forked with the script already loaded: its top level runs in the parent
    and once in the fork server (with the program's ``sys.argv``), never in each worker
    (CPython before 3.13.8 re-ran it in every worker: gh-126631); what passes the script
    to the server leaks into no process."""
    script = tmp_path / "counted.py"
    script.write_text(COUNTED)
    done = run_script(script, "--flag", "value", stdin="typed by the user\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines.count("top level runs as __main__ ['--flag', 'value']") == 1, lines
    assert lines.count("top level runs as __mp_main__ ['--flag', 'value']") == 1, lines
    assert "workers 2" in lines, lines  # (two workers forked: neither ran the script)
    assert "note in workers {None}" in lines, lines
    assert "note in later children None" in lines, lines
    # it reads no stdin of the program's, and compiles without laneway's __future__s
    assert "stdin there: ''" in lines, lines
    assert "annotation there [\"<class 'int'>\"]" in lines, lines


@pytest.mark.skipif(launch.start_method() != "forkserver", reason="fork server only")
def test_a_note_inherited_from_another_program_is_ignored(tmp_path: Path) -> None:
    """A process that inherited the note meant for another program's fork server (a
    child spawned while it was set) does not run that program's script in its own."""
    import marshal

    other = tmp_path / "other.py"
    marker = tmp_path / "ran.txt"
    other.write_text(f"open({str(marker)!r}, 'a').write('ran\\n')\n")
    note = marshal.dumps({"init_main_from_path": str(other), "sys_argv": [str(other)],
                          "parent_pid": 1}).hex()
    # (a `python -c` program has no script of its own: nothing replaces the note)
    code = 'import laneway; print(laneway.parallel_map(abs, [-1, -2], backend="process"))'
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=DEADLOCK_TIMEOUT, cwd=tmp_path, check=False,
                          env=laneway_env(LANEWAY_FORK_SERVER_MAIN=note))
    assert done.returncode == 0, done.stderr
    assert "[1, 2]" in done.stdout
    assert not marker.exists()


async def _async_double(x: int) -> int:
    return 2 * x


async def _async_one() -> int:
    return 1


@pytest.mark.parametrize("entry", ["parallel_map", "imap", "run_concurrently", "Executor",
                                   "classify", "amap", "arun_concurrently"])
def test_laneway_work_is_refused_while_the_fork_server_runs_the_script(entry: str) -> None:
    """Work started at a script's top level, outside its main guard, is refused in the
    fork server (it must not run the work, nor start threads or processes there); each
    worker then runs the script itself, and the pool explains the missing guard."""
    calls = {
        "parallel_map": lambda: laneway.parallel_map(abs, [1]),
        "imap": lambda: laneway.imap(abs, [1]),
        "run_concurrently": lambda: laneway.run_concurrently(lambda: 1),
        "Executor": lambda: laneway.Executor(),
        "classify": lambda: laneway.classify(abs, 1),
        "amap": lambda: asyncio.run(laneway.amap(_async_double, [1])),
        "arun_concurrently": lambda: asyncio.run(laneway.arun_concurrently(_async_one)),
    }
    _context.mark_fork_server_preload(True)
    try:
        with pytest.raises(RuntimeError, match=rf"{entry}\(\).*__name__ == \"__main__\""):
            calls[entry]()
    finally:
        _context.mark_fork_server_preload(False)
    assert laneway.parallel_map(abs, [-1]) == [1]


@pytest.mark.skipif(launch.start_method() != "forkserver", reason="fork server only")
def test_a_script_that_ends_the_fork_server_leaves_it_to_the_workers(tmp_path: Path) -> None:
    """A script whose top level ends the process that runs it (here only when run as
    ``__mp_main__``) kills the fork server as it runs it: the pool asks again, the new
    server leaves the script to the workers, and their deaths are explained as before
    (no EOFError from multiprocessing's internals)."""
    script = tmp_path / "ends.py"
    script.write_text(textwrap.dedent(
        """
        import os
        import laneway

        if __name__ == "__mp_main__":
            os._exit(3)

        def double(x):
            return 2 * x

        if __name__ == "__main__":
            out = laneway.parallel_map(double, range(2), backend="process", errors="return")
            print([type(o).__name__ for o in out])
            print(out[0])
        """
    ))
    done = run_script(script)
    assert done.returncode == 0, done.stderr
    assert "['LanewayError', 'LanewayError']" in done.stdout, done.stdout
    assert "exited with code 3 as they started" in done.stdout
    assert "EOFError" not in done.stderr

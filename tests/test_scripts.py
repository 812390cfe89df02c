"""Whole programs: a script's own functions, lambdas and prints on the process backend."""

from __future__ import annotations

import textwrap
from pathlib import Path

from _support import run_script

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

"""Constants, small task functions and helpers shared by the tests.

The functions are module level so that process workers (and Dask workers) can import
them by reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import laneway

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


def laneway_env(**variables: str) -> dict[str, str]:
    """This process's environment, plus ``variables``, with this laneway importable (for
    scripts and ``python -m laneway`` run in fresh interpreters)."""
    env = dict(os.environ, **variables)
    package_root = str(Path(laneway.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def run_script(script: Path, *args: str, stdin: str | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (with command-line ``args``, ``stdin`` as its input, ``env`` added
    to the environment) in a fresh interpreter that imports this laneway; its output."""
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          input=stdin if stdin is not None else "",
                          timeout=DEADLOCK_TIMEOUT, cwd=script.parent, env=laneway_env(**env),
                          check=False)

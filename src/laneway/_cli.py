"""The command line: ``python -m laneway info``, ``classify`` and ``bench``."""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from . import _context
from ._cpus import available_cpus

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m laneway",
                                     description="laneway: where your tasks would run, and why.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="CPUs, GIL state, start method and default pool sizes")
    classify = commands.add_parser(
        "classify", help="run MODULE:FUNCTION once with ARGS and say where it would run")
    classify.add_argument("target", metavar="MODULE:FUNCTION")
    classify.add_argument("args", nargs="*", metavar="ARG",
                          help="arguments, read as Python literals where possible "
                               "(42, 'text', [1, 2]); anything else is passed as a string")
    bench = commands.add_parser(
        "bench", help="threads vs processes on CPU, native and I/O probes, on this machine")
    bench.add_argument("--quick", action="store_true",
                       help="smaller probes, one repetition (a few seconds)")
    bench.add_argument("--reps", type=_positive_int, default=None, metavar="N",
                       help="repetitions per variant (default 3; 1 with --quick)")
    bench.add_argument("--plot", metavar="FILE.png", default=None,
                       help="also save the speedups as a bar chart (needs matplotlib: "
                            "the 'plot' extra)")
    options = parser.parse_args(argv)
    if options.command == "info":
        return _info()
    if options.command == "bench":
        from . import _bench

        return _bench.main(options.quick, options.reps, options.plot)
    return _classify(options.target, options.args)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a positive integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _info() -> int:
    from ._backends.process.launch import start_method
    from ._router import IO_THREADS_HINTED, IO_THREADS_MAX, _env_max_workers

    cpus = available_cpus()
    gil = _context.gil_enabled()
    cap = _env_max_workers()  # (every default pool size, threads for I/O included)
    io_most = IO_THREADS_MAX if cap is None else min(cap, IO_THREADS_MAX)
    unmeasured = IO_THREADS_HINTED if cap is None else min(cap, IO_THREADS_HINTED)
    rows = [
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("os.cpu_count()", str(os.cpu_count())),
        ("available_cpus()", f"{cpus} (affinity, cgroup quota, LANEWAY_MAX_WORKERS)"),
        ("GIL", "enabled" if gil else "disabled (free-threaded: CPU work goes to threads)"),
        ("process start method", start_method()),
        ("process pool size", str(cpus)),
        ("threads for CPU/native work", str(cpus)),
        ("threads for I/O", f"{cpus} x (1 + wait/compute), at most {io_most} "
                            f"(measured)"),
        ("threads for unmeasured I/O", f"{unmeasured} (with task_timeout)"),
        ("LANEWAY_BACKEND", os.environ.get("LANEWAY_BACKEND") or "(unset)"),
        ("LANEWAY_MAX_WORKERS", os.environ.get("LANEWAY_MAX_WORKERS") or "(unset)"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def _classify(target: str, raw_args: list[str]) -> int:
    from ._classify import classify

    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        print(f"error: expected MODULE:FUNCTION (e.g. hashlib:sha256), got {target!r}",
              file=sys.stderr)
        return 2
    sys.path.insert(0, os.getcwd())
    try:
        fn: Any = importlib.import_module(module_name)
        for part in function_name.split("."):
            fn = getattr(fn, part)
    except (ImportError, AttributeError) as exc:
        print(f"error: cannot load {target}: {exc}", file=sys.stderr)
        return 2
    try:
        profile = classify(fn, *(_literal(arg) for arg in raw_args))
    except Exception as exc:
        print(f"error: {target} raised {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    gil = {True: "released", False: "held", None: "not probed"}[profile.releases_gil]
    print(f"{target}: kind {profile.kind!r}, backend {profile.backend!r}")
    print(f"  wall {profile.wall_s * 1e3:.2f} ms, CPU {profile.cpu_s * 1e3:.2f} ms "
          f"({profile.cpu_ratio:.0%}), GIL {gil}, pickled args {profile.arg_bytes} B, "
          f"result {profile.result_bytes} B")
    print(f"  why: {profile.reason}")
    return 0


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text

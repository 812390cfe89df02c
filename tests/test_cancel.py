"""Cancellation: leaving a run early, Ctrl-C and a killed parent stop the work promptly."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT, laneway_env


def slow_after_first(x: int) -> int:
    if x > 0:
        time.sleep(DEADLOCK_TIMEOUT)  # simulated long work that cancellation must stop
    return x


def square(x: int) -> int:
    return x * x


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait (event-driven, with pidfds) until the processes exit; return those still alive."""
    fds = {}
    for pid in pids:
        try:
            fds[os.pidfd_open(pid)] = pid
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + seconds
    try:
        while fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(fds), [], [], deadline - time.monotonic())
            for fd in ready:
                os.close(fd)
                del fds[fd]
    finally:
        alive = list(fds.values())
        for fd in fds:
            os.close(fd)
    return alive


def test_breaking_out_of_imap_stops_its_workers() -> None:
    """Closing an imap early frees the pool at once for the next call."""
    results = laneway.imap(slow_after_first, range(10), backend="process", workers=2,
                           chunksize=1)
    assert next(results) == 0
    results.close()  # type: ignore[attr-defined]
    # with the long items still running this would raise TimeoutError
    assert laneway.parallel_map(square, range(4), backend="process", timeout=20) == [0, 1, 4, 9]


PROGRAM = textwrap.dedent(
    """
    import os, sys, time
    import laneway

    def long_task(x):
        os.write(1, f"{os.getpid()}\\n".encode())  # "started" in one atomic write
        time.sleep(120)
        return x

    if __name__ == "__main__":
        laneway.parallel_map(long_task, range(4), backend="process", chunksize=1)
    """
)


def _start_program(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """Start the program; return it once both workers have started a long item."""
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    program = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=laneway_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert program.stdout is not None
    lines = [program.stdout.readline() for _ in range(2)]  # blocks until both started
    assert all(line.strip() for line in lines), program.communicate(timeout=DEADLOCK_TIMEOUT)
    return program, [int(line) for line in lines]


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_leaves_no_worker(tmp_path: Path) -> None:
    """SIGINT to a program in the middle of a run: it exits and its workers are gone."""
    program, workers = _start_program(tmp_path)
    program.send_signal(signal.SIGINT)
    _, stderr = program.communicate(timeout=DEADLOCK_TIMEOUT)
    assert "KeyboardInterrupt" in stderr
    assert _wait_gone(workers, 5.0) == []


@pytest.mark.slow
def test_killed_parent_leaves_no_worker(tmp_path: Path) -> None:
    """SIGKILL of the parent: its workers notice and exit within 5 s."""
    program, workers = _start_program(tmp_path)
    program.kill()
    program.communicate(timeout=DEADLOCK_TIMEOUT)
    assert _wait_gone(workers, 5.0) == []

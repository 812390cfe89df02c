"""Behaviours a review found missing; each test failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT


def slow(x: int) -> int:
    time.sleep(0.05)  # task work
    return x


def test_serial_run_honours_timeout() -> None:
    """timeout= also bounds a serial run (checked between its chunks)."""
    with pytest.raises(TimeoutError, match="timeout=0.2"):
        laneway.parallel_map(slow, range(40), backend="serial", timeout=0.2)


def test_thread_task_raising_systemexit_fails_its_item() -> None:
    """SystemExit in a thread task is that item's failure, not a hang."""
    def leave(x: int) -> int:
        if x == 1:
            raise SystemExit(3)
        return x

    got = laneway.parallel_map(leave, range(4), backend="thread", errors="return",
                               timeout=DEADLOCK_TIMEOUT)
    assert got[0] == 0 and got[2:] == [2, 3]
    assert isinstance(got[1], SystemExit)


def test_thread_backend_runs_workers_items_at_once() -> None:
    """workers=3 really runs three items at the same time (they meet at a barrier)."""
    barrier = threading.Barrier(3)

    def meet(x: int) -> int:
        barrier.wait(DEADLOCK_TIMEOUT)
        return x

    for _ in range(20):  # the old idle-count race showed up in some rounds only
        assert laneway.parallel_map(meet, range(3), backend="thread", workers=3,
                                    chunksize=1) == [0, 1, 2]


def test_script_without_main_guard_fails_clearly(tmp_path: Path) -> None:
    """A script that starts work at top level gets an explanation, not endless respawns."""
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(
        """
        import laneway

        def triple(x):
            return 3 * x

        print(laneway.parallel_map(triple, [1, 2], backend="process", errors="return"))
        """
    ))
    done = _run_script(script)
    assert 'if __name__ == "__main__":' in done.stdout, (done.stdout, done.stderr[-2000:])


def _run_script(script: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that imports this laneway."""
    env = dict(os.environ)
    package_root = str(Path(laneway.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=DEADLOCK_TIMEOUT, cwd=script.parent, env=env, check=False)


def test_runs_in_other_threads_survive_the_first_async_run(tmp_path: Path) -> None:
    """The first async run imports the async backend (asyncio: slow); a run ending in
    another thread meanwhile used to find the half-imported module and fail."""
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(
        """
        import threading
        import laneway

        async def echo(x):
            return x

        if __name__ == "__main__":
            errors, stop = [], threading.Event()

            def busy():
                while not stop.is_set():
                    try:
                        laneway.parallel_map(abs, [1, -2], backend="serial")
                    except Exception as exc:
                        errors.append(repr(exc))
                        return

            other = threading.Thread(target=busy)
            other.start()
            assert laneway.parallel_map(echo, [1, 2], backend="async") == [1, 2]
            stop.set()
            other.join()
            print("errors:", errors)
        """
    ))
    done = _run_script(script)
    assert "errors: []" in done.stdout, (done.stdout, done.stderr[-2000:])


def crash_always(x: int) -> int:
    os._exit(2)


def test_each_failed_item_has_its_own_exception() -> None:
    """Failures covering several items are distinct objects with their own index."""
    got = laneway.parallel_map(crash_always, range(12), backend="process", workers=2,
                               chunksize=1, errors="return")
    assert len({id(g) for g in got}) == len(got)
    assert all(isinstance(g, laneway.LanewayError) for g in got)
    assert all(len(getattr(g, "__notes__", [])) == 1 for g in got)


def test_env_max_workers_caps_default_thread_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """LANEWAY_MAX_WORKERS caps default pool sizes; an explicit workers= is obeyed."""
    monkeypatch.setenv("LANEWAY_MAX_WORKERS", "1")
    laneway.parallel_map(abs, range(10), kind="io")
    plan = laneway.last_plan()
    assert plan is not None and plan.workers == 1
    laneway.parallel_map(abs, range(10), kind="io", workers=3)
    plan = laneway.last_plan()
    assert plan is not None and plan.workers == 3

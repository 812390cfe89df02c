"""Behaviours a review found missing; each test failed before its fix."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT, laneway_env, run_script


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
    done = run_script(script)
    assert 'if __name__ == "__main__":' in done.stdout, (done.stdout, done.stderr[-2000:])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_runs_its_own_process_pool(tmp_path: Path) -> None:
    """After os.fork(), the child's process runs start a fork server and workers of its
    own (the parent's server is not its child: multiprocessing raised ChildProcessError),
    and the parent's pool goes on working."""
    script = tmp_path / "forked.py"
    script.write_text(textwrap.dedent(
        """
        import os
        import laneway

        def square(x):
            return x * x

        if __name__ == "__main__":
            laneway.parallel_map(square, range(4), backend="process")
            pid = os.fork()
            if pid == 0:
                try:
                    print("child", laneway.parallel_map(square, range(4), backend="process"),
                          flush=True)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            print("parent", laneway.parallel_map(square, range(3), backend="process"))
        """
    ))
    done = run_script(script)
    assert "child [0, 1, 4, 9]" in done.stdout, (done.stdout, done.stderr[-2000:])
    assert "parent [0, 1, 4]" in done.stdout, (done.stdout, done.stderr[-2000:])
    assert "Error" not in done.stderr, done.stderr[-2000:]


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.pidfd_open (Linux)")
def test_workers_exit_with_their_parent_despite_a_forked_child(tmp_path: Path) -> None:
    """A child forked after the pool started (a daemonised helper, say) must not keep the
    parent's workers alive once the parent is killed: it closes its copies of the pool's
    pipes right after the fork."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(
        """
        import os, signal, sys
        import laneway
        from laneway._backends.process.pool import default_pool

        def square(x):
            return x * x

        if __name__ == "__main__":
            laneway.parallel_map(square, range(4), backend="process")
            workers = default_pool().worker_pids()
            pid = os.fork()
            if pid == 0:  # lives on until the test closes its stdin
                sys.stdin.read()
                os._exit(0)
            print(pid, *workers, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    ))
    with subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=laneway_env()) as parent:
        assert parent.stdout is not None and parent.stdin is not None
        child, *workers = map(int, parent.stdout.readline().split())
        try:
            exits = [_exit_notice(w) for w in workers]  # (before they could be reaped)
            parent.wait(DEADLOCK_TIMEOUT)
            assert workers and _exit_notice(child) is not None
            for notice in exits:  # readable once the worker has exited
                if notice is not None:
                    ready, _, _ = select.select([notice], [], [], DEADLOCK_TIMEOUT)
                    os.close(notice)
                    assert ready, "a worker outlived its killed parent"
        finally:
            parent.stdin.close()  # the forked child exits


def _exit_notice(pid: int) -> int | None:
    """A pidfd of ``pid`` (readable when it exits), or None if it is gone already."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


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
    done = run_script(script)
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


def test_runs_open_together_each_get_their_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs open at once with workers=1 each (two threads' calls, two Executors) get a
    worker each, as two pools would give them; they shared one before, which ran them
    one after the other.  Beyond the machine's CPUs (or the largest single request),
    runs share instead of oversubscribing."""
    import gc
    import queue

    from laneway._backends.process import pool as pool_module

    monkeypatch.setattr(pool_module, "available_cpus", lambda: 2)
    pool = pool_module.ProcessPool()
    try:
        sink: queue.SimpleQueue[object] = queue.SimpleQueue()
        first = pool.open_run(abs, sink, 1)
        assert pool.size() == 1
        second = pool.open_run(abs, sink, 1)
        assert pool.size() == 2
        third = pool.open_run(abs, sink, 1)  # (2 CPUs: the three share 2 workers)
        assert pool.size() == 2
        for run in (first, second, third):
            run.close()
        assert not pool._demand  # every closed run forgotten
        dropped = pool.open_run(abs, sink, 1)
        del dropped  # a run dropped without close() is forgotten too (its finalizer;
        gc.collect()  # a run is its own group: a cycle, freed by the collector)
        pool.open_run(abs, sink, 1).close()
        assert not pool._demand
    finally:
        pool.shutdown()

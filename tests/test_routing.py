"""Measuring and routing: the cost model on fixed measurements, profiling inside runs, CLI."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import laneway
from _support import DEADLOCK_TIMEOUT, laneway_env
from laneway._profile import FirstCall, Measurement, cached_measurement, measure_calls
from laneway._router import estimate, measured_kind


def m(wall: float, cpu: float, gil: bool | None, size: int | None = 40) -> Measurement:
    return Measurement(calls=3, wall_s=wall, cpu_s=cpu, releases_gil=gil,
                       arg_bytes=None if size is None else size // 2,
                       result_bytes=None if size is None else size // 2)


@pytest.mark.parametrize(
    ("measurement", "total", "backend", "kind"),
    [
        (m(40e-3, 40e-3, False), 64, "process", "cpu"),          # pure-Python loops
        (m(0.1e-6, 0.1e-6, False), 100_000, "serial", "cpu"),    # x*x: too small for a pool
        (m(20e-3, 20e-6, True), 400, "thread", "io"),            # sleep / sockets
        (m(2e-3, 2e-3, True, 2_600_000), 32, "thread", "native"),  # numpy matmul on big arrays
        (m(13e-3, 13e-3, True, 16_000_000), 32, "thread", "native"),  # sha256 of 16 MB
        (m(40e-3, 40e-3, False, None), 64, "serial", "cpu"),     # cannot be pickled: no process
        (m(1e-3, 1e-3, False, 40_000_000), 64, "serial", "cpu"),  # pickling outweighs the gain
        (m(40e-3, 40e-3, False), 1, "serial", "cpu"),            # one item left: nothing to share
        (m(12e-6, 12e-6, None), 49, "serial", "cpu"),            # 0.6 ms in all: below a run's cost
        (m(14e-6, 14e-6, None), 194, "serial", "cpu"),           # 2.7 ms in all: still too little
    ],
)
def test_cost_model_choices(measurement: Measurement, total: int, backend: str,
                            kind: str) -> None:
    """Fixed measurements route where an expert would send them."""
    verdict = estimate(measurement, total, cpus=2, pool_warm=True)
    assert (verdict.backend, verdict.kind) == (backend, kind), verdict.reason
    assert measured_kind(measurement) == kind


def test_io_threads_sized_from_wait_ratio() -> None:
    """I/O pools get cores x (1 + wait/compute) threads, capped, never more than items."""
    assert estimate(m(10e-3, 4e-3, True), 1000, cpus=2).workers == 5  # 2 x (1 + 6/4)
    assert estimate(m(20e-3, 20e-6, True), 400, cpus=2).workers == 400
    assert estimate(m(20e-3, 20e-6, True), 100_000, cpus=2).workers == 512


def test_work_computing_in_child_processes_gets_a_few_more_threads_than_cpus() -> None:
    """Running programs (most of the CPU in child processes waited for): threads, CPUs +
    4 of them (never more than items); native work computing in-process: CPUs."""
    runs_programs = replace(m(0.8e-3, 0.8e-3, True), child_cpu_s=0.7e-3)
    verdict = estimate(runs_programs, 1000, cpus=2, pool_warm=True)
    assert (verdict.backend, verdict.workers) == ("thread", 6), verdict.reason
    assert "child processes" in verdict.reason
    assert estimate(runs_programs, 3, cpus=2, pool_warm=True).workers == 3
    hashes = replace(m(9e-3, 9e-3, True), child_cpu_s=0.1e-3)  # (a little: not the rule)
    assert estimate(hashes, 1000, cpus=2, pool_warm=True).workers == 2


def test_cold_pool_costs_startup() -> None:
    """A handful of medium CPU items do not pay for starting processes."""
    few = m(20e-3, 20e-3, False)
    assert estimate(few, 4, cpus=2, pool_warm=False).backend == "serial"
    assert estimate(few, 4, cpus=2, pool_warm=True).backend == "process"


def test_measure_calls_with_fake_clocks() -> None:
    """The measuring loop reports per-call wall and CPU from the clocks it is given."""
    wall = itertools.count(0, 0.010)   # each reading advances 10 ms
    cpu = itertools.count(0, 0.002)    # read at the start and at the end only
    sample = measure_calls(lambda x: x + 1, iter(range(100)), budget_s=0.035,
                           clock=lambda: next(wall), thread_clock=lambda: next(cpu),
                           probe_gil=False)
    # readings: start 0, then after 1, 3, 5, 6 items: 10/20/30/40 ms, stop at >= 35 ms,
    # end 50 ms.  Steps double but never past what fits in the budget left: after 1
    # item (10 ms each) 2 fit, after 3 (6.7 ms each) 2 fit, after 5 (6 ms) none: 1.
    assert sample.values == list(range(1, 7))
    assert sample.measurement.calls == 6
    assert sample.measurement.wall_s == pytest.approx(0.050 / 6)
    assert sample.measurement.cpu_s == pytest.approx(0.002 / 6)
    assert sample.measurement.releases_gil is None


def test_measuring_goes_on_until_the_gil_canary_can_tell() -> None:
    """A short run reaches its share of measuring (3% of 32 x 0.6 ms) after one call,
    too soon for the canary's verdict (4 wake-ups take at least 4 x CANARY_SLEEP_S =
    1 ms): measuring goes on until the canary can tell or has watched PROBE_MIN_S.
    (A run of 32 numpy products went serial one time in three for want of a verdict.)"""
    from laneway._profile import CANARY_SLEEP_S, MIN_CANARY_WAKEUPS, PROBE_MIN_S

    item_s = 0.0006
    assert item_s < MIN_CANARY_WAKEUPS * CANARY_SLEEP_S  # (the premise)
    sample = measure_calls(lambda x: time.sleep(item_s), iter(range(32)), total=32)
    m = sample.measurement
    # (on a quiet machine that takes a second call or more; on a loaded one a sleep can
    # overrun enough for the first call alone to settle it: either way, no stop without
    # a verdict before PROBE_MIN_S)
    assert m.releases_gil is not None or m.wall_s * m.calls >= PROBE_MIN_S - 0.0005


def test_slow_first_call_is_the_whole_sample() -> None:
    """A first call (made through ``submit``) that used up the budget is not followed by
    more items run one by one in the caller: the pool takes the rest."""
    wall = itertools.count(0, 0.030)  # each reading advances 30 ms: over a 20 ms budget
    ran: list[int] = []

    def work(x: int) -> int:
        ran.append(x)
        return x * 10

    sample = measure_calls(work, iter(range(100)), budget_s=0.020, probe_gil=False,
                           clock=lambda: next(wall), submit=lambda job: job(), total=100)
    assert ran == [0]
    assert sample.values == [0]
    assert sample.measurement.calls == 1
    assert not sample.exhausted and sample.pending is None


def test_first_call_is_timed_without_its_hand_over() -> None:
    """The first call's time is its own (read on the pool thread), not the 10 ms the
    caller spent handing it over and getting it back: a tiny call stays tiny."""
    readings = iter([0.0, 0.010, 0.010001, 0.020, 0.020001])  # see the comments below
    sample = measure_calls(lambda x: x, iter(range(10)), probe_gil=False,
                           clock=lambda: next(readings), submit=lambda job: job(), total=10)
    # caller starts (0), the call runs 10.000-10.001 ms on the "pool thread", the caller
    # sees it done at 20 ms; 10 items of ~1 us: 3 % of the run is less than one item
    assert sample.values == [0]
    assert sample.measurement.wall_s < 1e-4


def test_a_slow_first_call_does_not_set_the_pace_of_the_rest() -> None:
    """The first call pays one-off costs (a cold cache, a lazy import, the hand-over to a
    pool thread): when later calls were measured too, the time per item is theirs, so
    200 tiny items are not taken for 0.3 ms ones (which a warm process pool would get)."""
    calls: list[int] = []

    def warm_up_then_tiny(x: int) -> int:
        if not calls:
            time.sleep(0.002)  # task work: a one-off warm-up on the first call only
        calls.append(x)
        return x

    sample = measure_calls(warm_up_then_tiny, iter(range(200)), probe_gil=False,
                           submit=lambda job: job(), total=200)
    assert sample.values == calls == list(range(len(calls)))
    assert sample.measurement.calls > 1
    assert sample.measurement.wall_s < 5e-5, sample.measurement  # (~0.3 ms averaged in)


def record(args: tuple[str, int]) -> int:
    folder, x = args
    os.close(os.open(os.path.join(folder, f"{x}.ran"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    time.sleep(0.002)  # task work: a few items run while measuring, the rest elsewhere
    return x


def test_profiled_run_runs_every_item_exactly_once(tmp_path: Path) -> None:
    """Measured items are not run again: one file per item, results in order."""
    items = [(str(tmp_path), x) for x in range(300)]
    assert laneway.parallel_map(record, items) == list(range(300))
    assert len(list(tmp_path.glob("*.ran"))) == 300
    plan = laneway.last_plan()
    assert plan is not None and "measured" in plan.reason


def waits(x: int) -> int:
    time.sleep(0.005)  # task work: waiting
    return x


def test_waiting_work_goes_to_many_threads_and_is_cached() -> None:
    """Sleep-like work is measured as waiting, runs on threads, and is measured once."""
    assert laneway.parallel_map(waits, range(60)) == list(range(60))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread" and plan.kind == "io"
    assert plan.workers > laneway.available_cpus()
    assert cached_measurement(waits) is not None
    assert list(laneway.imap(waits, range(10))) == list(range(10))


def test_imap_plan_known_after_first_result() -> None:
    """An unhinted imap measures on its first next(); the plan is readable then."""
    results = laneway.imap(lambda x: x * 3, itertools.count())
    assert next(results) == 0
    plan = laneway.last_plan()
    assert plan is not None and "measured" in plan.reason
    results.close()  # type: ignore[attr-defined]


def test_classify_reports_measurements_and_keeps_result() -> None:
    """classify runs the call once and returns its result with the measurements."""
    profile = laneway.classify(time.sleep, 0.03)
    assert profile.kind == "io" and profile.backend == "thread"
    assert profile.result is None
    assert profile.wall_s >= 0.03 and profile.cpu_ratio < 0.5
    assert profile.releases_gil is True
    assert "waiting" in profile.reason
    assert laneway.classify(pow, 2, 10).result == 1024


async def doubled_later(x: int) -> int:
    import asyncio

    await asyncio.sleep(0.001)
    return 2 * x


def test_classify_a_coroutine_function_reports_where_parallel_map_routes_it() -> None:
    """Profile.backend is what the call would route to: the async backend, for a
    coroutine function, as parallel_map's plan says."""
    profile = laneway.classify(doubled_later, 4)
    assert profile.result == 8
    assert profile.kind == "async" and profile.backend == "async"
    assert "coroutine function" in profile.reason
    assert laneway.parallel_map(doubled_later, [1, 2]) == [2, 4]
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == profile.backend


def test_one_canary_thread_serves_every_measurement_and_parks_between() -> None:
    """The GIL canary is one thread for the process, started by the first measurement
    and parked when none watches it; a verdict counts only its own wake-ups."""
    from laneway import _profile

    assert laneway.classify(time.sleep, 0.03).releases_gil is True
    canaries = [t for t in threading.enumerate() if t.name == "laneway-canary"]
    assert len(canaries) == 1
    assert _profile._canary._watchers == 0 and not _profile._canary._watched.is_set()
    assert laneway.classify(time.sleep, 0.03).releases_gil is True
    assert [t for t in threading.enumerate() if t.name == "laneway-canary"] == canaries
    with _profile._Watch() as watch:  # watched for no time: nothing to tell
        pass
    assert watch.verdict(0.0) is None


def test_classify_propagates_the_call_error() -> None:
    """An exception from the classified call is raised as itself."""
    with pytest.raises(ZeroDivisionError):
        laneway.classify(divmod, 1, 0)


def _cli(*args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "laneway", *args], capture_output=True,
                          text=True, timeout=DEADLOCK_TIMEOUT, env=laneway_env(**variables),
                          check=False)


def test_cli_info_and_classify() -> None:
    """python -m laneway info / classify print what they promise."""
    info = _cli("info")
    assert info.returncode == 0
    assert "available_cpus()" in info.stdout and "start method" in info.stdout
    capped = _cli("info", LANEWAY_MAX_WORKERS="8").stdout
    assert "at most 8 (measured)" in capped and "unmeasured I/O   8 " in capped, capped
    classified = _cli("classify", "time:sleep", "0.02")
    assert classified.returncode == 0
    assert "kind 'io', backend 'thread'" in classified.stdout
    bad = _cli("classify", "nonexistent_module_xyz:f")
    assert bad.returncode == 2 and "cannot load" in bad.stderr


def test_cli_bench_prints_every_probe_and_variant() -> None:
    """python -m laneway bench --quick: a row per probe, a time and speedup per variant,
    laneway's choice; bad options are usage errors."""
    bench = _cli("bench", "--quick")
    assert bench.returncode == 0, bench.stderr
    rows = {line.split("|")[1].strip(): line for line in bench.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| probe")}
    assert set(rows) == {"cpu", "native", "io"}
    for row in rows.values():
        assert row.count(" ms") == 4 and row.count("x)") == 3
        assert row.rstrip(" |").split()[-1] in ("serial", "thread", "process")
    bad = _cli("bench", "--reps", "0")
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_bench_table_and_plot_error() -> None:
    """The bench table shows each variant's time and speedup over serial; --plot without
    matplotlib says which extra to install, before running anything."""
    from laneway import _bench

    probe = _bench.Probe("cpu", "loop", _bench.spin, [1, 2], 2)
    result = _bench.Result(probe, {"serial": 0.2, "threads": 0.4, "processes": 0.1,
                                   "laneway": 0.125}, "process")
    table = _bench.render([result], cpus=2, reps=3)
    assert "| cpu | loop | 2 | 200 ms | 400 ms (0.50x) | 100 ms (2.00x) | " \
           "125 ms (1.60x) process |" in table
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plotted = _cli("bench", "--quick", "--plot", "out.png")
        assert plotted.returncode == 2 and "laneway[plot]" in plotted.stderr
    else:
        pytest.skip("matplotlib is installed: the missing-extra error cannot show")


def test_a_waiting_first_call_is_known_before_it_ends() -> None:
    """An unhinted run whose first item waits is planned while that item still runs:
    here item 0 can only finish once another item has started."""
    another_started = threading.Event()

    def first_waits_for_the_others(x: int) -> int:
        if x == 0:
            if not another_started.wait(DEADLOCK_TIMEOUT):
                raise TimeoutError("the other items never started: the run waited for item 0")
        else:
            another_started.set()
        return x

    assert laneway.parallel_map(first_waits_for_the_others, range(20)) == list(range(20))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread", plan
    cached = cached_measurement(first_waits_for_the_others)
    assert cached is not None and cached.calls == 1  # the real call, once it ended


def test_first_call_probe_reports_waiting_then_delivers() -> None:
    """FirstCall: found waiting while blocked; its outcome comes through when_done."""
    release = threading.Event()
    outcomes: list[object] = []

    def blocked(x: int) -> int:
        release.wait(DEADLOCK_TIMEOUT)
        return x + 1

    def start(job: Callable[[], None]) -> None:
        threading.Thread(target=job).start()

    call = FirstCall(blocked, 41, start)
    assert call.wait() is False  # waiting: it has used almost no CPU
    done = threading.Event()
    call.when_done(lambda c: (outcomes.append(c.value), done.set()))
    release.set()
    assert done.wait(DEADLOCK_TIMEOUT)
    assert outcomes == [42] and call.failure is None and call.wall_s > 0


def first_waits_for_the_others(job: tuple[str, int]) -> str:
    """Item 0 computes until a later item has run (it leaves a file), others leave it."""
    flag, x = job
    if x:
        Path(flag).touch()
        return "other"
    alarm = time.monotonic() + DEADLOCK_TIMEOUT
    while not os.path.exists(flag):  # computing (a busy loop), not waiting
        if time.monotonic() > alarm:
            return "alarm"
    return "released"


def test_a_first_call_computing_past_the_budget_does_not_hold_back_the_rest(
        tmp_path: Path) -> None:
    """The first item of an unhinted run, still computing when the measuring budget is
    spent, goes on while the other items are planned and run (before, they waited for
    it: an item that ran alone for a second idled the pool for that second)."""
    flag = str(tmp_path / "ran")
    jobs = [(flag, x) for x in range(6)]
    # (workers=2: the first item holds one slot while it runs, and it waits for another
    # item to start; on a 1-CPU machine the default would be 1)
    got = laneway.parallel_map(first_waits_for_the_others, jobs, workers=2)
    assert got == ["released"] + ["other"] * 5
    plan = laneway.last_plan()
    assert plan is not None and "measured 1 call" in plan.reason, plan


def fails_on_sevens(x: int) -> int:
    if x % 1000 == 7:
        raise ValueError(f"seven: {x}")
    return x * 2


def test_measured_failures_keep_their_positions() -> None:
    """Tiny items measured in bulk: each failure stays at its own item."""
    got = laneway.parallel_map(fails_on_sevens, range(20_000), errors="return")
    for x, value in enumerate(got):
        if x % 1000 == 7:
            assert isinstance(value, ValueError) and str(value) == f"seven: {x}"
        else:
            assert value == x * 2


def test_an_iterable_that_fails_while_measured_raises_its_own_error() -> None:
    """An error of the input itself is not taken for an item's failure."""
    def numbers() -> Iterator[int]:
        yield from range(5000)
        raise OSError("the input broke")

    with pytest.raises(OSError, match="the input broke"):
        laneway.parallel_map(lambda x: x + 1, numbers(), errors="return")


def test_a_failure_found_while_measuring_stops_the_run_before_more_items_are_sent() -> None:
    """errors="raise": a failure among the measured items is raised before any other item
    goes to a pool."""
    ran: list[int] = []

    def fails_first(x: int) -> int:
        ran.append(x)
        if x == 0:
            raise ValueError("first")
        time.sleep(0.001)  # task work: ~1 ms each, so ~20 ms of them are measured
        return x

    with pytest.raises(ValueError, match="first"):
        laneway.parallel_map(fails_first, range(1000))
    assert len(ran) < 100, len(ran)  # the sample only, not a window of pool chunks


def test_timeout_bounds_a_long_first_item_while_it_is_measured() -> None:
    """timeout= holds while the first item of an unmeasured function still computes."""
    stop = threading.Event()

    def computes_until_stopped(x: int) -> int:
        deadline = time.monotonic() + DEADLOCK_TIMEOUT
        while not stop.is_set():  # CPU-bound task work, until the test is done
            if time.monotonic() > deadline:
                raise RuntimeError("the run waited for its first item: timeout ignored")
        return x

    try:
        with pytest.raises(TimeoutError, match="timeout=0.2"):
            laneway.parallel_map(computes_until_stopped, range(4), timeout=0.2)
    finally:
        stop.set()


def _computing_child(squares: int) -> int:
    """Task work: run a child process that sums ``squares`` squares, and wait for it."""
    done = subprocess.run([sys.executable, "-c", f"sum(i * i for i in range({squares}))"],
                          check=True)
    return done.returncode


def runs_a_computing_child(_: object) -> int:
    return _computing_child(2_000_000)  # (~50-100 ms of CPU)


def runs_a_long_computing_child(_: object) -> int:
    return _computing_child(8_000_000)  # (~0.3-0.5 s of CPU)


@pytest.mark.skipif(sys.platform == "win32", reason="no RUSAGE_CHILDREN on Windows")
def test_cpu_of_a_child_process_the_call_waited_for_counts_as_computing() -> None:
    """subprocess.run computes in its child: that CPU time is the call's, not waiting."""
    sample = measure_calls(runs_a_computing_child, iter([None]), probe_gil=False)
    assert sample.values == [0]
    assert sample.measurement.cpu_s >= 0.03  # the child's CPU; the caller's own is ~1 ms
    assert 0.03 <= sample.measurement.child_cpu_s <= sample.measurement.cpu_s


@pytest.mark.skipif(sys.platform == "win32", reason="no RUSAGE_CHILDREN on Windows")
def test_a_first_call_that_is_the_whole_sample_counts_its_child_once() -> None:
    """The first call's children, reaped, are in the process-wide RUSAGE_CHILDREN that
    the caller's clock reads too: counted once (it was twice: 140 ms of CPU for a
    70 ms child, a CPU share of 2)."""
    from laneway._backends.threads import default_thread_pool

    # (no early look before it ends: a cold machine can still be starting the child
    # program, reading its files, 4 ms in, and the call would then be taken for waiting)
    sample = measure_calls(runs_a_computing_child, iter(range(3)), total=3,
                           submit=default_thread_pool().submit, probe_gil=False,
                           early_s=DEADLOCK_TIMEOUT)
    m = sample.measurement
    assert m.calls == 1 and sample.pending is None
    assert m.child_cpu_s >= 0.03
    assert m.cpu_s <= m.child_cpu_s + 0.02  # the child's, and the thread's own ~1 ms
    assert m.cpu_s <= 1.3 * m.wall_s + 0.005  # (a one-thread program: no more CPU than wall)


_SPINS_IN_A_THREAD = (  # computes ~0.3 s in a second thread, says so, waits for stdin
    "import sys, threading, time\n"
    "def spin():\n"
    "    began = time.thread_time()\n"
    "    while time.thread_time() - began < 0.3: pass\n"
    "t = threading.Thread(target=spin); t.start(); t.join()\n"
    "print('done', flush=True); sys.stdin.read()\n")


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc")
def test_running_children_cpu_counts_threads_and_descendants_of_new_children_only(
) -> None:
    """The CPU of a running program counts all its threads and its own children (here
    a shell that runs Python), and a program the thread started before the measured
    call does not count."""
    from laneway._profile import child_pids, running_children_cpu

    me = threading.get_native_id()
    before = child_pids(me)  # (this thread's older children: the fork server, say)
    assert running_children_cpu(me, before) == 0.0
    program = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0"; true',
                                _SPINS_IN_A_THREAD],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert program.stdout is not None and program.stdin is not None
        assert program.stdout.readline() == "done\n"  # (the grandchild computed)
        assert running_children_cpu(me, before) >= 0.3
        assert running_children_cpu(me, exclude=child_pids(me)) == 0.0
    finally:
        if program.stdin is not None:
            program.stdin.close()
        program.wait(DEADLOCK_TIMEOUT)
        if program.stdout is not None:
            program.stdout.close()


def test_hinted_io_threads_are_sized_from_a_measurement(tmp_path: Path) -> None:
    """@io_bound keeps threads but sizes them like measured I/O: many short waits get a
    thread each (not a fixed 64), every item runs once, and the size is explained."""
    naps = laneway.io_bound(_fresh_waits(0.05))
    items = [(str(tmp_path), x) for x in range(120)]
    assert laneway.parallel_map(naps, items) == list(range(120))
    assert len(list(tmp_path.glob("*.ran"))) == 120
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread" and plan.kind == "io"
    assert plan.workers > 64, plan.reason
    assert "hinted 'io'" in plan.reason and "measured" in plan.reason, plan.reason
    assert cached_measurement(naps) is not None


def test_io_forced_onto_threads_is_sized_from_a_measurement_too() -> None:
    """backend="thread" with kind="io" says where, not how many: the first call is
    measured for the size; forced elsewhere, nothing is measured."""
    naps = _fresh_waits(0.05)
    items = [("", x) for x in range(120)]
    assert laneway.parallel_map(naps, items, backend="thread", kind="io") == list(range(120))
    plan = laneway.last_plan()
    assert plan is not None and plan.workers > 64 and "measured" in plan.reason, plan
    assert laneway.parallel_map(naps, items[:4], backend="serial", kind="io") == [0, 1, 2, 3]
    plan = laneway.last_plan()
    assert plan is not None and "measured" not in plan.reason, plan


def test_hinted_io_with_workers_or_task_timeout_is_not_measured() -> None:
    """workers= fixes the size; task_timeout keeps the first item off the caller: no
    measurement, the hinted default."""
    naps = laneway.io_bound(_fresh_waits(0.01))
    items = [("", x) for x in range(8)]
    assert laneway.parallel_map(naps, items, workers=3) == list(range(8))
    plan = laneway.last_plan()
    assert plan is not None and plan.workers == 3 and "measured" not in plan.reason
    assert laneway.parallel_map(naps, items, task_timeout=DEADLOCK_TIMEOUT) == list(range(8))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread" and "measured" not in plan.reason
    assert cached_measurement(naps) is None


def _fresh_waits(seconds: float) -> Callable[[tuple[str, int]], int]:
    """A new function object each time (measurements are cached per function)."""

    def naps(job: tuple[str, int]) -> int:
        folder, x = job
        if folder:
            Path(folder, f"{x}.ran").touch(exist_ok=False)
        time.sleep(seconds)  # task work: waiting
        return x

    return naps


class _Peak:
    """How many calls run at once, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = 0

    def __call__(self, x: int) -> int:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        threading.Event().wait(0.02)  # the work: waiting (found so at the early look)
        with self.lock:
            self.now -= 1
        return x


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_counts_the_first_item_still_running(workers: int) -> None:
    """workers=N means at most N items at once, the first, measured item included: found
    waiting, it goes on on its own pool thread while the rest starts, and it holds one of
    the N slots until it ends (it ran beside N others: N + 1 at once)."""
    task = _Peak()
    got = laneway.parallel_map(task, range(8), workers=workers)
    assert got == list(range(8))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread" and plan.workers == workers, plan
    assert "0%" in plan.reason or "waiting" in plan.reason, plan.reason  # (the path tested)
    assert task.peak == workers


def test_a_pool_sized_from_a_waiting_first_item_has_a_slot_for_every_item() -> None:
    """Waiting work gets one thread per item (at most 512): the first item, still running
    and holding one of the slots, counts among them, so none of the others waits."""
    task = _Peak()
    assert laneway.parallel_map(task, range(30)) == list(range(30))
    plan = laneway.last_plan()
    assert plan is not None and plan.backend == "thread", plan
    assert "0%" in plan.reason or "waiting" in plan.reason, plan.reason
    assert plan.workers == 30, plan


def spans_logged(job: tuple[str, int]) -> int:
    """Compute (~0.3 s for item 0, ~10 ms for the others) and log the span it ran in."""
    log, x = job
    began = time.monotonic()
    end = began + (0.3 if x == 0 else 0.01)
    while time.monotonic() < end:  # computing
        pass
    with open(log, "a") as f:
        f.write(f"{began} {time.monotonic()}\n")
    return x


def test_workers_counts_a_long_first_item_on_the_process_backend(tmp_path: Path) -> None:
    """A first item still computing past the measuring budget holds one of the process
    run's worker slots: with workers=1 no other item starts in a process before it ends."""
    laneway.parallel_map(abs, [1, 2], backend="process", workers=2)  # a warm pool
    log = str(tmp_path / "spans")
    got = laneway.parallel_map(spans_logged, [(log, x) for x in range(6)], workers=1)
    assert got == list(range(6))
    plan = laneway.last_plan()
    # (processes, unless a saturated machine made the first item look half waiting:
    # then threads, and the rule holds there too; test_a_held_slot_keeps_... below
    # checks the process run's side without measuring)
    assert plan is not None and plan.backend in ("process", "thread"), plan
    assert plan.workers == 1, plan
    with open(log) as f:
        spans = sorted(tuple(map(float, line.split())) for line in f)
    assert len(spans) == 6
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"items overlapped: {spans}"


def test_a_held_slot_keeps_a_process_run_from_its_last_worker() -> None:
    """ProcessRun.hold_slot: with workers=1 and the slot held (the first item still
    running in the caller's process), the run's jobs wait; release_slot sends them."""
    import queue

    from laneway._backends.process.pool import ProcessPool
    from laneway._chunks import Chunk

    pool = ProcessPool()
    try:
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        run = pool.open_run(abs, sink, 1)
        run.hold_slot()
        run.submit(Chunk(0, 1, [-1, -2]))
        assert [job.run for job in pool._pending] == [run]  # not sent
        run.release_slot()
        assert not pool._pending
        values: list[Any] = []
        while len(values) < 2:  # (the worker hands in its steps as they finish)
            batch = sink.get(timeout=DEADLOCK_TIMEOUT)
            batch.decode()
            values += batch.values
        assert values == [1, 2]
        run.close()
    finally:
        pool.shutdown()



@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc")
def test_the_early_look_counts_the_cpu_of_a_running_child_process() -> None:
    """A first call that waits for a program computing in a child process is computing:
    the early look adds the running child's CPU so far (it is in RUSAGE_CHILDREN only
    once reaped), so the call is not taken for a waiting one (a run of programs would
    then get a thread per item, up to 512 programs at once)."""
    from laneway._backends.threads import default_thread_pool

    call = FirstCall(runs_a_long_computing_child, None, default_thread_pool().submit)
    # (a later look than the 4 ms default: the child has started and computes by then,
    # and goes on ~0.5 s after it)
    assert call.wait(early_s=0.1, deadline=time.monotonic() + DEADLOCK_TIMEOUT)
    assert call.value == 0
    assert call.child_cpu_s >= 0.2


def test_a_held_slot_outlasting_the_idle_timeout_does_not_strand_the_run() -> None:
    """While a run's jobs wait for its held slot, its idle workers are not stopped; and
    if the pool has lost its workers meanwhile, releasing the slot starts them again (a
    first item that ran past the 300 s idle timeout left a workers=1 run hanging)."""
    import queue
    from collections import deque

    from laneway._backends.process.pool import ProcessPool
    from laneway._chunks import Chunk

    pool = ProcessPool()
    try:
        sink: queue.SimpleQueue[Any] = queue.SimpleQueue()
        run = pool.open_run(abs, sink, 1)
        run.hold_slot()
        run.submit(Chunk(0, 1, [-3]))

        def idle_for_ages() -> None:
            for worker in pool._workers:
                worker.idle_since -= 10 * pool._idle_timeout
            pool._run_timers()

        idle_for_ages()
        assert pool.size() == 1  # kept: a job is waiting
        waiting, pool._pending = pool._pending, deque()
        idle_for_ages()  # (stopped as if nothing waited: the pool is left with none)
        assert pool.size() == 0
        pool._pending = waiting
        run.release_slot()
        batch = sink.get(timeout=DEADLOCK_TIMEOUT)
        batch.decode()
        assert batch.values == [3]
        run.close()
    finally:
        pool.shutdown()


def test_measuring_on_for_the_canary_still_grows_its_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past its share of the run, measuring goes on only until the GIL canary can tell;
    its steps keep doubling meanwhile (they stayed at one item: a run of 100 x*x paid
    ~2 us of clock reads and canary checks per item, 0.2 ms in all)."""
    from laneway import _profile
    from laneway._backends.threads import default_thread_pool

    steps: list[int] = []
    run_items = _profile._run_items

    def recording(call: Callable[[Any], Any], items: Iterator[Any], count: int,
                  values: list[Any], failures: Any) -> Any:
        steps.append(count)
        return run_items(call, items, count, values, failures)

    monkeypatch.setattr(_profile, "_run_items", recording)

    def twenty_us(x: int) -> int:  # (3% of 100 of these is 60 us: over after one)
        end = time.perf_counter() + 20e-6
        while time.perf_counter() < end:
            pass
        return x

    measure_calls(twenty_us, iter(range(100)), total=100,
                  submit=default_thread_pool().submit)
    assert steps and steps.count(1) <= 2 and max(steps) >= 4, steps

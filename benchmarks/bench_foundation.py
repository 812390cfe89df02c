"""Foundation benchmarks: laneway against the standard library, on the same machine, in one run.

Run ``python benchmarks/bench_foundation.py`` (``--quick`` for a smoke run, ``--reps N``,
``--only SECTION``); see benchmarks/README.md for what each section measures and why.

How the figures are taken:

* Every variant runs in its own interpreter, started by this script (``--child ...``),
  so one variant's pools, threads and imports never disturb another's.  Warm figures
  reuse that interpreter: it starts its pool, makes one warm-up call (checked for a
  correct result), then runs one measurement each time the parent asks.  The parent
  asks the variants round-robin, rotating the order every repetition, so the noise of
  a shared 2-core machine falls on all of them alike; the tables show medians.
* Cold figures (first-call, stream-rss) use a fresh interpreter per measurement, with
  the imports done before the clock starts (their cost is shown separately).

Functions that process pools run are defined at module level here: fork-server and
spawn workers import this file as ``__mp_main__`` to find them.  For that reason the
module level imports nothing heavy (no laneway, no multiprocessing): it would be paid
by the fork server of every variant.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

SECTIONS = ("tiny", "cpu", "sleep", "latency", "first-call", "stream-rss")

FULL: dict[str, Any] = {
    "tiny_n": 100_000, "tiny_inner": 5,
    "cpu_tasks": 64, "cpu_task_ms": 40.0,
    "sleep_tasks": 400, "sleep_s": 0.02,
    "lat_warmup": 50, "lat_calls": 200,
    "first_runs": 5,
    "stream_n": 2_000_000,
}
QUICK: dict[str, Any] = {
    "tiny_n": 20_000, "tiny_inner": 3,
    "cpu_tasks": 16, "cpu_task_ms": 10.0,
    "sleep_tasks": 100, "sleep_s": 0.02,
    "lat_warmup": 20, "lat_calls": 50,
    "first_runs": 2,
    "stream_n": 200_000,
}

CHILD_TIMEOUT_S = 300.0
"""Longest a child may take to answer one request before the run is aborted."""


# -- the work (module level: process workers import it from here) -------------------------


def sq(x: int) -> int:
    """The tiniest useful task."""
    return x * x


def spin(n: int) -> int:
    """Pure-Python CPU work: holds the GIL for the whole call."""
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def nap(seconds: float) -> None:
    """I/O-like work: waits without using the CPU."""
    time.sleep(seconds)


def call_each(fn: Any, items: list[Any]) -> None:
    """The body of a bare process: the cpu section's reference for the machine's ceiling."""
    for item in items:
        fn(item)


def numbers(n: int) -> Any:
    """A generator (no len()): the input of the streaming section."""
    return (i for i in range(n))


def sum_of_squares(n: int) -> int:
    """sum(i * i for i in range(n)), in closed form."""
    return (n - 1) * n * (2 * n - 1) // 6


# -- statistics ---------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    import statistics

    return statistics.median(xs)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(xs)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def rss_now_kb() -> int:
    """Current resident set size of this process (VmRSS), in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def peak_rss_kb() -> int:
    """Peak resident set size of this process so far, in KiB (Linux units)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- child side: one variant per interpreter --------------------------------------------------

def _no_close() -> None:
    return None


def make_runner(section: str, variant: str, p: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(run, close, expected) for a warm variant: ``run()`` does one unit of work."""
    if section in ("tiny", "latency"):
        fn: Any = sq
        items: list[Any] = list(range(p["tiny_n"] if section == "tiny" else 2))
        expected: Any = [sq(x) for x in items]
    elif section == "cpu":
        fn = spin
        items = [p["cpu_iters"]] * p["cpu_tasks"]
        expected = [spin(p["cpu_iters"])] * p["cpu_tasks"]
    elif section == "sleep":
        fn = nap
        items = [p["sleep_s"]] * p["sleep_tasks"]
        expected = [None] * p["sleep_tasks"]
    else:
        raise ValueError(section)

    if variant == "serial":
        return (lambda: list(map(fn, items))), _no_close, expected

    if variant.startswith("laneway"):
        import laneway

        keywords: dict[str, Any] = {}
        if variant == "laneway-process":
            keywords["backend"] = "process"
        elif variant == "laneway-process-ref":
            # The same function, imported from a module instead of found in __main__:
            # pickled by reference (and cached) instead of by value on every call.
            import importlib

            fn = importlib.import_module(os.path.splitext(os.path.basename(__file__))[0]).sq
            keywords["backend"] = "process"
        elif variant == "laneway-thread":
            keywords["backend"] = "thread"
        elif variant.startswith("laneway-io"):  # laneway-io, laneway-io-64, laneway-io-256
            keywords.update(backend="thread", kind="io")
            if variant != "laneway-io":
                keywords["workers"] = int(variant.rsplit("-", 1)[1])
        else:
            raise ValueError(variant)
        parallel_map = laneway.parallel_map
        return (lambda: parallel_map(fn, items, **keywords)), _no_close, expected

    if variant == "bare":  # no pool: two forked processes, half of the items each
        import multiprocessing

        context = multiprocessing.get_context("fork")

        def run_bare() -> Any:
            procs = [context.Process(target=call_each, args=(fn, items[k::2])) for k in (0, 1)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            if any(proc.exitcode for proc in procs):
                msg = "a bare process failed"
                raise RuntimeError(msg)
            return expected  # results stay in the children: this is only a time reference

        return run_bare, _no_close, expected

    if variant == "mp-pool":
        import multiprocessing

        pool = multiprocessing.get_context("forkserver").Pool(2)

        def close_pool() -> None:
            pool.terminate()
            pool.join()

        return (lambda: pool.map(fn, items)), close_pool, expected

    if variant in ("ppe", "tpe", "tpe-256"):
        import concurrent.futures as cf

        executor: cf.Executor
        if variant == "ppe":
            executor = cf.ProcessPoolExecutor(2)  # default context: fork on Linux, 3.11
        elif variant == "tpe":
            executor = cf.ThreadPoolExecutor()
        else:
            executor = cf.ThreadPoolExecutor(256)
        chunksize = 1000 if section == "tiny" else 1

        def close_executor() -> None:
            executor.shutdown(wait=True, cancel_futures=True)

        return ((lambda: list(executor.map(fn, items, chunksize=chunksize))), close_executor,
                expected)

    raise ValueError(variant)


def child_warm(section: str, variant: str, p: dict[str, Any]) -> None:
    """Serve ``run`` requests on stdin with one JSON line of samples (ms) each."""
    run, close, expected = make_runner(section, variant, p)
    result = run()  # warm-up: starts the pool / threads
    if result != expected:
        msg = f"{section}/{variant}: wrong result from the warm-up call"
        raise AssertionError(msg)
    reply({"ready": True, "plan": plan_of_last_run(variant)})
    perf_counter = time.perf_counter
    for line in sys.stdin:
        command = line.strip()
        if command == "quit":
            break
        samples: list[float] = []
        if section == "latency":
            for _ in range(p["lat_warmup"]):
                run()
            for _ in range(p["lat_calls"]):
                t0 = perf_counter()
                run()
                samples.append((perf_counter() - t0) * 1e3)
        else:
            inner = p["tiny_inner"] if section == "tiny" else 1
            for _ in range(inner):
                t0 = perf_counter()
                run()
                samples.append((perf_counter() - t0) * 1e3)
        reply({"samples": samples})
    close()


def plan_of_last_run(variant: str) -> dict[str, Any] | None:
    """Backend and workers laneway chose for its last run (laneway versions with
    ``last_plan()``), else None."""
    if not variant.startswith("laneway"):
        return None
    import laneway

    last_plan = getattr(laneway, "last_plan", None)
    plan = last_plan() if last_plan is not None else None
    if plan is None:
        return None
    return {"backend": plan.backend, "workers": plan.workers}


def child_first_call(variant: str) -> None:
    """First process-pool call of a fresh interpreter; imports are timed apart."""
    perf_counter = time.perf_counter
    t0 = perf_counter()
    if variant == "laneway":
        import laneway
        from laneway import parallel_map

        t1 = perf_counter()
        result = parallel_map(sq, range(2), backend="process")
        t2 = perf_counter()
        close = _no_close
        del laneway
    else:
        import multiprocessing

        t1 = perf_counter()
        pool = multiprocessing.get_context("forkserver").Pool(2)
        result = pool.map(sq, range(2))
        t2 = perf_counter()
        close = pool.terminate
    if result != [0, 1]:
        msg = f"first-call/{variant}: wrong result {result!r}"
        raise AssertionError(msg)
    reply({"import_ms": (t1 - t0) * 1e3, "call_ms": (t2 - t1) * 1e3})
    close()


def child_stream(variant: str, n: int) -> None:
    """Stream ``n`` generated items through a fresh process pool, summing as they come."""
    perf_counter = time.perf_counter
    if variant == "laneway":
        from laneway import imap

        before = rss_now_kb()
        t0 = perf_counter()
        total = sum(imap(sq, numbers(n), backend="process"))
        wall = perf_counter() - t0
    else:
        import multiprocessing

        before = rss_now_kb()
        t0 = perf_counter()
        with multiprocessing.get_context("forkserver").Pool(2) as pool:
            total = sum(pool.imap(sq, numbers(n), chunksize=1000))
        wall = perf_counter() - t0
    peak = peak_rss_kb()
    if total != sum_of_squares(n):
        msg = f"stream-rss/{variant}: wrong sum"
        raise AssertionError(msg)
    reply({"growth_mb": max(0, peak - before) / 1024, "wall_ms": wall * 1e3,
           "before_mb": before / 1024})


def reply(message: dict[str, Any]) -> None:
    import json

    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def child_main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "warm":
        import json

        child_warm(argv[1], argv[2], json.loads(argv[3]))
    elif mode == "first-call":
        child_first_call(argv[1])
    elif mode == "stream-rss":
        child_stream(argv[1], int(argv[2]))
    else:
        msg = f"unknown child mode {mode!r}"
        raise SystemExit(msg)


# -- parent side: orchestration ----------------------------------------------------------------


class Child:
    """A helper interpreter running this script in ``--child`` mode, spoken to by lines."""

    def __init__(self, *args: str, script: str = __file__) -> None:
        import queue
        import subprocess
        import threading

        self.label = " ".join(args[:3])
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(script), "--child", *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)  # EOF: every holder of the pipe is gone

    def receive(self, timeout: float = CHILD_TIMEOUT_S) -> dict[str, Any]:
        import json
        import queue

        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            msg = f"child {self.label!r} did not answer within {timeout:.0f} s"
            raise RuntimeError(msg) from None
        if line is None:
            code = self.proc.wait()
            msg = f"child {self.label!r} exited (code {code}) without answering"
            raise RuntimeError(msg)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def request(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.receive()

    def finish(self) -> None:
        import contextlib
        import subprocess

        with contextlib.suppress(OSError):
            self.send("quit")
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def rotated(variants: list[str], rep: int) -> list[str]:
    k = rep % len(variants)
    return variants[k:] + variants[:k]


def run_warm(section: str, variants: list[str], p: dict[str, Any],
             reps: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Samples (ms) per variant, taken round-robin over ``reps`` repetitions, and the
    plan laneway variants reported (see :func:`plan_of_last_run`)."""
    import json

    children: dict[str, Child] = {}
    plans: dict[str, Any] = {}
    try:
        for v in variants:  # one at a time: start-ups do not compete for the CPU
            children[v] = Child("warm", section, v, json.dumps(p))
            plans[v] = children[v].receive().get("plan")
        samples: dict[str, list[float]] = {v: [] for v in variants}
        for rep in range(reps):
            for v in rotated(variants, rep):
                samples[v] += children[v].request("run")["samples"]
        return samples, plans
    finally:
        for child in children.values():
            child.finish()


def have_numpy() -> bool:
    import importlib.util

    return importlib.util.find_spec("numpy") is not None


def run_cold(mode: str, variants: list[str], runs: int, *extra: str,
             scripts: dict[str, str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """One fresh interpreter per measurement, alternating variants; ``scripts`` maps a
    variant to the script its interpreter runs (default: this one), which receives the
    variant's name without what follows its last ``+``."""
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    scripts = scripts or {}
    for rep in range(runs):
        for v in rotated(variants, rep):
            child = Child(mode, v.split("+")[0], *extra, script=scripts.get(v, __file__))
            try:
                results[v].append(child.receive())
            finally:
                child.finish()
    return results


# -- output ------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A markdown table; ``align`` has one letter per column, l or r (default: l, then r),
    or c (centred)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join({"r": "---:", "c": ":---:"}.get(a, "---") for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ms(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


class Report:
    """Prints sections as they finish and collects the target checks."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, str, bool]] = []

    def section(self, title: str, body: str) -> None:
        print(f"\n## {title}\n\n{body}", flush=True)

    def target(self, what: str, measured: str, ok: bool) -> None:
        self.targets.append((what, measured, ok))

    def summary(self, quick: bool) -> None:
        rows = [[what, measured, "PASS" if ok else "FAIL"] for what, measured, ok in self.targets]
        note = "\n\n(--quick: smaller sizes, one repetition; indicative only)" if quick else ""
        self.section("targets", table(["target", "measured", "result"], rows, "llc") + note)


LABELS = {
    "serial": "serial `list(map())`",
    "laneway-process": 'laneway `backend="process"`',
    "laneway-thread": 'laneway `backend="thread"`',
    "laneway-process-ref": 'laneway `backend="process"`, `sq` imported from a module',
    "mp-pool": "`mp.Pool(2)` forkserver",
    "ppe": "`ProcessPoolExecutor(2)`",
    "bare": "reference: 2 bare forked processes, half the tasks each, no pool",
    "laneway-io": 'laneway thread, `kind="io"`, default workers',
    "laneway-io-64": 'laneway thread, `kind="io"`, workers=64',
    "laneway-io-256": 'laneway thread, `kind="io"`, workers=256',
    "tpe": "`ThreadPoolExecutor()` default",
    "tpe-256": "`ThreadPoolExecutor(256)`",
}


def section_tiny(p: dict[str, Any], reps: int, out: Report) -> None:
    variants = ["serial", "laneway-process", "laneway-thread", "mp-pool", "ppe"]
    samples, _ = run_warm("tiny", variants, p, reps)
    med = {v: median(samples[v]) for v in variants}
    notes = {"laneway-process": "no chunksize", "mp-pool": "default chunksize",
             "ppe": "chunksize=1000"}
    rows = [[LABELS[v], ms(med[v]), f"{med[v] / med['serial']:.2f}x", notes.get(v, ""),
             str(len(samples[v]))] for v in variants]
    ratio = med["laneway-process"] / med["mp-pool"]
    body = (f"{p['tiny_n']:,} calls of `sq(x) = x * x`; warm pools.\n\n"
            + table(["variant", "median ms", "time vs serial", "note", "samples"], rows, "lrrlr")
            + f"\n\nlaneway process / mp.Pool: **{ratio:.2f}x** (below 1 = laneway faster)")
    out.section("tiny: many tiny calls", body)
    out.target("tiny: laneway process no slower than warm mp.Pool",
               f"{ratio:.2f}x mp.Pool time ({ms(med['laneway-process'])} vs "
               f"{ms(med['mp-pool'])} ms)", ratio <= 1.0)


def calibrate_spin(target_ms: float) -> tuple[int, float]:
    """Iterations of spin() that take ``target_ms`` here, and the check's measured ms."""
    n = 50_000
    while True:
        best = min(_timed(spin, n) for _ in range(3))
        if best >= 0.01:
            break
        n *= 4
    for _ in range(2):  # refine at full size: the best of 3, twice (the machine is noisy)
        n = max(1, int(n * target_ms / 1e3 / best))
        best = min(_timed(spin, n) for _ in range(3))
    return n, best * 1e3


def _timed(fn: Any, arg: Any) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def section_cpu(p: dict[str, Any], reps: int, out: Report) -> None:
    iters, check_ms = calibrate_spin(p["cpu_task_ms"])
    p = {**p, "cpu_iters": iters}
    variants = ["serial", "laneway-process", "laneway-thread", "mp-pool", "ppe", "bare"]
    samples, _ = run_warm("cpu", variants, p, reps)
    med = {v: median(samples[v]) for v in variants}
    rows = [[LABELS[v], ms(med[v]), f"{med['serial'] / med[v]:.2f}x"] for v in variants]
    speedup = med["serial"] / med["laneway-process"]
    ceiling = med["serial"] / med["bare"]
    body = (f"{p['cpu_tasks']} tasks of pure-Python `spin({iters:,})` "
            f"(calibrated: {check_ms:.1f} ms per call here); warm pools; ceiling 2.0x on 2 "
            f"cores.\n\n" + table(["variant", "median ms", "speedup vs serial"], rows))
    out.section("cpu: CPU-bound pure Python", body)
    out.target("cpu: laneway process speedup >= 1.9x",
               f"{speedup:.2f}x (bare processes here: {ceiling:.2f}x)", speedup >= 1.9)


def section_sleep(p: dict[str, Any], reps: int, out: Report) -> None:
    variants = ["laneway-io", "laneway-io-64", "laneway-io-256", "tpe", "tpe-256"]
    samples, plans = run_warm("sleep", variants, p, reps)
    med = {v: median(samples[v]) for v in variants}
    serial_ms = p["sleep_tasks"] * p["sleep_s"] * 1e3
    default_threads = min(32, (os.cpu_count() or 1) + 4)
    lane_default = plans.get("laneway-io")
    workers = {"laneway-io": f"default ({lane_default['workers']})" if lane_default
               else "default",
               "laneway-io-64": "64", "laneway-io-256": "256",
               "tpe": f"default ({default_threads})", "tpe-256": "256"}
    rows = [["serial (estimated, not run)", "1", ms(serial_ms), "1.0x"]]
    rows += [[LABELS[v], workers[v], ms(med[v]), f"{serial_ms / med[v]:.1f}x"]
             for v in variants]
    body = (f"{p['sleep_tasks']} tasks of `time.sleep({p['sleep_s']})`; serial is "
            f"{p['sleep_tasks']} x {p['sleep_s']} s, not run.\n\n"
            + table(["variant", "workers", "median wall ms", "speedup vs serial"], rows))
    out.section("sleep: I/O-like waiting", body)


def section_latency(p: dict[str, Any], reps: int, out: Report) -> None:
    variants = ["laneway-process", "laneway-process-ref", "mp-pool", "ppe"]
    samples, _ = run_warm("latency", variants, p, reps)
    rows = [[LABELS[v], ms(median(samples[v])),
             ms(percentile(samples[v], 90)), ms(min(samples[v])), str(len(samples[v]))]
            for v in variants]
    body = (f"`map(sq, range(2))` on a warm pool: {p['lat_calls']} timed calls after "
            f"{p['lat_warmup']} warm-up calls, per repetition; all calls pooled.  `sq` is "
            f"defined in this script (`__main__`), so laneway cloudpickles it by value on "
            f"every call; the second row gives it the same function from an importable "
            f"module (pickled by reference, cached) for comparison.\n\n"
            + table(["variant", "median ms", "p90 ms", "min ms", "calls"], rows))
    out.section("latency: one small warm call", body)
    lane = median(samples["laneway-process"])
    out.target("latency: warm laneway call <= 0.3 ms", f"{lane:.3f} ms median "
               f"(p90 {percentile(samples['laneway-process'], 90):.3f}; importable "
               f"function: {median(samples['laneway-process-ref']):.3f})", lane <= 0.3)


def section_first_call(p: dict[str, Any], reps: int, out: Report) -> None:
    del reps
    variants = ["laneway", "mp"]
    scripts: dict[str, str] = {}
    heavy = os.path.join(os.path.dirname(os.path.abspath(__file__)), "first_call_numpy.py")
    if have_numpy():
        variants += ["laneway+numpy", "mp+numpy"]
        scripts = {v: heavy for v in variants if v.endswith("+numpy")}
    results = run_cold("first-call", variants, p["first_runs"], scripts=scripts)
    labels = {"laneway": 'laneway `parallel_map(sq, range(2), backend="process")`',
              "mp": '`get_context("forkserver").Pool(2)` + `map(sq, range(2))`',
              "laneway+numpy": "laneway, script that imports numpy at top level",
              "mp+numpy": "`mp` forkserver Pool, script that imports numpy at top level"}
    imports = {"laneway": "`import laneway` + `parallel_map`", "mp": "`import multiprocessing`"}
    call = {v: median([r["call_ms"] for r in results[v]]) for v in variants}
    rows = [[labels[v], ms(call[v]), ", ".join(ms(r["call_ms"]) for r in results[v]),
             imports[v.split("+")[0]], ms(median([r["import_ms"] for r in results[v]]))]
            for v in variants]
    body = (f"A fresh interpreter per run ({p['first_runs']} runs each, alternating); the "
            f"clock starts after the imports, which are timed apart.  The `+numpy` rows "
            f"run `first_call_numpy.py`, a script that imports numpy at its top level "
            f"(the same `sq`, imported from this script by both): every process that "
            f"runs the script's top level pays that import.\n\n"
            + table(["variant", "median first call ms", "runs ms", "import",
                     "median import ms"], rows, "lrrlr"))
    out.section("first-call: cold start of a process pool", body)
    ratio = call["laneway"] / call["mp"]
    out.target("first-call: laneway no slower than mp forkserver Pool",
               f"{ratio:.2f}x ({ms(call['laneway'])} vs {ms(call['mp'])} ms)"
               + (f"; numpy script: {call['laneway+numpy'] / call['mp+numpy']:.2f}x "
                  f"({ms(call['laneway+numpy'])} vs {ms(call['mp+numpy'])} ms)"
                  if "mp+numpy" in call else ""), ratio <= 1.0)


def section_stream(p: dict[str, Any], reps: int, out: Report) -> None:
    variants = ["laneway", "mp"]
    results = run_cold("stream-rss", variants, reps, str(p["stream_n"]))
    labels = {"laneway": 'laneway `imap(sq, gen, backend="process")`',
              "mp": "`mp.Pool(2).imap(sq, gen, chunksize=1000)`"}
    growth = {v: median([r["growth_mb"] for r in results[v]]) for v in variants}
    rows = [[labels[v], f"{growth[v]:.1f}", f"{max(r['growth_mb'] for r in results[v]):.1f}",
             ms(median([r["wall_ms"] for r in results[v]])),
             f"{median([r['before_mb'] for r in results[v]]):.1f}"] for v in variants]
    body = (f"{p['stream_n']:,} items from a generator, summed as they come, in a fresh "
            f"interpreter per run ({reps} run(s) each, alternating); wall time includes the "
            f"pool's start.  Growth = peak RSS (ru_maxrss) after minus VmRSS before.\n\n"
            + table(["variant", "median RSS growth MB", "max growth MB", "median wall ms",
                     "RSS before MB"], rows))
    out.section("stream-rss: memory of a long stream", body)
    worst = max(r["growth_mb"] for r in results["laneway"])
    out.target("stream-rss: laneway parent RSS growth < 20 MB",
               f"{growth['laneway']:.1f} MB median, {worst:.1f} MB max", worst < 20)


def compile_bytecode(package_dir: str) -> str:
    """Compile the bytecode of the laneway being measured, as ``pip install`` does.

    A source checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (set on some machines)
    never writes ``.pyc`` files, so every fresh interpreter and fork server would
    compile laneway's modules from source (~15 ms here) while the standard library's
    come compiled: the cold figures would measure the checkout, not the library."""
    import compileall

    if compileall.compile_dir(package_dir, quiet=2):
        return "bytecode compiled first, as pip install does"
    return "bytecode could NOT be compiled: cold figures include compiling laneway"


def source_state() -> str:
    """The git commit of the laneway source measured, and whether it had local edits."""
    import subprocess

    import laneway

    where = os.path.dirname(laneway.__file__)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    edits = "with uncommitted edits" if dirty.stdout.strip() else "clean"
    return f"git {commit.stdout.strip()}, {edits}"


RUNNERS = {
    "tiny": section_tiny,
    "cpu": section_cpu,
    "sleep": section_sleep,
    "latency": section_latency,
    "first-call": section_first_call,
    "stream-rss": section_stream,
}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform

    parser = argparse.ArgumentParser(
        description="laneway foundation benchmarks (prints markdown tables).")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and one repetition: a smoke run for CI")
    parser.add_argument("--reps", type=int, default=None, metavar="N",
                        help="round-robin repetitions per section (default 3; 1 with --quick)")
    parser.add_argument("--only", choices=SECTIONS, metavar="NAME",
                        help=f"run one section: {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    if reps < 1:
        parser.error("--reps must be at least 1")
    params = QUICK if args.quick else FULL

    import laneway

    load = os.getloadavg()
    where = os.path.dirname(laneway.__file__)
    print("# laneway foundation benchmarks\n")
    print(f"laneway from {where} ({source_state()}; {compile_bytecode(where)})")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.machine()}; laneway {laneway.__version__}; "
          f"available_cpus() = {laneway.available_cpus()}; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{'quick, ' if args.quick else ''}{reps} repetition(s); medians throughout.",
          flush=True)
    started = time.perf_counter()
    out = Report()
    for name in SECTIONS:
        if args.only in (None, name):
            RUNNERS[name](dict(params), reps, out)
    out.summary(args.quick)
    load = os.getloadavg()
    print(f"\nTotal {time.perf_counter() - started:.0f} s; load average at end "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
    else:
        sys.exit(main())

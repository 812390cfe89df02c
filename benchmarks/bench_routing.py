"""Routing benchmark: does unhinted ``parallel_map`` pick the backend an expert would pick?

Run ``python benchmarks/bench_routing.py`` (``--quick`` for a smoke run, ``--only NAME``,
``--reps N``, ``--verbose`` for every plan's reason); see benchmarks/README.md.

A labelled set of realistic task types: each is a module-level function, a list of
inputs sized so that a serial run takes roughly 0.5-2 s on a 2-core machine, and the
backend an expert would choose after measuring (the *label*; the comments on each
workload say why).  For each workload, in one interpreter, the script times four
variants round-robin (the order rotates every repetition, so a noisy machine's bursts
fall on all of them alike) and reports medians:

* ``auto``: ``laneway.parallel_map(fn, items)``, no hint, no backend.  laneway caches a
  function's measurement per process, so the cache is cleared before every auto run:
  every auto figure includes a *fresh* measurement (the profiling of the first items,
  whose results are kept), as the first call of a program would pay.
* ``serial``, ``thread``, ``process``: the same call with ``backend=`` forced.

The process pool is warm for every variant: one tiny process call starts it before any
timing, and every workload runs a few items on each backend (untimed) first, so worker
imports (numpy, urllib, sqlite3) are not paid by the first timed variant.  Every
variant's results are checked against the first variant's of the same workload.

Functions run by process workers are defined at module level: the fork server imports
this file as ``__mp_main__``, so its top level imports nothing heavy (numpy, urllib and
http.server are imported where they are used).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

# BLAS limited to one thread, before numpy is imported anywhere (numpy is imported
# lazily, and process workers inherit this environment): the matmul workload must be
# one core's worth of GIL-free work per call, not a BLAS thread pool of its own.
for _blas_var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_blas_var] = "1"

Backend = Literal["serial", "thread", "process"]
Variant = Literal["auto", "serial", "thread", "process"]
VARIANTS: tuple[Variant, ...] = ("auto", "serial", "thread", "process")
BACKENDS: tuple[Backend, ...] = ("serial", "thread", "process")

RATIO_TARGET = 1.10
"""auto should be within this factor of the best forced backend, for every workload."""

MATCH_TARGET = 11
"""auto's choice should match the label for at least this many of the 12 numbered
workloads."""

# -- the work (module level: process workers find it here) ---------------------------------

SPIN_N = 160_000
"""``spin(SPIN_N)`` takes ~20 ms of pure Python on the reference machine."""

VOCAB = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
         "kappa", "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau",
         "upsilon", "phi", "chi", "psi", "omega")

ADDRESS = re.compile(r"@(\w+)\.com")
OMEGA = re.compile(r"omega\w*")


def spin(n: int) -> int:
    """1. Pure-Python loop: holds the GIL for the whole call (~20 ms)."""
    s = 0
    for i in range(n):
        s += i * i % 7
    return s


def make_text(seed: int) -> str:
    """A ~1 MB text with e-mail addresses, built from ``seed`` (~3 ms, pure Python)."""
    rng = random.Random(seed)
    parts: list[str] = []
    for _ in range(400):
        parts.append(f"{rng.choice(VOCAB)}.{rng.choice(VOCAB)}{rng.randrange(1000)}"
                     f"@{rng.choice(VOCAB)}.com")
        parts.extend(rng.choices(VOCAB, k=20))
    chunk = " ".join(parts)
    return chunk * (1_000_000 // len(chunk) + 1)


def find_addresses(seed: int) -> tuple[int, int]:
    """2. Regex over text: builds ~1 MB of text, two ``findall`` over it (~5-8 ms).

    ``re`` holds the GIL while it matches."""
    text = make_text(seed)
    return len(ADDRESS.findall(text)), len(OMEGA.findall(text))


def make_document(seed: int, records: int) -> str:
    """A JSON document of ``records`` records (~105 bytes each)."""
    rng = random.Random(seed)
    return json.dumps({"seed": seed, "records": [
        {"id": i, "name": rng.choice(VOCAB), "score": rng.random(),
         "tags": rng.choices(VOCAB, k=3), "ok": rng.random() < 0.5}
        for i in range(records)]})


def parse_json(document: str) -> tuple[int, float]:
    """3. ``json.loads`` of a ~320 KB document (~5 ms), summarised: a parse-and-aggregate
    step returns a summary, not the parsed tree."""
    records = json.loads(document)["records"]
    return len(records), round(sum(r["score"] for r in records if r["ok"]), 6)


def nap(seconds: float) -> float:
    """4. ``time.sleep``: pure waiting."""
    time.sleep(seconds)
    return seconds


def fetch(url: str) -> int:
    """5. One HTTP GET of a small response from the local server (which waits ~10 ms)."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as response:
        return len(response.read())


def read_file(path: str) -> int:
    """6. Read one whole ~1 MB file (from the page cache: written just before)."""
    with open(path, "rb") as f:
        return len(f.read())


def run_true(_: int) -> int:
    """7. Start a tiny program and wait for it."""
    return subprocess.run(["true"], check=True).returncode


def sha_digest(seed: int) -> str:
    """8. SHA-256 of 8 MB made in the task (hashlib releases the GIL on large buffers)."""
    data = seed.to_bytes(8, "little") * (1 << 20)
    return hashlib.sha256(data).hexdigest()


def compress(seed: int) -> int:
    """9. ``zlib.compress`` of 4 MB of log-like text made in the task (zlib releases the
    GIL while it compresses)."""
    rng = random.Random(seed)
    words = " ".join(rng.choices(VOCAB, k=2000)).encode()
    data = (words * (4_000_000 // len(words) + 1))[:4_000_000]
    return len(zlib.compress(data))


def matmul(pair: tuple[Any, Any]) -> Any:
    """10. numpy 400x400 matmul (one BLAS thread, GIL released), arrays as arguments;
    returns the product (1.3 MB)."""
    a, b = pair
    return a @ b


def query(args: tuple[str, int]) -> tuple[int, float, float]:
    """11. Open the database and run an aggregate with a WHERE clause over ~200k rows
    (no index on ``k``: a full scan, ~15 ms; sqlite releases the GIL while it steps)."""
    path, low = args
    con = sqlite3.connect(path)
    try:
        row = con.execute("SELECT count(*), sum(v), max(v) FROM t WHERE k BETWEEN ? AND ?",
                          (low, low + 100)).fetchone()
    finally:
        con.close()
    return int(row[0]), round(float(row[1]), 6), float(row[2])


def mixed(n: int) -> int:
    """12. ~10 ms of pure Python, then 20 ms of waiting."""
    s = spin(n)
    time.sleep(0.02)
    return s


def square(x: int) -> int:
    """13. The tiniest task."""
    return x * x


# -- the workloads --------------------------------------------------------------------------


@dataclass
class Resources:
    """What workloads need from the outside: a temp dir, the local HTTP server's URL."""

    tmp: str
    url: str
    files: list[str] = field(default_factory=list)
    database: str = ""


@dataclass
class Workload:
    """One task type: its function, how to build its inputs, and the expert's label.

    ``n`` is the number of items of a full run (``quick_n`` for ``--quick``); ``inner``
    is how many calls one timing makes (their mean is the figure), for workloads whose
    single call is too short to time on a noisy machine."""

    number: int
    name: str
    label: str
    fn: Callable[[Any], Any]
    build: Callable[[int, Resources], list[Any]]
    n: int
    quick_n: int
    inner: int = 1


def _seeds(n: int, _: Resources) -> list[int]:
    return list(range(n))


def _documents(n: int, _: Resources) -> list[str]:
    # 16 distinct documents, then distinct string objects with the same content (a space
    # before the closing brace): every item is its own object, so no pickle memo or
    # cache can share work between items.
    bases = [make_document(seed, 3000) for seed in range(min(n, 16))]
    return [bases[i % len(bases)][:-1] + " " * (1 + i // len(bases)) + "}"
            for i in range(n)]


def _urls(n: int, res: Resources) -> list[str]:
    return [f"{res.url}/item/{i}" for i in range(n)]


def _paths(n: int, res: Resources) -> list[str]:
    return [res.files[i % len(res.files)] for i in range(n)]


def _matrix_pairs(n: int, _: Resources) -> list[tuple[Any, Any]]:
    import numpy as np

    rng = np.random.default_rng(0)
    pairs = [(rng.random((400, 400)), rng.random((400, 400))) for _ in range(min(n, 64))]
    # Items are distinct tuples (pickled separately); the arrays repeat every 64 items,
    # farther apart than any chunk, so every process item carries its 2.6 MB.
    return [pairs[i % len(pairs)] for i in range(n)]


def _queries(n: int, res: Resources) -> list[tuple[str, int]]:
    return [(res.database, (i * 37) % 900) for i in range(n)]


def _constant(value: Any) -> Callable[[int, Resources], list[Any]]:
    def build(n: int, _: Resources) -> list[Any]:
        return [value] * n
    return build


WORKLOADS: list[Workload] = [
    # A pure-Python loop holds the GIL: threads cannot overlap it; processes run 2 at a
    # time for a few bytes of pickling.
    Workload(1, "pure-python", "process", spin, _constant(SPIN_N), 50, 12),
    # Building the text and matching both hold the GIL; the item is an int and the result
    # two ints, so processes are nearly free to reach.
    Workload(2, "regex", "process", find_addresses, _seeds, 120, 25),
    # json.loads holds the GIL.  Pickling the ~320 KB document (one str) costs ~0.2 ms
    # per item round trip, against 5-10 ms of parsing, so processes win.  Measured here
    # (150 items, medians of 3-5, several runs): serial 1.0-1.5 s, threads 1.5-1.9 s (no
    # faster than serial: the GIL is handed back and forth), processes 0.6-1.0 s.
    # Returning the whole parsed tree would change that (the tree costs as much to pickle
    # back as to parse): this task returns a summary, as a parse-and-aggregate step does.
    Workload(3, "json-loads", "process", parse_json, _documents, 150, 30),
    # Waiting: threads overlap every wait at once; processes only 2 at a time.
    Workload(4, "sleep", "thread", nap, _constant(0.02), 60, 20),
    # Waiting on a socket (the server answers after ~10 ms): threads, as many as it takes.
    Workload(5, "http-get", "thread", fetch, _urls, 100, 25),
    # Reading a 1 MB file from the page cache: ~0.2 ms, mostly the kernel's copy, with
    # the GIL released during read().  Measured here (4000 reads, medians of 5): serial
    # 0.82 s, 2 threads 0.51 s, laneway's default 6 threads 0.61 s, 2 processes 0.43 s.
    # So a pool pays (not serial), and processes are ~15-20% ahead of threads, likely
    # because allocating and freeing a 1 MB buffer per read (mmap/munmap) costs more in
    # a process whose other threads run on the other core.  The label stays thread: the
    # expert's choice for file I/O, which needs no pickling and stays right when the
    # cache is cold or the task returns the data; the process edge exists only because
    # the file is cached and the result is an int.  (A known tension: see the README.)
    Workload(6, "file-read", "thread", read_file, _paths, 4000, 800),
    # fork/exec, then waiting for the child: the caller's CPU use is small (~30%), and
    # threads need no second hop through a worker process.
    Workload(7, "subprocess", "thread", run_true, _seeds, 1000, 200),
    # hashlib, zlib, numpy's BLAS and sqlite release the GIL while they work: 2 threads
    # compute in parallel with no pickling at all, so threads.  (Processes come close
    # when arguments and results are small; for numpy they lose: 2.6 MB of arrays in,
    # 1.3 MB out per item.)
    Workload(8, "sha256", "thread", sha_digest, _seeds, 100, 20),
    Workload(9, "zlib", "thread", compress, _seeds, 35, 8),
    Workload(10, "numpy-matmul", "thread", matmul, _matrix_pairs, 250, 50),
    Workload(11, "sqlite", "thread", query, _queries, 60, 15),
    # 10 ms computing + 20 ms waiting: threads overlap the waits and run the computing
    # one at a time (~10 ms/item); 2 processes give ~15 ms/item.  Measured here (40
    # items, medians of 3-5, several runs): threads 0.38-0.41 s, processes 0.59-0.63 s,
    # serial 1.08-1.19 s.
    Workload(12, "mixed", "thread", mixed, _constant(SPIN_N // 2), 40, 10),
    # 100,000 items of x*x: ~50 ns each, no pool can win.  inner=5 calls per timing.
    Workload(13, "tiny", "serial", square, _seeds, 100_000, 100_000, inner=5),
]

# -- the local HTTP server (workload 5) ---------------------------------------------------


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) whose handler waits ~10 ms."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(0.01)  # the simulated latency of a remote service
                body = b'{"ok": true, "path": "' + self.path.encode() + b'"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # the default 5 drops SYNs under 100s of clients

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="bench-http")
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _prepare_files(res: Resources, count: int) -> None:
    rng = random.Random(1)
    for i in range(count):
        path = os.path.join(res.tmp, f"file{i:03d}.bin")
        with open(path, "wb") as f:
            f.write(rng.randbytes(1 << 20))
        res.files.append(path)


def _prepare_database(res: Resources, rows: int) -> None:
    res.database = os.path.join(res.tmp, "bench.sqlite")
    rng = random.Random(2)
    con = sqlite3.connect(res.database)
    try:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v REAL, name TEXT)")
        con.executemany("INSERT INTO t (k, v, name) VALUES (?, ?, ?)",
                        ((rng.randrange(1000), rng.random(), rng.choice(VOCAB))
                         for _ in range(rows)))
        con.commit()
    finally:
        con.close()


# -- measuring --------------------------------------------------------------------------------


def _fingerprint(results: list[Any]) -> str:
    """A digest of a run's results (numpy arrays by their bytes)."""
    h = hashlib.sha256()
    for value in results:
        to_bytes = getattr(value, "tobytes", None)
        h.update(to_bytes() if callable(to_bytes) else repr(value).encode())
    return h.hexdigest()


@dataclass
class Outcome:
    """Every timing of one workload, and auto's plans."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    choices: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)
    reference: str | None = None


def _run_variant(w: Workload, items: list[Any], variant: Variant) -> tuple[float, list[Any]]:
    import laneway
    from laneway import _profile

    gc.collect()
    results: list[Any] = []
    began = time.perf_counter()
    for _ in range(w.inner):
        if variant == "auto":
            _profile._measured.clear()  # a fresh measurement every time: its cost counts
            results = laneway.parallel_map(w.fn, items)
        else:
            results = laneway.parallel_map(w.fn, items, backend=variant)
    return (time.perf_counter() - began) / w.inner, results


def _warm_up(w: Workload, items: list[Any]) -> None:
    """A few items on every backend, untimed: worker imports and pool threads are ready."""
    import laneway

    few = items[:4]
    expected = [w.fn(item) for item in few]
    backends: tuple[Backend, ...] = ("thread", "process")
    for backend in backends:
        got = laneway.parallel_map(w.fn, few, backend=backend)
        if _fingerprint(got) != _fingerprint(expected):
            msg = f"{w.name}: {backend} warm-up gave different results"
            raise RuntimeError(msg)


def _measure(w: Workload, items: list[Any], rep: int, out: Outcome, log: Callable[[str], None],
             verbose: bool) -> None:
    import laneway

    if rep == 0:
        _warm_up(w, items)
    shift = (rep + w.number) % len(VARIANTS)
    order = VARIANTS[shift:] + VARIANTS[:shift]
    figures: list[str] = []
    for variant in order:
        seconds, results = _run_variant(w, items, variant)
        fingerprint = _fingerprint(results)
        if out.reference is None:
            out.reference = fingerprint
        elif fingerprint != out.reference:
            msg = f"{w.name}: {variant} gave different results from the first variant"
            raise RuntimeError(msg)
        del results
        out.seconds[variant].append(seconds)
        figures.append(f"{variant} {seconds:.3f}")
        if variant == "auto":
            plan = laneway.last_plan()
            assert plan is not None
            out.choices.append(plan.backend)
            out.reasons.append(plan.reason)
            plural = "s" if plan.workers != 1 else ""
            out.plans.append(f"{plan.backend}, {plan.workers} worker{plural}")
    log(f"  rep {rep + 1} {w.name}: " + ", ".join(figures)
        + f" s; auto chose {out.plans[-1]}")
    if verbose:
        log(f"    reason: {out.reasons[-1]}")


# -- report -----------------------------------------------------------------------------------


def _choice_words(choices: list[str]) -> tuple[str, str]:
    """The most common choice, and how it reads in the table."""
    counts = Counter(choices)
    top = counts.most_common(1)[0][0]
    if len(counts) == 1:
        return top, top
    return top, ", ".join(f"{c} {k}/{len(choices)}" for c, k in counts.most_common())


def _report(selected: list[Workload], outcomes: dict[str, Outcome], skipped: list[str],
            reps: int, verbose: bool) -> None:
    print(f"\nMedians of {reps} repetition{'s' if reps != 1 else ''}, seconds per run "
          f"(auto includes its fresh measurement).  best: the fastest forced backend; "
          f"auto/best: ratio of medians (the target); paired: median over repetitions of "
          f"auto / best in the same repetition (less sensitive to load drifting).\n")
    print("| # | workload | label | auto's choice | auto | serial | thread | process "
          "| best | auto/best | paired | choice = label |")
    print("|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|---|")
    matches = numbered = 0
    within = True
    misses: list[tuple[Workload, Outcome, str]] = []
    for w in selected:
        out = outcomes[w.name]
        med = {v: statistics.median(out.seconds[v]) for v in VARIANTS}
        best = min(BACKENDS, key=med.__getitem__)
        ratio = med["auto"] / med[best]
        paired = statistics.median(a / b for a, b in zip(out.seconds["auto"],
                                                         out.seconds[best], strict=True))
        top, words = _choice_words(out.choices)
        match = top == w.label
        if w.number <= 12:
            numbered += 1
            matches += match
        if ratio > RATIO_TARGET:
            within = False
        problems = []
        if not match:
            problems.append("choice differs from label")
        if ratio > RATIO_TARGET:
            problems.append(f"auto {ratio:.2f}x best")
        if problems:
            misses.append((w, out, "; ".join(problems)))
        print(f"| {w.number} | {w.name} | {w.label} | {words} | {med['auto']:.3f} "
              f"| {med['serial']:.3f} | {med['thread']:.3f} | {med['process']:.3f} "
              f"| {best} | {ratio:.2f}x | {paired:.2f}x | {'yes' if match else '**no**'} |")
    for name in skipped:
        print(f"| - | {name} | - | skipped | - | - | - | - | - | - | - | - |")
    print()
    words = []
    if numbered:
        words.append(f"{matches} of {numbered} numbered workloads (1-12)"
                     + (f"; target >= {MATCH_TARGET} of 12: "
                        f"{'PASS' if matches >= MATCH_TARGET else 'FAIL'}"
                        if numbered == 12 else ""))
    if "tiny" in outcomes:
        tiny_match = _choice_words(outcomes["tiny"].choices)[0] == "serial"
        words.append(f"bonus (tiny): {'yes' if tiny_match else 'no'}")
    print("* choice = label: " + "; ".join(words))
    print(f"* auto within {RATIO_TARGET:.2f}x of the best backend for every workload: "
          f"{'PASS' if within else 'FAIL'}")
    for name in skipped:
        print(f"* {name}: skipped (numpy is not installed; `pip install numpy` to run it)")
    if misses:
        print("\nMisses (label or ratio), with the auto plans' reasons:\n")
        for w, out, problem in misses:
            print(f"* **{w.name}** ({problem}):")
            for rep, (plan, reason) in enumerate(zip(out.plans, out.reasons, strict=True)):
                print(f"  * rep {rep + 1}: {plan}: {reason}")
    if verbose:
        print("\nEvery auto plan:\n")
        for w in selected:
            out = outcomes[w.name]
            for rep, (plan, reason) in enumerate(zip(out.plans, out.reasons, strict=True)):
                print(f"* {w.name}, rep {rep + 1}: {plan}: {reason}")


def _header(reps: int, quick: bool) -> str:
    import laneway

    try:
        numpy_words = "numpy " + __import__("numpy").__version__
    except ImportError:
        numpy_words = "numpy missing"
    package = os.path.dirname(os.path.abspath(laneway.__file__))
    try:  # the git state of the laneway that was imported, not of this script
        commit = subprocess.run(["git", "-C", package, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", package, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
        git = f"git {commit}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        git = "not in a git checkout: an exported copy?"
    return (f"# bench_routing: Python {sys.version.split()[0]}, "
            f"available_cpus() = {laneway.available_cpus()}, "
            f"load average {os.getloadavg()[0]:.2f}, {numpy_words}, "
            f"laneway from {package} ({git}); "
            f"{'quick' if quick else 'full'} run, {reps} rep{'s' if reps != 1 else ''}")


def _numpy_available() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="fewer items, 1 repetition (a smoke run; figures indicative)")
    parser.add_argument("--only", metavar="NAME", default=None,
                        help="run only these workloads (comma-separated names): "
                             + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--reps", type=int, default=None,
                        help="round-robin repetitions (default 3; 1 with --quick)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the reason of every auto plan")
    args = parser.parse_args(argv)
    if args.only is not None:
        known = {w.name for w in WORKLOADS}
        wanted = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in known]
        if unknown or not wanted:
            parser.error(f"unknown workload {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(sorted(known))}")
        args.only = wanted
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    return args


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import laneway

    began = time.perf_counter()
    selected = [w for w in WORKLOADS if args.only is None or w.name in args.only]
    skipped: list[str] = []
    if not _numpy_available():
        skipped = [w.name for w in selected if w.fn is matmul]
        selected = [w for w in selected if w.fn is not matmul]
    print(_header(args.reps, args.quick))
    server = _Server()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_routing_") as tmp:
            res = Resources(tmp=tmp, url=server.url)
            names = {w.name for w in selected}
            if "file-read" in names:
                _prepare_files(res, 64)
            if "sqlite" in names:
                _prepare_database(res, 200_000)
            _log("building inputs ...")
            inputs = {w.name: w.build(w.quick_n if args.quick else w.n, res) for w in selected}
            # The process pool is started (and stays warm) before anything is timed.
            if laneway.parallel_map(square, range(8), backend="process") != [
                    x * x for x in range(8)]:
                raise RuntimeError("process warm-up gave wrong results")
            outcomes = {w.name: Outcome() for w in selected}
            for rep in range(args.reps):
                for w in _rotated(selected, rep):
                    _measure(w, inputs[w.name], rep, outcomes[w.name], _log, args.verbose)
            _report(selected, outcomes, skipped, args.reps, args.verbose)
    finally:
        server.close()
    print(f"\nTotal {time.perf_counter() - began:.0f} s; load average at the end "
          f"{os.getloadavg()[0]:.2f}.")
    return 0


def _rotated(workloads: list[Workload], rep: int) -> Iterator[Workload]:
    """Every workload once per repetition, starting one further along each time."""
    if not workloads:
        return
    shift = rep % len(workloads)
    yield from workloads[shift:] + workloads[:shift]


if __name__ == "__main__":
    sys.exit(main())
